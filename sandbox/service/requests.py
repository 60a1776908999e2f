"""Parsing one /grade body: the problems table, the completions rows and the grading options, or a
RequestError (answered with 400 and its message); and the row numbers of a batch's errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, get_args

from ..problem import Extraction, GradeResult, Granularity, Limits, Problem

LIMIT_FIELDS = tuple(f.name for f in dataclasses.fields(Limits))


class RequestError(ValueError):
    """A malformed request: answered with 400 and this message."""


def _load_problem_rows(rows: list[Any], where: str) -> dict[str, Problem]:
    from ..datasets import load_problems

    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RequestError(f"{where}[{i}] must be a JSON object (a Problem dict or a dataset row), got {type(row).__name__}")
    loaded = load_problems(rows)
    if loaded.errors:
        shown = "; ".join(str(e) for e in loaded.errors[:5])
        raise RequestError(f"{where}: {len(loaded.errors)} problem(s) could not be loaded: {shown}")
    return dict(loaded.problems)


def request_limits(asked: Any, maxima: Limits) -> Limits:
    """The limits a request is graded with: the server's limits (its defaults and maxima), lowered
    where the request's `limits` object asks, e.g. {"cpu_s": 0.5}; more than the maximum is refused."""
    if asked is None:
        return maxima
    if not isinstance(asked, dict):
        raise RequestError("'limits' must be an object such as {\"cpu_s\": 0.5, \"memory_mb\": 512}")
    changes: dict[str, Any] = {}
    for key, value in asked.items():
        if key not in LIMIT_FIELDS:
            raise RequestError(f"'limits.{key}' is not a limit; known: {', '.join(LIMIT_FIELDS)}")
        top = getattr(maxima, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= top:
            raise RequestError(f"'limits.{key}' must be a number in (0, {top}] (this server's maximum), got {value!r}")
        changes[key] = type(top)(value)
    return dataclasses.replace(maxima, **changes)


def capped(problem: Problem, limits: Limits) -> Problem:
    """`problem` with no limit above `limits` (a problem's own lower limits are kept)."""
    own = problem.limits
    lowered = {f: min(getattr(own, f), getattr(limits, f)) for f in LIMIT_FIELDS}
    return problem.with_limits(Limits(**lowered))


def parse_grade_request(payload: Any, preloaded: Mapping[str, Problem]) -> tuple[dict[str, Problem], list[Any], str, str]:
    """(problems table, completions rows, granularity, extract) for one /grade body, or RequestError."""
    if not isinstance(payload, dict):
        raise RequestError("the body must be a JSON object with 'completions' (and optionally 'problems', 'task_ids')")
    table = dict(preloaded)
    problems = payload.get("problems")
    inline: dict[str, Problem] = {}
    if problems is not None:
        if not isinstance(problems, list):
            raise RequestError("'problems' must be a list of Problem dicts (or dataset rows), or null")
        inline = _load_problem_rows(problems, "problems")
    completions = payload.get("completions")
    if not isinstance(completions, list):
        raise RequestError("'completions' must be a list of rows {'task_id', 'code' | 'completion'} "
                           "(or of strings with 'task_ids')")
    task_ids = payload.get("task_ids")
    rows: list[Any] = []
    if task_ids is not None:
        if not isinstance(task_ids, list) or len(task_ids) != len(completions):
            raise RequestError(f"'task_ids' must be a list as long as 'completions' ({len(completions)})")
        for i, (task_id, completion) in enumerate(zip(task_ids, completions)):
            if isinstance(completion, str):
                rows.append({"task_id": task_id, "completion": completion})
            elif isinstance(completion, dict):
                rows.append({"task_id": task_id, **completion})
            else:
                raise RequestError(f"completions[{i}] must be a string (the model's answer) or an object, "
                                   f"got {type(completion).__name__}")
    else:
        rows = list(completions)
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or row.get("problem") is None:
            continue
        problem_row = row["problem"]
        (problem,) = _load_problem_rows([problem_row], f"completions[{i}].problem").values()
        task_id = row.get("task_id")
        if task_id is not None and str(task_id) != problem.task_id:
            raise RequestError(f"completions[{i}]: task_id {task_id!r} differs from its problem's task_id {problem.task_id!r}")
        if problem.task_id in inline and inline[problem.task_id] != problem:
            raise RequestError(f"completions[{i}]: two different problems with task_id {problem.task_id!r} in one request; "
                               "give them distinct task_ids")
        inline[problem.task_id] = problem
        rows[i] = {k: v for k, v in row.items() if k != "problem"} | {"task_id": problem.task_id}
    table.update(inline)
    granularity = payload.get("granularity", "per_test")
    if granularity not in get_args(Granularity):
        raise RequestError(f"'granularity' must be 'per_test' or 'per_solution', got {granularity!r}")
    extract = payload.get("extract", "auto")
    if extract not in get_args(Extraction):
        raise RequestError(f"'extract' must be one of {list(get_args(Extraction))}, got {extract!r}")
    return table, rows, granularity, extract


def renumber(results: list[GradeResult], offset: int) -> list[GradeResult]:
    """Row numbers in error messages count from 1 within a request; a client that splits one
    list into batches sends each batch's `row_offset` so messages name the row of the whole list."""
    if not offset:
        return results
    out = []
    for i, result in enumerate(results):
        prefix = f"completions row {i + 1}"
        if result.error.startswith(prefix) and not result.error[len(prefix):len(prefix) + 1].isdigit():
            result = dataclasses.replace(result, error=f"completions row {i + 1 + offset}" + result.error[len(prefix):])
        out.append(result)
    return out


def has_inline_problems(payload: Any) -> bool:
    """Whether a /grade body carries problems of its own (a 'problems' list or a row's 'problem')."""
    if not isinstance(payload, dict):
        return False
    if payload.get("problems"):
        return True
    rows = payload.get("completions")
    return isinstance(rows, list) and any(isinstance(row, dict) and row.get("problem") is not None for row in rows)
