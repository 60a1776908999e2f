"""`QRPOConfig`: the training arguments of `QRPOTrainer`, in TRL's style (a `TrainingArguments` subclass with
the method's own fields beside the generic ones)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from transformers import TrainingArguments

LOSS_TYPES = ("qrpo", "dpo", "simpo", "rebel")
PAIRED_LOSS_TYPES = ("dpo", "simpo", "rebel")
SAMPLE_SELECTORS = ("both", "chosen", "rejected", "random")


@dataclass
class QRPOConfig(TrainingArguments):
    """Arguments of `QRPOTrainer`. Every `transformers.TrainingArguments` field applies as well.

    The defaults are the paper's LeetCode recipe where it has one (arXiv 2507.08068: beta 1e-2 within its
    sweep, identity transform, quantile ties "upper", learning rate 3e-7, cosine schedule, 10% warmup).
    """

    loss_type: str = field(
        default="qrpo",
        metadata={"help": "qrpo (pointwise), or a paired baseline: dpo, simpo, rebel.", "choices": LOSS_TYPES},
    )
    beta: float = field(default=1e-2, metadata={"help": "KL coefficient (SimPO: the reward scale)."})
    transform: str = field(
        default="identity",
        metadata={"help": "f applied to the quantile reward: identity, log, normal-icdf, scaled-normal-icdf, sqrt, square."},
    )
    regression_loss: str = field(default="mse", metadata={"help": "QRPO's regression loss: mse (the paper) or mae."})
    ties: str = field(default="upper", metadata={"help": "Quantile ties: upper (the paper), mid or random."})
    num_ref_rewards: int | None = field(
        default=None,
        metadata={"help": "Use the first N reference rewards of each row for the quantile (default: all of them)."},
    )
    approximate_log_z: bool = field(
        default=False, metadata={"help": "The paper's log Z = log beta + 1/beta for identity, instead of the exact one."}
    )
    sample_selector: str = field(
        default="both",
        metadata={
            "help": "QRPO on paired rows: which completions become pointwise samples.",
            "choices": SAMPLE_SELECTORS,
        },
    )
    simpo_gamma_beta_ratio: float = field(default=0.5, metadata={"help": "SimPO's gamma / beta."})
    max_prompt_length: int | None = field(
        default=1024, metadata={"help": "Prompts longer than this keep their last tokens (None: no limit)."}
    )
    max_completion_length: int | None = field(
        default=1024, metadata={"help": "Completions longer than this keep their first tokens (None: no limit)."}
    )
    padding_free: bool | None = field(
        default=None,
        metadata={
            "help": "Pack the sequences of a batch into one row with position ids, so no FLOPs go to padding. None "
            "(auto): pack when the model's attention kernel skips the other sequences of the row (flash_attention_2/3, "
            "flex_attention); pad otherwise, since sdpa or eager would attend over the whole packed row."
        },
    )
    precompute_ref_log_probs: bool = field(
        default=True,
        metadata={
            "help": "Compute the reference log-probs once before training and cache them (then no reference model is "
            "kept in memory); False keeps a frozen reference model and computes them online."
        },
    )
    ref_log_probs_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Where cached reference log-probs go (default: beside the dataset's files, else ~/.cache/qrpo)."},
    )
    precompute_ref_batch_size: int | None = field(
        default=None, metadata={"help": "Batch size of the reference pass (default: per_device_eval_batch_size)."}
    )
    learning_rate: float = field(default=3e-7, metadata={"help": "AdamW learning rate (the paper sweeps 1e-7..1e-6)."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Fraction of the steps spent warming up."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Kept: the trainer selects its own columns."})

    def __post_init__(self) -> None:
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type={self.loss_type!r} is not one of {LOSS_TYPES}")
        if self.sample_selector not in SAMPLE_SELECTORS:
            raise ValueError(f"sample_selector={self.sample_selector!r} is not one of {SAMPLE_SELECTORS}")
        if self.regression_loss not in ("mse", "mae"):
            raise ValueError(f"regression_loss={self.regression_loss!r} is not one of ('mse', 'mae')")
        if self.ties not in ("upper", "mid", "random"):
            raise ValueError(f"ties={self.ties!r} is not one of ('upper', 'mid', 'random')")
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if self.num_ref_rewards is not None and self.num_ref_rewards < 1:
            raise ValueError(f"num_ref_rewards must be >= 1 (or None for all), got {self.num_ref_rewards}")
        if self.loss_type == "simpo":
            self.precompute_ref_log_probs = False  # SimPO is reference-free: no pass, no reference model
        super().__post_init__()


def unknown_arguments(names: Iterable[str]) -> list[str]:
    """The names that are not QRPOConfig (TrainingArguments included) fields, sorted: checked before a run."""
    return sorted(set(names) - set(QRPOConfig.__dataclass_fields__))
