"""The build stage's training rows: pointwise, offpolicy<K>random, offpolicy2best, offline; ties; references."""

from __future__ import annotations

import pytest

from qrpo.pipeline.config import BuildConfig
from qrpo.pipeline.errors import StageError
from qrpo.pipeline.stages.build import build_rows

PROMPT = [{"role": "user", "content": "Solve it."}]


def graded(rewards_by_task: dict[str, list[float]]) -> list[dict]:
    rows = []
    for task, rewards in rewards_by_task.items():
        for k, reward in reversed(list(enumerate(rewards))):  # out of order on purpose: sample_index decides
            rows.append({"task_id": task, "prompt": PROMPT, "completion": f"{task}-{k}", "sample_index": k, "reward": reward})
    return rows


def text(message: list[dict]) -> str:
    assert message[0]["role"] == "assistant"
    return message[0]["content"]


def test_pointwise_rows_carry_every_reference_reward_in_sample_order():
    rows, dropped = build_rows(graded({"a": [0.0, 1.0, 0.5], "b": [1.0, 1.0, 0.0]}), BuildConfig())
    assert dropped == 0 and len(rows) == 6
    a = [r for r in rows if text(r["completion"]).startswith("a-")]
    assert [text(r["completion"]) for r in a] == ["a-0", "a-1", "a-2"]
    assert [r["reward"] for r in a] == [0.0, 1.0, 0.5]
    assert all(r["ref_rewards"] == [0.0, 1.0, 0.5] and r["prompt"] == PROMPT for r in a)
    rows, _ = build_rows(graded({"a": [0.0, 1.0, 0.5]}), BuildConfig(num_ref_rewards=2, pointwise_samples=1))
    assert len(rows) == 1 and rows[0]["ref_rewards"] == [0.0, 1.0]


def test_offpolicy_k_random_pairs_consecutive_completions_better_first():
    rows, dropped = build_rows(graded({"a": [0.0, 1.0, 0.5, 0.5, 1.0, 0.2]}), BuildConfig(pairs="offpolicy3random"))
    assert dropped == 0
    assert [(text(r["chosen"]), text(r["rejected"])) for r in rows] == [("a-1", "a-0"), ("a-2", "a-3"), ("a-4", "a-5")]
    assert [(r["chosen_reward"], r["rejected_reward"]) for r in rows] == [(1.0, 0.0), (0.5, 0.5), (1.0, 0.2)]
    assert all(r["ref_rewards"] == [0.0, 1.0, 0.5, 0.5, 1.0, 0.2] for r in rows)


def test_tied_pairs_are_kept_or_dropped():
    rows, dropped = build_rows(graded({"a": [0.5, 0.5, 0.0, 1.0]}), BuildConfig(pairs="offpolicy2random", pair_ties="drop"))
    assert dropped == 1 and [(text(r["chosen"]), text(r["rejected"])) for r in rows] == [("a-3", "a-2")]


def test_offpolicy2best_takes_best_and_worst_of_the_first_n():
    rows, _ = build_rows(graded({"a": [0.5, 0.2, 0.9, 0.9, 0.1, 0.6, 1.0]}), BuildConfig(pairs="offpolicy2best", best_of=6))
    assert [(text(r["chosen"]), text(r["rejected"])) for r in rows] == [("a-2", "a-4")]  # a-6 (1.0) is 7th: not among the first 6
    rows, _ = build_rows(graded({"a": [0.3, 0.3, 0.3]}), BuildConfig(pairs="offpolicy2best", best_worst_ties="distinct"))
    assert (text(rows[0]["chosen"]), text(rows[0]["rejected"])) == ("a-0", "a-1")  # all equal: two different completions


def reference_offpolicy2best(rewards: list[float]) -> tuple[int, int]:
    """The reference's process_row_offpolicy2best: max / min over range(6) (the first of equals)."""
    first = rewards[:6]
    return max(range(6), key=lambda i: first[i]), min(range(6), key=lambda i: first[i])


@pytest.mark.parametrize("rewards", [[0.3] * 8, [1.0] * 6, [0.0, 0.0, 1.0, 1.0, 0.0, 1.0], [0.5, 0.2, 0.9, 0.9, 0.1, 0.6]])
def test_offpolicy2best_follows_the_reference_even_when_every_reward_ties(rewards):
    rows, _ = build_rows(graded({"a": rewards}), BuildConfig(pairs="offpolicy2best"))
    best, worst = reference_offpolicy2best(rewards)
    assert (text(rows[0]["chosen"]), text(rows[0]["rejected"])) == (f"a-{best}", f"a-{worst}")
    assert (rows[0]["chosen_reward"], rows[0]["rejected_reward"]) == (rewards[best], rewards[worst])


def test_offline_pairs_the_dataset_solution_with_the_first_completion():
    solutions = {"a": ("```python\nsolution\n```", 1.0)}
    rows, _ = build_rows(graded({"a": [0.25, 1.0], "b": [0.0, 0.5]}), BuildConfig(pairs="offline"), solutions)
    assert len(rows) == 1  # b has no dataset solution
    assert text(rows[0]["chosen"]) == "```python\nsolution\n```" and text(rows[0]["rejected"]) == "a-0"
    assert (rows[0]["chosen_reward"], rows[0]["rejected_reward"]) == (1.0, 0.25)


def test_too_few_completions_name_the_fix():
    with pytest.raises(StageError, match=r"generate\.num_samples"):
        build_rows(graded({"a": [0.0, 1.0]}), BuildConfig(pairs="offpolicy2random"))
    with pytest.raises(StageError, match="num_ref_rewards"):
        build_rows(graded({"a": [0.0, 1.0]}), BuildConfig(num_ref_rewards=3))
