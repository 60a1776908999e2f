"""The task's reference policy: the tiny Llama trained (SFT) on a mix of correct and plausible wrong solutions
of the training problems, built once per machine and cached.

The pipeline's `model` stage calls `reference_model` when the training problems are the task's
(`data.train.path: qrpo-tasks:train`) and `model.name_or_path` is `tiny`. The cache is keyed by a fingerprint
of everything the model is made from (the task's VERSION, the SFT mix, the tiny model's sizes and warm-up,
the torch and transformers versions), so the demo, the tests and the benchmarks build it once:
`$QRPO_CACHE/task-reference/<fingerprint>` (default `~/.cache/qrpo`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sandbox.rundir import atomic_dir, fingerprint, read_json, write_json

from . import VERSION, sft_examples

# The SFT mix: the share of correct answers among the reference's training answers, and answers per problem.
# With 0.2 (and learn-cpu.yaml's 800 warm-up steps) the tiny model writes a correct program for ~30% of the
# held-out prompts at T=1 and a partly-right one for most others (held-out Avg. Pass ~40%, bench/RESULTS.md):
# room to improve, and mixed rewards within a prompt.
CORRECT_SHARE = 0.2
PER_PROBLEM = 4


def cache_root() -> Path:
    return Path(os.environ.get("QRPO_CACHE") or Path.home() / ".cache" / "qrpo") / "task-reference"


def reference_key(tiny: Any, correct_share: float = CORRECT_SHARE, per_problem: int = PER_PROBLEM) -> str:
    """The cache key: the task's version, the SFT mix, the tiny model's settings, the libraries that train it."""
    import torch
    import transformers

    return fingerprint({"task_version": VERSION, "correct_share": correct_share, "per_problem": per_problem,
                        "tiny": tiny.model_dump(), "torch": torch.__version__, "transformers": transformers.__version__})


Builder = Callable[[Any, list[tuple[list[dict[str, str]], str]], Path, int | None], list[float]]


def reference_model(tiny: Any, out: Path, build: Builder, threads: int | None = None, say: Callable[[str], None] = print,
                    correct_share: float = CORRECT_SHARE, per_problem: int = PER_PROBLEM) -> dict[str, Any]:
    """Put the task's reference model in `out` (from the cache, or built and cached), and return its record.

    `tiny` is the pipeline's TinyModelConfig (sizes, warm-up steps, learning rate, batch, seed) and `build` the
    model stage's `build_tiny_model` (passed in, so that this package never imports the pipeline)."""
    key = reference_key(tiny, correct_share, per_problem)
    cached = cache_root() / key
    record = read_json(cached / "reference.json")
    if record is None or not (cached / "model" / "config.json").is_file():
        examples = sft_examples(correct_share, per_problem)
        say(f"building the task's reference model ({len(examples)} SFT answers, {correct_share:.0%} correct; cached as {key})")
        losses = build(tiny, examples, cached / "model", threads)
        record = {"key": key, "examples": len(examples), "correct_share": correct_share, "per_problem": per_problem,
                  "first_loss": round(losses[0], 4), "last_loss": round(losses[-1], 4)}
        write_json(cached / "reference.json", record)
    else:
        say(f"task reference model from the cache ({cached})")
    with atomic_dir(out) as tmp:
        shutil.copytree(cached / "model", tmp, dirs_exist_ok=True)
    return {**record, "cache": str(cached)}
