"""Our own format: one `Problem.to_dict()` per row, so prepared datasets round-trip.

Detected by a `tests` field that is a list of objects with a `kind` (no public dataset has one).
"""

from __future__ import annotations

from typing import Any

from sandbox.datasets import Adapter, FieldError, register, require
from sandbox.problem import Problem

_KINDS = ("function", "stdio")


class NativeAdapter(Adapter):
    name = "native"
    description = "Problem.to_dict() rows: 'task_id', 'prompt', 'tests' as a list of {'kind': ...}"

    def detect(self, row: dict[str, Any]) -> bool:
        tests = row.get("tests")
        return isinstance(tests, list) and bool(tests) and all(isinstance(t, dict) and "kind" in t for t in tests)

    def to_problem(self, row: dict[str, Any]) -> Problem:
        require(row, "task_id", (str, int))
        tests = require(row, "tests", list)
        for i, test in enumerate(tests):
            if not isinstance(test, dict) or test.get("kind") not in _KINDS:
                raise FieldError("tests", f"tests[{i}] must be an object with 'kind' one of {list(_KINDS)}; fix the test")
            if test["kind"] == "function" and not isinstance(test.get("source"), str):
                raise FieldError("tests", f"tests[{i}] is a function test without a 'source' string; add the test code")
            if test["kind"] == "stdio" and not all(isinstance(test.get(k, ""), str) for k in ("stdin", "stdout")):
                raise FieldError("tests", f"tests[{i}] is a stdio test whose 'stdin'/'stdout' are not strings; fix them")
        try:
            limits_problem = Problem.from_dict(row)
        except ValueError as exc:  # unknown limits
            raise FieldError("limits", f"{exc}; fix the row's 'limits'") from None
        except TypeError as exc:
            raise FieldError("limits", f"bad limits ({exc}); give numbers for the known limits") from None
        return limits_problem


register(NativeAdapter())
