"""MBPP+ (evalplus/mbppplus): `task_id, prompt, entry_point, canonical_solution, base_input,
atol, plus_input, contract, assertion`.

Tests come from `assertion`: module-level asserts that call the function by its own name, so the
problem's `candidate` is the entry point's name. These are the base tests (3-7 per problem);
the `plus_input`s carry no expected outputs (EvalPlus computes them by running the canonical
solution), so they are not turned into tests here. `prompt` (a docstring with the task and one
example) is what the model sees; there is no preamble.
"""

from __future__ import annotations

from typing import Any

from sandbox.datasets import Adapter, FieldError, function_tests, register, require
from sandbox.problem import Problem


class MbppPlusAdapter(Adapter):
    name = "mbpp"
    description = "MBPP+: 'task_id', 'prompt', 'entry_point', 'assertion' (module-level asserts), 'canonical_solution'"

    def detect(self, row: dict[str, Any]) -> bool:
        return {"assertion", "entry_point"} <= row.keys()

    def to_problem(self, row: dict[str, Any]) -> Problem:
        task_id = str(require(row, "task_id", (str, int)))
        prompt = require(row, "prompt")
        entry_point = require(row, "entry_point").strip()
        if not entry_point.isidentifier():
            raise FieldError("entry_point", f"entry_point {entry_point!r} must be the function's name; fix it")
        setup, tests, candidate = function_tests(require(row, "assertion"), "assertion", candidate=entry_point)
        metadata: dict[str, Any] = {}
        if isinstance(row.get("canonical_solution"), str):
            metadata["canonical_solution"] = row["canonical_solution"]
        if row.get("atol") is not None:
            metadata["atol"] = row["atol"]
        return Problem(
            task_id=task_id,
            prompt=prompt,
            tests=tests,
            preamble="",
            entry_point=entry_point,
            test_setup=setup,
            candidate=candidate,
            metadata=metadata,
        )


register(MbppPlusAdapter())
