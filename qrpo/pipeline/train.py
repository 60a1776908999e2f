"""Stage `train`: one `qrpo.training_run` run per entry of the sweep, here or as SLURM jobs.

Each run gets `train/<name>/spec.json` (the reference model, the `build/train` table and its QRPOConfig
arguments) and trains into `train/<name>/model` (checkpoints `checkpoint-N` inside). `qrpo.training_run` resumes
from the last checkpoint, so an interrupted run continues where it stopped; a finished run (its
trainer_state.json is written last) is skipped. Runs are added to a sweep without retraining the others.

Launchers: `python -m qrpo.training_run SPEC` (one process: CPU, one GPU), or `accelerate launch [--config_file
qrpo/configs/accelerate/X.yaml] -m qrpo.training_run SPEC`; on SLURM with several nodes, one launcher per node.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .config import ConfigError, PipelineConfig
from .errors import StageError
from .executor import thread_env
from .rundir import fingerprint, read_json, write_json

ABBREVIATIONS = {"learning_rate": "lr", "num_ref_rewards": "ref", "loss_type": "", "transform": "", "per_device_train_batch_size": "bs"}


@dataclass(frozen=True)
class TrainRun:
    name: str
    args: dict[str, Any]  # the sweep entry's own arguments (common ones not included)


def requires(config: PipelineConfig) -> list[str]:
    return ["build", "model"]


def inputs(config: PipelineConfig) -> dict[str, Any]:
    return {"train": dataclasses.asdict(config.train)}


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


def processes(config: PipelineConfig, executor: str) -> int:
    """Training processes (one per GPU) a run gets: what turns total_batch_size into gradient accumulation."""
    if executor == "slurm":
        job = config.slurm.train
        return job.nodes * max(1, job.gpus_per_node)
    if config.train.launcher == "accelerate":
        import torch

        return max(1, torch.cuda.device_count())
    return 1


def run_spec_args(config: PipelineConfig, run: TrainRun, output_dir: str, executor: str = "local") -> dict[str, Any]:
    """QRPOConfig arguments of a run: the shared ones, the run's own, and what the pipeline decides."""
    args = {**config.train.args, **run.args, "output_dir": output_dir}
    if config.cpu_threads and "dataloader_num_workers" not in args:
        args["dataloader_num_workers"] = 0
    total = config.train.total_batch_size
    if total:
        per_device = int(args.get("per_device_train_batch_size", 8))
        world = processes(config, executor)
        if total % (per_device * world):
            raise ConfigError(f"train.total_batch_size {total} is not a multiple of per_device_train_batch_size {per_device} x {world} "
                              "process(es); change one of them")
        args["gradient_accumulation_steps"] = total // (per_device * world)
    return args


def check_args(config: PipelineConfig) -> None:
    """Unknown training arguments fail before any stage runs (needs transformers: done once, at the start)."""
    runs = expand_sweep(config)
    if not runs:
        return
    from qrpo.config import unknown_arguments

    for where, args in [("train.args", config.train.args)] + [(f"train.sweep run {r.name!r}", r.args) for r in runs]:
        unknown = unknown_arguments(args)
        if unknown:
            raise ConfigError(f"unknown training argument {unknown[0]!r} in {where}; use a QRPOConfig / transformers.TrainingArguments field (see `python -m qrpo.training_run --help`)")


def accelerate_config_path(value: str) -> str:
    path = Path(value)
    if path.is_file():
        return str(path)
    bundled = resources.files("qrpo").joinpath("configs", "accelerate", f"{value}.yaml")
    if isinstance(bundled, Path) and bundled.is_file():
        return str(bundled)
    names = sorted(p.name[:-5] for p in resources.files("qrpo").joinpath("configs", "accelerate").iterdir() if p.name.endswith(".yaml"))
    raise ConfigError(f"train.accelerate_config {value} does not exist; give a file or one of: {', '.join(names)}")


def run(ctx: Any) -> dict[str, Any]:
    config: PipelineConfig = ctx.config
    runs = expand_sweep(config)
    calls = []
    finished = []
    for train_run in runs:
        folder = ctx.run_dir.run_dir(train_run.name)
        spec = {"model_name_or_path": ctx.model_path(), "train_dataset": str(ctx.run_dir.training_table.resolve()),
                "args": run_spec_args(config, train_run, str((folder / "model").resolve()), ctx.executor.kind)}
        # Paths are left out: a moved output directory still holds the same runs.
        spec_fp = fingerprint({"args": {k: v for k, v in spec["args"].items() if k != "output_dir"}, "launcher": config.train.launcher,
                               "build": ctx.upstream_token("build"), "model": ctx.upstream_token("model")})
        record = read_json(folder / "run.json")
        if record is not None and record.get("fingerprint") != spec_fp:
            raise StageError(f"train: run {train_run.name} in {folder} was started with other arguments or data; "
                             "rerun with --force train to retrain every run, or give this run another name")
        if (folder / "model" / "trainer_state.json").is_file():
            finished.append(train_run.name)
            continue
        write_json(folder / "spec.json", spec)
        write_json(folder / "run.json", {"name": train_run.name, "fingerprint": spec_fp})
        calls.append((str(folder / "spec.json"), config.train.launcher, config.train.accelerate_config, config.slurm.train.nodes
                      if ctx.executor.kind == "slurm" else 1, config.cpu_threads))
    if finished:
        ctx.say(f"{len(finished)} run(s) finished already: {', '.join(finished)}")
    if calls:
        ctx.say(f"training {len(calls)} run(s): {', '.join(Path(c[0]).parent.name for c in calls)}")
        ctx.executor.map("train", train_run_process, calls, config.slurm.train)
    missing = [r.name for r in runs if not (ctx.run_dir.run_dir(r.name) / "model" / "trainer_state.json").is_file()]
    if missing:
        raise StageError(f"train: run(s) {', '.join(missing)} ended without a final model; see their output above and rerun to resume")
    return {"runs": [r.name for r in runs]}


def train_run_process(spec_path: str, launcher: str, accelerate_config: str | None, nodes: int, threads: int | None) -> str:
    """Launch one training run and wait for it (here, or inside a SLURM job on each of its nodes)."""
    command = [sys.executable, "-m", "qrpo.training_run", spec_path]
    if launcher == "accelerate":
        command = [sys.executable, "-m", "accelerate.commands.launch"]
        if accelerate_config:
            command += ["--config_file", accelerate_config_path(accelerate_config)]
        if nodes > 1:
            command += _multi_node_options(nodes)
        command += ["-m", "qrpo.training_run", spec_path]
    env = thread_env(threads)
    log = Path(spec_path).parent / "train.log"
    print(f"qrpo train: {' '.join(command)}  (output also in {log})", file=sys.stderr, flush=True)
    with open(log, "ab") as sink:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert process.stdout is not None
        for chunk in iter(lambda: process.stdout.read1(65536), b""):  # type: ignore[union-attr]
            sys.stderr.buffer.write(chunk)
            sys.stderr.buffer.flush()
            sink.write(chunk)
        code = process.wait()
    if code != 0:
        tail = _last_line(log)
        raise StageError(f"train: {Path(spec_path).parent.name} failed (exit {code}): {tail}; full output in {log}; rerun to resume from its last checkpoint")
    return spec_path


def _last_line(log: Path) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "?"
    return lines[-1][:300] if lines else "(no output)"


def _multi_node_options(nodes: int) -> list[str]:
    """accelerate's multi-node flags from the SLURM job: rank from SLURM_NODEID, the first host as main."""
    hosts = subprocess.run(["scontrol", "show", "hostnames", os.environ.get("SLURM_JOB_NODELIST", "")], capture_output=True,
                           text=True, check=False).stdout.split()
    gpus = int(os.environ.get("SLURM_GPUS_ON_NODE", "1") or 1)
    return ["--num_machines", str(nodes), "--machine_rank", os.environ.get("SLURM_NODEID", "0"), "--num_processes", str(nodes * gpus),
            "--main_process_ip", hosts[0] if hosts else "localhost", "--main_process_port", "29500"]


def checkpoints(model_dir: Path) -> list[tuple[int | None, Path]]:
    """(step, path) of a run's checkpoints in step order, then the final model (step from trainer_state.json);
    the final model is left out when a checkpoint of the same step exists (same weights)."""
    found = []
    for path in model_dir.glob("checkpoint-*"):
        suffix = path.name.split("-", 1)[1]
        if suffix.isdigit() and (path / "config.json").is_file():
            found.append((int(suffix), path))
    found.sort()
    state = read_json(model_dir / "trainer_state.json") or {}
    final_step = state.get("global_step")
    if (model_dir / "config.json").is_file() and not any(step == final_step for step, _ in found):
        found.append((final_step, model_dir))
    return found



def progress(run_dir: Any) -> str | None:
    """For `qrpo status`: runs finished and checkpoints saved."""
    folder = run_dir.stage("train")
    runs = [p for p in folder.iterdir() if (p / "spec.json").is_file()] if folder.is_dir() else []
    if not runs:
        return None
    finished = sum((p / "model" / "trainer_state.json").is_file() for p in runs)
    saved = sum(len(list((p / "model").glob("checkpoint-*"))) for p in runs)
    return f"{finished}/{len(runs)} runs finished, {saved} checkpoints saved"
