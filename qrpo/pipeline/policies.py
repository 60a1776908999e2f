"""What the evaluate stage evaluates: the policies (the reference model, every checkpoint of every training
run, the oracles), and what identifies a policy's weights so that a retrained checkpoint is evaluated again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Oracle, PipelineConfig
from .layout import RunLayout
from .sweep import expand_sweep


@dataclass(frozen=True)
class Policy:
    """One thing evaluated: a model directory (reference, checkpoint, final model) or an oracle."""

    key: str  # reference, <run>/checkpoint-20, <run>/final, oracle-solution
    run: str  # reference, the run's name, or oracle
    step: int | None
    path: str | None  # model directory; None for oracles
    oracle: Oracle | None = None

    @property
    def folder_name(self) -> str:
        return re.sub(r"[^\w.-]", "__", self.key)


def list_policies(config: PipelineConfig, layout: RunLayout, reference_path: str | None) -> list[Policy]:
    out = []
    if config.evaluate.reference and reference_path:
        out.append(Policy("reference", "reference", 0, reference_path))
    for train_run in expand_sweep(config):
        found = layout.checkpoints(train_run.name)
        if config.evaluate.checkpoints == "final":
            found = found[-1:]
        for step, path in found:
            label = path.name if path.name.startswith("checkpoint-") else "final"
            out.append(Policy(f"{train_run.name}/{label}", train_run.name, step, str(path)))
    for oracle in config.evaluate.oracles:
        out.append(Policy(f"oracle-{oracle}", "oracle", None, None, oracle))
    return out


def model_identity(path: str | None) -> list[Any]:
    """Size and modification time of a model's files: a retrained checkpoint of the same name differs."""
    if path is None:
        return []
    folder = Path(path)
    if not folder.is_dir():
        return [path]
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()
                  if p.is_file() and (p.suffix in (".safetensors", ".bin") or p.name == "config.json"))
