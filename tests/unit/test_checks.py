"""Splitting dataset test code into tests, and classifying them (sandbox.judge.checks)."""

from __future__ import annotations

import ast
import gzip
import json
import textwrap

import pytest

from sandbox.judge.checks import calls_only, split_check

from ..conftest import shared_data_dir

DATA = shared_data_dir()
LC3 = DATA / "leetcode" / "LeetCodeDataset-v0.3.1-test.jsonl.gz"


def src(text: str) -> str:
    return textwrap.dedent(text).strip() + "\n"


def run_tests(split, candidate_impl) -> list[str]:
    """Execute setup then each test in one namespace, as the judge does; report per test."""
    namespace: dict = {}
    exec(split.setup, namespace)
    namespace[split.candidate] = candidate_impl
    outcomes = []
    for test in split.tests:
        try:
            exec(test, namespace)
            outcomes.append("passed")
        except AssertionError:
            outcomes.append("failed")
    return outcomes


# --------------------------------------------------------------------------------------------
# LeetCode style

LEETCODE = src(
    """
    def check(candidate):
        assert candidate(nums = [2, 7, 11, 15], target = 9) == [0, 1]
        assert candidate(nums = [3, 2, 4], target = 6) == [1, 2]
        assert candidate(nums = [3, 3], target = 6) == [0, 1]
    """
)


def test_leetcode_one_test_per_assert():
    split = split_check(LEETCODE)
    assert split.candidate == "candidate"
    assert split.setup == ""
    assert len(split.tests) == 3
    assert [ast.unparse(ast.parse(t)) for t in split.tests] == [
        "assert candidate(nums=[2, 7, 11, 15], target=9) == [0, 1]",
        "assert candidate(nums=[3, 2, 4], target=6) == [1, 2]",
        "assert candidate(nums=[3, 3], target=6) == [0, 1]",
    ]


def test_leetcode_tests_run_against_a_candidate():
    split = split_check(LEETCODE)

    def two_sum(nums, target):
        seen = {}
        for i, x in enumerate(nums):
            if target - x in seen:
                return [seen[target - x], i]
            seen[x] = i

    assert run_tests(split, two_sum) == ["passed"] * 3
    assert run_tests(split, lambda nums, target: [0, 1]) == ["passed", "failed", "passed"]


def test_leetcode_with_helpers_outside_check_go_to_setup():
    code = src(
        """
        from typing import List
        def list_node(values):
            return values
        def check(candidate):
            assert candidate(head = list_node([1, 2])) == list_node([2, 1])
            assert candidate(head = list_node([])) == list_node([])
        """
    )
    split = split_check(code)
    assert "def list_node" in split.setup and "from typing import List" in split.setup
    assert "def check" not in split.setup
    assert len(split.tests) == 2
    assert all("def list_node" not in t for t in split.tests)
    assert run_tests(split, lambda head: head[::-1]) == ["passed", "passed"]


def test_leetcode_last_check_wins():
    code = src(
        """
        def check(candidate):
            assert candidate(1) == 1
        def check(candidate):
            assert candidate(2) == 2
            assert candidate(3) == 3
        """
    )
    split = split_check(code)
    assert len(split.tests) == 2
    assert "candidate(1)" not in "\n".join(split.tests)


# --------------------------------------------------------------------------------------------
# HumanEval style

HUMANEVAL = src(
    """
    METADATA = {
        'author': 'jt',
        'dataset': 'test'
    }


    def check(candidate):
        import math
        import random
        rng = random.Random(42)
        assert True, "This prints if this assert fails 1 (good for debugging!)"
        assert candidate(1) == 2
        xs = [1, 2, 3]
        for x in xs:
            assert candidate(x) == x + 1
        assert math.isclose(candidate(0.5), 1.5)
        for _ in range(3):
            y = rng.randint(0, 10)
        assert candidate(y) == y + 1
    """
)


def test_humaneval_grouping():
    split = split_check(HUMANEVAL)
    assert split.candidate == "candidate"
    assert len(split.tests) == 4
    first, loop, isclose, after_loop = split.tests
    # setup statements and `assert True` (no candidate) belong to the first test that follows
    assert "import math" in first and "rng = random.Random(42)" in first and "assert True" in first
    assert first.rstrip().endswith("assert candidate(1) == 2")
    # a loop whose body asserts on the candidate is one test, with the setup before it
    assert "xs = [1, 2, 3]" in loop and loop.rstrip().splitlines()[-2].startswith("for x in xs")
    assert "candidate(x)" in loop
    assert "math.isclose" in isclose
    # a loop with no assert is setup for the assert after it
    assert "for _ in range(3)" in after_loop and "assert candidate(y)" in after_loop


def test_humaneval_metadata_goes_to_setup():
    split = split_check(HUMANEVAL)
    namespace: dict = {}
    exec(split.setup, namespace)
    assert namespace["METADATA"] == {"author": "jt", "dataset": "test"}
    assert "check" not in namespace
    assert all("METADATA" not in t for t in split.tests)


def test_humaneval_tests_run_in_one_namespace():
    split = split_check(HUMANEVAL)
    assert run_tests(split, lambda x: x + 1) == ["passed"] * 4
    assert run_tests(split, lambda x: x + 1 if x != 2 else 0) == ["passed", "failed", "passed", "passed"]


def test_assert_true_alone_is_not_a_test():
    code = src(
        """
        def check(candidate):
            assert True
            assert True, "debug"
            assert candidate('a') == 'A'
        """
    )
    split = split_check(code)
    assert len(split.tests) == 1
    assert "assert True" in split.tests[0]


def test_only_assert_true_is_no_test():
    with pytest.raises(ValueError):
        split_check("def check(candidate):\n    assert True\n    assert 1 == 1\n")


def test_candidate_renamed_via_the_parameter_of_check():
    code = src(
        """
        def check(f):
            assert f(2) == 4
            assert candidate(3) == 9
            assert f(3) == 9
        """
    )
    split = split_check(code)
    assert split.candidate == "f"
    # the line that mentions `candidate` but not `f` is setup for the next test, not a test
    assert len(split.tests) == 2
    assert "candidate(3)" in split.tests[1]
    split_named = split_check(code, candidate="ignored")
    assert split_named.candidate == "f"


def test_check_without_parameters_keeps_the_given_name():
    split = split_check("def check():\n    assert solve(1) == 1\n", candidate="solve")
    assert split.candidate == "solve"
    assert len(split.tests) == 1


# --------------------------------------------------------------------------------------------
# MBPP style: module-level asserts naming the entry point

MBPP = src(
    """
    import math
    from collections import Counter
    def helper(x):
        return x * 2
    class Box:
        pass
    assert similar_elements((3, 4, 5, 6), (5, 7, 4, 10)) == (4, 5)
    assert similar_elements((1, 2, 3, 4), (5, 4, 3, 7)) == (3, 4)
    pair = ((11, 12, 14, 13), (17, 15, 14, 13))
    assert similar_elements(*pair) == (13, 14)
    """
)


def test_mbpp_module_asserts():
    split = split_check(MBPP, candidate="similar_elements")
    assert split.candidate == "similar_elements"
    assert len(split.tests) == 3
    assert "pair = " in split.tests[2] and "similar_elements(*pair)" in split.tests[2]
    for name in ("import math", "from collections import Counter", "def helper", "class Box"):
        assert name in split.setup
    assert "similar_elements" not in split.setup
    assert all("def helper" not in t and "import math" not in t for t in split.tests)

    def similar(a, b):
        return tuple(sorted(set(a) & set(b)))

    assert run_tests(split, similar) == ["passed"] * 3


def test_mbpp_with_the_wrong_entry_point_finds_no_test():
    with pytest.raises(ValueError):
        split_check(MBPP, candidate="other_function")


def test_mbpp_default_name_finds_no_test():
    with pytest.raises(ValueError):
        split_check(MBPP)


# --------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    "code",
    ["", "\n\n", "# only a comment\n", "x = 1\n", "def check(candidate):\n    pass\n",
     "def check(candidate):\n    x = candidate(1)\n", "def check(candidate):\n    assert other(1) == 1\n",
     "assert 1 == 1\n", "def check(candidate):\n    print(candidate(1) == 1)\n"],
    ids=["empty", "blank", "comment", "assignment", "pass", "call without assert", "other function", "module assert", "print"],
)
def test_no_test_found_is_a_value_error(code):
    with pytest.raises(ValueError):
        split_check(code)


@pytest.mark.parametrize(
    "code",
    [
        "def check(candidate):\n    assert candidate(1) ==\n",
        "def check(candidate)\n    assert candidate(1) == 1\n",
        "assert candidate(1 == 1\n",
        "def check(candidate):\nassert candidate(1) == 1\n",
        "assert candidate(1) == 1\n  assert candidate(2) == 2\n",
    ],
)
def test_broken_code_is_a_syntax_error(code):
    with pytest.raises(SyntaxError):
        split_check(code)


# --------------------------------------------------------------------------------------------
# calls_only


@pytest.mark.parametrize(
    "source",
    [
        "assert candidate(1) == 2",
        "assert candidate(nums=[1, 2], k=3) == [2]",
        "assert candidate(*args, **kwargs) == 1",
        "x = [1, 2]\nassert candidate(x) == candidate(x[::-1])",
        "for i in range(3):\n    assert candidate(i) == i",
        "assert abs(candidate(0.5) - 1.5) < 1e-6",
        "assert candidate(1).val == 1",
        "assert candidate(1)[0] == 1 and len(candidate(2)) == 3",
        "assert is_same_list(candidate(head=list_node([1])), list_node([1]))",
        "import math\nassert math.isclose(candidate(1), 1)",
        "assert candidate_helper(candidate(1)) == 1",
        "assert candidate(1) == 1, 'message'",
        "assert set(candidate([3, 1])) == {1, 3}",
        "assert candidate('candidate') == 'candidate'",
        "assert candidate(1, key='x') == obj.candidate",
    ],
)
def test_calls_only_true(source):
    assert calls_only(source, "candidate") is True


@pytest.mark.parametrize(
    "source",
    [
        "assert list(map(candidate, [1, 2])) == [2, 3]",
        "f = candidate\nassert f(1) == 2",
        "assert candidate.__name__ == 'f'",
        "assert candidate.__code__.co_argcount == 1",
        "assert candidate(candidate(1)) == 3",
        "assert candidate(1, key=candidate) == 1",
        "assert candidate([candidate(1)]) == 1",
        "assert candidate(*[candidate]) == 1",
        "assert candidate(x=lambda: candidate(1)) == 1",
        "assert callable(candidate)",
        "assert candidate is not None",
        "assert (lambda f: f(1))(candidate) == 2",
        "def f():\n    return candidate(1)\nassert f() == 2",
        "global candidate\nassert candidate(1) == 2",
        "def g():\n    nonlocal_value = 1\n    yield candidate(1)\nassert list(g()) == [2]",
        "candidate = lambda x: x\nassert candidate(1) == 1",
        "del candidate",
        "assert (candidate := 5) == 5",
        "assert candidate[0](1) == 1",
    ],
)
def test_calls_only_false(source):
    assert calls_only(source, "candidate") is False


def test_calls_only_respects_the_candidate_name():
    assert calls_only("assert f(1) == 2", "f") is True
    assert calls_only("assert map(f, [1])", "f") is False
    # a different function passed around is not the candidate
    assert calls_only("assert list(map(g, [1])) == [f(1)]", "f") is True


def test_calls_only_on_split_tests():
    split = split_check(HUMANEVAL)
    assert all(calls_only(t, split.candidate) for t in split.tests)
    opaque = split_check("def check(candidate):\n    assert candidate(1) == 1\n    assert callable(candidate)\n")
    assert [calls_only(t, opaque.candidate) for t in opaque.tests] == [True, False]


# --------------------------------------------------------------------------------------------
# The real dataset


def test_leetcode_v031_test_split_counts():
    if not LC3.is_file():
        from ..conftest import missing

        missing(f"LeetCodeDataset not found at {LC3} (set QRPO_SHARED_DATA)")
    rows = 0
    tests = 0
    opaque = []
    with gzip.open(LC3, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            rows += 1
            split = split_check(row["test"])
            assert split.candidate == "candidate"
            tests += len(split.tests)
            opaque += [(row["task_id"], t) for t in split.tests if not calls_only(t, split.candidate)]
    assert rows == 228
    assert tests == 23234
    assert opaque == []
