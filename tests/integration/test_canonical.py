"""Every canonical solution of the real datasets scores 1.0, and the share of tests judged in
the trusted process is measured (goal: >= 99% LeetCodeDataset, >= 95% HumanEval)."""

from __future__ import annotations

import dataclasses

import pytest

from sandbox.api import grade
from sandbox.datasets import load_problems
from sandbox.problem import Limits

from ..conftest import backend_or_fail

# Known slow or broken canonical solutions (../shared/data/README.md), excluded with the reason.
EXCLUDED = {
    "find-the-number-of-subsequences-with-equal-gcd": "canonical solution needs ~22 s here",
    "maximum-number-of-moves-to-kill-all-pawns": "canonical solution needs 10-15 s here",
    "Mbpp/120": "its `assertion` uses math without importing it",
}
GENEROUS = Limits(cpu_s=10.0, wall_s=20.0, memory_mb=2048, solution_s=600.0)
# MBPP+ on its base tests: base + plus (evalplus's score) is tests/integration/test_evalplus.py's
# (where Mbpp/255 is left out: its outputs on the plus inputs are 336 MB, over the message limit).
DATASETS = {
    "leetcode": ("leetcode/LeetCodeDataset-v0.3.1-test.jsonl.gz", 0.99),
    "humaneval": ("humaneval/HumanEval.jsonl.gz", 0.95),
    "mbpp": ("mbpp/MbppPlus-v0.2.0.jsonl.gz", 0.95),
}
TEST_SET = {"mbpp": "base"}


@pytest.mark.slow
@pytest.mark.parametrize("name", DATASETS)
def test_canonical_solutions_score_one(name: str, shared_data, capsys) -> None:
    backend = backend_or_fail("bubblewrap")
    path, trusted_goal = DATASETS[name]
    loaded = load_problems(shared_data / path, tests=TEST_SET.get(name, "plus"))
    assert not loaded.errors
    problems = {k: dataclasses.replace(p, limits=GENEROUS) for k, p in loaded.problems.items() if k not in EXCLUDED}
    completions = [{"task_id": k, "code": p.metadata["canonical_solution"]} for k, p in problems.items()]
    results = grade(problems, completions, backend=backend, workers=2)
    failed = {r.task_id: [t.detail for t in r.tests if t.verdict.value != "passed"][:2] for r in results if r.pass_rate != 1.0}
    assert not failed, f"canonical solutions that did not score 1.0: {failed}"
    tests = sum(r.total for r in results)
    trusted = sum(sum(t.trusted for t in r.tests) for r in results)
    with capsys.disabled():
        print(
            f"\n{name}: {len(results)} canonical solutions, {tests} tests, judged in the trusted process: {trusted / tests:.2%}"
        )
    assert trusted / tests >= trusted_goal


def test_per_solution_granularity_agrees_with_per_test(shared_data) -> None:
    backend = backend_or_fail("bubblewrap")
    loaded = load_problems(shared_data / "leetcode/LeetCodeDataset-v0.3.1-test.jsonl.gz")
    problems = [p for k, p in loaded.problems.items() if k not in EXCLUDED][:25]
    good = [{"task_id": p.task_id, "code": p.metadata["canonical_solution"]} for p in problems]
    # A wrong solution for each: the canonical one with its return value perturbed.
    wrong = [
        {"task_id": p.task_id, "code": "class Solution:\n    def __getattr__(self, name):\n        return lambda *a, **k: None\n"}
        for p in problems
    ]
    for granularity in ("per_test", "per_solution"):
        results = grade(problems, good + wrong, backend=backend, workers=2, granularity=granularity)
        assert [r.pass_rate for r in results[: len(good)]] == [1.0] * len(good), granularity
        assert all(r.pass_rate < 1.0 for r in results[len(good):]), granularity
