"""The training sweep: `train.sweep` as named runs, each run's QRPOConfig arguments, and their early check.

A sweep entry is a mapping of QRPOConfig / TrainingArguments fields; a list value makes a grid (`beta:
[0.003, 0.01]` is two runs). Runs are named after their own arguments (`qrpo-beta0.01`) or their `name`.
The train stage trains them; the evaluate stage evaluates their checkpoints; `qrpo run` checks their
arguments before any stage starts.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from .config import ConfigError, ExecutorKind, PipelineConfig

ABBREVIATIONS = {"learning_rate": "lr", "num_ref_rewards": "ref", "loss_type": "", "transform": "",
                 "per_device_train_batch_size": "bs"}


@dataclass(frozen=True)
class TrainRun:
    name: str
    args: dict[str, Any]  # the sweep entry's own arguments (common ones not included)


def expand_sweep(config: PipelineConfig) -> list[TrainRun]:
    """The runs of `train.sweep`: each entry, with list values expanded into a grid."""
    runs: list[TrainRun] = []
    for i, entry in enumerate(config.train.sweep):
        entry = dict(entry)
        base = entry.pop("name", None)
        grid_keys = [k for k, v in entry.items() if isinstance(v, list)]
        for values in itertools.product(*(entry[k] for k in grid_keys)):
            args = {**entry, **dict(zip(grid_keys, values))}
            name = _run_name(base, args, grid_keys)
            if any(r.name == name for r in runs):
                raise ConfigError(f"train.sweep[{i}] makes a second run named {name!r}; give the entries distinct `name`s")
            runs.append(TrainRun(name, args))
    return runs


def _run_name(base: str | None, args: dict[str, Any], grid_keys: list[str]) -> str:
    def part(key: str) -> str:
        value = args[key]
        text = f"{value:g}" if isinstance(value, float) else str(value)
        return f"{ABBREVIATIONS.get(key, key)}{text}"

    if base:
        return "-".join([base, *(part(k) for k in grid_keys)])
    keys = ["loss_type"] if "loss_type" in args else []
    keys += [k for k in args if k != "loss_type"]
    return "-".join(part(k) for k in keys) or "qrpo"


def processes(config: PipelineConfig, executor: ExecutorKind) -> int:
    """Training processes (one per GPU) a run gets: what turns total_batch_size into gradient accumulation."""
    if executor == "slurm":
        job = config.slurm.train
        return job.nodes * max(1, job.gpus_per_node)
    if config.train.launcher == "accelerate":
        import torch

        return max(1, torch.cuda.device_count())
    return 1


def run_spec_args(config: PipelineConfig, run: TrainRun, output_dir: str, executor: ExecutorKind = "local") -> dict[str, Any]:
    """QRPOConfig arguments of a run: the shared ones, the run's own, and what the pipeline decides."""
    args = {**config.train.args, **run.args, "output_dir": output_dir}
    if config.cpu_threads and "dataloader_num_workers" not in args:
        args["dataloader_num_workers"] = 0
    total = config.train.total_batch_size
    if total:
        per_device = int(args.get("per_device_train_batch_size", 8))
        world = processes(config, executor)
        if total % (per_device * world):
            raise ConfigError(f"train.total_batch_size {total} is not a multiple of per_device_train_batch_size {per_device} "
                              f"x {world} process(es); change one of them")
        args["gradient_accumulation_steps"] = total // (per_device * world)
    return args


def check_args(config: PipelineConfig) -> None:
    """Unknown training arguments, and values outside a field's choices (a loss type, a transform...), fail
    before any stage runs. Needs transformers: done once, at the start."""
    runs = expand_sweep(config)
    if not runs:
        return
    from qrpo.config import invalid_choice, unknown_arguments

    for where, args in [("train.args", config.train.args)] + [(f"train.sweep run {r.name!r}", r.args) for r in runs]:
        unknown = unknown_arguments(args)
        if unknown:
            raise ConfigError(f"unknown training argument {unknown[0]!r} in {where}; use a QRPOConfig / "
                              "transformers.TrainingArguments field (see `python -m qrpo.training_run --help`)")
        problem = invalid_choice(args)
        if problem is not None:
            raise ConfigError(f"training argument {problem} in {where}")
