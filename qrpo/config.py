"""`QRPOConfig`: the training arguments of `QRPOTrainer`, in TRL's style (a `TrainingArguments` subclass with
the method's own fields beside the generic ones)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from transformers import TrainingArguments

from qrpo.losses import LOSS_TYPES, REGRESSION_LOSSES, TRANSFORMS, LossType, RegressionLoss, Transform
from qrpo.quantile import TIES, Ties

# QRPO on paired rows: which completions of each pair the loss counts (`qrpo.rows`' `_side_weights`/`_unpair`).
SampleSelector = Literal["both", "chosen", "rejected", "random"]
SAMPLE_SELECTORS: tuple[SampleSelector, ...] = get_args(SampleSelector)
# QRPO on paired rows: pairs: a pair is one batch item, both sequences in the same step, the unselected side's
# loss zeroed but counted (the reference code); split: pairs become pointwise rows before batching, and the
# unselected side is left out (the project's: a batch is a bag of sequences, total_batch_size counts sequences).
PairBatching = Literal["pairs", "split"]
PAIR_BATCHINGS: tuple[PairBatching, ...] = get_args(PairBatching)

# The fields with a closed set of values, and those values (from the modules that own them).
CHOICES: dict[str, tuple[str, ...]] = {
    "loss_type": LOSS_TYPES,
    "transform": TRANSFORMS,
    "regression_loss": REGRESSION_LOSSES,
    "ties": TIES,
    "sample_selector": SAMPLE_SELECTORS,
    "pair_batching": PAIR_BATCHINGS,
}


@dataclass
class QRPOConfig(TrainingArguments):
    """Arguments of `QRPOTrainer`. Every `transformers.TrainingArguments` field applies as well.

    The defaults are the paper's LeetCode recipe where it has one (arXiv 2507.08068: beta 1e-2 within its
    sweep, identity transform, quantile ties "upper", learning rate 3e-7, cosine schedule, 10% warmup).
    """

    loss_type: LossType = field(
        default="qrpo", metadata={"help": "qrpo (pointwise), or a paired baseline: dpo, simpo, rebel."}
    )
    beta: float = field(default=1e-2, metadata={"help": "KL coefficient (SimPO: the reward scale)."})
    transform: Transform = field(
        default="identity",
        metadata={"help": "f applied to the quantile reward: identity, log, normal-icdf, scaled-normal-icdf, sqrt, square."},
    )
    regression_loss: RegressionLoss = field(default="mse", metadata={"help": "QRPO's regression loss: mse (the paper) or mae."})
    ties: Ties = field(default="upper", metadata={"help": "Quantile ties: upper (the paper), mid or random."})
    num_ref_rewards: int | None = field(
        default=None,
        metadata={"help": "Use the first N reference rewards of each row for the quantile (default: all of them)."},
    )
    approximate_log_z: bool = field(
        default=False, metadata={"help": "The paper's log Z = log beta + 1/beta for identity, instead of the exact one."}
    )
    sample_selector: SampleSelector = field(
        default="both", metadata={"help": "QRPO on paired rows: which completions the loss counts."}
    )
    pair_batching: PairBatching = field(
        default="pairs",
        metadata={"help": "QRPO on paired rows: pairs (a pair is one batch item, the unselected side's loss is zeroed: "
                  "the reference code) or split (pairs become pointwise rows before batching, the unselected side is "
                  "dropped)."},
    )
    simpo_gamma_beta_ratio: float = field(default=0.5, metadata={"help": "SimPO's gamma / beta."})
    max_prompt_length: int | None = field(
        default=1024, metadata={"help": "Prompts longer than this keep their last tokens (None: no limit)."}
    )
    max_completion_length: int | None = field(
        default=1024, metadata={"help": "Completions longer than this keep their first tokens (None: no limit)."}
    )
    max_length: int | None = field(
        default=None,
        metadata={"help": "Cap on prompt + completion tokens, after the two caps above: the sequence keeps its first "
                  "max_length tokens, as the reference code truncates (None: no total cap)."},
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
        problem = invalid_choice({name: getattr(self, name) for name in CHOICES})
        if problem is not None:
            raise ValueError(problem)
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


def invalid_choice(args: dict[str, Any]) -> str | None:
    """The first argument whose value is outside its field's choices, as `name=value is not one of (...)`;
    None if every value is allowed. Lets a pipeline refuse a sweep before any stage runs."""
    for name, value in args.items():
        choices = CHOICES.get(name)
        values = value if isinstance(value, list) else [value]  # a sweep's grid
        for item in values:
            if choices is not None and item not in choices:
                return f"{name}={item!r} is not one of {choices}"
    return None
