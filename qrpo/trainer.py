"""`QRPOTrainer`: QRPO (and the DPO, SimPO, REBEL baselines) on `transformers.Trainer`.

QRPO is pointwise: each (prompt, completion, reward) row is its own regression target, so a batch is a bag
of independent sequences, packed into one row with position ids (padding-free), so no FLOPs go to padding.
On paired rows QRPO keeps each pair one batch item by default (`pair_batching="pairs"`, the reference code:
a batch of 128 pairs is 256 sequences, the sample selector zeroes a side's loss); `split` turns pairs into
pointwise rows first. `max_length` caps prompt + completion as the reference code does.
The reference log-probs are computed once, before training, with the initial policy (or a given reference
model), cached on disk under a fingerprint and reused across runs; no reference model stays in memory.

Log-probabilities are sums over completion tokens, computed by TRL's fused LM head (`add_fused_lm_head`),
which never materialises the (tokens x vocabulary) logits.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections import defaultdict
from typing import Any, cast

import numpy as np
import torch
from accelerate.utils import DistributedType
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase, Trainer
from transformers.utils import logging
from trl.data_utils import is_conversational, maybe_apply_chat_template
from trl.trainer.utils import add_fused_lm_head

from qrpo import reference
from qrpo.config import QRPOConfig
from qrpo.logprobs import SequenceCollator, sequence_logps
from qrpo.losses import PAIRED_LOSS_TYPES, TRANSFORMS, LossOutput, dpo_loss, qrpo_loss, rebel_loss, simpo_loss
from qrpo.quantile import quantile_rewards, reference_std

logger = logging.get_logger(__name__)
POINTWISE_COLUMNS = ("prompt", "completion")
PAIRED_COLUMNS = ("prompt", "chosen", "rejected")


class DatasetError(ValueError):
    """A training row that cannot be used; the message names the row, the field and the fix."""


# ---------------------------------------------------------------------------------------------- data


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


# ------------------------------------------------------------------------------------------- trainer


class QRPOTrainer(Trainer):
    """Train a causal LM with QRPO (pointwise) or a paired baseline (DPO, SimPO, REBEL).

    Rows, TRL style, plain text or chat messages (the chat template is applied here):
      pointwise  prompt, completion, reward, ref_rewards (the rewards of N reference completions)
      paired     prompt, chosen, rejected, chosen_reward, rejected_reward, ref_rewards
    QRPO on paired rows keeps the completions that `args.sample_selector` picks; DPO and SimPO need only
    prompt, chosen, rejected; REBEL also the two rewards.

    Example:
        trainer = QRPOTrainer(model="path/to/model", args=QRPOConfig(output_dir="out", beta=0.01),
                              train_dataset=Dataset.from_list(rows))
        trainer.train()
    """

    args: QRPOConfig
    _tag_names = ["trl", "qrpo"]
    # compute_loss divides by the number of loss items in the whole accumulated (and gathered) batch
    loss_is_scaled_for_ga = True

    def __init__(
        self,
        model: str | PreTrainedModel,
        ref_model: str | PreTrainedModel | None = None,
        args: QRPOConfig | None = None,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | dict[str, Dataset] | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        **kwargs: Any,
    ) -> None:
        args = args or QRPOConfig(output_dir="qrpo-output")
        if isinstance(model, str):
            model = load_model(model, args)
        if isinstance(ref_model, str):
            ref_model = load_model(ref_model, args)
        if processing_class is None:
            processing_class = AutoTokenizer.from_pretrained(model.config._name_or_path)
        if processing_class.pad_token_id is None:
            processing_class.pad_token = processing_class.eos_token
        self._constants: dict[str, float] = {}
        if train_dataset is not None:
            train_dataset, self._constants = prepare_dataset(train_dataset, processing_class, args, "train")
        if isinstance(eval_dataset, dict):
            eval_dataset = {k: prepare_dataset(v, processing_class, args, f"eval {k}")[0] for k, v in eval_dataset.items()}
        elif eval_dataset is not None:
            eval_dataset = prepare_dataset(eval_dataset, processing_class, args, "eval")[0]
        self.padding_free = _resolve_padding_free(args.padding_free, getattr(model.config, "_attn_implementation", None))
        add_fused_lm_head(model)
        kwargs.setdefault("data_collator", SequenceCollator(processing_class.pad_token_id, self.padding_free))
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        self.model_accepts_loss_kwargs = False
        self._metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self.needs_reference = args.loss_type != "simpo"
        self.ref_model: torch.nn.Module | None = None
        self._precompute_model: PreTrainedModel | None = ref_model  # None: the initial policy is the reference
        self.ref_log_probs_cache_hits = 0
        self._reference_weights: str | None = None
        if self.needs_reference and not args.precompute_ref_log_probs:
            self.ref_model = self._prepare_online_reference(ref_model if ref_model is not None else model)
            self._precompute_model = None

    # ------------------------------------------------------------------ reference log-probs

    def _prepare_online_reference(self, source: PreTrainedModel) -> torch.nn.Module:
        ref = copy.deepcopy(source) if source is self.model else source
        if not hasattr(ref.forward, "__wrapped__"):
            add_fused_lm_head(ref)
        ref.eval().requires_grad_(False)
        wrapped = reference.wrap_for_engine(ref, self.accelerator)
        return wrapped if wrapped is not None else self.accelerator.prepare_model(ref, evaluation_mode=True)

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """Reference log-probs first, while the model is still the initial policy: before a checkpoint to
        resume from is loaded into it, and before any step changes it (the eval sets too)."""
        self._attach_ref_logps()
        return super().train(*args, **kwargs)

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        self._attach_ref_logps()
        return super().evaluate(*args, **kwargs)

    def _attach_ref_logps(self) -> None:
        if isinstance(self.train_dataset, Dataset):
            self.train_dataset = self._with_ref_logps(self.train_dataset, "train")
        if isinstance(self.eval_dataset, dict):
            self.eval_dataset = {k: self._with_ref_logps(v, f"eval {k}") for k, v in self.eval_dataset.items()}
        elif isinstance(self.eval_dataset, Dataset):
            self.eval_dataset = self._with_ref_logps(self.eval_dataset, "eval")
        self._precompute_model = None  # the reference model is not needed any more

    def _with_ref_logps(self, dataset: Dataset, name: str) -> Dataset:
        """Add the `ref_logps` column, from the cache or from one pass of the reference model."""
        if not self.needs_reference or self.ref_model is not None or "ref_logps" in dataset.column_names:
            return dataset
        model = self._reference_source()
        if self._reference_weights is None:  # the same weights for every dataset: hashed once
            self._reference_weights = reference.weights_fingerprint(model, self.accelerator)
        precision = "bf16" if self.args.bf16 else "fp16" if self.args.fp16 else "full"
        key = reference.cache_key(dataset, self._reference_weights, precision, self.accelerator)
        path = reference.cache_dir(self.args.ref_log_probs_cache_dir, dataset) / f"{key}.npy"
        values = reference.load_cached(path)
        if values is not None:
            self.ref_log_probs_cache_hits += 1
        else:
            values = self._compute_ref_logps(model, dataset, name)
            if self.accelerator.is_main_process:
                reference.save_cached(path, values)
            self.accelerator.wait_for_everyone()
        if len(values) != len(dataset):
            raise RuntimeError(f"cached reference log-probs {path} have {len(values)} rows, the dataset {len(dataset)}")
        return dataset.add_column("ref_logps", values.tolist())

    def _reference_source(self) -> PreTrainedModel:
        """The model whose log-probs are the reference: the given ref_model, else the initial policy."""
        return cast(PreTrainedModel, self._precompute_model if self._precompute_model is not None else self.model)

    def _compute_ref_logps(self, model: PreTrainedModel, dataset: Dataset, name: str) -> np.ndarray:
        """One pass through the model as the engine wraps it (see `qrpo.reference`)."""
        if model is self.model and self.state.global_step > 0:
            raise RuntimeError(
                f"{name}: reference log-probs are needed after training changed the model; give every dataset to "
                "QRPOTrainer before train(), or pass ref_model"
            )
        if not hasattr(model.forward, "__wrapped__"):
            add_fused_lm_head(model)
        # FSDP shards what it wraps: the policy gets a copy (freed after the pass), as TRL does
        sharding = self.accelerator.distributed_type == DistributedType.FSDP
        engine = reference.wrap_for_engine(copy.deepcopy(model) if sharding and model is self.model else model, self.accelerator)
        if engine is None:  # no engine wrapper: the model itself, on the training device
            engine = cast(torch.nn.Module, model).to(self.args.device)
        batch_size = self.args.precompute_ref_batch_size or self.args.per_device_eval_batch_size
        return reference.compute_logps(engine, dataset, self.data_collator, self.accelerator, batch_size, name)

    # ------------------------------------------------------------------------------ steps

    def set_initial_training_values(self, args: Any, dataloader: Any) -> Any:
        """With `dataloader_drop_last`, an incomplete gradient-accumulation step is dropped too, as transformers
        4.49 (the reference code's) does: an epoch is floor(micro-batches / accumulation) optimizer steps, so 2563
        x 10 pairs at 128 per step are 200 full steps, not 200 and a step of 2 pairs per GPU."""
        values = list(super().set_initial_training_values(args, dataloader))
        accumulation = args.gradient_accumulation_steps
        micro_batches = len(dataloader) if hasattr(dataloader, "__len__") else None
        if not args.dataloader_drop_last or micro_batches is None or micro_batches < accumulation:
            return tuple(values)
        steps = micro_batches // accumulation
        values[1], values[5] = steps, steps * accumulation  # update steps per epoch, micro-batches per epoch
        if args.max_steps <= 0:
            values[6] = math.ceil(args.num_train_epochs * steps)
        return tuple(values)

    # ------------------------------------------------------------------------------ the loss

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor:
        """Loss items (rows) in the whole accumulated batch, over all processes: the loss divides by it,
        so gradient accumulation and data parallelism give the gradient of the mean over the global batch."""
        count = torch.tensor(sum(len(b["row_index"]) for b in batch_samples), device=device)
        if self.args.world_size > 1:
            count = self.accelerator.gather(count).sum()
        return count

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, dict]:
        logps = sequence_logps(model, inputs)
        ref_logps = None
        if self.needs_reference:
            if "ref_logps" in inputs:
                ref_logps = inputs["ref_logps"].to(logps)
            else:
                if self.ref_model is None:
                    raise RuntimeError("the batch has no ref_logps and there is no reference model; call train() or evaluate()")
                with torch.no_grad():
                    ref_logps = sequence_logps(self.ref_model, inputs)
        output = self._losses(logps, ref_logps, inputs)
        if num_items_in_batch is None:
            loss = output.losses.mean()
        else:  # each process's share of the mean over the global batch (DDP averages the gradients)
            loss = output.losses.sum() / num_items_in_batch * self.accelerator.num_processes
        self._record(output, logps, ref_logps, "train" if model.training else "eval")
        return (loss, {"logps": logps}) if return_outputs else loss

    def _losses(self, logps: torch.Tensor, ref_logps: torch.Tensor | None, inputs: dict[str, torch.Tensor]) -> LossOutput:
        args = self.args
        chosen, rejected = logps[0::2], logps[1::2]
        if args.loss_type == "simpo":
            lengths = inputs["completion_lengths"].to(logps)
            return simpo_loss(
                chosen, rejected, lengths[0::2], lengths[1::2], beta=args.beta, gamma_beta_ratio=args.simpo_gamma_beta_ratio
            )
        if ref_logps is None:
            raise RuntimeError(f"loss_type={args.loss_type!r} needs reference log-probs, and the batch has none")
        if args.loss_type == "qrpo":
            min_quantile = self._constants.get("min_quantile")
            quantiles, reference_std = inputs["quantile"], inputs.get("reference_std")
            paired = quantiles.dim() == 2  # pairs kept together: (pairs, 2) -> the sequences' order
            if paired and reference_std is not None:
                reference_std = reference_std.repeat_interleave(2)
            output = qrpo_loss(
                logps,
                ref_logps,
                quantiles=quantiles.flatten(),
                beta=args.beta,
                transform=args.transform,
                loss=args.regression_loss,
                approximate=args.approximate_log_z,
                min_quantile=None if min_quantile is None or math.isnan(min_quantile) else min_quantile,
                reference_std=reference_std,
                mean_reference_std=self._constants.get("mean_reference_std"),
            )
            if paired:  # the reference's (w_c loss_c + w_r loss_r) / 2 per pair: one loss item per pair
                weights = inputs["side_weights"].to(output.losses).flatten()
                output = dataclasses.replace(output, losses=(output.losses * weights).view(-1, 2).mean(dim=1))
            return output
        ref_chosen, ref_rejected = ref_logps[0::2], ref_logps[1::2]
        if args.loss_type == "dpo":
            return dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=args.beta)
        return rebel_loss(
            chosen,
            rejected,
            ref_chosen,
            ref_rejected,
            inputs["chosen_reward"].to(logps),
            inputs["rejected_reward"].to(logps),
            beta=args.beta,
        )

    # ------------------------------------------------------------------------------ metrics

    def _record(self, output: LossOutput, logps: torch.Tensor, ref_logps: torch.Tensor | None, mode: str) -> None:
        """Per-step means of the paper's metrics, under TRL's names (rewards/..., logps/...)."""
        names = {
            "quantile_rewards": "rewards/quantile",
            "modified_rewards": "rewards/modified",
            "calibrated_rewards": "rewards/calibrated",
            "implicit_rewards": "rewards/implicit",
            "sign_agreement": "rewards/sign_agreement",
            "log_Z": "log_z",
            "chosen_rewards": "rewards/chosen",
            "rejected_rewards": "rewards/rejected",
            "margins": "rewards/margins",
            "accuracy": "rewards/accuracies",
        }
        values = {names[k]: v for k, v in output.metrics.items()}
        logps = logps.detach()
        if self.args.loss_type == "qrpo" and ref_logps is not None:
            values["logps/completion"] = logps
            values["log_ratio"] = logps - ref_logps.detach()
        else:
            values["logps/chosen"], values["logps/rejected"] = logps[0::2], logps[1::2]
        for name, value in values.items():
            gathered = self.accelerator.gather_for_metrics(value.float().reshape(-1))
            self._metrics[mode][name].append(gathered.mean().item())

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model is not None and self.model.training else "eval"
        prefix = "eval_" if mode == "eval" else ""
        for name, values in self._metrics[mode].items():
            logs[prefix + name] = sum(values) / len(values)
        self._metrics[mode].clear()
        super().log(logs, start_time)

    def prediction_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], prediction_loss_only: bool, ignore_keys: list[str] | None = None
    ) -> tuple[torch.Tensor, None, None]:
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = cast(torch.Tensor, self.compute_loss(model, inputs))
        return loss.detach(), None, None


# ------------------------------------------------------------------------------------------ helpers


PACKING_ATTENTION = ("flash_attention_2", "flash_attention_3", "flex_attention")


def _resolve_padding_free(requested: bool | None, attention: str | None) -> bool:
    """Pack only where it pays: a varlen/block-sparse kernel attends within each sequence, while sdpa or eager
    would compute the whole (tokens x tokens) square of the packed row (measured on CPU: 0.38x of padded)."""
    packs = attention in PACKING_ATTENTION or "flash" in str(attention)
    if requested is None:
        return packs
    if requested and not packs:
        logger.warning(
            "padding_free=True with %s attention computes each packed row's full (tokens x tokens) square; load the model "
            "with attn_implementation='flash_attention_2' or 'flex_attention' (GPU), or leave padding_free unset",
            attention,
        )
    return requested


def load_model(path: str, args: QRPOConfig) -> PreTrainedModel:
    """from_pretrained with a clear error for a path that is neither a directory nor a hub id we can reach."""
    dtype = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else "auto"
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except OSError as error:
        raise FileNotFoundError(
            f"model {path!r} could not be loaded ({str(error).splitlines()[0]}); give a local directory with "
            "config.json and weights, or a hub id this machine can download"
        ) from None
