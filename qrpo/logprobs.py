"""Completion log-probabilities: how rows become one forward pass, and the per-sequence sums.

One implementation for everything that scores completions: QRPOTrainer (policy and reference), the
pipeline's tiny-model warm-up (its padded batches) and evaluation's KL (log-probs under policy and reference).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

# Per-row numbers the collator passes through to the loss, when the rows have them.
ROW_FIELDS = ("quantile", "reference_std", "chosen_reward", "rejected_reward", "side_weights")


@dataclass
class SequenceCollator:
    """Turns tokenized rows into one forward pass over all their completions.

    Pointwise rows give one sequence each, paired rows two (chosen, then rejected). Packed (default): all
    sequences of the batch are concatenated into a single row, `position_ids` restart at 0 for each, and
    `sequence_index` says which sequence each token belongs to; attention stays within a sequence
    (transformers builds the block-diagonal mask, or flash-attention's varlen kernel, from the position
    ids). Padded: one row per sequence, right-padded, with an attention mask.
    `labels` are -100 except on completion tokens, so only those count in the log-probs.
    """

    pad_token_id: int
    padding_free: bool = True

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        keys = ("chosen_ids", "rejected_ids") if "chosen_ids" in rows[0] else ("completion_ids",)
        sequences = [(row["prompt_ids"], row[key]) for row in rows for key in keys]
        batch = self._packed(sequences) if self.padding_free else self._padded(sequences)
        batch["completion_lengths"] = torch.tensor([len(c) for _, c in sequences])
        batch["row_index"] = torch.tensor([row.get("row_index", -1) for row in rows])
        for name in ROW_FIELDS:
            if name in rows[0]:
                batch[name] = torch.tensor([row[name] for row in rows], dtype=torch.float64)
        if "ref_logps" in rows[0]:  # (rows, sequences per row), flattened in the order of `sequences`
            batch["ref_logps"] = torch.tensor([row["ref_logps"] for row in rows], dtype=torch.float32).flatten()
        return batch

    @staticmethod
    def _packed(sequences: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        input_ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        index: list[int] = []
        for i, (prompt, completion) in enumerate(sequences):
            n = len(prompt) + len(completion)
            input_ids += prompt + completion
            labels += [-100] * len(prompt) + completion
            positions += range(n)
            index += [i] * n
        return {
            "input_ids": torch.tensor([input_ids]),
            "labels": torch.tensor([labels]),
            "position_ids": torch.tensor([positions]),
            "sequence_index": torch.tensor(index),
        }

    def _padded(self, sequences: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(p) + len(c) for p, c in sequences)
        input_ids = torch.full((len(sequences), width), self.pad_token_id)
        labels = torch.full((len(sequences), width), -100)
        attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for i, (prompt, completion) in enumerate(sequences):
            n = len(prompt) + len(completion)
            input_ids[i, :n] = torch.tensor(prompt + completion)
            labels[i, len(prompt) : n] = torch.tensor(completion)
            attention_mask[i, :n] = 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def sequence_logps(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Sum of the log-probs of each sequence's completion tokens, shape (sequences,), in float32.

    `model` must carry TRL's fused LM head (`add_fused_lm_head`); prompt and padding positions have
    label -100 and contribute exactly 0.
    """
    if "position_ids" in batch:
        out = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], labels=batch["labels"], fused_lm_head=True
        )
        per_token = out.log_probs[0].float()  # position t scores token t + 1
        sequences = len(batch["completion_lengths"])
        index = batch["sequence_index"][1:]
        return torch.zeros(sequences, dtype=per_token.dtype, device=per_token.device).index_add(0, index, per_token)
    out = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"], fused_lm_head=True
    )
    return out.log_probs.float().sum(-1)
