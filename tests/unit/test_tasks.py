"""qrpo.tasks: the procedural code problems (sizes, format, held-out parameters, partial credit, SFT mix)."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest

from qrpo import tasks
from qrpo.pipeline.config import ConfigError, load_config
from qrpo.pipeline.problems import load_source
from qrpo.tasks.family import TEMPLATES, run_solution, solution_code
from sandbox.datasets import load_problems

ASSERT = re.compile(r"assert candidate\((.*)\) == (.*)$", re.MULTILINE)


def cases(row: dict[str, Any]) -> list[tuple[dict[str, Any], Any]]:
    """The (arguments, expected) of a row's asserts (our own generated test code)."""
    return [(eval(f"dict({args})"), eval(expected)) for args, expected in ASSERT.findall(row["test"])]  # noqa: S307


def pass_rate(row: dict[str, Any], body: str) -> float:
    template = TEMPLATES[row["template"]]
    code = solution_code(template, body)
    checks = cases(row)
    passed = 0
    for kwargs, expected in checks:
        try:
            passed += run_solution(template, code, kwargs) == expected
        except Exception:  # noqa: BLE001 -- a bug may raise (an index out of range): the test fails
            pass
    return passed / len(checks)


def test_sizes_and_format():
    train, test = tasks.rows("train"), tasks.rows("test")
    assert len(train) >= 500 and len(test) >= 100
    assert {r["template"] for r in test} == set(TEMPLATES) == {r["template"] for r in train}
    for split, rows in (("train", train), ("test", test)):
        loaded = load_problems(rows, min_tests=8)
        assert not loaded.errors and not loaded.skipped, (split, loaded.errors[:1], loaded.skipped[:1])
        assert len(loaded) == len(rows) and loaded.formats == {"leetcode": len(rows)}
        for problem in loaded:
            assert len(problem.tests) >= 8
            assert problem.metadata["canonical_solution"].startswith("class Solution:")
            assert problem.metadata["starter_code"] in problem.prompt  # the query shows the starter code
    assert len({r["task_id"] for r in train + test}) == len(train) + len(test)


def test_held_out_parameters_never_seen_in_training():
    train = {(r["template"], tuple(r["params"])) for r in tasks.rows("train")}
    test = {(r["template"], tuple(r["params"])) for r in tasks.rows("test")}
    assert not train & test
    assert tasks.rows("test") == tasks.rows("test")  # deterministic


def test_canonical_passes_and_bugs_get_partial_credit():
    """The canonical solution passes every test; each problem has a bug that passes some tests and fails others,
    and most bugs are really wrong (the tests tell them apart)."""
    rows = tasks.rows("train")[::7] + tasks.rows("test")[::5]
    wrong = total = 0
    for row in rows:
        template = TEMPLATES[row["template"]]
        params = tuple(row["params"])
        assert pass_rate(row, template.body(params)) == 1.0, row["task_id"]
        rates = [pass_rate(row, bug) for bug in template.bugs(params)]
        assert any(r < 1 for r in rates), (row["task_id"], rates)
        wrong += sum(r < 1 for r in rates)
        total += len(rates)
        assert any(0 < r < 1 for r in rates) or row["template"] in ("pick", "loop", "affine"), (row["task_id"], rates)
    assert wrong / total > 0.9


def test_solutions_depend_on_the_statement():
    """Two problems of a template differ in their statements and answers: a model must read the statement."""
    for name in TEMPLATES:
        rows = [r for r in tasks.rows("train") if r["template"] == name][:6]
        assert len({r["problem_description"] for r in rows}) == len(rows)
        first = rows[0]
        for other in rows[1:]:
            assert pass_rate(first, TEMPLATES[name].body(tuple(other["params"]))) < 1.0, (first["task_id"], other["task_id"])


def test_sft_mix():
    examples = tasks.sft_examples(0.3, per_problem=4)
    assert len(examples) == 4 * len(tasks.rows("train"))
    canonical = {r["query"]: tasks.answer(r["completion"]) for r in tasks.rows("train")}
    held_out = {r["query"] for r in tasks.rows("test")}
    correct = Counter(answer == canonical[prompt[0]["content"]] for prompt, answer in examples)
    assert 0.25 < correct[True] / len(examples) < 0.4  # ~30% correct (some bugs coincide with the solution)
    assert not held_out & {prompt[0]["content"] for prompt, _ in examples}


def test_pipeline_source(tmp_path):
    config = load_config("learn-cpu", [f"output_dir={tmp_path}"])
    assert config.data.train is not None
    loaded = load_source("data.train", config.data.train, config.data)
    assert len(loaded) == config.data.train.limit
    with pytest.raises(ConfigError, match="qrpo-tasks:train or qrpo-tasks:test"):
        load_config("learn-cpu", ["data.test.path=qrpo-tasks:heldout"])
    with pytest.raises(ValueError, match="unknown task split"):
        tasks.rows("heldout")  # type: ignore[arg-type]
