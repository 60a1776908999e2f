"""Read a dataset file (or rows) into Problems, without ever stopping at a bad row.

The input is untrusted and often damaged: invalid JSON, invalid UTF-8, a truncated gzip stream, a
missing field, test code that does not parse or a duplicate task_id each become a `RowError` (row
number, task_id if known, field, a message that names the fix) and the remaining rows still load.
Each row's format is detected by the registry (`sandbox.datasets.registry`); a row that no adapter
recognises is converted by the file's dominant format, so that its error names the missing field.
The run-wide selections (`max_tests`, `min_tests`, base or plus tests, a stdio comparison) are
applied here, once, whatever the format. Re-exported by `sandbox.datasets`.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sandbox.problem import Problem

from .registry import Adapter, FieldError, detect_adapter, format_list, get_adapter

TestSet = Literal["base", "plus"]
TEST_SETS: tuple[str, ...] = ("base", "plus")


@dataclass(frozen=True)
class RowError:
    """One row that could not become a Problem. `row` is 1-based (the line number in a file)."""

    row: int
    task_id: str | None
    field: str | None
    message: str
    format: str | None = None

    def __str__(self) -> str:
        where = f"row {self.row}"
        if self.task_id is not None:
            where += f" (task_id {self.task_id!r})"
        if self.format:
            where += f" [{self.format}]"
        if self.field:
            where += f", field {self.field!r}"
        return f"{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Skipped:
    """A problem that loaded but was left out on purpose (for example by `min_tests`)."""

    task_id: str
    row: int
    reason: str


@dataclass
class LoadedProblems:
    """The outcome of `load_problems`: problems by task_id in input order, plus what went wrong."""

    problems: dict[str, Problem] = field(default_factory=dict)
    errors: list[RowError] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    formats: dict[str, int] = field(default_factory=dict)  # adapter name -> problems loaded
    source: str = ""

    def __len__(self) -> int:
        return len(self.problems)

    def __iter__(self) -> Iterator[Problem]:
        return iter(self.problems.values())

    def __getitem__(self, task_id: str) -> Problem:
        return self.problems[task_id]

    def __contains__(self, task_id: object) -> bool:
        return task_id in self.problems

    @property
    def num_tests(self) -> int:
        return sum(len(p.tests) for p in self.problems.values())

    def summary(self) -> str:
        formats = ", ".join(f"{k}: {v}" for k, v in self.formats.items()) or "none"
        text = (
            f"{len(self.problems)} problems ({self.num_tests} tests; formats {formats}) from "
            f"{self.source or '<rows>'}; {len(self.errors)} bad rows, {len(self.skipped)} skipped"
        )
        for err in self.errors[:5]:
            text += f"\n  {err}"
        if len(self.errors) > 5:
            text += f"\n  ... and {len(self.errors) - 5} more bad rows"
        return text


# --------------------------------------------------------------------------------------------
# Reading JSONL


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    """Yield (row number, row) for each non-blank line of a .jsonl or .jsonl.gz file.

    The row number is the 1-based line number. A line that is not valid UTF-8, not valid JSON
    or not a JSON object is yielded as a RowError instead of a dict; reading goes on. A
    truncated or corrupt gzip stream ends the file with one RowError. Gzip is recognised by its
    magic bytes, whatever the file is called. A missing file raises FileNotFoundError."""
    path = Path(path)
    lineno = 0
    with open(path, "rb") as raw_file:
        fh: Any = gzip.GzipFile(fileobj=raw_file, mode="rb") if raw_file.peek(2)[:2] == b"\x1f\x8b" else raw_file
        try:
            for lineno, raw in enumerate(fh, start=1):
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]  # UTF-8 byte order mark
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield lineno, RowError(
                        lineno, None, None,
                        f"invalid UTF-8 at byte {exc.start} of the line ({raw[exc.start:exc.start + 4]!r}); "
                        "re-encode the file as UTF-8 or drop this line",
                    )
                    continue
                if not line.strip():
                    continue
                try:
                    row = json.loads(line.rstrip("\r\n"))
                except json.JSONDecodeError as exc:
                    yield lineno, RowError(
                        lineno, None, None,
                        f"invalid JSON ({exc.msg} at column {exc.colno}); each line must be one complete JSON object",
                    )
                    continue
                if not isinstance(row, dict):
                    yield (
                        lineno,
                        RowError(
                            lineno,
                            None,
                            None,
                            f"expected a JSON object per line, got a JSON {type(row).__name__}; wrap the row in {{...}} with "
                            "named fields",
                        ),
                    )
                    continue
                yield lineno, row
        except (EOFError, OSError, zlib.error) as exc:
            yield lineno + 1, RowError(
                lineno + 1, None, None,
                f"the file {path} is truncated or corrupt after line {lineno} ({exc}); re-download or re-compress it",
            )


# --------------------------------------------------------------------------------------------
# Loading problems


def _row_task_id(adapter: Adapter | None, row: dict[str, Any]) -> str | None:
    if adapter is not None:
        try:
            return adapter.task_id(row)
        except Exception:  # noqa: BLE001, S110 -- only for error messages; fall back to the plain field
            pass
    value = row.get("task_id")
    return None if value is None else str(value)


def _convert(adapter: Adapter, rowno: int, row: dict[str, Any]) -> Problem | RowError:
    task_id = _row_task_id(adapter, row)
    try:
        problem = adapter.to_problem(row)
    except FieldError as exc:
        return RowError(rowno, task_id, exc.field, exc.message, adapter.name)
    except KeyError as exc:
        name = exc.args[0] if exc.args else "?"
        return RowError(rowno, task_id, str(name), f"missing field {name!r}; add it to the row or drop the row", adapter.name)
    except SyntaxError as exc:
        return RowError(
            rowno, task_id, None, f"code does not parse ({exc.msg}, line {exc.lineno}); fix the code in the row", adapter.name
        )
    except (ValueError, TypeError, AttributeError) as exc:
        return RowError(rowno, task_id, None, f"{type(exc).__name__}: {exc}; fix the row or drop it", adapter.name)
    if not isinstance(problem, Problem):
        return RowError(
            rowno,
            task_id,
            None,
            f"adapter {adapter.name!r} returned {type(problem).__name__}, not a Problem (a bug in the adapter)",
            adapter.name,
        )
    if not problem.task_id:
        return RowError(rowno, task_id, "task_id", "empty task_id; give the row a non-empty task_id", adapter.name)
    if not problem.tests:
        return RowError(rowno, problem.task_id, None, "the row has no tests; add tests or drop the row", adapter.name)
    return problem


def _iter_rows(path_or_rows: Any) -> tuple[str, Iterator[tuple[int, dict[str, Any] | RowError]]]:
    if isinstance(path_or_rows, (str, os.PathLike)):
        return os.fspath(path_or_rows), read_jsonl(path_or_rows)

    def rows() -> Iterator[tuple[int, dict[str, Any] | RowError]]:
        for i, row in enumerate(path_or_rows, start=1):
            if isinstance(row, dict):
                yield i, row
            elif isinstance(row, Problem):
                yield i, row.to_dict()
            else:
                yield i, RowError(i, None, None, f"expected a dict row, got {type(row).__name__}; pass dicts (one per problem)")

    return "<rows>", rows()


def load_problems(
    path_or_rows: str | os.PathLike[str] | Iterable[dict[str, Any]],
    format: str | Adapter = "auto",
    max_tests: int | None = None,
    min_tests: int | None = None,
    tests: TestSet = "plus",
    stdio: dict[str, Any] | None = None,
) -> LoadedProblems:
    """Load problems from a JSONL / JSONL.gz file or an iterable of dict rows.

    `format` is a registered name, an Adapter instance, or "auto" (detect per row).
    `max_tests` keeps the first k tests of each problem (the paper uses 100); `min_tests` drops
    problems with fewer tests than that before truncation, listing them in `skipped` (the paper
    uses 20). The first row with a given task_id wins; later ones become RowErrors.
    `tests`: for datasets with base and plus tests (HumanEval+, MBPP+), "plus" keeps both
    (evalplus's headline score) and "base" only the base tests; other datasets are unaffected.
    `stdio`: a run-wide output comparison for stdin/stdout problems (`{"mode": "lines"}`,
    `{"abs_tol": 1e-6}`; see sandbox/judge/compare.py), over the problem's own; a problem with
    a checker program keeps it.
    """
    if tests not in TEST_SETS:
        raise ValueError(f"tests must be one of {list(TEST_SETS)}, got {tests!r}")
    if max_tests is not None and (not isinstance(max_tests, int) or max_tests < 1):
        raise ValueError(f"max_tests must be a positive integer or None, got {max_tests!r}")
    if min_tests is not None and (not isinstance(min_tests, int) or min_tests < 0):
        raise ValueError(f"min_tests must be a non-negative integer or None, got {min_tests!r}")
    fixed = None if format == "auto" else get_adapter(format)
    source, stream = _iter_rows(path_or_rows)
    result = LoadedProblems(source=source)

    # Pass 1: read, and detect each row's format.
    pending: list[tuple[int, dict[str, Any] | RowError, Adapter | None]] = []
    votes: Counter[str] = Counter()
    for rowno, row in stream:
        adapter = fixed
        if isinstance(row, dict) and fixed is None:
            adapter = detect_adapter(row)
            if adapter is not None:
                votes[adapter.name] += 1
        pending.append((rowno, row, adapter))
    dominant = get_adapter(votes.most_common(1)[0][0]) if votes else None

    # Pass 2: convert.
    first_row: dict[str, tuple[int, dict[str, Any]]] = {}
    for rowno, row, adapter in pending:
        if isinstance(row, RowError):
            result.errors.append(row)
            continue
        adapter = adapter or dominant
        if adapter is None:
            result.errors.append(RowError(
                rowno, _row_task_id(None, row), None,
                f"no known dataset format matches fields {sorted(row)}; known formats: {format_list()}. "
                "Pass format=<name> or register an adapter for this format",
            ))
            continue
        problem = _convert(adapter, rowno, row)
        if isinstance(problem, RowError):
            result.errors.append(problem)
            continue
        if problem.task_id in first_row:
            seen_row, seen = first_row[problem.task_id]
            same = "an identical copy of" if seen == row else "a different problem with the same task_id as"
            result.errors.append(RowError(
                rowno, problem.task_id, "task_id",
                f"duplicate task_id: {same} row {seen_row}, which is kept; remove this row or give it a unique task_id",
                adapter.name,
            ))
            continue
        first_row[problem.task_id] = (rowno, row)
        problem = _select_tests(problem, tests)
        if stdio and problem.kind == "stdio" and not (problem.metadata.get("stdio") or {}).get("checker"):
            spec = {**(problem.metadata.get("stdio") or {}), **stdio}
            problem = dataclasses.replace(problem, metadata={**problem.metadata, "stdio": spec})
        total = len(problem.tests)
        if min_tests is not None and total < min_tests:
            result.skipped.append(Skipped(problem.task_id, rowno, f"{total} tests < min_tests={min_tests}"))
            continue
        if max_tests is not None and total > max_tests:
            problem = dataclasses.replace(
                problem, tests=problem.tests[:max_tests], metadata={**problem.metadata, "total_tests": total}
            )
        if "source_format" not in problem.metadata:
            problem = dataclasses.replace(problem, metadata={**problem.metadata, "source_format": adapter.name})
        result.problems[problem.task_id] = problem
        result.formats[adapter.name] = result.formats.get(adapter.name, 0) + 1
    return result


def _select_tests(problem: Problem, tests: str) -> Problem:
    """Base tests only, for a problem whose metadata says how many of its tests are base."""
    info = problem.metadata.get("evalplus")
    if tests == "plus" or not isinstance(info, dict) or not info.get("base"):
        return problem
    trimmed = {**info, "plus": 0}
    if isinstance(info.get("inputs"), str):  # expected outputs are computed for the base inputs alone
        trimmed["inputs"] = json.dumps(json.loads(info["inputs"])[: info["base"]])
    metadata = {**problem.metadata, "evalplus": trimmed}
    return dataclasses.replace(problem, tests=problem.tests[: info["base"]], metadata=metadata)
