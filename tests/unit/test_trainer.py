"""QRPOTrainer on a tiny Llama built from a config, with a tokenizer trained here: no downloads, CPU only."""

from __future__ import annotations

import math
import random
from typing import Any, cast

import pytest
import torch
from datasets import Dataset

from qrpo.config import QRPOConfig
from qrpo.logprobs import SequenceCollator, sequence_logps
from qrpo.losses import qrpo_loss
from qrpo.quantile import quantile_rewards
from qrpo.tiny import tiny_llama, train_tokenizer
from qrpo.trainer import DatasetError, QRPOTrainer

SOLUTIONS = [f"def add_{i}(x):\n    return x + {i}\n" for i in range(24)] + [
    f"def mul_{i}(x):\n    return x * {i}\n" for i in range(24)
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(SOLUTIONS * 4, vocab_size=320)


def pointwise_rows(n: int = 16, refs: int = 8, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"Write function number {i}."}],
                "completion": [{"role": "assistant", "content": SOLUTIONS[i % len(SOLUTIONS)]}],
                "reward": float(i % 3) / 2,
                "ref_rewards": [rng.choice([0.0, 0.5, 1.0]) for _ in range(refs)],
            }
        )
    return rows


def paired_rows(n: int = 12) -> list[dict]:
    rows = []
    for i, row in enumerate(pointwise_rows(n)):
        rows.append(
            {
                "prompt": row["prompt"],
                "chosen": row["completion"],
                "rejected": [{"role": "assistant", "content": SOLUTIONS[-1 - i].replace("return", "print")}],
                "chosen_reward": 1.0,
                "rejected_reward": 0.25 * (i % 3),
                "ref_rewards": row["ref_rewards"],
            }
        )
    return rows


def config(tmp_path, **overrides) -> QRPOConfig:
    defaults: dict[str, Any] = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        warmup_ratio=0.0,
        num_train_epochs=1,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        beta=0.1,
        use_cpu=True,
        seed=0,
        ref_log_probs_cache_dir=str(tmp_path / "ref-cache"),
        disable_tqdm=True,
    )
    defaults.update(overrides)
    return QRPOConfig(**defaults)


def trainer_for(tokenizer, tmp_path, rows, model_seed: int = 0, **overrides) -> QRPOTrainer:
    return QRPOTrainer(
        model=tiny_llama(tokenizer, seed=model_seed),
        args=config(tmp_path, **overrides),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )


def model_of(trainer: QRPOTrainer) -> torch.nn.Module:
    assert trainer.model is not None
    return trainer.model


def rows_of(trainer: QRPOTrainer) -> Dataset:
    """The trainer's prepared (tokenized) training rows."""
    assert isinstance(trainer.train_dataset, Dataset)
    return trainer.train_dataset


def losses_of(trainer: QRPOTrainer) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def naive_logps(model, batch) -> torch.Tensor:
    """The textbook computation: full logits, log_softmax, gather the completion tokens, sum per row."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    token_logps = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (token_logps * (labels != -100)).sum(-1)


# ---------------------------------------------------------------------------------------- training


@pytest.mark.parametrize("padding_free", [True, False])
def test_qrpo_loss_decreases_on_a_toy_dataset(tokenizer, tmp_path, padding_free):
    trainer = trainer_for(
        tokenizer, tmp_path, pointwise_rows(8), per_device_train_batch_size=8, num_train_epochs=30, padding_free=padding_free
    )
    assert trainer.padding_free is padding_free
    trainer.train()
    losses = losses_of(trainer)
    assert len(losses) == 30
    assert sum(losses[-3:]) / 3 < 0.25 * sum(losses[:3]) / 3, losses
    assert all(math.isfinite(x) for x in losses)
    logged = trainer.state.log_history[0]
    for name in ("rewards/quantile", "rewards/calibrated", "rewards/implicit", "rewards/sign_agreement", "log_ratio"):
        assert name in logged


@pytest.mark.parametrize("loss_type", ["dpo", "simpo", "rebel"])
def test_paired_baselines_train(tokenizer, tmp_path, loss_type):
    trainer = trainer_for(
        tokenizer, tmp_path, paired_rows(8), per_device_train_batch_size=8, num_train_epochs=15, loss_type=loss_type
    )
    before = [p.detach().clone() for p in model_of(trainer).parameters()]
    trainer.train()
    losses = losses_of(trainer)
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0], losses
    assert any(not torch.equal(a, b) for a, b in zip(before, model_of(trainer).parameters()))
    assert "rewards/accuracies" in trainer.state.log_history[0]


def test_qrpo_on_split_pairs_follows_the_sample_selector(tokenizer, tmp_path):
    rows = paired_rows(10)
    split = {"pair_batching": "split"}
    assert len(rows_of(trainer_for(tokenizer, tmp_path, rows, sample_selector="both", **split))) == 20
    chosen = rows_of(trainer_for(tokenizer, tmp_path, rows, sample_selector="chosen", **split))
    assert len(chosen) == 10
    picked = rows_of(trainer_for(tokenizer, tmp_path, rows, sample_selector="random", **split))
    assert len(picked) == 10
    chosen_ids = {tuple(r) for r in chosen["completion_ids"]}
    assert 0 < sum(tuple(r) in chosen_ids for r in picked["completion_ids"]) < 10  # a mix of both sides


# ------------------------------------------------------------------------------------ log-probs


def test_packed_and_padded_log_probs_agree_with_the_textbook_computation(tokenizer, tmp_path):
    trainer = trainer_for(tokenizer, tmp_path, pointwise_rows(6))
    rows = [rows_of(trainer)[i] for i in range(6)]
    model = model_of(trainer).eval()
    packed = SequenceCollator(tokenizer.pad_token_id, padding_free=True)(rows)
    padded = SequenceCollator(tokenizer.pad_token_id, padding_free=False)(rows)
    assert packed["input_ids"].shape[0] == 1 and (packed["labels"] != -100).sum() == (padded["labels"] != -100).sum()
    with torch.no_grad():
        a, b, c = sequence_logps(model, packed), sequence_logps(model, padded), naive_logps(model, padded)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    torch.testing.assert_close(b, c, atol=1e-4, rtol=0)
    assert (a < 0).all()


def test_precomputed_and_online_reference_log_probs_agree(tokenizer, tmp_path):
    rows = pointwise_rows(10)
    precomputed = trainer_for(tokenizer, tmp_path, rows)
    dataset = precomputed._with_ref_logps(rows_of(precomputed), "train")
    online = trainer_for(tokenizer, tmp_path, rows, precompute_ref_log_probs=False)
    assert online.ref_model is not None and "ref_logps" not in rows_of(online).column_names
    collate = online.data_collator
    with torch.no_grad():
        batches = [collate([rows_of(online)[i] for i in range(j, min(j + 3, 10))]) for j in range(0, 10, 3)]
        values = torch.cat([sequence_logps(online.ref_model, batch) for batch in batches])
    torch.testing.assert_close(torch.tensor(dataset["ref_logps"]).flatten(), values, atol=1e-5, rtol=0)


def test_reference_log_probs_are_cached_and_reused(tokenizer, tmp_path):
    rows = pointwise_rows(8)
    first = trainer_for(tokenizer, tmp_path, rows)
    a = first._with_ref_logps(rows_of(first), "train")["ref_logps"]
    assert first.ref_log_probs_cache_hits == 0 and list((tmp_path / "ref-cache").glob("*.npy"))
    second = trainer_for(tokenizer, tmp_path, rows)
    assert second._with_ref_logps(rows_of(second), "train")["ref_logps"] == a
    assert second.ref_log_probs_cache_hits == 1
    other_model = trainer_for(tokenizer, tmp_path, rows, model_seed=1)  # other weights: another cache entry
    other_model._with_ref_logps(rows_of(other_model), "train")
    assert other_model.ref_log_probs_cache_hits == 0


def test_a_sweep_reuses_the_reference_log_probs(tokenizer, tmp_path):
    """The cache key is the token ids, the weights and the precision: other training arguments (beta, ties, the
    output folder: a sweep) find the same entry; other tokens (a shorter completion cap) make another."""
    rows = pointwise_rows(8)
    first = trainer_for(tokenizer, tmp_path, rows, beta=0.1)
    a = first._with_ref_logps(rows_of(first), "train")["ref_logps"]
    other_run = trainer_for(tokenizer, tmp_path, rows, beta=0.3, ties="random", output_dir=str(tmp_path / "run-2"))
    assert other_run._with_ref_logps(rows_of(other_run), "train")["ref_logps"] == a
    assert other_run.ref_log_probs_cache_hits == 1
    other_tokens = trainer_for(tokenizer, tmp_path, rows, max_completion_length=4)
    other_tokens._with_ref_logps(rows_of(other_tokens), "train")
    assert other_tokens.ref_log_probs_cache_hits == 0


# ---------------------------------------------------------------------------------------- gradients


def test_one_step_gradient_matches_a_hand_computation(tokenizer, tmp_path):
    trainer = trainer_for(tokenizer, tmp_path, pointwise_rows(5, refs=6), transform="log")
    dataset = trainer._with_ref_logps(rows_of(trainer), "train")
    rows = [dataset[i] for i in range(5)]
    model = model_of(trainer).train()

    model.zero_grad()
    cast(torch.Tensor, trainer.compute_loss(model, SequenceCollator(tokenizer.pad_token_id)(rows))).backward()
    ours = [cast(torch.Tensor, p.grad).clone() for p in model.parameters()]

    # By hand: textbook log-probs, quantiles from the raw rewards, qrpo.losses, mean over the batch.
    raw = pointwise_rows(5, refs=6)
    model.zero_grad()
    logps = naive_logps(model, SequenceCollator(tokenizer.pad_token_id, padding_free=False)(rows))
    with torch.no_grad():
        ref = naive_logps(model, SequenceCollator(tokenizer.pad_token_id, padding_free=False)(rows))
    rewards = torch.tensor([r["reward"] for r in raw], dtype=torch.float64)
    refs = torch.tensor([r["ref_rewards"] for r in raw], dtype=torch.float64)
    expected_quantiles = quantile_rewards(rewards, refs, ties="upper")
    torch.testing.assert_close(torch.tensor([r["quantile"] for r in rows], dtype=torch.float64), expected_quantiles)
    qrpo_loss(logps, ref, rewards.float(), refs.float(), beta=0.1, transform="log").losses.mean().backward()
    for mine, theirs in zip(ours, (p.grad for p in model.parameters())):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-4)


def test_gradient_accumulation_gives_the_gradient_of_the_global_mean(tokenizer, tmp_path):
    """3 rows: one batch of 3, or micro-batches of 2 and 1 (a mean of means would weigh them 1/4, 1/4, 1/2)."""
    norms = []
    for batch, steps in ((3, 1), (2, 2)):
        trainer = trainer_for(
            tokenizer, tmp_path / f"{batch}", pointwise_rows(3), per_device_train_batch_size=batch,
            gradient_accumulation_steps=steps, max_steps=1, padding_free=True,
        )
        trainer.train()
        norms.append((trainer.state.log_history[0]["grad_norm"], trainer.state.log_history[0]["loss"]))
    assert norms[0] == pytest.approx(norms[1], rel=1e-5)


def test_checkpoint_resume_gives_the_same_next_step_loss(tokenizer, tmp_path):
    rows = pointwise_rows(16)
    straight = trainer_for(tokenizer, tmp_path / "a", rows, per_device_train_batch_size=2, max_steps=4)
    straight.train()
    interrupted = trainer_for(
        tokenizer, tmp_path / "b", rows, per_device_train_batch_size=2, max_steps=4, save_strategy="steps", save_steps=2
    )
    interrupted.train()
    resumed = trainer_for(tokenizer, tmp_path / "b", rows, per_device_train_batch_size=2, max_steps=4)
    resumed.train(resume_from_checkpoint=str(tmp_path / "b" / "out" / "checkpoint-2"))
    expected = losses_of(straight)
    assert losses_of(interrupted) == pytest.approx(expected, abs=1e-6)
    assert len(losses_of(resumed)) == 4  # steps 1-2 come from the checkpoint's trainer state
    # steps 3 and 4: weights, optimizer and data position restored
    assert losses_of(resumed)[2:] == pytest.approx(expected[2:], abs=1e-6)


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "change, loss_type, message",
    [
        (lambda rows: [{k: v for k, v in r.items() if k != "ref_rewards"} for r in rows], "qrpo",
         "missing column(s) ref_rewards"),
        (lambda rows: rows[:3] + [{**rows[3], "completion": [{"role": "assistant", "content": "  "}]}], "qrpo",
         "row 3: field 'completion' is empty"),
        (lambda rows: rows[:2] + [{**rows[2], "reward": float("nan")}], "qrpo", "row 2: field 'reward' is nan"),
        (lambda rows: rows[:1] + [{**rows[1], "ref_rewards": [0.5] * 3}], "qrpo", "row 1: field 'ref_rewards' has 3 rewards"),
        (lambda rows: rows, "dpo", "loss_type='dpo' needs paired rows"),
    ],
)
def test_bad_rows_are_named_with_the_fix(tokenizer, tmp_path, change, loss_type, message):
    with pytest.raises(DatasetError, match=message.replace("(", r"\(").replace(")", r"\)")):
        trainer_for(tokenizer, tmp_path, change(pointwise_rows(4)), loss_type=loss_type)


def test_too_few_reference_rewards_for_num_ref_rewards(tokenizer, tmp_path):
    with pytest.raises(DatasetError, match="row 0: field 'ref_rewards' has 8 rewards but num_ref_rewards=20; lower"):
        trainer_for(tokenizer, tmp_path, pointwise_rows(4), num_ref_rewards=20)


def test_a_model_path_that_does_not_exist_fails_fast(tmp_path):
    with pytest.raises(FileNotFoundError, match="could not be loaded"):
        QRPOTrainer(model=str(tmp_path / "nope"), args=config(tmp_path), train_dataset=Dataset.from_list(pointwise_rows(2)))


def test_plain_text_rows_get_bos_and_eos(tokenizer, tmp_path):
    rows = [{k: (v[0]["content"] if isinstance(v, list) and isinstance(v[0], dict) else v) for k, v in r.items()}
            for r in pointwise_rows(4)]
    trainer = trainer_for(tokenizer, tmp_path, rows, max_steps=2)
    first = rows_of(trainer)[0]
    assert first["prompt_ids"][0] == tokenizer.bos_token_id and first["completion_ids"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(first["completion_ids"][:-1]) == rows[0]["completion"]
    trainer.train()
    assert all(math.isfinite(x) for x in losses_of(trainer))


def test_gradient_checkpointing_and_bf16_autocast_train(tokenizer, tmp_path):
    rows = pointwise_rows(8)
    reference = trainer_for(tokenizer, tmp_path / "plain", rows, max_steps=2)
    reference.train()
    checkpointed = trainer_for(tokenizer, tmp_path / "gc", rows, max_steps=2, activation_checkpointing=True)
    checkpointed.train()
    assert losses_of(checkpointed) == pytest.approx(losses_of(reference), abs=1e-5)  # recomputation, same math
    bf16 = trainer_for(tokenizer, tmp_path / "bf16", rows, max_steps=2, bf16=True)
    bf16.train()
    assert losses_of(bf16) == pytest.approx(losses_of(reference), rel=0.05)


def test_packing_is_automatic_only_for_kernels_that_skip_other_sequences(tokenizer, tmp_path):
    from qrpo.trainer import _resolve_padding_free

    assert trainer_for(tokenizer, tmp_path, pointwise_rows(2)).padding_free is False  # sdpa: padded
    assert _resolve_padding_free(None, "flash_attention_2") and _resolve_padding_free(None, "flex_attention")
    assert _resolve_padding_free(True, "sdpa") and not _resolve_padding_free(False, "flash_attention_2")
