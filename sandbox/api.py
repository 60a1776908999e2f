"""`sandbox.grade`: problems + completions in, one GradeResult per completion out, in order.

    sandbox.grade("problems.jsonl", "completions.jsonl", backend="bubblewrap")
    sandbox.grade(Dataset.from_list(rows), completions, max_tests=5, cpu=2)   # a Hugging Face Dataset
    sandbox.grade([problem, ...], [{"task_id": ..., "completion": ...}, ...])   # Problems, or dataset rows

Problems: a file path, `LoadedProblems`, {task_id: Problem}, or any iterable (a list, a Hugging
Face `Dataset`) of `Problem`s and/or dataset rows in a registered format. Completions: a JSONL
path, or any iterable (a list, a `Dataset`) of rows {"task_id", "code" | "completion"}. The
`sandbox grade` options are keyword arguments: max_tests, min_tests, tests, format, adapter (problem
loading), cpu, memory, wall (limits), backend, workers, granularity, extract, progress.

A thin layer on `sandbox.pool.Pool`: rows become `Job`s (`job_for_row`), which the pool grades
with its ordered `map`. Bad rows (unknown task_id, missing fields, no code block) become results with `error` set
(and `no_code` verdicts where the problem is known); they never stop the batch.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Container, Iterable, Iterator, Mapping
from typing import Any

from .backends import Backend
from .datasets import LoadedProblems, RowError, load_problems, read_jsonl
from .extract import Policy, completion_code
from .pool import Completed, Job, Pool
from .problem import GradeResult, Granularity, Limits, Problem, Verdict

ProblemsLike = str | os.PathLike[str] | LoadedProblems | Mapping[str, Problem] | Iterable[Problem | Mapping[str, Any]]
CompletionsLike = str | os.PathLike[str] | Iterable[Mapping[str, Any]]
LOAD_OPTIONS = ("format", "max_tests", "min_tests", "tests")  # what `load_problems` takes besides the rows


def as_problems(problems: ProblemsLike, **load_options: Any) -> dict[str, Problem]:
    """{task_id: Problem} from a path, LoadedProblems, a mapping, or an iterable (list, HF Dataset)
    of Problems and dataset rows. `load_options` (format, max_tests, min_tests, tests) apply to
    everything but a ready mapping/LoadedProblems without options; `adapter="module:Name"` loads a
    user's adapter first. Raises ValueError when nothing loads (naming the first bad rows)."""
    from .datasets import load_adapter

    unknown = set(load_options) - {*LOAD_OPTIONS, "adapter"}
    if unknown:
        raise TypeError(f"unknown problem option(s) {sorted(unknown)}; known: {[*LOAD_OPTIONS, 'adapter']}")
    adapter = load_options.pop("adapter", None)
    if adapter is not None:
        load_options["format"] = load_adapter(adapter).name
    options = {k: v for k, v in load_options.items() if v is not None}
    if not options and isinstance(problems, LoadedProblems):
        return dict(problems.problems)
    if not options and isinstance(problems, Mapping):
        return dict(problems)
    source: Any = problems
    if isinstance(problems, LoadedProblems):
        source = list(problems.problems.values())
    elif isinstance(problems, Mapping):
        source = list(problems.values())
    if not isinstance(source, (str, os.PathLike)):
        rows = list(source)  # a Hugging Face Dataset iterates as dict rows
        if not options and all(isinstance(r, Problem) for r in rows):
            return {p.task_id: p for p in rows}
        source = rows
    loaded = load_problems(source, **options)
    if not loaded.problems and loaded.errors:
        shown = "; ".join(str(e) for e in loaded.errors[:3])
        raise ValueError(f"no usable problem ({len(loaded.errors)} bad rows): {shown}")
    return dict(loaded.problems)


def limits_from(cpu: float | None = None, memory: int | None = None, wall: float | None = None) -> Limits | None:
    """`Limits` for the CLI's --cpu/--memory/--wall (None: the problems' own); wall defaults to cpu + 2."""
    if cpu is None and memory is None and wall is None:
        return None
    base = Limits()
    return Limits(
        cpu_s=cpu if cpu is not None else base.cpu_s,
        wall_s=wall if wall is not None else max(base.wall_s, (cpu or base.cpu_s) + 2),
        memory_mb=memory if memory is not None else base.memory_mb,
    )


def completion_rows(completions: CompletionsLike) -> Iterator[tuple[int, Mapping[str, Any] | RowError]]:
    """(1-based row number, row or RowError) for a completions file or an iterable of rows."""
    if isinstance(completions, (str, os.PathLike)):
        yield from read_jsonl(completions)
    else:
        yield from enumerate(completions, start=1)


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
    max_tests: int | None = None,
    min_tests: int | None = None,
    tests: str | None = None,
    format: str | None = None,
    adapter: str | None = None,
    cpu: float | None = None,
    memory: int | None = None,
    wall: float | None = None,
    details: bool = False,
) -> Iterator[GradeResult]:
    """Stream results in completion order. Pass `pool` to reuse warm workers across calls.
    `skip`: leave out the first `skip` completions rows (graded before: resuming); the others
    keep their row numbers in error messages. max_tests, min_tests, tests, format, adapter: as
    `sandbox grade`'s options (how problems load); cpu, memory, wall: its limits (or `limits=`)."""
    table = as_problems(problems, max_tests=max_tests, min_tests=min_tests, tests=tests, format=format, adapter=adapter)
    if limits is not None and (cpu, memory, wall) != (None, None, None):
        raise TypeError("pass limits= or cpu=/memory=/wall=, not both")
    owned = pool is None
    pool = pool or Pool(backend, workers=workers, progress=progress)
    try:
        ready, jobs, count = prepare(table, completions, pool, range(skip), limits or limits_from(cpu, memory, wall),
                                     granularity, extract, details)
    except BaseException:
        if owned:
            pool.close()
        raise
    graded = pool.map(jobs, total=len(jobs))
    try:
        for index in range(skip, count):
            yield ready.pop(index) if index in ready else next(graded)
    finally:
        graded.close()  # cancels this call's unfinished jobs on a shared pool
        if owned:
            pool.close()


class AsCompleted:
    """`grade_as_completed`'s results: (row index, GradeResult) as each finishes. Iterate it, or poll
    with `wait(timeout)` and `finished()` (as `sandbox.pool.Completed`); `close()` (or `with`) stops."""

    def __init__(self, ready: dict[int, GradeResult], stream: Completed, pool: Pool, owned: bool) -> None:
        self._ready, self._stream, self._pool, self._owned = ready, stream, pool, owned

    def __iter__(self) -> AsCompleted:
        return self

    def __next__(self) -> tuple[int, GradeResult]:
        if self._ready:
            return self._ready.popitem()
        job, result = next(self._stream)
        return job.index, result

    def wait(self, timeout: float | None = None) -> bool:
        return bool(self._ready) or self._stream.wait(timeout)

    def finished(self) -> Iterator[tuple[int, GradeResult]]:
        while self._ready:
            yield self._ready.popitem()
        for job, result in self._stream.finished():
            yield job.index, result

    def __enter__(self) -> AsCompleted:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stream.close()
        if self._owned:
            self._pool.close()


def grade_as_completed(problems: ProblemsLike, completions: CompletionsLike, *, leave_out: Container[int] = (),
                       backend: str | Backend = "auto", workers: int | None = None, granularity: Granularity = "per_test",
                       extract: Policy = "auto", limits: Limits | None = None, progress: bool = False,
                       details: bool = False) -> AsCompleted:
    """Grade the completions rows whose 0-based index is not in `leave_out`, yielding (index, result)
    as each finishes: what a resumable `sandbox grade` records, so that an interrupt loses only the
    solutions being graded, never finished ones held back behind a slow one."""
    pool = Pool(backend, workers=workers, progress=progress)
    try:
        ready, jobs, _ = prepare(as_problems(problems), completions, pool, leave_out, limits, granularity, extract, details)
        return AsCompleted(ready, pool.as_completed(jobs, total=len(jobs)), pool, owned=True)
    except BaseException:
        pool.close()
        raise


def prepare(table: dict[str, Problem], completions: CompletionsLike, pool: Pool, leave_out: Container[int],
            limits: Limits | None, granularity: Granularity, extract: Policy,
            details: bool) -> tuple[dict[int, GradeResult], list[Job], int]:
    """The rows not left out as final results (bad rows, no code: {index: result}) and Jobs; the row count.
    Problems get `limits` (None: their own) and, for HumanEval+ / MBPP+, their expected outputs."""
    if limits is not None:
        table = {k: p.with_limits(limits) for k, p in table.items()}
    rows = list(completion_rows(completions))
    table = expected_outputs_for(table, [r for i, r in enumerate(rows) if i not in leave_out], pool)
    ready: dict[int, GradeResult] = {}
    jobs: list[Job] = []
    for index, (rowno, row) in enumerate(rows):
        if index in leave_out:
            continue
        result_or_job = job_for_row(index, rowno, row, table, granularity, extract)
        if isinstance(result_or_job, GradeResult):
            ready[index] = result_or_job
        else:
            result_or_job.details = details  # with details, failures describe the expected value (off for RL)
            jobs.append(result_or_job)
    return ready, jobs, len(rows)


def expected_outputs_for(table: dict[str, Problem], rows: list[tuple[int, Any]], pool: Pool) -> dict[str, Problem]:
    """HumanEval+ / MBPP+ problems get the canonical solution's outputs (sandbox.datasets.reference),
    computed in the sandbox with this pool, for the task_ids the completions name."""
    from .datasets.reference import attach_expected

    wanted = {str(row.get("task_id")) for _, row in rows if isinstance(row, Mapping)}

    def run(jobs: list[tuple[Problem, str]]) -> Iterator[GradeResult]:
        batch = (Job(index=i, problem=p, code=c, granularity="per_solution") for i, (p, c) in enumerate(jobs))
        return pool.map(batch, total=len(jobs))

    return attach_expected(table, run, only=wanted)


def grade(problems: ProblemsLike, completions: CompletionsLike, **options: Any) -> list[GradeResult]:
    """Grade every completion against its problem's tests; see `iter_grade` for the options."""
    return list(iter_grade(problems, completions, **options))


def job_for_row(
    index: int, rowno: int, row: Mapping[str, Any] | RowError, table: dict[str, Problem], granularity: str, extract: Policy
) -> Job | GradeResult:
    """The Job grading one completions row, or the row's final result when it needs no judge
    (an invalid row, an unknown task_id, no code)."""
    if isinstance(row, RowError):
        return GradeResult.invalid(row.task_id or "", f"completions {row}")
    task_id = row.get("task_id") if isinstance(row, Mapping) else None
    if task_id is None:
        return GradeResult.invalid(
            "", f"completions row {rowno}, field 'task_id': missing; add the task_id of the problem this completion answers"
        )
    task_id = str(task_id)
    problem = table.get(task_id)
    if problem is None:
        return GradeResult.invalid(
            task_id,
            f"completions row {rowno}, field 'task_id': {task_id!r} is not in the problems; check the problems file or the id",
        )
    try:
        code = completion_code(dict(row), extract, problem.prompt, str(problem.metadata.get("source_format", "")))
    except ValueError as exc:
        return GradeResult.invalid(task_id, str(exc).replace("completions row", f"completions row {rowno}", 1))
    if code is None or not code.strip():
        return GradeResult.uniform(
            task_id, len(problem.tests), Verdict.NO_CODE, "", f"no code in the completion (--extract {extract})"
        )
    return Job(index=index, problem=problem, code=code, granularity=granularity)


def replace_limits(problem: Problem, **changes: Any) -> Problem:
    return problem.with_limits(dataclasses.replace(problem.limits, **changes))
