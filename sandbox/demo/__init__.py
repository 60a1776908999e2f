"""A small demo dataset shipped with the package: 14 LeetCode-style problems written for this
project (LeetCodeDataset v0.3 flat schema, 23-29 tests each, two linked-list and two tree
problems) and completions for them.

`completions.jsonl` has one correct answer per problem (model-style text with a ```python
block; one uses ```py, one ```Python3, one CRLF line ends) and extra rows that exercise the other
verdicts: wrong_answer, timeout, runtime_error, no_code, syntax_error, a two-block answer where
the paper's first-block policy grades a wrong draft, and a `code` row. Each row carries
`expected_verdict` and `expected_pass_rate` (checked in plain Python when the files were made;
the timeout row assumes the paper's 1 s per-test limit) and a `note`.

    from sandbox import demo
    from sandbox.datasets import load_problems
    problems = load_problems(demo.problems_path(), min_tests=20)
"""

from __future__ import annotations

import atexit
import contextlib
from importlib import resources
from pathlib import Path

PROBLEMS = "problems.jsonl"
COMPLETIONS = "completions.jsonl"
_extracted = contextlib.ExitStack()
atexit.register(_extracted.close)


def path(name: str = PROBLEMS) -> Path:
    """A filesystem path to one of the demo files (`problems.jsonl` or `completions.jsonl`)."""
    if name not in (PROBLEMS, COMPLETIONS):
        raise ValueError(f"unknown demo file {name!r}; the demo has {PROBLEMS!r} and {COMPLETIONS!r}")
    resource = resources.files(__name__).joinpath(name)
    if isinstance(resource, Path):
        return resource
    return _extracted.enter_context(resources.as_file(resource))  # installed as a zip: extract once


def problems_path() -> Path:
    return path(PROBLEMS)


def completions_path() -> Path:
    return path(COMPLETIONS)
