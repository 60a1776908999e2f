"""Where a pipeline run keeps its state: one folder per stage, its record, its tables.

    OUTPUT_DIR/
      config.yaml               the config of the last `qrpo run` (for people; stages use fingerprints)
      .lock                     held by the qrpo working here (`sandbox.rundir.lock`)
      <stage>/stage.json        written last, when the stage finished: its fingerprint, inputs and summary
      <stage>/...               its tables (`datasets` save_to_disk folders) and chunk folders

A stage is done iff its stage.json exists and holds the fingerprint of its current inputs. Every file goes
through `sandbox.rundir` (atomic writes, JSON that encodes any text, chunk folders with a manifest), and every
table through `save_table` (an atomic folder): a file or folder under its final name is always complete.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.rundir import atomic_dir, read_json, read_manifest, write_json


def save_table(table: Any, path: Path) -> None:
    """Save a `datasets.Dataset` (or row dicts) to `path` atomically: the whole table or the old one."""
    import datasets
    from datasets import Dataset

    datasets.disable_progress_bars()  # a bar per table save is noise; the stages show their own progress
    if not isinstance(table, Dataset):
        rows = list(table)
        table = Dataset.from_list(rows) if rows else Dataset.from_dict({})
    with atomic_dir(path) as tmp:
        table.save_to_disk(str(tmp))


def load_table(path: Path) -> Any:
    from datasets import load_from_disk

    return load_from_disk(str(path))


def chunk_progress(folder: Path) -> tuple[int, int] | None:
    """(chunks done, chunks) of a `sandbox.rundir.Chunks` folder, None if it has no manifest: what `qrpo status`
    says of a stage in progress, whoever wrote the folder (a stage, or the SLURM grading driver)."""
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    done = list(folder.glob("chunk-*"))  # temporaries start with "."; a chunk exists iff it is complete
    return len(done), int(manifest.get("count", 0))


@dataclass(frozen=True)
class StageRecord:
    """What stage.json says about a finished stage."""

    stage: str
    fingerprint: str
    inputs: dict[str, Any]
    summary: dict[str, Any]
    finished: float
    seconds: float

    @classmethod
    def read(cls, path: Path) -> StageRecord | None:
        data = read_json(path)
        if not isinstance(data, dict):
            return None
        try:
            return cls(data["stage"], data["fingerprint"], data.get("inputs", {}), data.get("summary", {}),
                       float(data.get("finished", 0)), float(data.get("seconds", 0)))
        except KeyError:
            return None


@dataclass(frozen=True)
class RunLayout:
    """The paths of one pipeline run, in one place, so stages and tests agree."""

    root: Path

    def stage(self, name: str) -> Path:
        return self.root / name

    def record_path(self, name: str) -> Path:
        return self.stage(name) / "stage.json"

    def record(self, name: str) -> StageRecord | None:
        return StageRecord.read(self.record_path(name))

    def write_record(self, name: str, fp: str, inputs: dict[str, Any], summary: dict[str, Any], seconds: float) -> None:
        write_json(self.record_path(name), {"stage": name, "fingerprint": fp, "inputs": inputs, "summary": summary,
                                            "finished": time.time(), "seconds": round(seconds, 2)})

    @property
    def model(self) -> Path:
        return self.stage("model") / "model"

    def prompts(self, split: str) -> Path:
        return self.stage("prepare") / split

    @property
    def completions(self) -> Path:
        return self.stage("generate") / "completions"

    @property
    def generate_chunks(self) -> Path:
        return self.stage("generate") / "chunks"

    @property
    def graded(self) -> Path:
        return self.stage("grade") / "graded"

    @property
    def solution_rewards(self) -> Path:
        return self.stage("grade") / "solutions"

    @property
    def training_table(self) -> Path:
        return self.stage("build") / "train"

    def training_run(self, run_name: str) -> Path:
        return self.stage("train") / run_name

    def trained_model(self, run_name: str) -> Path:
        return self.training_run(run_name) / "model"

    def checkpoints(self, run_name: str) -> list[tuple[int | None, Path]]:
        """(step, path) of a training run's checkpoints in step order, then its final model (step from
        trainer_state.json), left out when a checkpoint of the same step exists (the same weights)."""
        model_dir = self.trained_model(run_name)
        found: list[tuple[int | None, Path]] = []
        for path in sorted(model_dir.glob("checkpoint-*"), key=lambda p: _step(p.name)):
            if _step(path.name) >= 0 and (path / "config.json").is_file():
                found.append((_step(path.name), path))
        state = read_json(model_dir / "trainer_state.json") or {}
        final_step = state.get("global_step")
        if (model_dir / "config.json").is_file() and not any(step == final_step for step, _ in found):
            found.append((final_step, model_dir))
        return found

    def policy(self, folder_name: str) -> Path:
        return self.stage("evaluate") / "policies" / folder_name


def _step(name: str) -> int:
    suffix = name.split("-", 1)[1] if "-" in name else ""
    return int(suffix) if suffix.isdigit() else -1
