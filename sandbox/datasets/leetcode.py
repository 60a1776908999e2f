"""LeetCodeDataset (newfacade/LeetCodeDataset), the QRPO paper's LeetCode setup.

Two schemas:
- v0.3.x, flat: `task_id, question_id, difficulty, tags, problem_description, starter_code,
  estimated_date, prompt, completion, entry_point, test, input_output, query, response`.
- v0.1/v0.2, nested: `task_id, prompt, completion, entry_point, test, query, response,
  input_output, meta{question_id, difficulty, question_title, lang_code}`.

`prompt` is the preamble (imports, `inf`, ListNode/TreeNode helpers), `query` the model-facing
prompt, `completion` the canonical solution, `test` a `def check(candidate): assert ...`. When
`query` is missing the prompt is rebuilt from the description and starter code with the v0.3
template (which reproduces all 228 v0.3.1-test queries exactly).
"""

from __future__ import annotations

from typing import Any

from sandbox.datasets import Adapter, FieldError, check_python, function_tests, register, require
from sandbox.problem import Problem

QUERY_TEMPLATE = (
    "You are an expert Python programmer. You will be given a question (problem specification) and will "
    "generate a correct Python program that matches the specification and passes all tests.\n\n"
    "### Question:\n{description}\n\n"
    "### Format: You will use the following starter code to write the solution to the problem and enclose "
    "your code within delimiters.\n```python\n{starter_code}\n```\n\n"
    "### Answer: (use the provided format with backticks)\n"
)


def build_query(description: str, starter_code: str) -> str:
    """The v0.3 model-facing prompt for a problem statement and its starter code."""
    return QUERY_TEMPLATE.format(description=description, starter_code=starter_code)


class LeetCodeAdapter(Adapter):
    name = "leetcode"
    description = (
        "LeetCodeDataset v0.1-v0.3: 'task_id', 'prompt' (preamble), 'entry_point', 'test', 'completion', 'query' or 'meta'"
    )

    def detect(self, row: dict[str, Any]) -> bool:
        return (
            {"entry_point", "test", "prompt"} <= row.keys()
            and "canonical_solution" not in row  # HumanEval
            and "assertion" not in row  # MBPP+
            and not isinstance(row.get("tests"), list)  # native
        )

    def to_problem(self, row: dict[str, Any]) -> Problem:
        task_id = str(require(row, "task_id", (str, int)))
        preamble = require(row, "prompt", str, nonempty=False)
        entry_point = require(row, "entry_point").strip()
        test = require(row, "test")
        check_python(preamble, "prompt")
        check_python(entry_point, "entry_point", mode="eval")
        setup, tests, candidate = function_tests(test, "test")

        meta: dict[str, Any] = row["meta"] if isinstance(row.get("meta"), dict) else {}

        def pick(*names: str) -> Any:
            for name in names:
                if row.get(name) not in (None, ""):
                    return row[name]
                if meta.get(name) not in (None, ""):
                    return meta[name]
            return None

        starter_code = pick("starter_code", "lang_code")
        query = row.get("query")
        if not (isinstance(query, str) and query.strip()):
            description = pick("problem_description", "question_title")
            if not description or not starter_code:
                raise FieldError("query", "no model-facing prompt: add 'query', or 'problem_description' and 'starter_code'")
            query = build_query(description, starter_code)

        metadata: dict[str, Any] = {}
        for key, names in {
            "question_id": ("question_id",),
            "difficulty": ("difficulty",),
            "tags": ("tags",),
            "estimated_date": ("estimated_date",),
        }.items():
            value = pick(*names)
            if value is not None:
                metadata[key] = value
        if starter_code:
            metadata["starter_code"] = starter_code
        if isinstance(row.get("completion"), str) and row["completion"].strip():
            metadata["canonical_solution"] = row["completion"]
        if isinstance(row.get("response"), str):  # the dataset's LLM answer: the QRPO paper's length filter counts it
            metadata["response"] = row["response"]
        return Problem(
            task_id=task_id,
            prompt=query,
            tests=tests,
            preamble=preamble,
            entry_point=entry_point,
            test_setup=setup,
            candidate=candidate,
            metadata=metadata,
        )


register(LeetCodeAdapter())
