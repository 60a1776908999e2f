"""Batch summaries (sandbox.metrics): pass@k against hand computations, counts, extra fields."""

from __future__ import annotations

import pytest

from sandbox.metrics import mean_pass_at_k, pass_at_k, result_row, summarize
from sandbox.problem import GradeResult, TestResult, Verdict


def result(task_id: str, verdicts: list[Verdict]) -> GradeResult:
    return GradeResult(task_id, tuple(TestResult(v) for v in verdicts), "process")


def test_pass_at_k_by_hand():
    # n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    # n=10, c=3, k=5: 1 - C(7,5)/C(10,5) = 1 - 21/252
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)  # pass@1 is the fraction correct
    assert pass_at_k(3, 2, 2) == 1.0 and pass_at_k(3, 0, 3) == 0.0
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_mean_pass_at_k_only_where_every_task_has_k_samples():
    counts = [(5, 2), (5, 0), (5, 5)]
    out = mean_pass_at_k(counts)
    assert set(out) == {"pass@1", "pass@5"}  # 5 samples per task: no pass@10
    assert out["pass@1"] == pytest.approx((0.4 + 0.0 + 1.0) / 3)
    assert out["pass@5"] == pytest.approx((1.0 + 0.0 + 1.0) / 3)


def test_summary_counts():
    P, W, N = Verdict.PASSED, Verdict.WRONG_ANSWER, Verdict.NO_CODE
    results = [
        result("a", [P, P]),
        result("a", [P, W]),
        result("b", [N, N]),
        result("b", [P, P]),
        GradeResult.invalid("c", "bad"),
    ]
    s = summarize(results, elapsed_s=2.0)
    assert s["completions"] == 5 and s["graded"] == 4 and s["tasks"] == 2
    assert s["mean_pass_rate"] == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert s["fully_passed"] == pytest.approx(0.5)
    assert s["pass@1"] == pytest.approx(0.5) and "pass@5" not in s
    assert s["solution_verdicts"] == {"passed": 2, "wrong_answer": 1, "no_code": 1, "invalid_row": 1}
    assert s["test_verdicts"]["passed"] == 5 and s["tests"] == 8 and s["tests_per_s"] == 4.0


def test_extra_fields_pass_through():
    row = {"task_id": "a", "completion": "...", "sample_id": 7, "model": "m", "pass_rate": "theirs"}
    out = result_row(row, result("a", [Verdict.PASSED]))
    assert out["sample_id"] == 7 and out["model"] == "m" and "completion" not in out
    assert out["pass_rate"] == 1.0  # our field wins a clash
