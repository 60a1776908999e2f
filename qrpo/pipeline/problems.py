"""Problems for the pipeline: a configured source (a file, `demo`, a hub dataset) read into `Problem`s with
the paper's test-count filters, and the graded problems of a prepared table (what `grade` and `evaluate` run).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from sandbox.datasets import LoadedProblems, UnknownFormatError, load_problems
from sandbox.problem import Problem

from .config import DataConfig, SourceConfig, is_hub_dataset
from .errors import StageError


def load_source(key: str, source: SourceConfig, data: DataConfig) -> LoadedProblems:
    """The problems of one source (a file, `demo`, `qrpo-tasks:SPLIT`, or a hub dataset), with the min/max tests filters."""
    from qrpo import tasks

    rows: Any
    if source.path == "demo":
        from sandbox import demo

        rows = demo.problems_path()
    elif (task_split := tasks.source_split(source.path)) is not None:
        rows = tasks.rows(task_split)  # the procedural task shipped in qrpo.tasks
    elif is_hub_dataset(source.path):
        rows = _hub_rows(key, source)
    else:
        rows = Path(source.path).expanduser()
        if not rows.is_file():
            raise StageError(f"{key}.path {source.path} does not exist; give a JSONL(.gz) file of problems, demo, "
                             "or a Hugging Face dataset id")
    try:
        loaded = load_problems(rows, format=source.format, min_tests=data.min_tests, max_tests=data.max_tests)
    except UnknownFormatError as error:
        raise StageError(f"{key}: {error}") from None
    if loaded.errors and not loaded.problems:
        first = loaded.errors[0]
        raise StageError(f"{key}: no row of {source.path} is a usable problem ({len(loaded.errors)} bad rows; first: {first}); "
                         f"check the file, or set {key}.format to one of the registered formats")
    for bad in loaded.errors[:5]:  # some rows are bad: say which, and go on with the others
        print(f"qrpo prepare: {key} {bad}", file=sys.stderr)
    if source.limit is not None:
        loaded.problems = dict(list(loaded.problems.items())[: source.limit])
    return loaded


def _hub_rows(key: str, source: SourceConfig) -> list[dict[str, Any]]:
    from datasets import load_dataset

    try:
        table = load_dataset(source.path, split=source.split or "train", revision=source.revision)
    except Exception as error:  # noqa: BLE001 -- offline, unknown id, unknown split: one line
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise StageError(f"{key}.path {source.path}: could not load it from the Hugging Face Hub ({message[:200]}); "
                         "download the dataset file and give its path instead") from None
    return [dict(row) for row in table]


def load_problems_table(table: Any) -> dict[str, Problem]:
    """The graded problems of a prepared split, by task_id."""
    return {row["task_id"]: Problem.from_dict(json.loads(row["problem"])) for row in table.select_columns(["task_id", "problem"])}
