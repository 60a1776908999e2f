"""Stage `train`: one training run (`qrpo.training_run`) per entry of the sweep, here or as SLURM jobs.

Each run gets `train/<name>/spec.json` (the reference model, the `build/train` table and its QRPOConfig
arguments) and trains into `train/<name>/model` (checkpoints `checkpoint-N` inside). `qrpo.training_run` resumes
from the last checkpoint, so an interrupted run continues where it stopped; a finished run (its
trainer_state.json is written last) is skipped. Runs are added to a sweep without retraining the others.

Launchers: `python -m qrpo.training_run SPEC` (one process: CPU, one GPU), or `accelerate launch [--config_file
qrpo/configs/accelerate/X.yaml] -m qrpo.training_run SPEC`; on SLURM with several nodes, one launcher per node.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sandbox.rundir import fingerprint, read_json, write_json

from ..config import PipelineConfig
from ..errors import StageError
from ..launch import launch_run
from ..layout import RunLayout
from ..stage import StageContext
from ..sweep import expand_sweep, run_spec_args

NAME = "train"
SUMMARY = "QRPOTrainer (or a baseline) for each run of the sweep"


def requires(config: PipelineConfig) -> list[str]:
    return ["build", "model"] + (["sft"] if config.sft.enabled else [])


def inputs(config: PipelineConfig) -> dict[str, Any]:
    return {"train": config.train.model_dump()}


def run(ctx: StageContext) -> dict[str, Any]:
    config = ctx.config
    runs = expand_sweep(config)
    calls = []
    finished = []
    for train_run in runs:
        folder = ctx.layout.training_run(train_run.name)
        spec: dict[str, Any] = {"model_name_or_path": ctx.model_path(), "train_dataset": str(ctx.layout.training_table.resolve()),
                "args": run_spec_args(config, train_run, str(ctx.layout.trained_model(train_run.name).resolve()),
                                      ctx.executor.kind)}
        # Paths are left out: a moved output directory still holds the same runs.
        spec_fp = fingerprint({"args": {k: v for k, v in spec["args"].items() if k != "output_dir"},
                               "launcher": config.train.launcher, "build": ctx.upstream_token("build"),
                               "model": ctx.upstream_token("model")})
        record = read_json(folder / "run.json")
        if record is not None and record.get("fingerprint") != spec_fp:
            raise StageError(f"train: run {train_run.name} in {folder} was started with other arguments or data; "
                             "rerun with --force train to retrain every run, or give this run another name")
        if (folder / "model" / "trainer_state.json").is_file():
            finished.append(train_run.name)
            continue
        write_json(folder / "spec.json", spec)
        write_json(folder / "run.json", {"name": train_run.name, "fingerprint": spec_fp})
        nodes = config.slurm.train.nodes if ctx.executor.kind == "slurm" else 1
        calls.append(("qrpo.training_run", str(folder / "spec.json"), config.train.launcher, config.train.accelerate_config,
                      nodes, config.cpu_threads))
    if finished:
        ctx.say(f"{len(finished)} run(s) finished already: {', '.join(finished)}")
    if calls:
        ctx.say(f"training {len(calls)} run(s): {', '.join(Path(c[1]).parent.name for c in calls)}")
        ctx.executor.map("train", launch_run, calls, config.slurm.train)
    missing = [r.name for r in runs if not (ctx.layout.trained_model(r.name) / "trainer_state.json").is_file()]
    if missing:
        raise StageError(f"train: run(s) {', '.join(missing)} ended without a final model; see their output above "
                         "and rerun to resume")
    return {"runs": [r.name for r in runs]}


def progress(layout: RunLayout) -> str | None:
    """For `qrpo status`: runs finished and checkpoints saved."""
    folder = layout.stage("train")
    runs = [p for p in folder.iterdir() if (p / "spec.json").is_file()] if folder.is_dir() else []
    if not runs:
        return None
    finished = sum((p / "model" / "trainer_state.json").is_file() for p in runs)
    saved = sum(len(list((p / "model").glob("checkpoint-*"))) for p in runs)
    return f"{finished}/{len(runs)} runs finished, {saved} checkpoints saved"
