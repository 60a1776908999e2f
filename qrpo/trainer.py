"""`QRPOTrainer`: QRPO (and the DPO, SimPO, REBEL baselines) on `transformers.Trainer`.

QRPO is pointwise: each (prompt, completion, reward) row is its own regression target, so a batch is a bag
of independent sequences, packed into one row with position ids (padding-free), so no FLOPs go to padding.
On paired rows QRPO keeps each pair one batch item by default (`pair_batching="pairs"`, the reference code:
a batch of 128 pairs is 256 sequences, the sample selector zeroes a side's loss); `split` turns pairs into
pointwise rows first. `max_length` caps prompt + completion as the reference code does. Rows are checked,
paired or split, given their quantiles and tokenized once, before training, by `qrpo.rows`.
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
from trl.trainer.utils import add_fused_lm_head

from qrpo import reference
from qrpo.config import QRPOConfig
from qrpo.logprobs import SequenceCollator, sequence_logps
from qrpo.losses import LossOutput, dpo_loss, qrpo_loss, rebel_loss, simpo_loss
from qrpo.rows import DatasetError, prepare_dataset, truncate_sequence

# What callers import from here: the trainer, its config, and the row preparation it runs.
__all__ = ["DatasetError", "QRPOConfig", "QRPOTrainer", "load_model", "prepare_dataset", "truncate_sequence"]
logger = logging.get_logger(__name__)


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
