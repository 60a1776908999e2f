"""The run directory: one folder per stage, everything written atomically, so a crash loses nothing.

    OUTPUT_DIR/
      config.yaml               the config of the last `qrpo run` (for people; stages use fingerprints)
      <stage>/stage.json        written last, when the stage finished: its fingerprint, inputs and summary
      <stage>/...               its tables (`datasets` save_to_disk folders) and chunk files

A stage is done iff its stage.json exists and holds the fingerprint of its current inputs (the config keys that
change its result and the fingerprints of the stages it reads). Tables and chunks are written to a temporary
name in the same folder, then renamed into place: a file or folder under its final name is always complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.cluster import read_records, write_atomic


def fingerprint(value: Any) -> str:
    """sha256 of a JSON-able value (keys sorted), as 16 hex digits."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file in the same folder, fsync, rename)."""
    write_text(path, json.dumps(data, indent=1, ensure_ascii=False, default=str) + "\n")


def write_text(path: Path, text: str) -> None:
    write_atomic(path, [text])


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return list(read_records(path))


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def remove_tree(path: Path) -> None:
    """Delete a folder: renamed away first, so a crash midway never leaves a half-deleted folder under its name."""
    if not path.exists():
        return
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}-{time.time_ns()}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def save_table(table: Any, path: Path) -> None:
    """Save a `datasets.Dataset` (or a list of row dicts) to `path` atomically."""
    import datasets
    from datasets import Dataset

    datasets.disable_progress_bars()  # a bar per table save is noise; the stages show their own progress
    if not isinstance(table, Dataset):
        table = Dataset.from_list(list(table)) if table else Dataset.from_dict({})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        table.save_to_disk(str(tmp))
        remove_tree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_table(path: Path) -> Any:
    from datasets import load_from_disk

    return load_from_disk(str(path))


def is_table(path: Path) -> bool:
    return (path / "dataset_info.json").is_file() or (path / "state.json").is_file()


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
class RunDir:
    """Paths of one pipeline run."""

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

    # Shared table locations (one place, so stages and tests agree).
    @property
    def model(self) -> Path:
        return self.stage("model") / "model"

    def prompts(self, split: str) -> Path:
        return self.stage("prepare") / split

    @property
    def completions(self) -> Path:
        return self.stage("generate") / "completions"

    @property
    def graded(self) -> Path:
        return self.stage("grade") / "graded"

    @property
    def training_table(self) -> Path:
        return self.stage("build") / "train"

    def run_dir(self, run_name: str) -> Path:
        return self.stage("train") / run_name

    @property
    def report_json(self) -> Path:
        return self.stage("evaluate") / "report.json"


class Chunks:
    """A stage's work cut into numbered chunks, each saved under its final name once complete.

    `manifest.json` records the fingerprint of the inputs the chunks were made from; a folder made from other
    inputs is refused (its chunks would mix two runs), with the fix in the message."""

    def __init__(self, folder: Path, fp: str, count: int, stage: str, suffix: str = "") -> None:
        self.folder, self.count, self.suffix = folder, count, suffix
        manifest = read_json(folder / "manifest.json")
        if manifest is not None and (manifest.get("fingerprint") != fp or manifest.get("count") != count):
            from .errors import StageError

            raise StageError(f"{stage}: {folder} holds chunks of other inputs (the config or an earlier stage changed since); "
                             f"rerun with --force {stage} to redo the stage")
        if manifest is None:
            write_json(folder / "manifest.json", {"fingerprint": fp, "count": count})

    def path(self, index: int) -> Path:
        return self.folder / f"chunk-{index:05d}{self.suffix}"

    def done(self, index: int) -> bool:
        return self.path(index).exists()

    def pending(self) -> list[int]:
        return [i for i in range(self.count) if not self.done(i)]
