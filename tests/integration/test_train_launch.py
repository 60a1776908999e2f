"""The training entry point as users launch it: `python -m qrpo.training_run SPEC.json`, and data parallel over
two processes (torchrun, which `accelerate launch --multi_gpu` runs underneath; gloo on CPU)."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from datasets import Dataset

from qrpo.tiny import build_tiny

REPO = Path(__file__).resolve().parents[2]
SOLUTIONS = [f"def add_{i}(x):\n    return x + {i}\n" for i in range(24)]


def free_port() -> str:
    """A port nobody listens on now: a fixed one hangs the rendezvous when another run (a second
    test session on the machine) holds it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("launch")
    build_tiny(root / "model", SOLUTIONS * 4, vocab_size=320)
    rng = random.Random(0)
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Write function {i}."}],
            "completion": [{"role": "assistant", "content": SOLUTIONS[i]}],
            "reward": float(i % 3) / 2,
            "ref_rewards": [rng.choice([0.0, 0.5, 1.0]) for _ in range(8)],
        }
        for i in range(16)
    ]
    Dataset.from_list(rows).save_to_disk(str(root / "data"))
    return root


def write_spec(root: Path, name: str, **args) -> Path:
    spec = {
        "model_name_or_path": str(root / "model"),
        "train_dataset": str(root / "data"),
        "args": {
            "output_dir": str(root / f"out-{name}"),
            "max_steps": 2,
            "logging_steps": 1,
            "report_to": [],
            "learning_rate": 1e-3,
            "beta": 0.1,
            "use_cpu": True,
            "save_strategy": "no",
            "seed": 0,
            "ref_log_probs_cache_dir": str(root / f"cache-{name}"),
            "disable_tqdm": True,
            **args,
        },
    }
    path = root / f"spec-{name}.json"
    path.write_text(json.dumps(spec))
    return path


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def log_history(root: Path, name: str) -> list[dict]:
    return json.loads((root / f"out-{name}" / "trainer_state.json").read_text())["log_history"]


def test_entry_point_trains_saves_and_resumes(workdir):
    spec = write_spec(workdir, "single", per_device_train_batch_size=4, save_strategy="steps", save_steps=1)
    done = run([sys.executable, "-m", "qrpo.training_run", str(spec)], workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    out = workdir / "out-single"
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert (out / "checkpoint-2").is_dir()
    again = run([sys.executable, "-m", "qrpo.training_run", str(spec)], workdir)  # resumes at the end: no new step
    assert again.returncode == 0, again.stderr[-3000:]
    assert "'loss'" not in again.stdout + again.stderr


def test_two_data_parallel_processes_match_one_process(workdir):
    """Batch 4 on one process, or 2 + 2 on two: the same loss and the same gradient norm, step by step."""
    one = run([sys.executable, "-m", "qrpo.training_run", str(write_spec(workdir, "one", per_device_train_batch_size=4))],
              workdir)
    assert one.returncode == 0, one.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port()]
    two = run([*torchrun, "-m", "qrpo.training_run", str(write_spec(workdir, "two", per_device_train_batch_size=2))], workdir)
    assert two.returncode == 0, two.stderr[-3000:]
    def steps(name: str) -> list[float]:
        return [v for e in log_history(workdir, name) if "loss" in e for v in (e["loss"], e["grad_norm"], e["epoch"])]

    assert len(steps("one")) == 6
    assert steps("two") == pytest.approx(steps("one"), rel=1e-5)


def test_fsdp2_reference_pass_matches_one_process(workdir):
    """Under FSDP2 (2 gloo processes) the reference log-probs run through an FSDP-sharded module, and equal one
    process's; the weight fingerprint, computed from the full weights even when each rank holds a shard, names
    the same cache file."""
    script = Path(__file__).with_name("fsdp_reference.py")
    single = run([sys.executable, str(script), str(workdir), str(workdir / "ref-single.json")], workdir)
    assert single.returncode == 0, single.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port()]
    sharded = run([*torchrun, str(script), str(workdir), str(workdir / "ref-fsdp2.json"), "fsdp2"], workdir)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    one, two = (json.loads((workdir / f"ref-{name}.json").read_text()) for name in ("single", "fsdp2"))
    assert (one["processes"], two["processes"]) == (1, 2)
    assert one["passes"] == ["LlamaForCausalLM"] and two["passes"] == ["FSDPLlamaForCausalLM"]
    one_logps, two_logps = ([value for row in result["ref_logps"] for value in row] for result in (one, two))
    assert two_logps == pytest.approx(one_logps, abs=1e-4) and len(one_logps) == 16
    assert two["sharded_parameters"] > 0  # the copy really is sharded: its fingerprint had to gather
    assert one["weights"] == two["weights"] == two["sharded_weights"]
    assert one["cache_files"] == two["cache_files"] and len(one["cache_files"]) == 1


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_name_or_path": "/nonexistent/model"}, "could not be loaded"),
        ({"train_dataset": "/nonexistent/data"}, "is not a directory saved with Dataset.save_to_disk"),
        ({"args": {"output_dir": "x", "not_an_argument": 1}}, "unknown training argument(s) ['not_an_argument']"),
        ({"model": "x"}, "unknown key(s) ['model']"),
    ],
)
def test_bad_specs_fail_fast_with_one_line(workdir, change, message):
    spec = json.loads(write_spec(workdir, "bad").read_text())
    spec.update(change)
    path = workdir / "spec-bad.json"
    path.write_text(json.dumps(spec))
    done = run([sys.executable, "-m", "qrpo.training_run", str(path)], workdir)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("qrpo.training_run: ") and message in last, done.stderr[-2000:]


@pytest.mark.parametrize("name", ["single_gpu", "ddp", "zero1", "zero3", "fsdp2"])
def test_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import ClusterConfig

    path = REPO / "qrpo" / "configs" / "accelerate" / f"{name}.yaml"
    config = ClusterConfig.from_yaml_file(str(path))
    assert config.mixed_precision == "bf16"
    raw = yaml.safe_load(path.read_text())
    expected = {"single_gpu": "NO", "ddp": "MULTI_GPU", "zero1": "DEEPSPEED", "zero3": "DEEPSPEED", "fsdp2": "FSDP"}[name]
    assert raw["distributed_type"] == expected
