"""The paper's prompt rewriting, chat format and graded preamble."""

from __future__ import annotations

import dataclasses
import json

from qrpo.pipeline.prompts import PRE_CODE, chat_prompt, graded_preamble, paper_query, prompt_text, solution_completion
from sandbox import demo
from sandbox.datasets import load_problems
from sandbox.problem import Problem, Test

QUERY = (
    "You are an expert Python programmer. You will be given a question (problem specification) and will generate a correct "
    "Python program that matches the specification and passes all tests.\n\n### Question:\nAdd two numbers.\n\n"
    "### Format: You will use the following starter code to write the solution to the problem and enclose your code within "
    "delimiters.\n```python\nclass Solution:\n    def add(self, a: int, b: int) -> int:\n        \n```\n\n"
    "### Answer: (use the provided format with backticks)\n"
)


def test_paper_rewriting_adds_the_pre_code_block_the_import_note_and_the_import_slot():
    expected = (
        QUERY.split("### Format:")[0]
        + "### Format:\nYour code will run after the following definitions and imports, which may or may not be needed.\n"
        + f"```python\n{PRE_CODE}```\n\n"
        + "You will use the following starter code to write the solution to the problem and enclose your code within "
        + "delimiters.\n"
        + "You have to add the missing imports to the starter code to run correctly.\n"
        + "```python\n# Additional imports.\n\n# End of additional imports.\n\n"
        + "class Solution:\n    def add(self, a: int, b: int) -> int:\n        \n```\n\n"
        + "### Answer: (use the provided format with backticks)\n"
    )
    assert paper_query(QUERY) == expected


def demo_problem() -> Problem:
    return next(iter(load_problems(demo.problems_path())))


def test_chat_prompt_is_one_user_turn_without_system_prompt():
    problem = demo_problem()
    messages = chat_prompt(problem, "paper")
    assert [m["role"] for m in messages] == ["user"]
    assert "Your code will run after the following definitions" in messages[0]["content"]
    assert chat_prompt(problem, "plain")[0]["content"] == problem.prompt


def test_graded_preamble_keeps_the_promise_of_the_prompt():
    problem = demo_problem()
    assert graded_preamble(problem, "paper") == PRE_CODE  # the reference code: pre_code + the extracted code
    preamble = graded_preamble(problem, "paper", "pre_code+dataset")
    assert preamble.startswith(PRE_CODE) and preamble.endswith(problem.preamble)  # the dataset's definitions win
    assert graded_preamble(problem, "plain") == problem.preamble
    other = dataclasses.replace(problem, metadata={"source_format": "humaneval"})
    assert graded_preamble(other, "paper") == problem.preamble


def test_other_formats_get_an_instruction_for_a_code_block():
    problem = Problem(task_id="HumanEval/0", prompt="def add(a, b):\n    \"\"\"Add.\"\"\"\n",
                      tests=(Test("function", "assert candidate(1, 2) == 3"),), metadata={"source_format": "humaneval"})
    text = prompt_text(problem, "paper")
    assert "```python\ndef add(a, b):" in text and "```python code block" in text


def test_solution_completion_is_a_python_block_or_none():
    problem = demo_problem()
    answer = solution_completion(problem)
    assert answer is not None and answer.startswith("```python\n") and answer.endswith("\n```")
    assert json.dumps(answer)  # plain text
    assert solution_completion(dataclasses.replace(problem, metadata={})) is None
