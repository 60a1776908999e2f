"""Stage `prepare`: problem sources -> the prompts, tests and splits every later stage reads.

Writes `prepare/train` and `prepare/test`, one row per problem:

    task_id, prompt (chat messages: one user turn, no system prompt), solution (the dataset's own solution as
    a ```python answer, or ""), difficulty, num_tests, prompt_tokens, problem (the Problem as JSON: tests,
    preamble, entry point; what grading needs), and in `test` a `subset`: selection or reporting.

The paper's filters: problems with fewer than `min_tests` tests are dropped, the first `max_tests` are kept,
and problems whose chat (prompt + the dataset's solution) is longer than `max_tokens` tokens of the model's
tokenizer are dropped. The test split is divided, stratified by difficulty, into a `selection` half (to pick
checkpoints and hyperparameters) and a `reporting` half (to report them), as the paper does.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from sandbox.datasets import LoadedProblems, UnknownFormatError, load_problems
from sandbox.problem import Problem

from .config import DataConfig, PipelineConfig, SourceConfig, is_hub_dataset
from .errors import StageError
from .prompts import chat_prompt, graded_preamble, solution_completion
from .rundir import save_table

SPLITS = ("train", "test")


def requires(config: PipelineConfig) -> list[str]:
    return ["model"] if config.data.max_tokens is not None else []


def inputs(config: PipelineConfig) -> dict[str, Any]:
    return {"data": dataclasses.asdict(config.data)}


def load_source(key: str, source: SourceConfig, data: DataConfig) -> LoadedProblems:
    """The problems of one source (a file, `demo`, or a hub dataset), with the min/max tests filters."""
    rows: Any
    if source.path == "demo":
        from sandbox import demo

        rows = demo.problems_path()
    elif is_hub_dataset(source.path):
        rows = _hub_rows(key, source)
    else:
        rows = Path(source.path).expanduser()
        if not rows.is_file():
            raise StageError(f"{key}.path {source.path} does not exist; give a JSONL(.gz) file of problems, demo, or a Hugging Face dataset id")
    try:
        loaded = load_problems(rows, format=source.format, min_tests=data.min_tests, max_tests=data.max_tests)
    except UnknownFormatError as error:
        raise StageError(f"{key}: {error}") from None
    if loaded.errors and not loaded.problems:
        first = loaded.errors[0]
        raise StageError(f"{key}: no row of {source.path} is a usable problem ({len(loaded.errors)} bad rows; first: {first}); "
                         f"check the file, or set {key}.format to one of the registered formats")
    for error in loaded.errors[:5]:  # some rows are bad: say which, and go on with the others
        print(f"qrpo prepare: {key} {error}", file=sys.stderr)
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


def problem_rows(loaded: LoadedProblems, style: str) -> list[dict[str, Any]]:
    """One row per problem: the chat prompt, the graded problem and what reports group by."""
    rows = []
    for problem in loaded:
        graded = dataclasses.replace(problem, preamble=graded_preamble(problem, style))
        rows.append({
            "task_id": problem.task_id,
            "prompt": chat_prompt(problem, style),
            "solution": solution_completion(problem) or "",
            "difficulty": str(problem.metadata.get("difficulty") or "unknown"),
            "num_tests": len(problem.tests),
            "problem": json.dumps(graded.to_dict(), ensure_ascii=False),
        })
    return rows


def count_tokens(rows: list[dict[str, Any]], model_path: str) -> None:
    """Add `prompt_tokens` and `chat_tokens` (prompt + the dataset's solution) with the model's tokenizer."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
    except OSError as error:
        raise StageError(f"prepare: the tokenizer of {model_path} could not be loaded ({str(error).splitlines()[0][:200]}); "
                         "check model.name_or_path, or set data.max_tokens: null to skip the length filter") from None
    for row in rows:
        prompt = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
        row["prompt_tokens"] = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        chat = row["prompt"] + [{"role": "assistant", "content": row["solution"]}]
        text = tokenizer.apply_chat_template(chat, tokenize=False)
        row["chat_tokens"] = len(tokenizer(text, add_special_tokens=False)["input_ids"])


def assign_subsets(rows: list[dict[str, Any]], reporting_fraction: float, seed: int) -> None:
    """Split the test rows, stratified by difficulty, into `selection` and `reporting` (the paper: 50/50)."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[row["difficulty"]].append(row)
    rng = random.Random(seed)
    for name in sorted(groups):
        members = sorted(groups[name], key=lambda r: r["task_id"])
        rng.shuffle(members)
        reporting = round(len(members) * reporting_fraction)
        for i, row in enumerate(members):
            row["subset"] = "reporting" if i < reporting else "selection"


def run(ctx: Any) -> dict[str, Any]:
    config: PipelineConfig = ctx.config
    data = config.data
    model_path = ctx.model_path() if data.max_tokens is not None else None
    summary: dict[str, Any] = {}
    for split in SPLITS:
        source = getattr(data, split)
        if source is None:
            continue
        loaded = load_source(f"data.{split}", source, data)
        rows = problem_rows(loaded, data.prompt_style)
        too_long = 0
        if model_path is not None:
            count_tokens(rows, model_path)
            kept = [r for r in rows if r["chat_tokens"] <= data.max_tokens]
            too_long = len(rows) - len(kept)
            rows = kept
        else:
            for row in rows:
                row["prompt_tokens"] = row["chat_tokens"] = -1
        if not rows:
            raise StageError(f"prepare: no {split} problem is left after the filters (min_tests {data.min_tests}, "
                             f"max_tokens {data.max_tokens}); relax data.min_tests or data.max_tokens")
        if split == "test":
            assign_subsets(rows, data.reporting_fraction, data.split_seed)
        save_table(rows, ctx.run_dir.prompts(split))
        summary[split] = {"problems": len(rows), "bad_rows": len(loaded.errors), "too_few_tests": len(loaded.skipped),
                          "too_long": too_long, "formats": loaded.formats}
        dropped = [f"{len(loaded.errors)} bad rows"]
        if data.min_tests is not None:
            dropped.append(f"{len(loaded.skipped)} with fewer than {data.min_tests} tests")
        if data.max_tokens is not None:
            dropped.append(f"{too_long} longer than {data.max_tokens} tokens")
        ctx.say(f"{split}: {len(rows)} problems from {source.path} (left out: {', '.join(dropped)})")
    return summary


def load_problems_table(table: Any) -> dict[str, Problem]:
    """The graded problems of a prepared split, by task_id."""
    return {row["task_id"]: Problem.from_dict(json.loads(row["problem"])) for row in table.select_columns(["task_id", "problem"])}
