"""`sandbox.grade` takes what people have: a problems path, dataset rows, Problems, a Hugging Face
Dataset (problems and completions alike), and the CLI's options as keyword arguments; every input
kind grades the same rows to the same results."""

from __future__ import annotations

import json

import pytest

import sandbox
from sandbox.datasets import load_problems
from sandbox.problem import Limits

from .test_service import COMPLETIONS, PROBLEMS, assert_same


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    rows = [json.loads(line) for line in COMPLETIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if r["expected_verdict"] != "timeout"][:8]


@pytest.fixture(scope="module")
def problem_rows() -> list[dict]:
    return [json.loads(line) for line in PROBLEMS.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def pool():
    from sandbox.pool import Pool

    with Pool("process", workers=2) as warm:
        yield warm


@pytest.fixture(scope="module")
def reference(rows, pool):
    """The path-based call, max_tests=5: every other input kind must match it."""
    results = sandbox.grade(str(PROBLEMS), str(COMPLETIONS), pool=pool, max_tests=5)
    by_row = [json.loads(line) for line in COMPLETIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    keep = [i for i, r in enumerate(by_row) if r in rows]
    return [results[i] for i in keep]


def test_reference_keeps_five_tests(reference) -> None:
    assert {r.total for r in reference} == {5}


def test_dataset_from_list(rows, problem_rows, pool, reference) -> None:
    from datasets import Dataset

    got = sandbox.grade(Dataset.from_list(problem_rows), Dataset.from_list(rows), pool=pool, max_tests=5)
    assert_same(got, reference, exact=True)
    got = sandbox.grade(Dataset.from_list(problem_rows), rows, pool=pool, max_tests=5)
    assert_same(got, reference, exact=True)


def test_rows_problems_and_mappings(rows, problem_rows, pool, reference) -> None:
    assert_same(sandbox.grade(problem_rows, rows, pool=pool, max_tests=5), reference, exact=True)
    problems = list(load_problems(PROBLEMS, max_tests=5).problems.values())
    assert_same(sandbox.grade(problems, rows, pool=pool), reference, exact=True)
    full = list(load_problems(PROBLEMS).problems.values())
    assert_same(sandbox.grade(full, rows, pool=pool, max_tests=5), reference, exact=True)  # options apply to Problems too
    assert_same(sandbox.grade({p.task_id: p for p in full}, rows, pool=pool, max_tests=5), reference, exact=True)
    assert_same(sandbox.grade(load_problems(PROBLEMS), rows, pool=pool, max_tests=5), reference, exact=True)


def test_cli_options_as_keywords(rows, problem_rows, pool) -> None:
    few = sandbox.grade(problem_rows, rows, pool=pool, min_tests=27)  # problems with fewer tests are dropped
    kept = {p.task_id for p in load_problems(PROBLEMS, min_tests=27).problems.values()}
    assert 0 < len(kept) < 14
    assert [r.error == "" for r in few] == [r["task_id"] in kept for r in rows]
    limited = sandbox.grade(problem_rows, rows[:2], pool=pool, max_tests=2, cpu=2, wall=4, memory=512,
                            granularity="per_solution", extract="first", format="leetcode", tests="base")
    assert [r.total for r in limited] == [2, 2] and [r.pass_rate for r in limited] == [1.0, 1.0]
    with pytest.raises(TypeError, match="not both"):
        sandbox.grade(problem_rows, rows, pool=pool, cpu=2, limits=Limits())
    with pytest.raises(ValueError, match="max_tests"):
        sandbox.grade(problem_rows, rows, pool=pool, max_tests=0)
    with pytest.raises(ValueError, match="no usable problem"):
        sandbox.grade([{"nonsense": 1}], rows, pool=pool)
