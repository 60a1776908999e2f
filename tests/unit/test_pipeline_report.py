"""Evaluation metrics, the selection/reporting split and checkpoint selection."""

from __future__ import annotations

from collections import Counter

import pytest

from qrpo.pipeline.report import metrics, select_checkpoints, summarize
from qrpo.pipeline.splits import assign_subsets


def row(reward: float, seed: int = 0, subset: str = "selection", difficulty: str = "Easy", logp: float = -1.0,
        ref_logp: float = -1.5, tokens: int = 10) -> dict:
    return {"reward": reward, "seed": seed, "subset": subset, "difficulty": difficulty, "logp": logp, "ref_logp": ref_logp,
            "num_tokens": tokens}


def test_avg_pass_is_the_mean_pass_rate_and_strict_pass_needs_every_test():
    m = metrics([row(1.0), row(0.5), row(0.0), row(0.25)])
    assert m["avg_pass"] == pytest.approx(43.75)
    assert m["strict_pass@1"] == pytest.approx(25.0)
    assert m["kl"] == pytest.approx(0.5)
    assert m["tokens"] == 10


def test_summary_averages_over_seeds_per_subset():
    rows = [row(1.0, 0, "selection"), row(0.0, 0, "reporting", "Hard"), row(0.5, 1, "selection"),
            row(0.5, 1, "reporting", "Hard")]
    summary = summarize(rows, seeds=2)
    assert summary["subsets"]["selection"]["avg_pass"] == pytest.approx(75.0)
    assert summary["subsets"]["selection"]["avg_pass_std"] == pytest.approx(35.3553, abs=1e-3)
    assert summary["subsets"]["reporting"]["avg_pass"] == pytest.approx(25.0)
    assert summary["subsets"]["all"]["avg_pass"] == pytest.approx(50.0)
    assert summary["difficulty"]["Hard"]["avg_pass"] == pytest.approx(25.0)


def test_per_difficulty_subsets_are_stratified_and_independent_of_row_order():
    rows = [{"task_id": f"t{i}", "difficulty": d} for i, d in enumerate(["Easy"] * 10 + ["Medium"] * 7 + ["Hard"] * 4)]
    assign_subsets(rows, 0.5, seed=43, method="per-difficulty")
    counts = Counter((r["difficulty"], r["subset"]) for r in rows)
    assert counts[("Easy", "reporting")] == 5 and counts[("Hard", "reporting")] == 2
    assert counts[("Medium", "reporting")] + counts[("Medium", "selection")] == 7
    again = [{"task_id": r["task_id"], "difficulty": r["difficulty"]} for r in reversed(rows)]
    assign_subsets(again, 0.5, seed=43, method="per-difficulty")
    assert {r["task_id"]: r["subset"] for r in again} == {r["task_id"]: r["subset"] for r in rows}
    other = [{"task_id": r["task_id"], "difficulty": r["difficulty"]} for r in rows]
    assign_subsets(other, 0.5, seed=44, method="per-difficulty")
    assert {r["task_id"]: r["subset"] for r in other} != {r["task_id"]: r["subset"] for r in rows}


def policy(name: str, run: str, step: int, selection: float, reporting: float) -> dict:
    def subset(value: float) -> dict:
        return {"avg_pass": value, "avg_pass_std": 0.0, "strict_pass@1": value, "kl": 0.0}

    subsets = {"selection": subset(selection), "reporting": subset(reporting), "all": subset(0)}
    return {"policy": name, "run": run, "step": step, "subsets": subsets}


def test_checkpoints_are_selected_on_selection_and_reported_on_reporting():
    runs = select_checkpoints([
        policy("reference", "reference", 0, 10.0, 12.0),
        policy("q/checkpoint-10", "q", 10, 20.0, 15.0),
        policy("q/checkpoint-20", "q", 20, 18.0, 30.0),  # better on reporting, but that must not matter
        policy("q/final", "q", 25, 20.0, 14.0),  # ties on selection: the earlier checkpoint wins
    ])
    q = next(r for r in runs if r["run"] == "q")
    assert (q["selected"], q["reporting_avg_pass"]) == ("q/checkpoint-10", 15.0)
    assert [r["run"] for r in runs] == ["q", "reference"]
