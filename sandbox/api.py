"""`sandbox.grade`: problems + completions in, one GradeResult per completion out, in order.

Bad rows (unknown task_id, missing fields, no code block) become results with `error` set
(and `no_code` verdicts where the problem is known); they never stop the batch.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .backends import Backend
from .datasets import LoadedProblems, RowError, load_problems, read_jsonl
from .extract import Policy, completion_code
from .pool import Job, Pool
from .problem import GradeResult, Granularity, Limits, Problem, Verdict

ProblemsLike = str | os.PathLike[str] | LoadedProblems | Mapping[str, Problem] | Iterable[Problem]
CompletionsLike = str | os.PathLike[str] | Iterable[Mapping[str, Any]]


def as_problems(problems: ProblemsLike, **load_options: Any) -> dict[str, Problem]:
    if isinstance(problems, (str, os.PathLike)):
        loaded = load_problems(problems, **load_options)
        return dict(loaded.problems)
    if isinstance(problems, LoadedProblems):
        return dict(problems.problems)
    if isinstance(problems, Mapping):
        return dict(problems)
    return {p.task_id: p for p in problems}


def _completion_rows(completions: CompletionsLike) -> Iterator[tuple[int, Mapping[str, Any] | RowError]]:
    if isinstance(completions, (str, os.PathLike)):
        yield from read_jsonl(completions)
    else:
        for i, row in enumerate(completions, start=1):
            yield i, row


def iter_grade(
    problems: ProblemsLike,
    completions: CompletionsLike,
    *,
    backend: str | Backend = "auto",
    workers: int | None = None,
    granularity: Granularity = "per_test",
    extract: Policy = "auto",
    limits: Limits | None = None,
    progress: bool = False,
    pool: Pool | None = None,
    skip: int = 0,
    details: bool = False,
) -> Iterator[GradeResult]:
    """Stream results in completion order. Pass `pool` to reuse warm workers across calls.
    `skip`: leave out the first `skip` completions rows (graded before: resuming); the others
    keep their row numbers in error messages.
    `details`: each failed test's `detail` describes the failure with the expected value (the
    call, the value returned and expected; stdio: the first difference). Off by default: an RL
    policy must not be fed the expected answers."""
    table = as_problems(problems)
    if limits is not None:
        table = {k: p.with_limits(limits) for k, p in table.items()}
    rows = list(_completion_rows(completions))
    owned = pool is None
    pool = pool or Pool(backend, workers=workers, progress=progress)
    try:
        table = _with_expected(table, rows, pool)
    except BaseException:
        if owned:
            pool.close()
        raise
    ready: dict[int, GradeResult] = {}
    jobs: list[Job] = []
    for index, (rowno, row) in enumerate(rows):
        if index < skip:
            continue
        result_or_job = _job(index, rowno, row, table, granularity, extract)
        if isinstance(result_or_job, GradeResult):
            ready[index] = result_or_job
        else:
            result_or_job.details = details
            jobs.append(result_or_job)
    try:
        graded = pool.grade(iter(jobs), total=len(jobs)) if jobs else iter(())
        for index in range(skip, len(rows)):
            yield ready.pop(index) if index in ready else next(graded)
    finally:
        if owned:
            pool.close()


def _with_expected(table: dict[str, Problem], rows: list[tuple[int, Any]], pool: Pool) -> dict[str, Problem]:
    """HumanEval+ / MBPP+ problems get the canonical solution's outputs (sandbox.datasets.reference),
    computed in the sandbox with this pool, for the task_ids the completions name."""
    from .datasets.reference import attach_expected

    wanted = {str(row.get("task_id")) for _, row in rows if isinstance(row, Mapping)}

    def run(jobs: list[tuple[Problem, str]]) -> Iterator[GradeResult]:
        batch = (Job(index=i, problem=p, code=c, granularity="per_solution") for i, (p, c) in enumerate(jobs))
        return pool.grade(batch, total=len(jobs))

    return attach_expected(table, run, only=wanted)


def grade(problems: ProblemsLike, completions: CompletionsLike, **options: Any) -> list[GradeResult]:
    """Grade every completion against its problem's tests; see `iter_grade` for the options."""
    return list(iter_grade(problems, completions, **options))


def _job(index: int, rowno: int, row: Mapping[str, Any] | RowError, table: dict[str, Problem], granularity: str, extract: Policy) -> Job | GradeResult:
    if isinstance(row, RowError):
        return GradeResult.invalid(row.task_id or "", f"completions {row}")
    task_id = row.get("task_id") if isinstance(row, Mapping) else None
    if task_id is None:
        return GradeResult.invalid("", f"completions row {rowno}, field 'task_id': missing; add the task_id of the problem this completion answers")
    task_id = str(task_id)
    problem = table.get(task_id)
    if problem is None:
        return GradeResult.invalid(task_id, f"completions row {rowno}, field 'task_id': {task_id!r} is not in the problems; check the problems file or the id")
    try:
        code = completion_code(dict(row), extract, problem.prompt, str(problem.metadata.get("source_format", "")))
    except ValueError as exc:
        return GradeResult.invalid(task_id, str(exc).replace("completions row", f"completions row {rowno}", 1))
    if code is None or not code.strip():
        return GradeResult.uniform(task_id, len(problem.tests), Verdict.NO_CODE, "", f"no code in the completion (--extract {extract})")
    return Job(index=index, problem=problem, code=code, granularity=granularity)


def replace_limits(problem: Problem, **changes: Any) -> Problem:
    return problem.with_limits(dataclasses.replace(problem.limits, **changes))
