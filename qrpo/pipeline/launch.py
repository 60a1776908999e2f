"""Launching a training process (`qrpo.training_run` for the `train` stage, `qrpo.pipeline.sft_run` for `sft`):
`python -m MODULE SPEC` (one process: CPU, one GPU) or `accelerate launch [--config_file X] -m MODULE SPEC`;
on SLURM with several nodes, one launcher per node."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import cast

from .config import ConfigError, Launcher
from .errors import StageError
from .executor import thread_env


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


def launch_run(module: str, spec_path: str, launcher: Launcher, accelerate_config: str | None, nodes: int,
               threads: int | None) -> str:
    """Launch one training run (`python -m MODULE SPEC`) and wait for it, here or inside a SLURM job on each of
    its nodes; its output goes to stderr and to `train.log` beside the spec."""
    command = [sys.executable, "-m", module, spec_path]
    if launcher == "accelerate":
        command = [sys.executable, "-m", "accelerate.commands.launch"]
        if accelerate_config:
            command += ["--config_file", accelerate_config_path(accelerate_config)]
        if nodes > 1:
            command += _multi_node_options(nodes)
        command += ["-m", module, spec_path]
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
        raise StageError(f"{module}: {Path(spec_path).parent.name} failed (exit {code}): {tail}; full output in {log}; "
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


