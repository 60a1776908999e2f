"""Calls sent ahead (sandbox.judge.server: the next batch goes out while the runner answers the
current one). Hundreds of tests per solution, as in HumanEval+ and MBPP+: every answer must land on
its own test, a solution that hangs or crashes mid-batch loses only its own tests, and one that
shrinks or stops reading its request pipe only times itself out. Real judges, every backend.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from sandbox.pool import Job, Pool
from sandbox.problem import GradeResult, Limits, Problem, Test

N = 700  # > 2 batches of 256, so batches are sent ahead several times
SQUARE = Problem(
    task_id="square",
    prompt="",
    entry_point="square",
    limits=Limits(cpu_s=2.0, wall_s=2.0, memory_mb=512, solution_s=60.0),
    tests=tuple(Test("function", f"assert candidate({i}) == {i * i}") for i in range(N)),
)
GOOD = "def square(x):\n    return x * x\n"
# The kernel refuses to shrink a pipe below what it holds (EBUSY), so the attack retries on every
# call from test 150 until the pipe holds less than a page; if it never took, the last answer is
# wrong and the test fails rather than pass without an attack.
SHRINK = f"""
import fcntl
shrunk = False
def square(x):
    global shrunk
    if x >= 150 and not shrunk:
        try:
            fcntl.fcntl(3, fcntl.F_SETPIPE_SZ, 4096)  # its request pipe: one page
            shrunk = True
        except OSError:
            pass
    if x == {N - 1} and not shrunk:
        return -1
    return x * x
"""


@pytest.fixture(scope="module")
def pool(backend: str) -> Iterator[Pool]:
    """One judge per backend (conftest's `backend`: every backend, none skipped in CI)."""
    judges = Pool(backend, workers=1, max_attempts=1)
    judges.start()
    yield judges
    judges.close()
    assert judges.restarts == 0, f"a solution restarted the judge on {backend}"


def grade(pool: Pool, code: str, granularity: str = "per_solution") -> GradeResult:
    return next(iter(pool.grade([Job(0, SQUARE, code, granularity)])))


def verdicts(result: GradeResult) -> list[str]:
    return [t.verdict.value for t in result.tests]


def test_every_answer_lands_on_its_test(pool: Pool) -> None:
    # Off by one somewhere in the batches: only some answers are right.
    off = "def square(x):\n    return x * x if x % 97 else -1\n"
    result = grade(pool, off)
    expected = ["wrong_answer" if i % 97 == 0 else "passed" for i in range(N)]
    assert verdicts(result) == expected
    assert grade(pool, GOOD).pass_rate == 1.0


@pytest.mark.parametrize("at", [100, 300, 650])
def test_a_hang_mid_batch_costs_only_its_own_test(pool: Pool, at: int) -> None:
    hang = f"def square(x):\n    while x == {at}:\n        pass\n    return x * x\n"
    got = verdicts(grade(pool, hang))
    assert got[at] == "timeout" and Counter(got) == {"passed": N - 1, "timeout": 1}, Counter(got)


def test_a_crash_mid_batch_costs_only_its_own_test(pool: Pool) -> None:
    crash = "import os\ndef square(x):\n    if x == 400:\n        os._exit(3)\n    return x * x\n"
    got = verdicts(grade(pool, crash))
    assert got[400] == "runtime_error" and Counter(got) == {"passed": N - 1, "runtime_error": 1}, Counter(got)


def test_a_runner_that_shrinks_its_request_pipe_only_slows_itself(pool: Pool) -> None:
    got = verdicts(grade(pool, SHRINK))
    assert set(got) <= {"passed", "timeout"} and got[:150] == ["passed"] * 150, Counter(got)
    assert grade(pool, GOOD).pass_rate == 1.0  # the judge is unharmed


def test_per_test_forks_answer_in_order_too(pool: Pool) -> None:
    result = grade(pool, "def square(x):\n    return x * x if x != 333 else 0\n", "per_test")
    assert [i for i, v in enumerate(verdicts(result)) if v != "passed"] == [333]
