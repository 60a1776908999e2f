"""HumanEval (openai/human-eval): `task_id, prompt, entry_point, canonical_solution, test`.

The prompt (signature and docstring, plus helpers such as `poly` in HumanEval/32) is both what
the model sees and the preamble: the model usually rewrites the whole function, and helpers the
tests rely on must exist. `canonical_solution` is a function-body continuation, so the runnable
canonical solution is `prompt + canonical_solution`.
"""

from __future__ import annotations

from typing import Any

from sandbox.datasets import Adapter, check_python, function_tests, register, require
from sandbox.problem import Problem


class HumanEvalAdapter(Adapter):
    name = "humaneval"
    description = "HumanEval: 'task_id', 'prompt', 'entry_point', 'canonical_solution', 'test'"

    def detect(self, row: dict[str, Any]) -> bool:
        return {"prompt", "entry_point", "canonical_solution", "test"} <= row.keys() and "assertion" not in row

    def to_problem(self, row: dict[str, Any]) -> Problem:
        task_id = str(require(row, "task_id", (str, int)))
        prompt = require(row, "prompt")
        entry_point = require(row, "entry_point").strip()
        check_python(prompt, "prompt")
        check_python(entry_point, "entry_point", mode="eval")
        setup, tests, candidate = function_tests(require(row, "test"), "test")
        metadata: dict[str, Any] = {}
        if isinstance(row.get("canonical_solution"), str):
            metadata["canonical_solution"] = prompt + row["canonical_solution"]
        return Problem(
            task_id=task_id,
            prompt=prompt,
            tests=tests,
            preamble=prompt,
            entry_point=entry_point,
            test_setup=setup,
            candidate=candidate,
            metadata=metadata,
        )


register(HumanEvalAdapter())
