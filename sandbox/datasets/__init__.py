"""Dataset adapters: turn rows of a public dataset into `Problem`s.

A new format is one small module: subclass `Adapter`, give it a `name`, a `detect(row)` that
recognises the format from the row's fields and a `to_problem(row)`, and `register` an instance.

    from sandbox.datasets import Adapter, FieldError, register

    class MyFormat(Adapter):
        name = "myformat"
        description = "rows with 'uid', 'statement' and 'asserts'"

        def detect(self, row):
            return {"uid", "statement", "asserts"} <= row.keys()

        def to_problem(self, row):
            ...  # raise FieldError(field, message naming the fix) for a bad row

    register(MyFormat())

`load_problems` reads a JSONL (or JSONL.gz) file, or any iterable of dict rows, and never stops
at a bad row: invalid JSON, invalid UTF-8, a missing field, test code that does not parse or a
duplicate task_id each become a `RowError` (row number, task_id if known, field, a message that
names the fix) and the remaining rows still load.

Format detection is per row, in registration order (native first, then humanevalplus,
mbppplus, leetcode, humaneval, mbpp, mbpp-original, livecodebench, codecontests, stdio); the built-in
detectors are also mutually exclusive on the supported datasets.
A row that no adapter recognises is converted by the file's dominant format, so a LeetCode row
that lost its `test` field is reported as "missing field 'test'" rather than "unknown format";
only when no row of the input is recognised does every row get an "unknown format" error.
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

from sandbox.problem import Problem, Test

__all__ = [
    "Adapter",
    "FieldError",
    "LoadedProblems",
    "RowError",
    "TEST_SETS",
    "TestSet",
    "Skipped",
    "UnknownFormatError",
    "check_python",
    "detect_format",
    "function_tests",
    "get_adapter",
    "known_formats",
    "load_adapter",
    "load_entry_points",
    "load_problems",
    "read_jsonl",
    "register",
    "require",
]


TestSet = Literal["base", "plus"]
TEST_SETS: tuple[str, ...] = ("base", "plus")


class FieldError(ValueError):
    """Raised by an adapter for a bad row: `field` is the offending field, the message names the fix."""

    def __init__(self, field: str | None, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


class UnknownFormatError(ValueError):
    """No registered adapter has this name, or none recognises a row."""


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


class Adapter:
    """Converts the rows of one dataset format into Problems.

    Subclasses set `name` (what users pass as `format=`) and `description` (shown when detection
    fails), and implement `detect` and `to_problem`. `to_problem` raises `FieldError` for a bad
    row; KeyError (a missing field), SyntaxError (code that does not parse) and other ValueErrors
    are turned into RowErrors by the loader as well.
    """

    name: str = ""
    description: str = ""

    def detect(self, row: dict[str, Any]) -> bool:
        raise NotImplementedError

    def to_problem(self, row: dict[str, Any]) -> Problem:
        raise NotImplementedError

    def task_id(self, row: dict[str, Any]) -> str | None:
        """The row's task_id, if it can be told without converting the row (for error messages)."""
        value = row.get("task_id")
        return None if value is None else str(value)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


_REGISTRY: dict[str, Adapter] = {}


def register(adapter: Adapter | type[Adapter], *, first: bool = False, replace: bool = False) -> Adapter | type[Adapter]:
    """Add an adapter (an instance, or a class that is instantiated without arguments).

    Detection tries adapters in registration order; `first=True` puts this one ahead of the
    built-ins. Returns its argument, so it also works as a class decorator."""
    instance = adapter() if isinstance(adapter, type) else adapter
    if not instance.name:
        raise ValueError(f"{instance!r} has no name; set the class attribute `name`")
    if instance.name in _REGISTRY and not replace:
        raise ValueError(f"a dataset format named {instance.name!r} is already registered; pass replace=True to override it")
    _REGISTRY.pop(instance.name, None)
    if first:
        items = list(_REGISTRY.items())
        _REGISTRY.clear()
        _REGISTRY[instance.name] = instance
        _REGISTRY.update(items)
    else:
        _REGISTRY[instance.name] = instance
    return adapter


ENTRY_POINT_GROUP = "qrpo.datasets"
_entry_points_loaded = False


def load_adapter(spec: str) -> Adapter:
    """Import and register a user's adapter given as "module:Name" (a class or an instance).

    The module is imported by name (it must be on sys.path, e.g. an installed package or the
    working directory); its adapter replaces a registered one of the same name."""
    import importlib

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UnknownFormatError(f"--adapter {spec!r}: give it as module:Name, e.g. my_datasets:MyFormat")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UnknownFormatError(f"--adapter {spec!r}: cannot load it ({type(exc).__name__}: {exc}); "
                                 "check the module is importable (installed, or on PYTHONPATH) and defines that name") from None
    instance = obj() if isinstance(obj, type) else obj
    if not isinstance(instance, Adapter):
        raise UnknownFormatError(f"--adapter {spec!r} is a {type(instance).__name__}, not a sandbox.datasets.Adapter subclass")
    register(instance, replace=True)
    return instance


def load_entry_points() -> list[str]:
    """Register the adapters that installed packages declare in the "qrpo.datasets" entry-point
    group (`[project.entry-points."qrpo.datasets"] myformat = "my_pkg.formats:MyFormat"`);
    once per process. Returns the names registered."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return []
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    names = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = point.load()
            instance = obj() if isinstance(obj, type) else obj
            if isinstance(instance, Adapter) and instance.name not in _REGISTRY:
                register(instance)
                names.append(instance.name)
        except Exception:  # noqa: BLE001, S112 -- a broken third-party plugin must not break loading
            continue
    return names


def known_formats() -> list[str]:
    load_entry_points()
    return list(_REGISTRY)


def _format_list() -> str:
    return "; ".join(f"{a.name} ({a.description})" if a.description else a.name for a in _REGISTRY.values())


def get_adapter(name: str | Adapter) -> Adapter:
    """The adapter registered under `name` (an Adapter instance is returned as is)."""
    if isinstance(name, Adapter):
        return name
    if name not in _REGISTRY:
        load_entry_points()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownFormatError(f"unknown dataset format {name!r}; known formats: {', '.join(_REGISTRY)} (or 'auto')") from None


def _detect(row: dict[str, Any]) -> Adapter | None:
    for adapter in _REGISTRY.values():
        try:
            if adapter.detect(row):
                return adapter
        except Exception:  # noqa: BLE001, S112 -- a detector must never sink a load; a crash means "not mine"
            continue
    return None


def detect_format(row: dict[str, Any]) -> str:
    """The name of the first registered format that recognises `row` from its fields.

    Raises UnknownFormatError listing the known formats and the row's fields when none does."""
    if not isinstance(row, dict):
        raise UnknownFormatError(f"a dataset row must be a JSON object, got {type(row).__name__}")
    adapter = _detect(row)
    if adapter is None:
        raise UnknownFormatError(
            f"no known dataset format matches a row with fields {sorted(row)}; known formats: {_format_list()}. "
            "Pass format=<name> to force one, or register an adapter for this format (see sandbox.datasets)"
        )
    return adapter.name


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
            adapter = _detect(row)
            if adapter is not None:
                votes[adapter.name] += 1
        pending.append((rowno, row, adapter))
    dominant = _REGISTRY.get(votes.most_common(1)[0][0]) if votes else None

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
                f"no known dataset format matches fields {sorted(row)}; known formats: {_format_list()}. "
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


# --------------------------------------------------------------------------------------------
# Helpers shared by the adapters


def require(row: dict[str, Any], name: str, kind: type | tuple[type, ...] = str, *, nonempty: bool = True) -> Any:
    """row[name], checked: present, of type `kind`, and (for strings) not blank."""
    if name not in row or row[name] is None:
        raise FieldError(name, f"missing field {name!r}; add it to the row or drop the row")
    value = row[name]
    if not isinstance(value, kind):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise FieldError(name, f"field {name!r} must be a {want}, got {type(value).__name__}; fix the row")
    if nonempty and isinstance(value, str) and not value.strip():
        raise FieldError(name, f"field {name!r} is empty; fill it in or drop the row")
    return value


def check_python(source: str, field_name: str, mode: str = "exec") -> None:
    """Raise FieldError when `source` (dataset code in `field_name`) does not parse."""
    import ast

    try:
        ast.parse(source, mode=mode)
    except SyntaxError as exc:
        raise FieldError(
            field_name, f"{field_name!r} does not parse as Python ({exc.msg}, line {exc.lineno}); fix the code"
        ) from None


def function_tests(source: str, field_name: str, candidate: str = "candidate") -> tuple[str, tuple[Test, ...], str]:
    """split_check(source) as (test_setup, tests, candidate), with errors as FieldErrors."""
    from sandbox.judge.checks import split_check

    try:
        split = split_check(source, candidate=candidate)
    except SyntaxError as exc:
        raise FieldError(
            field_name, f"test code in {field_name!r} does not parse ({exc.msg}, line {exc.lineno}); fix the test code"
        ) from None
    except ValueError as exc:
        raise FieldError(
            field_name, f"{exc}; the {field_name!r} field needs at least one assert that calls {candidate!r}"
        ) from None
    return split.setup, tuple(Test(kind="function", source=t) for t in split.tests), split.candidate


# Built-in adapters register themselves on import. Detection order is fixed here, not by the
# order of the imports: native first, so prepared datasets are never mistaken for their source.
from sandbox.datasets import evalplus, humaneval, leetcode, mbpp, native, published  # noqa: E402, F401
from sandbox.datasets import stdio as _stdio_adapter  # noqa: E402, F401  (aliased: load_problems has a `stdio` argument)

BUILTIN_ORDER = ("native", "humanevalplus", "mbppplus", "leetcode", "humaneval", "mbpp", "mbpp-original", "livecodebench",
                 "codecontests", "stdio")
for _name in BUILTIN_ORDER:
    _REGISTRY[_name] = _REGISTRY.pop(_name)
del _name
