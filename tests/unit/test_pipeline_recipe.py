"""The paper's LeetCode recipe against the reference code's rules (CLAIRE-Labo/quantile-reward-policy-optimization):
each test states the reference's rule, applies it, and compares the project's decision with it.

Trainer-side items run QRPOTrainer on a tiny Llama (CPU, no downloads); data-side items read the LeetCode files
of $QRPO_SHARED_DATA (the v0.2.0 train file stands in for v0.3.1 train)."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset

from qrpo.config import QRPOConfig
from qrpo.tiny import tiny_llama, train_tokenizer
from qrpo.trainer import QRPOTrainer, truncate_sequence

TEXTS = [f"def f_{i}(x):\n    return x + {i}\n" for i in range(30)]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS * 4, vocab_size=300)


def pairs(n: int, refs: int = 20) -> list[dict[str, Any]]:
    return [{"prompt": [{"role": "user", "content": f"Write f_{i}."}],
             "chosen": [{"role": "assistant", "content": TEXTS[i % 30]}],
             "rejected": [{"role": "assistant", "content": TEXTS[(i + 7) % 30].replace("+", "-")}],
             "chosen_reward": 1.0, "rejected_reward": (i % 4) / 4, "ref_rewards": [(j % 5) / 4 for j in range(refs)]}
            for i in range(n)]


def trainer(tokenizer, tmp_path, rows, **overrides) -> QRPOTrainer:
    args: dict[str, Any] = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, learning_rate=1e-4,
                                lr_scheduler_type="constant", warmup_ratio=0.0, num_train_epochs=1, logging_steps=1,
                                save_strategy="no", report_to=[], use_cpu=True, seed=0, beta=0.1, num_ref_rewards=20,
                                ref_log_probs_cache_dir=str(tmp_path / "ref-cache"), dataloader_drop_last=True)
    args.update(overrides)
    return QRPOTrainer(model=tiny_llama(tokenizer, seed=0), args=QRPOConfig(**args), train_dataset=Dataset.from_list(rows),
                       processing_class=tokenizer)


# ---------------------------------------------------------------------------- 1. batch and steps


def reference_optimizer_steps(pairs_: int, per_device: int, processes: int, accumulation: int) -> int:
    """transformers.Trainer with dataloader_drop_last (the reference's train-qrpo.yaml): each process's dataloader
    has floor(pairs / (per_device x processes)) batches of pairs; an epoch is that // accumulation steps."""
    return (pairs_ // (per_device * processes)) // accumulation


def test_the_paper_batch_is_128_pairs_and_200_steps():
    """The reference: 2563 problems x 10 pairs, 2 nodes x 4 GPUs x 2 pairs x 8 accumulation = 128 pairs per step."""
    assert reference_optimizer_steps(2563 * 10, 2, 8, 8) == 200
    from qrpo.pipeline.plan import optimizer_steps

    assert optimizer_steps(2563 * 10, 128, drop_last=True) == 200
    assert optimizer_steps(2563 * 10, 128, drop_last=False) == 201


def test_the_trainer_makes_200_steps_of_128_pairs_from_2563_x_10_pairs(tokenizer, tmp_path):
    """The paper's table size through QRPOTrainer's own step computation (one process, 16 pairs x 8 accumulation):
    1601 full micro-batches (drop_last), 200 optimizer steps; transformers 5 alone would add a 201st of 1/8 batch."""
    t = trainer(tokenizer, tmp_path, pairs(2563 * 10, refs=20), per_device_train_batch_size=16, gradient_accumulation_steps=8)
    loader = t.get_train_dataloader()
    assert len(loader) == 2563 * 10 // 16 == 1601
    values = t.set_initial_training_values(t.args, loader)
    assert (values[1], values[5], values[6]) == (200, 1600, 200)  # steps per epoch, micro-batches used, max steps
    assert next(iter(loader))["quantile"].shape == (16, 2)  # 16 pairs = 32 sequences per micro-batch


def test_pairs_are_batched_together_and_drop_last_sets_the_step_count(tokenizer, tmp_path):
    rows = pairs(37)
    t = trainer(tokenizer, tmp_path, rows, gradient_accumulation_steps=2)
    batch = next(iter(t.get_train_dataloader()))
    # A batch item is a pair: 4 pairs -> 8 sequences, (chosen, rejected) of the same prompt side by side.
    assert batch["quantile"].shape == (4, 2) and len(batch["completion_lengths"]) == 8
    assert batch["side_weights"].tolist() == [[1.0, 1.0]] * 4
    t.train()
    assert t.state.global_step == reference_optimizer_steps(37, 4, 1, 2) == 4  # 37 pairs // 8: the last 5 dropped


def test_split_pairs_count_sequences_instead(tokenizer, tmp_path):
    t = trainer(tokenizer, tmp_path, pairs(37), gradient_accumulation_steps=2, pair_batching="split")
    assert len(t.train_dataset) == 74  # type: ignore[arg-type]
    t.train()
    assert t.state.global_step == (74 // 4) // 2


@pytest.mark.parametrize("selector", ["chosen", "rejected", "random"])
def test_a_sample_selector_zeroes_the_other_side_and_keeps_the_batch(tokenizer, tmp_path, selector):
    """The reference: loss = mean over pairs of (loss_chosen + loss_rejected) / 2, the unselected side's loss
    zeroed, so a selector's loss and its complement's add up to the loss of `both`, over the same pairs."""
    t = trainer(tokenizer, tmp_path, pairs(8), per_device_train_batch_size=8, sample_selector=selector)
    t._attach_ref_logps()
    batch = next(iter(t.get_train_dataloader()))
    assert batch["quantile"].shape == (8, 2) and len(batch["completion_lengths"]) == 16  # the batch is kept
    weights = batch["side_weights"]
    assert (weights.sum(dim=1) == 1).all()
    if selector == "random":
        assert 0 < weights[:, 0].sum() < 8
    else:
        assert weights[:, 0 if selector == "chosen" else 1].eq(1).all()
    assert t.model is not None
    with torch.no_grad():
        selected = t.compute_loss(t.model, batch)
        other = t.compute_loss(t.model, {**batch, "side_weights": 1 - weights})
        both = t.compute_loss(t.model, {**batch, "side_weights": torch.ones_like(weights)})
    assert isinstance(selected, torch.Tensor) and isinstance(other, torch.Tensor) and isinstance(both, torch.Tensor)
    torch.testing.assert_close(selected + other, both, atol=1e-6, rtol=1e-5)
    assert 0 < selected < both


# ---------------------------------------------------------------------------------- 2. length


def reference_truncation(prompt: list[int], completion: list[int], max_prompt: int, max_completion: int,
                         max_length: int) -> tuple[list[int], list[int]]:
    """The reference's tokenize_row (prompt keeps its end, completion its start) then concatenated_forward:
    prompt left-padded and completion right-padded in one row, flushed left, cut at max_length on the right;
    the loss mask marks the completion tokens that remain."""
    prompt, completion = prompt[-max_prompt:], completion[:max_completion]
    width = max_prompt + max_completion
    ids = [0] * (max_prompt - len(prompt)) + prompt + completion + [0] * (max_completion - len(completion))
    mask = [0] * (max_prompt - len(prompt)) + [1] * (len(prompt) + len(completion)) + [0] * (max_completion - len(completion))
    loss = [0] * max_prompt + [1] * len(completion) + [0] * (max_completion - len(completion))
    first = mask.index(1)
    ids, mask, loss = ids[first:] + ids[:first], mask[first:] + mask[:first], loss[first:] + loss[:first]
    assert len(ids) == width
    ids, mask, loss = ids[:max_length], mask[:max_length], loss[:max_length]
    return [t for t, m, c in zip(ids, mask, loss) if m and not c], [t for t, c in zip(ids, loss) if c]


@pytest.mark.parametrize("prompt_len,completion_len", [(30, 40), (60, 10), (10, 10), (80, 5)])
def test_an_over_long_row_is_truncated_as_the_reference_does(prompt_len, completion_len):
    prompt, completion = list(range(1000, 1000 + prompt_len)), list(range(2000, 2000 + completion_len))
    expected = reference_truncation(prompt, completion, max_prompt=64, max_completion=64, max_length=50)
    ours = truncate_sequence(prompt[-64:], completion[:64], 50)
    assert ours == expected
    assert len(ours[0]) + len(ours[1]) == min(50, min(prompt_len, 64) + completion_len)


def test_the_trainer_caps_prompt_plus_completion(tokenizer, tmp_path):
    long_rows = pairs(4)
    for row in long_rows:
        row["chosen"] = [{"role": "assistant", "content": "".join(TEXTS)}]
    t = trainer(tokenizer, tmp_path, long_rows, max_length=48, max_prompt_length=2048, max_completion_length=2048)
    free = trainer(tokenizer, tmp_path, long_rows, max_prompt_length=2048, max_completion_length=2048)
    for capped, full in zip(t.train_dataset, free.train_dataset):  # type: ignore[arg-type]
        assert len(capped["prompt_ids"]) + len(capped["chosen_ids"]) == 48 < len(full["prompt_ids"]) + len(full["chosen_ids"])
        assert capped["chosen_ids"] == full["chosen_ids"][: 48 - len(full["prompt_ids"])]
        assert capped["rejected_ids"] == full["rejected_ids"][: 48 - len(full["prompt_ids"])]
    assert math.isfinite(t.train().training_loss)


# ---------------------------------------------------------------------------------------------- 4. selection


def _leetcode_test_rows(shared: Path) -> list[dict[str, Any]]:
    from qrpo.pipeline.config import load_config
    from qrpo.pipeline.problems import load_source
    from qrpo.pipeline.stages.prepare import problem_rows

    source = shared / "leetcode" / "LeetCodeDataset-v0.3.1-test.jsonl.gz"
    config = load_config("tiny-cpu", [f"data.test.path={source}", "data.max_tokens=null"])
    assert config.data.test is not None
    return problem_rows(load_source("data.test", config.data.test, config.data), "paper")


def test_the_selection_halves_are_the_reference_split_codes(shared_data):
    """The reference's create_eval_split.py on the filtered test rows (dataset order): stratify by difficulty,
    `train_test_split(indices, test_size=0.5, random_state=43)`; part 1 reports, part 2 selects."""
    from sklearn import model_selection as sklearn  # a test dependency (qrpo[dev]): the reference code's own split

    from qrpo.pipeline.splits import assign_subsets

    rows = _leetcode_test_rows(shared_data)
    assert len(rows) >= 220
    indices = list(range(len(rows)))
    reporting, selection = sklearn.train_test_split(indices, test_size=0.5, random_state=43,
                                                    stratify=[r["difficulty"] for r in rows])
    assign_subsets(rows, 0.5, 43, "sklearn")
    assert [i for i, r in enumerate(rows) if r["subset"] == "selection"] == sorted(selection)
    assert [i for i, r in enumerate(rows) if r["subset"] == "reporting"] == sorted(reporting)
    assert len(selection) == math.ceil(len(rows) / 2)
    for n in (223, 101, 40):  # other filtered sizes (the released revision keeps 223)
        part1, part2 = sklearn.train_test_split(list(range(n)), test_size=0.5, random_state=43,
                                                stratify=[r["difficulty"] for r in rows[:n]])
        from qrpo.pipeline.splits import sklearn_halves

        assert sklearn_halves([r["difficulty"] for r in rows[:n]], 0.5, 43) == ([int(i) for i in part1], [int(i) for i in part2])


def test_a_difficulty_with_one_row_is_in_neither_half_as_in_the_reference():
    from qrpo.pipeline.splits import assign_subsets

    rows = [{"task_id": f"t{i}", "difficulty": d} for i, d in enumerate(["Easy"] * 6 + ["Hard"] * 5 + ["Medium"])]
    assign_subsets(rows, 0.5, 43, "sklearn")
    assert rows[-1]["subset"] == "none"
    assert Counter(r["subset"] for r in rows) == {"selection": 6, "reporting": 5, "none": 1}


def _entry(policy: str, run: str, step: int, selection: float, reporting: float = 0.0) -> dict[str, Any]:
    def subset(value: float) -> dict[str, float]:
        return {"avg_pass": value, "avg_pass_std": 0.0, "strict_pass@1": value, "kl": 0.0}

    return {"policy": policy, "run": run, "step": step,
            "subsets": {"selection": subset(selection), "reporting": subset(reporting), "all": subset(0.0)}}


def reference_choice(runs: dict[str, dict[int, float]], base: float) -> tuple[str, int]:
    """The reference's rule (collect_results.py + create_results_table_app.py): one row per (run directory,
    checkpoint-*), checkpoint-0 a symlink to the base model in every run, directories sorted, checkpoints in
    glob (string) order; per method `rows.loc[rows[selection].idxmax()]`, the first row of the best score."""
    rows = []
    for run in sorted(runs):
        steps = {0: base, **runs[run]}
        for name in sorted(f"checkpoint-{s}" for s in steps):
            rows.append((run, int(name.split("-")[1]), steps[int(name.split("-")[1])]))
    best = max(r[2] for r in rows)
    run, step, _ = next(r for r in rows if r[2] == best)
    return run, step


@pytest.mark.parametrize("base,scores", [
    (25.0, {"qrpo-beta0.01-lr1e-07": {40: 20.0, 80: 24.0}, "qrpo-beta0.03-lr1e-07": {40: 22.0, 200: 24.9}}),  # base best
    (20.0, {"qrpo-beta0.01-lr1e-07": {40: 20.0, 80: 31.5}, "qrpo-beta0.03-lr1e-07": {40: 22.0, 200: 30.0}}),
    (20.0, {"qrpo-beta0.01-lr1e-07": {40: 19.0}, "qrpo-beta0.03-lr1e-07": {120: 19.5, 200: 20.0}}),  # tie: checkpoint-0
])
def test_the_method_choice_is_the_references_with_checkpoint_0_a_candidate(base, scores):
    from qrpo.pipeline.report import select_checkpoints

    entries = [_entry("reference", "reference", 0, base, reporting=base + 1)]
    for run, steps in scores.items():
        entries += [_entry(f"{run}/checkpoint-{s}", run, s, v, reporting=v - 1) for s, v in steps.items()]
    entries.append(_entry("dpo-beta0.1/checkpoint-40", "dpo-beta0.1", 40, 99.0))  # another method: not a candidate
    picked = {r["run"]: r for r in select_checkpoints(entries, {**dict.fromkeys(scores, "qrpo"), "dpo-beta0.1": "dpo"})}
    run, step = reference_choice(scores, base)
    expected = "reference" if step == 0 else f"{run}/checkpoint-{step}"
    assert picked["method:qrpo"]["selected"] == expected and picked["method:qrpo"]["step"] == step
    assert picked["method:dpo"]["selected"] == "dpo-beta0.1/checkpoint-40"
    if step == 0:  # the base model wins: what the method reports is the base model's reporting score
        assert picked["method:qrpo"]["reporting_avg_pass"] == base + 1
