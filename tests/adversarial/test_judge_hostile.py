"""Hostile solutions against the judge (issue 11): each gets the verdict it must get on every
test, and afterwards the same judges still serve, a correct solution still scores 1.0, no row
of the batch is lost, and every result can be written as UTF-8 JSON.

Every class runs on every backend, process included: the fresh world (mount and IPC namespaces
of the runner's own) and the tree limits do not depend on a container. Where the kernel refuses
unprivileged namespaces the `containment` of a result says so and the world cases fail loudly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from sandbox.pool import Job, Pool
from sandbox.problem import GradeResult, Limits, Problem, Test

from ..conftest import BACKENDS, backend_or_fail
from .judge_cases import CASES, JudgeCase

LIMITS = Limits(cpu_s=1.0, wall_s=2.0, memory_mb=512, solution_s=20.0)
PREAMBLE = "from typing import *\n"
BIG_N = 25_000
PROBLEMS = {
    "add": Problem(
        task_id="add",
        prompt="",
        preamble=PREAMBLE,
        entry_point="Solution().add",
        limits=LIMITS,
        tests=tuple(Test("function", f"assert candidate({a}, {b}) == {a + b}") for a, b in [(1, 2), (40, 2), (-5, 5)]),
    ),
    "echo": Problem(
        task_id="echo", prompt="", limits=LIMITS, tests=tuple(Test("stdio", stdin=f"{i}\n", stdout=f"{i}\n") for i in range(3))
    ),
    "big": Problem(
        task_id="big",
        prompt="",
        limits=LIMITS,
        tests=(Test("stdio", stdin=f"{BIG_N}\n", stdout="\n".join(str(i) for i in range(BIG_N)) + "\n"),),
    ),
    "length": Problem(
        task_id="length",
        prompt="",
        entry_point="length",
        limits=LIMITS,
        tests=tuple(Test("function", f"assert candidate('{c}' * 300000) == 300000") for c in "ab"),
    ),
    "raises": Problem(
        task_id="raises",
        prompt="",
        entry_point="check_positive",
        limits=LIMITS,
        tests=(
            Test("function", "assert candidate(3) == 3"),
            Test("function", "try:\n    candidate(-1)\n    assert False, 'no exception'\nexcept ValueError:\n    pass"),
            Test("function", "try:\n    candidate(-2)\nexcept:\n    pass"),
        ),
    ),
    "match": Problem(
        task_id="match",
        prompt="",
        entry_point="find",
        limits=LIMITS,
        tests=(Test("function", "m = candidate('xaab')\nassert candidate(m) == 'aab'"),),
    ),
}
GOOD = {
    "add": "class Solution:\n    def add(self, a, b):\n        return a + b\n",
    "echo": "print(input())\n",
    "big": "n = int(input())\nprint('\\n'.join(str(i) for i in range(n)))\n",
    "length": "def length(s):\n    return len(s)\n",
    "raises": "def check_positive(x):\n    if x < 0:\n        raise ValueError('negative')\n    return x\n",
    "match": "import re\ndef find(x):\n    return re.search('a+b', x) if isinstance(x, str) else x.group()\n",
}


@pytest.fixture(scope="module", params=BACKENDS)
def pool(request: pytest.FixtureRequest) -> Iterator[Pool]:
    name = backend_or_fail(request.param)
    with Pool(name, workers=2, max_attempts=2) as pool:
        yield pool
    assert pool.restarts == 0, f"hostile solutions restarted {pool.restarts} judge(s) on {name}"


def grade(pool: Pool, jobs: list[tuple[str, str]]) -> list[GradeResult]:
    return list(pool.grade(iter([Job(i, PROBLEMS[p], code, "per_test") for i, (p, code) in enumerate(jobs)])))


def test_there_are_at_least_40_hostile_solutions_against_the_judge() -> None:
    assert len(CASES) >= 40
    classes = {c.klass for c in CASES}
    assert classes == {"frames", "decode", "world", "limits", "scoring", "trust"}
    assert all(sum(c.klass == k for c in CASES) >= 3 for k in classes), "several variants per class"


def test_the_good_solutions_are_good() -> None:
    for name, problem in PROBLEMS.items():
        assert name in GOOD and len(problem.tests) >= 1


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_solution_against_the_judge(pool: Pool, case: JudgeCase) -> None:
    problem = PROBLEMS[case.problem]
    assert len(case.tests) == len(problem.tests), case.name
    workers_before = sorted(w.pid for w in pool.workers)
    if case.before:  # on both judges: four rows, two at a time
        grade(pool, [(case.problem, case.before)] * 4)
    # The hostile solution between two correct ones, in one batch: no row may be lost.
    results = grade(pool, [(case.problem, GOOD[case.problem]), (case.problem, case.code), (case.problem, GOOD[case.problem])])
    assert len(results) == 3
    first, hostile, last = results
    got = tuple(t.verdict.value for t in hostile.tests)
    assert got == case.tests, f"{case.name}: got {got}, expected {case.tests}: {[t.detail for t in hostile.tests]}"
    assert all(t.trusted for t in hostile.tests), "hostile tests must be judged in the trusted process"
    for result in results:  # every writer can write it: no lone surrogate survives
        json.dumps(result.to_dict(), ensure_ascii=False).encode("utf-8")
    assert first.pass_rate == 1.0 and last.pass_rate == 1.0, f"correct neighbours of {case.name}: {first.tests} {last.tests}"
    assert sorted(w.pid for w in pool.workers) == workers_before, "a judge was replaced"
    assert pool.restarts == 0
    after = grade(pool, [(case.problem, GOOD[case.problem])])[0]
    assert after.pass_rate == 1.0, f"judges broken after {case.name}: {after.tests}"
