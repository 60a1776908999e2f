"""HumanEval+ / MBPP+ graded on base + plus inputs, as evalplus grades them, in the real sandbox."""

from __future__ import annotations

import dataclasses

import pytest

from sandbox.api import grade
from sandbox.datasets import load_problems
from sandbox.problem import Limits

from ..conftest import backend_or_fail

# Canonical solutions we cannot grade, by name, with the reason.
EXCLUDED = {
    "Mbpp/255": "its canonical outputs on the plus inputs are 2M tuples (336 MB), over the judge's 256 MB message limit",
}
HEP = "humaneval/HumanEvalPlus-v0.1.10.jsonl.gz"
MBPP = "mbpp/MbppPlus-v0.2.0.jsonl.gz"


@pytest.fixture(autouse=True)
def _fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("QRPO_CACHE_DIR", str(tmp_path / "cache"))  # outputs computed here, in the sandbox


def test_plus_inputs_catch_what_base_asserts_miss(shared_data) -> None:
    backend = backend_or_fail("bubblewrap")
    plus = load_problems(shared_data / MBPP)
    base = load_problems(shared_data / MBPP, tests="base")
    # Issue 15's examples: None on empty input (Mbpp/2), a lookup table of the base cases (Mbpp/3).
    none_on_empty = (
        "def similar_elements(a, b):\n    s = set(a) & set(b)\n    return s if s else None\n"
    )
    lookup = "def is_not_prime(n):\n    return {1: True, 2: False, 10: True, 35: True, 37: False}.get(n, False)\n"
    rows = [
        {"task_id": "Mbpp/2", "code": plus["Mbpp/2"].metadata["canonical_solution"]},
        {"task_id": "Mbpp/2", "code": none_on_empty},
        {"task_id": "Mbpp/3", "code": lookup},
    ]
    on_plus = grade(plus, rows, backend=backend, workers=2, granularity="per_solution")
    on_base = grade(base, rows, backend=backend, workers=2, granularity="per_solution")
    assert [r.pass_rate for r in on_base] == [1.0, 1.0, 1.0]
    assert on_plus[0].pass_rate == 1.0 and on_plus[0].total == len(plus["Mbpp/2"].tests)
    assert 0 < on_plus[1].total - on_plus[1].passed < on_plus[1].total  # fails some plus inputs
    assert on_plus[2].pass_rate < 0.5
    assert {t.verdict.value for t in on_plus[1].tests} == {"passed", "wrong_answer"}


def test_wrong_float_and_tolerance(shared_data) -> None:
    backend = backend_or_fail("bubblewrap")
    problems = load_problems(shared_data / HEP)
    rows = [
        {"task_id": "HumanEval/2", "code": "def truncate_number(number):\n    return number % 1.0 + 1e-9\n"},  # within atol 1e-6
        {"task_id": "HumanEval/2", "code": "def truncate_number(number):\n    return round(number % 1.0, 2)\n"},  # not
        {"task_id": "HumanEval/32", "code": problems["HumanEval/32"].metadata["canonical_solution"]},
    ]
    results = grade(problems, rows, backend=backend, workers=2, granularity="per_solution")
    assert results[0].pass_rate == 1.0
    assert results[1].pass_rate < 1.0
    assert results[2].pass_rate == 1.0  # find_zero is checked by |poly(xs, x)| <= atol


@pytest.mark.slow
@pytest.mark.parametrize("path", [HEP, MBPP])
def test_canonical_solutions_score_one_on_base_and_plus(path: str, shared_data, capsys) -> None:
    backend = backend_or_fail("bubblewrap")
    loaded = load_problems(shared_data / path)
    assert not loaded.errors
    generous = Limits(cpu_s=10.0, wall_s=20.0, memory_mb=2048, solution_s=900.0)
    problems = {k: dataclasses.replace(p, limits=generous) for k, p in loaded.problems.items() if k not in EXCLUDED}
    rows = [{"task_id": k, "code": p.metadata["canonical_solution"]} for k, p in problems.items()]
    results = grade(problems, rows, backend=backend, workers=2, granularity="per_solution")
    failed = {r.task_id: [t.detail for t in r.tests if t.verdict.value != "passed"][:2] for r in results if r.pass_rate != 1.0}
    assert not failed, f"canonical solutions that did not score 1.0 on base + plus: {failed}"
    with capsys.disabled():
        print(f"\n{path}: {len(results)} canonical solutions, {sum(r.total for r in results)} base + plus tests, all passed")


def test_test_data_reaches_the_setup_for_trusted_and_opaque_tests(backend: str) -> None:
    """A problem's test_data is parsed by its test setup in the judge (as `qrpo_test_data`), and an
    opaque test, which runs on the untrusted side with the setup, gets it there too."""
    from sandbox.problem import Problem, Test

    setup = "import json\nqrpo_inputs, qrpo_expected = json.loads(qrpo_test_data)\n"
    data = '[[[1, 2], [3, 4]], [3, 7]]'
    tests = (Test("function", "assert candidate(*qrpo_inputs[0]) == qrpo_expected[0]"),
             Test("function", "f = candidate\nassert f(*qrpo_inputs[1]) == qrpo_expected[1]"))  # opaque: passed around
    problem = Problem(task_id="add", prompt="", tests=tests, entry_point="add", test_setup=setup, test_data=data,
                      limits=Limits(cpu_s=2, wall_s=5))
    rows = [{"task_id": "add", "code": "def add(a, b):\n    return a + b\n"},
            {"task_id": "add", "code": "def add(a, b):\n    return a * b if a == 3 else a + b\n"}]
    right, wrong = grade([problem], rows, backend=backend, workers=1)
    assert [(t.verdict.value, t.trusted) for t in right.tests] == [("passed", True), ("passed", False)]
    assert [(t.verdict.value, t.trusted) for t in wrong.tests] == [("passed", True), ("wrong_answer", False)]
