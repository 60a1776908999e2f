"""`qrpo run CONFIG --plan`: what a recipe will do, computed without running it."""

from __future__ import annotations


def optimizer_steps(items: int, batch: int, drop_last: bool, epochs: float = 1.0) -> int:
    """Optimizer steps of one training run: `items` batch items (pairs, or pointwise rows) at `batch` per step.
    With drop_last an incomplete last batch (and an incomplete accumulation) is dropped, as the reference code's
    transformers 4.49 does; without it the last partial batch is one more step."""
    per_epoch = items // batch if drop_last else -(-items // batch)
    return int(max(per_epoch, 1) * epochs + 0.999999)
