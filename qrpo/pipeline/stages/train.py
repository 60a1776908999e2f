"""Stage `train`: one training run (`qrpo.training_run`) per entry of the sweep, here or as SLURM jobs.

Each run gets `train/<name>/spec.json` (the reference model, the `build/train` table and its QRPOConfig
arguments) and trains into `train/<name>/model` (checkpoints `checkpoint-N` inside). `qrpo.training_run` resumes
from the last checkpoint, so an interrupted run continues where it stopped; a finished run (its
trainer_state.json is written last) is skipped. Runs are added to a sweep without retraining the others.

Launchers: `python -m qrpo.training_run SPEC` (one process: CPU, one GPU), or `accelerate launch [--config_file
qrpo/configs/accelerate/X.yaml] -m qrpo.training_run SPEC`; on SLURM with several nodes, one launcher per node.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any, cast

from sandbox.rundir import fingerprint, read_json, write_json

from ..config import ConfigError, Launcher, PipelineConfig
from ..errors import StageError
from ..executor import thread_env
from ..layout import RunLayout
from ..stage import StageContext
from ..sweep import expand_sweep, run_spec_args

NAME = "train"
SUMMARY = "QRPOTrainer (or a baseline) for each run of the sweep"


def requires(config: PipelineConfig) -> list[str]:
    return ["build", "model"]


def inputs(config: PipelineConfig) -> dict[str, Any]:
    return {"train": config.train.model_dump()}


def accelerate_config_path(value: str) -> str:
    path = Path(value)
    if path.is_file():
        return str(path)
    bundled = resources.files("qrpo").joinpath("configs", "accelerate", f"{value}.yaml")
    if isinstance(bundled, Path) and bundled.is_file():
        return str(bundled)
    folder = resources.files("qrpo").joinpath("configs", "accelerate")
    names = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))
    raise ConfigError(f"train.accelerate_config {value} does not exist; give a file or one of: {', '.join(names)}")


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
        calls.append((str(folder / "spec.json"), config.train.launcher, config.train.accelerate_config, config.slurm.train.nodes
                      if ctx.executor.kind == "slurm" else 1, config.cpu_threads))
    if finished:
        ctx.say(f"{len(finished)} run(s) finished already: {', '.join(finished)}")
    if calls:
        ctx.say(f"training {len(calls)} run(s): {', '.join(Path(c[0]).parent.name for c in calls)}")
        ctx.executor.map("train", train_run_process, calls, config.slurm.train)
    missing = [r.name for r in runs if not (ctx.layout.trained_model(r.name) / "trainer_state.json").is_file()]
    if missing:
        raise StageError(f"train: run(s) {', '.join(missing)} ended without a final model; see their output above "
                         "and rerun to resume")
    return {"runs": [r.name for r in runs]}


def train_run_process(spec_path: str, launcher: Launcher, accelerate_config: str | None, nodes: int, threads: int | None) -> str:
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
        stdout = cast(io.BufferedReader, process.stdout)  # a pipe: read1 returns what has arrived
        for chunk in iter(lambda: stdout.read1(65536), b""):
            sys.stderr.buffer.write(chunk)
            sys.stderr.buffer.flush()
            sink.write(chunk)
        code = process.wait()
    if code != 0:
        tail = _last_line(log)
        raise StageError(f"train: {Path(spec_path).parent.name} failed (exit {code}): {tail}; full output in {log}; "
                         "rerun to resume from its last checkpoint")
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
    return ["--num_machines", str(nodes), "--machine_rank", os.environ.get("SLURM_NODEID", "0"),
            "--num_processes", str(nodes * gpus), "--main_process_ip", hosts[0] if hosts else "localhost",
            "--main_process_port", "29500"]


def progress(layout: RunLayout) -> str | None:
    """For `qrpo status`: runs finished and checkpoints saved."""
    folder = layout.stage("train")
    runs = [p for p in folder.iterdir() if (p / "spec.json").is_file()] if folder.is_dir() else []
    if not runs:
        return None
    finished = sum((p / "model" / "trainer_state.json").is_file() for p in runs)
    saved = sum(len(list((p / "model").glob("checkpoint-*"))) for p in runs)
    return f"{finished}/{len(runs)} runs finished, {saved} checkpoints saved"
