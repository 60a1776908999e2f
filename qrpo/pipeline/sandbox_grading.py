"""Completions -> grades through the sandbox, resumably: what the `grade` and `evaluate` stages share.

The completions are graded in chunks, each chunk's results saved once complete (a `sandbox.rundir.Chunks`
folder), by `grade_chunks` calls that the stage's executor runs like any other stage's work: here, one call
with one warm pool of judges (`sandbox.pool.Pool`); on SLURM, one array task per `sandbox.jobs` stripe of
chunks, each with its own pool. Either way a rerun grades only what is not saved yet.

A completion the sandbox could not grade (`sandbox_error`: a judge died or hung three times) is never scored
0: its chunk is not saved and the stage fails, naming how many, so a rerun grades them again.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sandbox.problem import GradeResult, Limits, Problem, Verdict
from sandbox.rundir import Chunks, fingerprint

from .config import PipelineConfig, SlurmJobConfig
from .errors import StageError
from .executor import Executor
from .progress import bar as progress_bar

# Where and how fast grading runs, not what it decides: left out of the fingerprints of grades.
WHERE_KEYS = ("workers", "jobs", "cpus_per_job", "time_min")


def grading_settings(config: PipelineConfig) -> dict[str, Any]:
    """The sandbox settings that change a grade (what the stages that grade put in their fingerprints)."""
    return {"sandbox": config.sandbox.model_dump(exclude=set(WHERE_KEYS))}


def limits_of(config: PipelineConfig) -> Limits:
    box = config.sandbox
    return Limits(cpu_s=box.cpu_s, wall_s=box.wall_s, memory_mb=box.memory_mb, solution_s=box.solution_s)


def grade_rows(problems: dict[str, Problem], rows: list[dict[str, Any]], folder: Path, config: PipelineConfig,
               executor: Executor, stage: str) -> list[GradeResult]:
    """Grade `rows` ({task_id, completion}) against `problems`; one result per row, in order.

    The rows are cut into `sandbox.chunk_size` chunks (`folder/chunks`, a `sandbox.rundir.Chunks` folder) and the
    pending ones handed to `executor.map` as `grade_chunks` calls: one call here (one warm pool for all of
    them), `sandbox.jobs` calls on SLURM (one array task each, `sandbox.cpus_per_job` judges each)."""
    limits = limits_of(config)
    problems = {k: p.with_limits(limits) for k, p in problems.items()}
    if not rows:
        return []
    box = config.sandbox
    size = box.chunk_size
    options = _options(config)
    fp = fingerprint({"problems": {k: p.to_dict() for k, p in sorted(problems.items())}, "rows": rows, "options": options})
    chunks = Chunks(folder / "chunks", fp, math.ceil(len(rows) / size), kind=f"{stage} grades", suffix=".jsonl",
                    fix=f"rerun with --force {stage} to redo the stage")
    pending = chunks.pending()
    if pending:
        calls = []
        jobs = box.jobs if executor.kind == "slurm" else 1
        for stripe in (pending[j::jobs] for j in range(min(jobs, len(pending)))):
            work = {i: rows[i * size: (i + 1) * size] for i in stripe}
            needed = {r["task_id"] for chunk in work.values() for r in chunk}
            calls.append((str(chunks.folder), fp, chunks.count, {k: problems[k] for k in needed if k in problems}, work,
                          options | {"workers": box.workers if executor.kind == "local" else box.cpus_per_job},
                          stage, len(rows)))
        resources = SlurmJobConfig(cpus_per_task=box.cpus_per_job, time_min=math.ceil(box.time_min))
        executor.map(stage, grade_chunks, calls, resources)
    results: list[GradeResult] = []
    for index in range(chunks.count):
        if chunks.done(index):
            results.extend(GradeResult.from_dict(r) for r in chunks.read_rows(index))
        else:
            results.extend(GradeResult.uniform(r["task_id"], 1, Verdict.SANDBOX_ERROR, box.backend,
                                               "not graded: its chunk had sandbox errors")
                           for r in rows[index * size: (index + 1) * size])
    failed = [r for r in results if any(t.verdict is Verdict.SANDBOX_ERROR for t in r.tests)]
    if failed:
        example = failed[0].tests[0].detail[:120]
        raise StageError(f"{stage}: {len(failed)} completion(s) could not be graded (sandbox_error, e.g. {example!r}); "
                         "`sandbox doctor` checks the backend; rerun to grade them again (graded chunks are kept)")
    return results


def _options(config: PipelineConfig) -> dict[str, Any]:
    box = config.sandbox
    return {"backend": box.backend, "granularity": box.granularity, "extract": box.extract}


def grade_chunks(folder: str, fp: str, count: int, problems: dict[str, Problem], work: dict[int, list[dict[str, Any]]],
                 options: dict[str, Any], stage: str, total: int) -> None:
    """One executor call: grade the chunks in `work` ({index: rows}) with one warm pool and save each one that
    has no sandbox error (the others are graded again by the next run). Chunks saved already are skipped, so
    a call is idempotent."""
    from sandbox.api import iter_grade
    from sandbox.pool import Pool

    chunks = Chunks(folder, fp, count, kind=f"{stage} grades", suffix=".jsonl")
    todo = {i: chunk for i, chunk in work.items() if not chunks.done(i)}
    if not todo:
        return
    bar = progress_bar(total=total, initial=total - sum(len(c) for c in todo.values()), desc=f"{stage}: grading",
                       unit="completion")
    try:
        with Pool(options["backend"], workers=options["workers"], progress=False) as pool:
            for index, chunk in sorted(todo.items()):
                results = []
                for result in iter_grade(problems, chunk, pool=pool, granularity=options["granularity"],
                                         extract=options["extract"]):
                    results.append(result)
                    bar.update(1)
                if not any(t.verdict is Verdict.SANDBOX_ERROR for r in results for t in r.tests):
                    chunks.write_rows(index, [r.to_dict() for r in results])
    finally:
        bar.close()


def result_columns(result: GradeResult) -> dict[str, Any]:
    """What a table keeps of a grade: the reward (pass rate) and how it came about."""
    verdict = result.verdict.value if result.verdict else "invalid"
    return {"reward": float(result.pass_rate), "passed": result.passed, "total": result.total, "verdict": verdict,
            "backend": result.backend, "grade_error": result.error}
