"""Training rows -> the tokenized table the loss reads, prepared once before training so a step only collates.

Rows are checked first (a bad row is named with its field and the fix, before any model loads); QRPO on paired
rows keeps each pair one batch item (`pair_batching="pairs"`, the reference code) or turns pairs into pointwise
rows (`split`); quantile rewards are computed once for the whole table; then prompt and completions are tokenized
and cut to `max_length` as the reference code does.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
from datasets import Dataset
from transformers import PreTrainedTokenizerBase
from trl.data_utils import is_conversational, maybe_apply_chat_template

from qrpo.config import QRPOConfig
from qrpo.losses import PAIRED_LOSS_TYPES, TRANSFORMS
from qrpo.quantile import quantile_rewards, reference_std

POINTWISE_COLUMNS = ("prompt", "completion")
PAIRED_COLUMNS = ("prompt", "chosen", "rejected")


class DatasetError(ValueError):
    """A training row that cannot be used; the message names the row, the field and the fix."""


def prepare_dataset(
    dataset: Dataset, tokenizer: PreTrainedTokenizerBase, args: QRPOConfig, name: str = "train"
) -> tuple[Dataset, dict[str, float]]:
    """Validate rows, turn them into what the loss needs, and tokenize.

    Returns the tokenized dataset (columns `prompt_ids` and `completion_ids`, or `chosen_ids` and
    `rejected_ids`, plus the per-row numbers of ROW_FIELDS) and dataset-level constants of the loss
    (`mean_reference_std`, `min_quantile`).
    """
    paired = _check_columns(dataset, args, name)
    _check_rows(dataset, args, paired, name)
    constants: dict[str, float] = {}
    if args.loss_type == "qrpo":
        if paired and args.pair_batching == "split":
            dataset = dataset.map(
                _unpair,
                batched=True,
                with_indices=True,
                remove_columns=dataset.column_names,
                fn_kwargs={"selector": args.sample_selector, "seed": args.seed},
                desc=f"{name}: pairs -> pointwise ({args.sample_selector})",
            )
        if paired and args.pair_batching == "pairs":
            dataset = _add_paired_quantiles(dataset, args)
            dataset, constants = _add_quantiles(dataset, args)
        else:
            dataset, constants = _add_quantiles(dataset, args)
    dataset = dataset.map(
        _tokenize,
        fn_kwargs={"tokenizer": tokenizer, "args": args},
        remove_columns=[c for c in ("prompt", "completion", "chosen", "rejected") if c in dataset.column_names],
        desc=f"{name}: tokenizing",
    )
    return dataset, constants


def _check_columns(dataset: Dataset, args: QRPOConfig, name: str) -> bool:
    columns = set(dataset.column_names)
    paired = "chosen" in columns or "rejected" in columns
    needed = list(PAIRED_COLUMNS if paired else POINTWISE_COLUMNS)
    if args.loss_type == "qrpo":
        needed += ["chosen_reward", "rejected_reward", "ref_rewards"] if paired else ["reward", "ref_rewards"]
    elif args.loss_type == "rebel":
        needed += ["chosen_reward", "rejected_reward"]
    if args.loss_type in PAIRED_LOSS_TYPES and not paired:
        raise DatasetError(
            f"{name} dataset: loss_type={args.loss_type!r} needs paired rows (columns {', '.join(PAIRED_COLUMNS)}), "
            f"but it has {sorted(columns)}; build pairs with `qrpo build CONFIG --set build.pairs=offpolicy10random`, "
            "or use loss_type='qrpo'"
        )
    missing = [c for c in needed if c not in columns]
    if missing:
        kind = "paired" if paired else "pointwise"
        raise DatasetError(
            f"{name} dataset: missing column(s) {', '.join(missing)} for loss_type={args.loss_type!r} on {kind} rows "
            f"(needs {', '.join(needed)}; has {', '.join(sorted(columns))})"
        )
    return paired


def _check_rows(dataset: Dataset, args: QRPOConfig, paired: bool, name: str) -> None:
    """Empty completions, NaN rewards and reference-reward lists of the wrong length, named by row."""
    texts = ("chosen", "rejected") if paired else ("completion",)
    for field in texts:
        for row, value in enumerate(dataset[field]):
            if not _text(value).strip():
                raise DatasetError(f"{name} dataset row {row}: field {field!r} is empty; drop the row (nothing to learn from)")
    rewards = ("chosen_reward", "rejected_reward") if paired else ("reward",)
    if args.loss_type in ("qrpo", "rebel"):
        for field in rewards:
            for row, value in enumerate(dataset[field]):
                if value is None or not math.isfinite(value):
                    raise DatasetError(f"{name} dataset row {row}: field {field!r} is {value}; "
                                       "give a finite reward or drop the row")
    if args.loss_type != "qrpo":
        return
    lengths: set[int] = set()
    for row, refs in enumerate(dataset["ref_rewards"]):
        if refs is None or any(r is None or not math.isfinite(r) for r in refs):
            raise DatasetError(f"{name} dataset row {row}: field 'ref_rewards' holds a missing or NaN reward; "
                               "regrade it or drop the row")
        if args.num_ref_rewards is not None and len(refs) < args.num_ref_rewards:
            raise DatasetError(
                f"{name} dataset row {row}: field 'ref_rewards' has {len(refs)} rewards but num_ref_rewards="
                f"{args.num_ref_rewards}; lower num_ref_rewards or generate more reference completions"
            )
        if args.num_ref_rewards is None and lengths and len(refs) not in lengths:
            raise DatasetError(
                f"{name} dataset row {row}: field 'ref_rewards' has {len(refs)} rewards, other rows {sorted(lengths)[0]}; "
                "set num_ref_rewards to at most the shortest length so every prompt uses as many references"
            )
        lengths.add(len(refs))


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # chat messages
        return "".join(str(message.get("content") or "") for message in value)
    return "" if value is None else str(value)


def _unpair(rows: dict[str, list], indices: list[int], selector: str, seed: int) -> dict[str, list]:
    """Paired rows -> pointwise rows; QRPO needs no pairs, so `selector` picks the completions to keep."""
    out: dict[str, list] = defaultdict(list)
    for j, index in enumerate(indices):
        sides = {"both": ("chosen", "rejected"), "chosen": ("chosen",), "rejected": ("rejected",)}.get(selector)
        if sides is None:  # random: one side per pair, fixed by (seed, row)
            sides = (("chosen", "rejected")[np.random.default_rng([seed, index]).integers(2)],)
        for side in sides:
            out["prompt"].append(rows["prompt"][j])
            out["completion"].append(rows[side][j])
            out["reward"].append(rows[f"{side}_reward"][j])
            out["ref_rewards"].append(rows["ref_rewards"][j])
    return dict(out)


def _side_weights(selector: str, seed: int, rows: int) -> list[list[float]]:
    """Paired rows kept as pairs: per pair, (chosen, rejected) weights of the two losses. The reference code
    zeroes the unselected side's loss and still averages over both sides (so `chosen` halves the loss scale);
    `random` picks one side per pair, fixed by (seed, row) rather than drawn anew at every step."""
    fixed = {"both": [1.0, 1.0], "chosen": [1.0, 0.0], "rejected": [0.0, 1.0]}.get(selector)
    if fixed is not None:
        return [fixed] * rows
    return [[1.0, 0.0] if np.random.default_rng([seed, i]).integers(2) == 0 else [0.0, 1.0] for i in range(rows)]


def _add_paired_quantiles(dataset: Dataset, args: QRPOConfig) -> Dataset:
    """Paired rows kept as pairs (`pair_batching="pairs"`): the `reward` column holds both sides' rewards,
    (chosen, rejected), so `_add_quantiles` gives each pair a (chosen, rejected) quantile; `side_weights`
    carries the sample selector to the loss."""
    rewards = [[c, r] for c, r in zip(dataset["chosen_reward"], dataset["rejected_reward"])]
    dataset = dataset.add_column("reward", rewards)
    return dataset.add_column("side_weights", _side_weights(args.sample_selector, args.seed, len(dataset)))


def _add_quantiles(dataset: Dataset, args: QRPOConfig) -> tuple[Dataset, dict[str, float]]:
    """Quantile rewards against the first `num_ref_rewards` references, computed once for the whole table.
    A `reward` column of (chosen, rejected) pairs gives a (chosen, rejected) quantile per row."""
    if args.transform not in TRANSFORMS:
        raise ValueError(f"transform={args.transform!r} is not one of {TRANSFORMS}")
    refs = np.asarray([r[: args.num_ref_rewards] for r in dataset["ref_rewards"]], dtype=np.float64)
    rewards = np.asarray(dataset["reward"], dtype=np.float64)
    if rewards.ndim == 2:  # pairs: each side against its row's references
        sides = [quantile_rewards(rewards[:, k], refs, ties=args.ties, seed=args.seed + k) for k in range(2)]
        quantiles = np.stack(sides, axis=1)
    else:
        quantiles = quantile_rewards(rewards, refs, ties=args.ties, seed=args.seed)
    dataset = dataset.add_column("quantile", quantiles.tolist())
    constants = {"min_quantile": 1 / refs.shape[1] if args.ties != "random" else float("nan")}
    if args.transform == "scaled-normal-icdf":
        std = reference_std(refs)
        dataset = dataset.add_column("reference_std", std.tolist())
        constants["mean_reference_std"] = float(std.mean())
    return dataset, constants


def _tokenize(row: dict[str, Any], tokenizer: PreTrainedTokenizerBase, args: QRPOConfig) -> dict[str, Any]:
    """Chat template (when the row is chat messages), then token ids; prompts keep their end, completions
    their start, and every completion ends with EOS as the model would have produced it."""
    texts_keys = [k for k in ("prompt", "completion", "chosen", "rejected") if k in row]
    chat = is_conversational(row)
    texts = maybe_apply_chat_template({k: row[k] for k in texts_keys}, tokenizer) if chat else row
    prompt = tokenizer(texts["prompt"], add_special_tokens=False)["input_ids"]
    if not chat and tokenizer.bos_token_id is not None and prompt[:1] != [tokenizer.bos_token_id]:
        prompt = [tokenizer.bos_token_id] + prompt
    if args.max_prompt_length is not None:
        prompt = prompt[-args.max_prompt_length :]
    out = {"prompt_ids": prompt[: args.max_length] if args.max_length is not None else prompt}
    for key in texts_keys[1:]:
        ids = tokenizer(texts[key], add_special_tokens=False)["input_ids"]
        if not chat and tokenizer.eos_token_id is not None and ids[-1:] != [tokenizer.eos_token_id]:
            ids = ids + [tokenizer.eos_token_id]
        if args.max_completion_length is not None:
            ids = ids[: args.max_completion_length]
        out[f"{key}_ids"] = truncate_sequence(prompt, ids, args.max_length)[1]
    return out


def truncate_sequence(prompt: list[int], completion: list[int], max_length: int | None) -> tuple[list[int], list[int]]:
    """prompt + completion cut to their first `max_length` tokens, as the reference code does (it truncates the
    concatenated, left-flushed sequence on the right): the completion loses its end first, and a prompt of
    max_length tokens or more leaves an empty completion (log-prob 0)."""
    if max_length is None:
        return prompt, completion
    return prompt[:max_length], completion[: max(0, max_length - len(prompt))]
