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
import random
from collections import defaultdict
from typing import Any

from sandbox.datasets import LoadedProblems
from sandbox.rundir import dumps

from ..config import PipelineConfig
from ..errors import StageError
from ..layout import RunLayout, save_table
from ..problems import load_source
from ..prompts import PromptStyle, chat_prompt, graded_preamble, solution_completion
from ..stage import StageContext

NAME = "prepare"
SUMMARY = "problems -> chat prompts, tests, filters, train/test splits"
SPLITS = ("train", "test")


def requires(config: PipelineConfig) -> list[str]:
    return ["model"] if config.data.max_tokens is not None else []


def inputs(config: PipelineConfig) -> dict[str, Any]:
    return {"data": config.data.model_dump()}


def problem_rows(loaded: LoadedProblems, style: PromptStyle) -> list[dict[str, Any]]:
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
            "problem": dumps(graded.to_dict()),
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


def run(ctx: StageContext) -> dict[str, Any]:
    config = ctx.config
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
            kept = [r for r in rows if data.max_tokens is None or r["chat_tokens"] <= data.max_tokens]
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
        save_table(rows, ctx.layout.prompts(split))
        summary[split] = {"problems": len(rows), "bad_rows": len(loaded.errors), "too_few_tests": len(loaded.skipped),
                          "too_long": too_long, "formats": loaded.formats}
        dropped = [f"{len(loaded.errors)} bad rows"]
        if data.min_tests is not None:
            dropped.append(f"{len(loaded.skipped)} with fewer than {data.min_tests} tests")
        if data.max_tokens is not None:
            dropped.append(f"{too_long} longer than {data.max_tokens} tokens")
        ctx.say(f"{split}: {len(rows)} problems from {source.path} (left out: {', '.join(dropped)})")
    return summary


def progress(layout: RunLayout) -> str | None:
    return None  # seconds of work: done or not
