"""Stage `prepare`: problem sources -> the prompts, tests and splits every later stage reads.

Writes `prepare/train` and `prepare/test`, one row per problem:

    task_id, prompt (chat messages: one user turn, no system prompt), solution (the dataset's own solution as
    a ```python answer, or ""), difficulty, num_tests, prompt_tokens, problem (the Problem as JSON: tests,
    preamble, entry point; what grading needs), and in `test` a `subset`: selection or reporting.

The paper's filters: problems with fewer than `min_tests` tests are dropped, the first `max_tests` are kept,
and problems whose chat (prompt + the dataset's `response`, or its solution: `length_answer`) is longer than
`max_tokens` tokens of the model's tokenizer are dropped. The test split is divided, stratified by difficulty,
into a `selection` half (to pick checkpoints and hyperparameters) and a `reporting` half (to report them), as
the paper does (`splits.py`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sandbox.datasets import LoadedProblems
from sandbox.rundir import dumps

from ..config import LengthAnswer, PipelineConfig
from ..errors import StageError
from ..layout import RunLayout, save_table
from ..problems import load_source
from ..prompts import GradedPreamble, PromptStyle, chat_prompt, graded_preamble, solution_completion
from ..splits import assign_subsets
from ..stage import StageContext

NAME = "prepare"
SUMMARY = "problems -> chat prompts, tests, filters, train/test splits"
SPLITS = ("train", "test")


def requires(config: PipelineConfig) -> list[str]:
    return ["model"] if config.data.max_tokens is not None else []


def inputs(config: PipelineConfig) -> dict[str, Any]:
    return {"data": config.data.model_dump()}


def problem_rows(loaded: LoadedProblems, style: PromptStyle, preamble: GradedPreamble = "pre_code") -> list[dict[str, Any]]:
    """One row per problem: the chat prompt, the graded problem and what reports group by."""
    rows = []
    for problem in loaded:
        graded = dataclasses.replace(problem, preamble=graded_preamble(problem, style, preamble))
        response = problem.metadata.get("response")
        rows.append({
            "task_id": problem.task_id,
            "prompt": chat_prompt(problem, style),
            "solution": solution_completion(problem) or "",
            "response": response if isinstance(response, str) else "",
            "difficulty": str(problem.metadata.get("difficulty") or "unknown"),
            "num_tests": len(problem.tests),
            "problem": dumps(graded.to_dict()),
        })
    return rows


def count_tokens(rows: list[dict[str, Any]], model_path: str, answer: LengthAnswer = "response") -> None:
    """Add `prompt_tokens` and `chat_tokens` (prompt + the dataset's `response` or solution) with the model's
    tokenizer, the chat tokenized by its template as the reference code does (`apply_chat_template(chat)`)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
    except OSError as error:
        raise StageError(f"prepare: the tokenizer of {model_path} could not be loaded ({str(error).splitlines()[0][:200]}); "
                         "check model.name_or_path, or set data.max_tokens: null to skip the length filter") from None
    for row in rows:
        prompt = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
        row["prompt_tokens"] = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        chat = row["prompt"] + [{"role": "assistant", "content": row[answer]}]
        row["chat_tokens"] = len(chat_token_ids(tokenizer, chat))


def chat_token_ids(tokenizer: Any, chat: list[dict[str, str]]) -> list[int]:
    """`apply_chat_template(chat)`'s token ids (transformers 5 returns a BatchEncoding, 4.x a list)."""
    ids = tokenizer.apply_chat_template(chat, tokenize=True)
    if hasattr(ids, "keys") and "input_ids" in ids:
        ids = ids["input_ids"]
    return list(ids)


def run(ctx: StageContext) -> dict[str, Any]:
    config = ctx.config
    data = config.data
    model_path = ctx.base_model_path() if data.max_tokens is not None else None
    summary: dict[str, Any] = {}
    for split in SPLITS:
        source = getattr(data, split)
        if source is None:
            continue
        loaded = load_source(f"data.{split}", source, data)
        rows = problem_rows(loaded, data.prompt_style, data.graded_preamble)
        too_long = 0
        if model_path is not None:
            count_tokens(rows, model_path, data.length_answer)
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
            assign_subsets(rows, data.reporting_fraction, data.split_seed, data.split_method)
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
