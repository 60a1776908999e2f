"""A procedural code task shipped with the package: the CPU-scale problem set on which QRPO's learning shows.

    from qrpo import tasks
    train = tasks.rows("train")      # >= 500 LeetCodeDataset-style rows (v0.3 flat schema, with `query`)
    held_out = tasks.rows("test")    # >= 100 rows whose template parameters never occur in `train`
    sft = tasks.sft_examples(0.25)   # the reference policy's training mix: correct and plausible wrong answers

Six templates (`family.TEMPLATES`: count by a comparison, an affine sum, pick an element, a small loop, a
divisibility filter, count characters), each with slots to read from the statement. Every filling of the
slots is one problem; per template a fixed share of the fillings is held out, so a held-out problem's
parameter tuple (operator and constant, element and offset, ...) never occurs in training. Each problem has
10 tests whose inputs make the plausible bugs fail some of them and pass others.

The pipeline reads them as a problem source: `data.train.path: qrpo-tasks:train`, `data.test.path:
qrpo-tasks:test` (qrpo/configs/learn-cpu.yaml).
"""

from __future__ import annotations

import random
from functools import cache
from typing import Any, Literal

from .family import TEMPLATES, Template, Variant, run_solution, solution_code, variants

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")
SOURCE_PREFIX = "qrpo-tasks:"  # a problem source path naming a split: qrpo-tasks:train, qrpo-tasks:test
VERSION = 1  # bump when a template, the split or the tests change: the reference cache key includes it
HELD_OUT_SHARE = 0.16
SEED = 20250710
PREAMBLE = "from typing import *\n"
MIN_TESTS = 8


def split_of(variant: Variant) -> Split:
    """Which split a problem is in (fixed: a seeded shuffle of each template's fillings)."""
    return _splits()[variant.key]


@cache
def _splits() -> dict[str, Split]:
    out: dict[str, Split] = {}
    by_template: dict[str, list[Variant]] = {}
    for v in variants():
        by_template.setdefault(v.template, []).append(v)
    for name, group in by_template.items():
        order = sorted(group, key=lambda v: v.key)
        random.Random(f"{SEED}-{name}").shuffle(order)
        held = max(1, round(len(order) * HELD_OUT_SHARE))
        for i, v in enumerate(order):
            out[v.key] = "test" if i < held else "train"
    return out


def query(template: Template, statement: str) -> str:
    """The model-facing prompt: the question and the starter code (a short LeetCodeDataset-style query)."""
    return f"### Question:\n{statement}\n\n### Format:\n```python\n{starter_code(template)}\n```\n"


def starter_code(template: Template) -> str:
    return f"class Solution:\n    def {template.method}(self, {template.signature}) -> {template.returns}:\n        "


def _call(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {v!r}" for k, v in kwargs.items())


def problem_row(variant: Variant, index: int) -> dict[str, Any]:
    """One problem as a LeetCodeDataset v0.3 row (what `sandbox.datasets` and the pipeline's prepare read)."""
    template = TEMPLATES[variant.template]
    params = variant.params
    code = solution_code(template, template.body(params))
    rng = random.Random(f"{SEED}-{variant.key}")
    cases: list[dict[str, Any]] = []
    for case in template.inputs(params, rng):
        if case not in cases:
            cases.append(case)
    if len(cases) < MIN_TESTS:  # pragma: no cover -- every template draws 10; a guard for new templates
        raise ValueError(f"template {template.name} drew {len(cases)} distinct tests for {variant.key}; it needs {MIN_TESTS}")
    asserts = [f"    assert candidate({_call(c)}) == {run_solution(template, code, c)!r}" for c in cases]
    statement = template.statement(params)
    return {
        "task_id": f"task-{variant.key}",
        "question_id": index,
        "difficulty": template.difficulty,
        "tags": [template.name],
        "problem_description": statement,
        "starter_code": starter_code(template),
        "prompt": PREAMBLE,
        "completion": code,
        "entry_point": f"Solution().{template.method}",
        "test": "def check(candidate):\n" + "\n".join(asserts) + "\n",
        "query": query(template, statement),
        "template": template.name,
        "params": list(params),
    }


@cache
def _all_rows() -> tuple[dict[str, Any], ...]:
    return tuple(problem_row(v, i) for i, v in enumerate(variants()))


def rows(split: Split) -> list[dict[str, Any]]:
    """The problems of one split, as LeetCodeDataset rows (fresh dicts: callers may change them)."""
    if split not in SPLITS:
        raise ValueError(f"unknown task split {split!r}; choose one of: {', '.join(SPLITS)}")
    splits = _splits()
    return [dict(r) for r in _all_rows() if splits[r["task_id"].removeprefix("task-")] == split]


def source_split(path: str) -> Split | None:
    """The split a problem source path names (`qrpo-tasks:train`), or None if it is no task source."""
    if not path.startswith(SOURCE_PREFIX):
        return None
    split = path[len(SOURCE_PREFIX):]
    if split not in SPLITS:
        raise ValueError(f"{path}: unknown task split {split!r}; write {SOURCE_PREFIX}train or {SOURCE_PREFIX}test")
    return "train" if split == "train" else "test"


def answer(code: str) -> str:
    """A solution written as a model answer (a ```python block), as the pipeline's solution_completion does."""
    return f"```python\n{code.rstrip()}\n```"


def sft_examples(correct_share: float, per_problem: int = 4, seed: int = 0) -> list[tuple[list[dict[str, str]], str]]:
    """The reference policy's training data: (chat prompt, answer) pairs over the training problems, where each
    answer is the canonical solution with probability `correct_share` and one of the problem's plausible bugs
    otherwise. A model trained on it writes right and wrong programs for the same prompt, like an SFT model that
    half-learned a task: the room QRPO has to improve it."""
    rng = random.Random(f"{seed}-{correct_share}")
    out = []
    for variant in variants():
        if split_of(variant) != "train":
            continue
        template = TEMPLATES[variant.template]
        prompt = [{"role": "user", "content": query(template, template.statement(variant.params))}]
        bugs = template.bugs(variant.params)
        for _ in range(per_problem):
            body = template.body(variant.params) if rng.random() < correct_share else rng.choice(bugs)
            out.append((prompt, answer(solution_code(template, body))))
    return out
