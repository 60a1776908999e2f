"""Stage `grade`: every reference completion through the sandbox; its pass rate is its reward.

Writes `grade/graded`: the rows of `generate/completions` plus `reward` (passed / total tests), `passed`,
`total`, `verdict` (the first failing test's), `backend` and `grade_error`. The dataset's own solution of each
training prompt is graded too (`grade/solutions`: task_id, reward): `build.pairs: offline` uses it as the
chosen answer, and its share of full passes is a quick check of the sandbox setup (time limits too tight for
this machine show up here first).
"""

from __future__ import annotations

from typing import Any

from ..config import PipelineConfig
from ..layout import RunLayout, chunk_progress, load_table, save_table
from ..problems import load_problems_table
from ..sandbox_grading import grade_rows, grading_settings, result_columns
from ..stage import StageContext

NAME = "grade"
SUMMARY = "every completion through the sandbox: its pass rate is its reward"


def requires(config: PipelineConfig) -> list[str]:
    return ["generate", "prepare"]


def inputs(config: PipelineConfig) -> dict[str, Any]:
    return grading_settings(config)


def run(ctx: StageContext) -> dict[str, Any]:
    config = ctx.config
    prompts = load_table(ctx.layout.prompts("train"))
    problems = load_problems_table(prompts)
    completions = load_table(ctx.layout.completions)
    rows = [{"task_id": t, "completion": c} for t, c in zip(completions["task_id"], completions["completion"])]
    solutions = [{"task_id": t, "completion": s} for t, s in zip(prompts["task_id"], prompts["solution"]) if s]
    folder = ctx.layout.stage("grade")
    results = grade_rows(problems, rows + solutions, folder, config, ctx.executor, "grade")
    graded = [result_columns(r) for r in results[: len(rows)]]
    table = completions
    for column in graded[0] if graded else []:
        table = table.add_column(column, [g[column] for g in graded])
    save_table(table, ctx.layout.graded)
    solution_rewards = [{"task_id": s["task_id"], "reward": result_columns(r)["reward"]}
                        for s, r in zip(solutions, results[len(rows):])]
    save_table(solution_rewards, ctx.layout.solution_rewards)
    rewards = [g["reward"] for g in graded]
    mean = sum(rewards) / max(len(rewards), 1)
    solved = sum(r["reward"] == 1.0 for r in solution_rewards)
    ctx.say(f"{len(rows)} completions: mean reward {mean:.3f}, {sum(r == 1.0 for r in rewards)} pass every test; "
            f"the dataset's solutions pass every test on {solved}/{len(solution_rewards)} prompts")
    verdicts: dict[str, int] = {}
    for g in graded:
        verdicts[g["verdict"]] = verdicts.get(g["verdict"], 0) + 1
    return {"completions": len(rows), "mean_reward": round(mean, 4), "full_passes": sum(r == 1.0 for r in rewards),
            "verdicts": verdicts, "solutions_passing": solved, "solutions": len(solution_rewards),
            "backend": sorted({g["backend"] for g in graded if g["backend"]})}


def progress(layout: RunLayout) -> str | None:
    """For `qrpo status`: the saved chunks (a `sandbox.rundir.Chunks` folder, with either executor)."""
    found = chunk_progress(layout.stage("grade") / "chunks")
    return None if found is None else f"{found[0]}/{found[1]} chunks saved"
