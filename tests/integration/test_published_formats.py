# ruff: noqa: E501 -- rows copied from the published datasets keep their long literals
"""Formats in their published schemas (rows built from the schemas: these files are not in
../shared/data): right solutions score 1.0, wrong ones what the reference harness gives."""

from __future__ import annotations

import base64
import json
import pickle
import zlib

from sandbox.api import grade
from sandbox.datasets import load_problems

from ..conftest import backend_or_fail

MBPP_FULL = {"task_id": 11, "text": "Write a python function to remove first and last occurrence of a given character from the string.",
             "code": "def remove_Occ(s,ch): \r\n    for i in range(len(s)): \r\n        if (s[i] == ch): \r\n            s = s[0 : i] + s[i + 1:] \r\n            break\r\n    for i in range(len(s) - 1,-1,-1):  \r\n        if (s[i] == ch): \r\n            s = s[0 : i] + s[i + 1:] \r\n            break\r\n    return s ",
             "test_list": ["assert remove_Occ(\"hello\",\"l\") == \"heo\"", "assert remove_Occ(\"abcda\",\"a\") == \"bcd\"",
                           "assert remove_Occ(\"PHP\",\"P\") == \"H\""],
             "test_setup_code": "", "challenge_test_list": ["assert remove_Occ(\"hellolloll\",\"l\") == \"helollol\""]}
MBPP_SANITIZED = {"source_file": "Benchmark Questions Verification V2.ipynb", "task_id": 17,
                  "prompt": "Write a function that returns the perimeter of a square given its side length as input.",
                  "code": "def square_perimeter(a):\n  perimeter=4*a\n  return perimeter",
                  "test_imports": ["import math"],
                  "test_list": ["assert square_perimeter(10)==40", "assert square_perimeter(5)==20", "assert square_perimeter(4)==16"]}


def _compressed(cases):
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(cases)))).decode()


LCB_STDIN = {"question_title": "A+B", "question_content": "Print a+b.", "platform": "atcoder", "question_id": "abc000_a",
             "contest_id": "abc000", "contest_date": "2024-01-01T00:00:00", "starter_code": "", "difficulty": "easy",
             "public_test_cases": json.dumps([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]),
             "private_test_cases": _compressed([{"input": "5 5\n", "output": "10\n", "testtype": "stdin"}]),
             "metadata": "{}"}
LCB_FUNCTIONAL = {"question_title": "Two sum count", "question_content": "Return nums[0] + k.", "platform": "leetcode",
                  "question_id": "9999", "contest_id": "weekly-contest-1", "contest_date": "2024-01-01T00:00:00",
                  "starter_code": "class Solution:\n    def addK(self, nums: List[int], k: int) -> int:\n        ",
                  "difficulty": "easy",
                  "public_test_cases": json.dumps([{"input": "[1, 2]\n3", "output": "4", "testtype": "functional"}]),
                  "private_test_cases": _compressed([{"input": "[7]\n0", "output": "7", "testtype": "functional"}]),
                  "metadata": json.dumps({"func_name": "addK"})}
CODECONTESTS = {"name": "1_A. Sum", "description": "Print a+b.", "public_tests": {"input": ["1 2\n"], "output": ["3\n"]},
                "private_tests": {"input": ["2 2\n"], "output": ["4\n"]},
                "generated_tests": {"input": ["0 0\n", "10 -3\n"], "output": ["0\n", "7\n"]},
                "solutions": {"language": [2, 3], "solution": ["int main(){}", "a, b = map(int, input().split())\nprint(a + b)\n"]}}
TACO = {"question": "Print a+b.", "solutions": json.dumps(["a,b=map(int,input().split())\nprint(a+b)\n"]), "starter_code": "",
        "input_output": json.dumps({"inputs": ["1 2\n", "3 4\n"], "outputs": ["3\n", "7\n"]}), "difficulty": "EASY",
        "name": "taco-sum", "source": "codeforces", "url": "https://example.org/taco-sum"}


def test_each_format_loads_and_grades() -> None:
    backend = backend_or_fail("bubblewrap")
    loaded = load_problems([MBPP_FULL, MBPP_SANITIZED, LCB_STDIN, LCB_FUNCTIONAL, CODECONTESTS, TACO])
    assert not loaded.errors, loaded.errors
    assert loaded.formats == {"mbpp-original": 2, "livecodebench": 2, "codecontests": 1, "stdio": 1}
    assert len(loaded["abc000_a"].tests) == 2 and len(loaded["9999"].tests) == 2 and len(loaded["1_A. Sum"].tests) == 4
    assert "Your code should pass these tests:" in loaded["11"].prompt
    rows = [
        {"task_id": "11", "code": MBPP_FULL["code"]},
        {"task_id": "11", "code": "def remove_Occ(s, ch):\n    return s.replace(ch, '')\n"},  # different code, same answers
        {"task_id": "17", "code": MBPP_SANITIZED["code"]},
        {"task_id": "17", "code": "def square_perimeter(a):\n    return a * a\n"},
        {"task_id": "abc000_a", "code": "a, b = map(int, input().split())\nprint(a + b)\n"},
        {"task_id": "abc000_a", "code": "a, b = map(int, input().split())\nprint(a * b)\n"},
        {"task_id": "9999", "code": "class Solution:\n    def addK(self, nums, k):\n        return nums[0] + k\n"},
        {"task_id": "1_A. Sum", "code": CODECONTESTS["solutions"]["solution"][1]},
        {"task_id": "1_A. Sum", "code": "print(3)\n"},
        {"task_id": "taco-sum", "code": "a,b=map(int,input().split())\nprint(a+b)\n"},
    ]
    rates = [r.pass_rate for r in grade(loaded, rows, backend=backend, workers=2)]
    # The reference harnesses: MBPP runs the asserts (replace() removes every 'l': 'heo' passes,
    # 'bcd' passes, 'H' passes -- all three, as in the original harness); a * a is right only for 4.
    assert rates == [1.0, 1.0, 1.0, 1 / 3, 1.0, 0.0, 1.0, 1.0, 0.25, 1.0]
