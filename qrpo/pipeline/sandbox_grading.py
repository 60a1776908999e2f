"""Completions -> grades through the sandbox, resumably: what the `grade` and `evaluate` stages share.

Locally, the completions are graded in chunks by one warm pool of judges (`sandbox.pool.Pool`), each chunk's
results saved once complete (a `sandbox.rundir.Chunks` folder); on SLURM, `sandbox.cluster.grade_distributed`
sends them out as one job array and keeps its own run directory. Either way a rerun grades only what is not
saved yet.

A completion the sandbox could not grade (`sandbox_error`: a judge died or hung three times) is never scored
0: its chunk is not saved and the stage fails, naming how many, so a rerun grades them again.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sandbox.problem import GradeResult, Limits, Problem, Verdict
from sandbox.rundir import Chunks, fingerprint

from .config import ExecutorKind, PipelineConfig
from .errors import StageError
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
               executor: ExecutorKind, stage: str) -> list[GradeResult]:
    """Grade `rows` ({task_id, completion}) against `problems`; one result per row, in order."""
    limits = limits_of(config)
    problems = {k: p.with_limits(limits) for k, p in problems.items()}
    if not rows:
        return []
    if executor == "slurm":
        results = _grade_on_slurm(problems, rows, folder, config)
    else:
        results = _grade_here(problems, rows, folder, config, stage)
    failed = [r for r in results if any(t.verdict is Verdict.SANDBOX_ERROR for t in r.tests)]
    if failed:
        example = failed[0].tests[0].detail[:120]
        raise StageError(f"{stage}: {len(failed)} completion(s) could not be graded (sandbox_error, e.g. {example!r}); "
                         "`sandbox doctor` checks the backend; rerun to grade them again (graded chunks are kept)")
    return results


def _options(config: PipelineConfig) -> dict[str, Any]:
    box = config.sandbox
    return {"backend": box.backend, "granularity": box.granularity, "extract": box.extract}


def _grade_here(problems: dict[str, Problem], rows: list[dict[str, Any]], folder: Path, config: PipelineConfig,
                stage: str) -> list[GradeResult]:
    from sandbox.api import iter_grade
    from sandbox.pool import Pool

    box = config.sandbox
    size = box.chunk_size
    fp = fingerprint({"problems": {k: p.to_dict() for k, p in sorted(problems.items())}, "rows": rows,
                      "options": _options(config)})
    chunks = Chunks(folder / "chunks", fp, math.ceil(len(rows) / size), kind=f"{stage} grades", suffix=".jsonl",
                    fix=f"rerun with --force {stage} to redo the stage")
    pending = chunks.pending()
    unsaved = 0
    if pending:
        todo = sum(len(rows[i * size: (i + 1) * size]) for i in pending)
        bar = progress_bar(total=len(rows), initial=len(rows) - todo, desc=f"{stage}: grading", unit="completion")
        try:
            with Pool(box.backend, workers=box.workers, progress=False) as pool:
                for index in pending:
                    results = []
                    for result in iter_grade(problems, rows[index * size: (index + 1) * size], pool=pool,
                                             granularity=box.granularity, extract=box.extract):
                        results.append(result)
                        bar.update(1)
                    if any(t.verdict is Verdict.SANDBOX_ERROR for r in results for t in r.tests):
                        unsaved += 1  # graded again by the next run
                        continue
                    chunks.write_rows(index, [r.to_dict() for r in results])
        finally:
            bar.close()
    out: list[GradeResult] = []
    for index in range(chunks.count):
        if chunks.done(index):
            out.extend(GradeResult.from_dict(r) for r in chunks.read_rows(index))
        else:
            chunk = rows[index * size: (index + 1) * size]
            out.extend(GradeResult.uniform(r["task_id"], 1, Verdict.SANDBOX_ERROR, box.backend,
                                           "not graded: its chunk had sandbox errors")
                       for r in chunk)
    return out


def _grade_on_slurm(problems: dict[str, Problem], rows: list[dict[str, Any]], folder: Path,
                    config: PipelineConfig) -> list[GradeResult]:
    from sandbox.cluster import ClusterError, grade_distributed

    box = config.sandbox
    extra: dict[str, Any] = dict(config.slurm.additional)
    if config.slurm.account:
        extra["account"] = config.slurm.account
    try:
        return grade_distributed(problems, rows, None, executor="slurm", jobs=box.jobs, cpus_per_job=box.cpus_per_job,
                                 partition=config.slurm.partition, time_min=box.time_min, backend=box.backend,
                                 workdir=folder / "shards", granularity=box.granularity,
                                 extract=box.extract, slurm_parameters=extra or None)
    except ClusterError as error:
        raise StageError(str(error)) from None


def result_columns(result: GradeResult) -> dict[str, Any]:
    """What a table keeps of a grade: the reward (pass rate) and how it came about."""
    verdict = result.verdict.value if result.verdict else "invalid"
    return {"reward": float(result.pass_rate), "passed": result.passed, "total": result.total, "verdict": verdict,
            "backend": result.backend, "grade_error": result.error}
