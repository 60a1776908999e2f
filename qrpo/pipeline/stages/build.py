"""Stage `build`: the training table QRPOTrainer reads (`build/train`), in TRL's conversational format.

Each prompt's graded completions, in sample order, give its reference rewards (`ref_rewards`: the first
`num_ref_rewards` of them, or all). The training samples are drawn from the same completions, as in the
paper's LeetCode setup; the trainer computes the quantile of each sample's reward among the references.

- pointwise (`pairs: null`): prompt, completion, reward, ref_rewards; one row per completion (or the first
  `pointwise_samples` of each prompt).
- `offpolicy<K>random`: K pairs per prompt from completions (0, 1), (2, 3), ... (2K completions, which are
  independent samples, so the pairs are random); the higher reward is `chosen`, the first one on a tie.
- `offpolicy2best`: one pair per prompt, the best and the worst of the first `best_of` completions (all tied:
  the first completion on both sides, as the reference code, or two texts with `best_worst_ties: distinct`).
- `offline`: one pair per prompt, the dataset's own solution (graded) against the first completion.

Paired rows: prompt, chosen, rejected, chosen_reward, rejected_reward, ref_rewards. `pair_ties: drop` leaves
out pairs whose two rewards are equal (they carry no preference); `keep` (the paper) keeps them.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ..config import PAIRS_PATTERN, BuildConfig, PipelineConfig
from ..errors import StageError
from ..layout import RunLayout, load_table, save_table
from ..stage import StageContext

NAME = "build"
SUMMARY = "the training table: pointwise rows or preference pairs, with reference rewards"
Scored = tuple[str, float]  # a completion's text and its reward


def requires(config: PipelineConfig) -> list[str]:
    return ["grade"]


def inputs(config: PipelineConfig) -> dict[str, Any]:
    return {"build": config.build.model_dump()}


def assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def run(ctx: StageContext) -> dict[str, Any]:
    config = ctx.config
    graded = load_table(ctx.layout.graded).select_columns(["task_id", "prompt", "completion", "sample_index", "reward"])
    prompts = load_table(ctx.layout.prompts("train"))
    texts = dict(zip(prompts["task_id"], prompts["solution"]))
    solutions = {r["task_id"]: (texts[r["task_id"]], float(r["reward"])) for r in load_table(ctx.layout.solution_rewards)}
    rows, dropped = build_rows(graded.to_list(), config.build, solutions)
    if not rows:
        raise StageError(f"build: no training row was built from {len(graded)} completions (pairs {config.build.pairs}, "
                         f"{dropped} tied pairs dropped); set build.pair_ties: keep or generate more completions")
    save_table(rows, ctx.layout.training_table)
    kind = config.build.pairs or "pointwise"
    ctx.say(f"{len(rows)} {kind} rows ({dropped} tied pairs dropped)")
    refs = len(rows[0]["ref_rewards"])
    return {"rows": len(rows), "kind": kind, "ref_rewards_per_prompt": refs, "tied_pairs_dropped": dropped}


def build_rows(graded: list[dict[str, Any]], build: BuildConfig,
               solutions: dict[str, Scored] | None = None) -> tuple[list[dict[str, Any]], int]:
    """The training rows from graded completions (dicts with task_id, prompt, completion, sample_index, reward)
    and, for `offline`, the dataset's graded solutions (task_id -> (text, reward)). Returns the rows and the
    number of tied pairs dropped."""
    by_prompt: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in graded:
        by_prompt[row["task_id"]].append(row)
    rows: list[dict[str, Any]] = []
    dropped = 0
    for task_id, group in by_prompt.items():
        group.sort(key=lambda r: r["sample_index"])
        rewards = [float(r["reward"]) for r in group]
        refs = rewards[: build.num_ref_rewards] if build.num_ref_rewards else rewards
        if build.num_ref_rewards and len(refs) < build.num_ref_rewards:
            raise StageError(f"build: prompt {task_id!r} has {len(refs)} graded completions but build.num_ref_rewards is "
                             f"{build.num_ref_rewards}; lower it or raise generate.num_samples")
        prompt = group[0]["prompt"]
        if build.pairs is None:
            for r in group[: build.pointwise_samples] if build.pointwise_samples else group:
                rows.append({"prompt": prompt, "completion": assistant(r["completion"]), "reward": float(r["reward"]),
                             "ref_rewards": refs})
            continue
        for chosen, rejected in _pairs(build, task_id, group, solutions or {}):
            if chosen[1] == rejected[1] and build.pair_ties == "drop":
                dropped += 1
                continue
            rows.append({"prompt": prompt, "chosen": assistant(chosen[0]), "rejected": assistant(rejected[0]),
                         "chosen_reward": chosen[1], "rejected_reward": rejected[1], "ref_rewards": refs})
    return rows, dropped


def _pairs(build: BuildConfig, task_id: str, group: list[dict[str, Any]],
           solutions: dict[str, Scored]) -> list[tuple[Scored, Scored]]:
    """(chosen, rejected) as (text, reward) for one prompt, per `build.pairs`."""
    samples = [(r["completion"], float(r["reward"])) for r in group]

    def ordered(a: Scored, b: Scored) -> tuple[Scored, Scored]:
        return (a, b) if a[1] >= b[1] else (b, a)

    match = PAIRS_PATTERN.match(build.pairs or "")
    if match and match.group(2):  # offpolicy<K>random
        k = int(match.group(2))
        if len(samples) < 2 * k:
            raise StageError(f"build: {build.pairs} needs {2 * k} completions per prompt, {task_id!r} has {len(samples)}; "
                             "raise generate.num_samples")
        return [ordered(samples[2 * i], samples[2 * i + 1]) for i in range(k)]
    if build.pairs == "offpolicy2best":
        first = samples[: build.best_of]
        if len(first) < 2:
            raise StageError(f"build: offpolicy2best needs at least 2 completions per prompt, {task_id!r} has {len(first)}")
        best = max(range(len(first)), key=lambda i: first[i][1])  # the first of equals, as the paper
        worst = min(range(len(first)), key=lambda i: first[i][1])
        if best == worst and build.best_worst_ties == "distinct":  # all equal: "same" keeps one text on both sides
            worst = 1 if best == 0 else 0
        return [(first[best], first[worst])]
    if build.pairs == "offline":
        if task_id not in solutions:
            return []  # the dataset has no solution for this prompt
        return [ordered(solutions[task_id], samples[0])]
    raise StageError(f"build: unknown build.pairs {build.pairs!r}")


def progress(layout: RunLayout) -> str | None:
    return None  # seconds of work: done or not
