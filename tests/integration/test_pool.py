"""The warm pool: input order, dead and hung judges replaced with their item retried, and
infrastructure failures reported as sandbox_error, never as a solution's failure."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time

import pytest

from sandbox.backends import ProcessBackend
from sandbox.pool import LONG_JOB_S, Job, Pool, WorkerError, _long_first
from sandbox.problem import GradeResult, Limits, Problem, Test, Verdict

from ..conftest import backend_or_fail

SQUARE = Problem(
    task_id="square",
    prompt="",
    entry_point="square",
    tests=tuple(Test("function", f"assert candidate({i}) == {i * i}") for i in range(4)),
    limits=Limits(cpu_s=2, wall_s=5, solution_s=30),
)


def solution(delay: float, wrong: bool = False) -> str:
    return f"import time\ndef square(x):\n    time.sleep({delay})\n    return x * x + {int(wrong)}\n"


def test_results_come_back_in_input_order(backend: str) -> None:
    jobs = [Job(i, SQUARE, solution(0.05 * (i % 3), wrong=i % 4 == 0), "per_test") for i in range(16)]
    with Pool(backend, workers=2) as pool:
        results = list(pool.grade(iter(jobs)))
    assert [r.pass_rate for r in results] == [0.0 if i % 4 == 0 else 1.0 for i in range(16)]
    assert {r.backend for r in results} == {backend}


def test_killed_judges_are_replaced_and_items_retried(backend: str) -> None:
    """Kill worker judges mid-batch: every item still gets its correct result, none lost or
    graded twice (each index appears once, in order)."""
    jobs = [Job(i, SQUARE, solution(0.1, wrong=i % 5 == 0), "per_test") for i in range(20)]
    with Pool(backend, workers=2, max_attempts=4) as pool:  # 3 kills can hit one item at most 3 times
        stop = threading.Event()

        def killer() -> None:
            for _ in range(3):
                time.sleep(0.7)
                worker = pool.workers[0]
                if worker.process is not None and not stop.is_set():
                    os.killpg(worker.process.pid, signal.SIGKILL)

        thread = threading.Thread(target=killer)
        thread.start()
        results = list(pool.grade(iter(jobs)))
        stop.set()
        thread.join()
        assert pool.restarts >= 1
    assert len(results) == 20
    assert [r.pass_rate for r in results] == [0.0 if i % 5 == 0 else 1.0 for i in range(20)]
    assert all(r.verdict is not Verdict.SANDBOX_ERROR for r in results)


PING_THEN_DIE = """
import json, os, struct, sys
header = os.read(0, 4); body = os.read(0, struct.unpack(">I", header)[0])
reply = json.dumps({"id": json.loads(body)["id"], "pong": True}).encode()
os.write(1, struct.pack(">I", len(reply)) + reply)
os.read(0, 4)
os._exit(3)
"""


class DyingBackend(ProcessBackend):
    """A judge that starts, then dies on every item: an infrastructure failure each attempt."""

    name = "dying"

    def judge_command(self) -> list[str]:
        return [self.python, "-c", PING_THEN_DIE]


class BrokenBackend(ProcessBackend):
    name = "broken"

    def judge_command(self) -> list[str]:
        return ["/bin/false"]


def test_infrastructure_failure_is_sandbox_error_not_a_score() -> None:
    with Pool(DyingBackend(), workers=1, max_attempts=2) as pool:
        result = next(pool.grade(iter([Job(0, SQUARE, solution(0), "per_test")])))
    assert result.verdict is Verdict.SANDBOX_ERROR
    assert result.total == len(SQUARE.tests)
    assert "failed 2 times" in result.error and "exit status 3" in result.error
    assert result.attempts == 2


def test_a_backend_that_cannot_start_fails_fast() -> None:
    with pytest.raises(WorkerError, match="no judge of the broken backend could start"):
        Pool(BrokenBackend(), workers=2).start()


def test_hung_judge_is_replaced() -> None:
    """A judge that stops answering (SIGSTOP) is killed at the item's deadline and replaced."""
    backend_or_fail("process")
    quick = Problem(task_id="q", prompt="", entry_point="square", tests=SQUARE.tests,
                    limits=Limits(cpu_s=1, wall_s=1, solution_s=2))
    import sandbox.pool as pool_module

    margin = pool_module.DEADLINE_MARGIN_S
    pool_module.DEADLINE_MARGIN_S = 1.0
    try:
        with Pool("process", workers=1, max_attempts=2) as pool:
            os.kill(pool.workers[0].process.pid, signal.SIGSTOP)
            started = time.monotonic()
            result = next(pool.grade(iter([Job(0, quick, solution(0), "per_test")])))
            assert time.monotonic() - started < 30
            assert pool.restarts == 1
    finally:
        pool_module.DEADLINE_MARGIN_S = margin
    assert result.pass_rate == 1.0 and result.attempts == 2


# -- the pool as an executor -------------------------------------------------------------------

LOOP = "def square(x):\n    while True:\n        pass\n"


def test_submit_returns_futures_and_map_keeps_input_order(backend: str) -> None:
    with Pool(backend, workers=2) as pool:
        futures = [pool.submit(Job(i, SQUARE, solution(0.02 * (3 - i % 4), wrong=i % 3 == 0), "per_test")) for i in range(8)]
        assert [f.result(timeout=120).pass_rate for f in futures] == [0.0 if i % 3 == 0 else 1.0 for i in range(8)]
        mapped = list(pool.map(Job(i, SQUARE, solution(0.01 * (i % 5), wrong=i % 2 == 0), "per_test") for i in range(12)))
        assert [r.pass_rate for r in mapped] == [0.0 if i % 2 == 0 else 1.0 for i in range(12)]
        assert pool.pending == 0 and pool.judged == 20


def test_cancel_stops_queued_and_running_work_within_a_second(backend: str) -> None:
    """Looping solutions occupy both workers; cancelling them (running and queued) frees the
    judges within a second, and the pool goes on grading on fresh judges."""
    slow = Problem(task_id="loop", prompt="", entry_point="square", tests=SQUARE.tests[:1],
                   limits=Limits(cpu_s=60, wall_s=60, solution_s=120))
    with Pool(backend, workers=2) as pool:
        before = sorted(w.pid for w in pool.workers)
        futures = [pool.submit(Job(i, slow, LOOP, "per_test")) for i in range(5)]
        deadline = time.monotonic() + 60
        while pool.running < 2:  # both workers busy with a loop
            assert time.monotonic() < deadline, "the looping jobs never started"
            time.sleep(0.05)
        time.sleep(0.5)
        started = time.monotonic()
        assert pool.cancel(futures) == 5
        while pool.pending:
            assert time.monotonic() - started < 1.0, f"{pool.pending} cancelled item(s) still held after 1 s"
            time.sleep(0.01)
        assert all(f.cancelled() for f in futures)
        for pid in before:  # the looping judges are gone
            with pytest.raises(ProcessLookupError):
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline:
                    os.kill(pid, 0)
                    time.sleep(0.02)
        assert pool.restarts == 0  # a cancellation is not a failure
        result = pool.submit(Job(9, SQUARE, solution(0), "per_test")).result(timeout=120)
        assert result.pass_rate == 1.0 and result.attempts == 1


def test_closing_map_early_cancels_its_jobs(backend: str) -> None:
    slow = Problem(task_id="loop", prompt="", entry_point="square", tests=SQUARE.tests[:1],
                   limits=Limits(cpu_s=60, wall_s=60, solution_s=120))
    with Pool(backend, workers=2) as pool:
        jobs = [Job(0, SQUARE, solution(0), "per_test")] + [Job(i, slow, LOOP, "per_test") for i in range(1, 6)]
        results = pool.map(jobs)
        assert next(results).pass_rate == 1.0
        started = time.monotonic()
        results.close()
        while pool.pending:
            assert time.monotonic() - started < 1.0, "closing map() left its jobs running"
            time.sleep(0.01)


def test_as_completed_holds_no_finished_result_behind_a_slow_one_and_hands_over_what_is_done(backend: str) -> None:
    """A looping solution first: the other judge's results come out while it runs (map would hold
    them all behind it); `finished()` hands over, without waiting, exactly the results that are done;
    close() cancels the loop at once."""
    slow = Problem(task_id="loop", prompt="", entry_point="square", tests=SQUARE.tests[:1],
                   limits=Limits(cpu_s=60, wall_s=60, solution_s=120))
    with Pool(backend, workers=2) as pool:
        jobs = [Job(0, slow, LOOP, "per_test")] + [Job(i, SQUARE, solution(0, wrong=i % 2 == 0), "per_test")
                                                   for i in range(1, 9)]
        graded = pool.as_completed(jobs)
        taken = {}
        started = time.monotonic()
        while len(taken) < 8:
            assert graded.wait(timeout=0.1)
            assert time.monotonic() - started < 60, f"only {sorted(taken)} came out behind the loop"
            taken.update((job.index, result.pass_rate) for job, result in graded.finished())
        assert taken == {i: 0.0 if i % 2 == 0 else 1.0 for i in range(1, 9)}
        assert not graded.wait(timeout=0.3) or not list(graded.finished())  # the loop is still running
        graded.close()
        closed = time.monotonic()
        while pool.pending:
            assert time.monotonic() - closed < 1.0, "close() left the loop running"
            time.sleep(0.01)
        again = [(job.index, r.pass_rate) for job, r in pool.as_completed(jobs[1:4])]  # plain iteration
        assert sorted(again) == [(1, 1.0), (2, 0.0), (3, 1.0)]


STAMPED = "import time\nprint(time.monotonic())\ndef square(x):\n    return x * x\n"  # when it was loaded


def test_a_batchs_long_jobs_start_first_and_results_keep_their_order(backend: str) -> None:
    """Jobs whose reference solution took LONG_JOB_S or more start before the rest of a batch,
    the costliest first, through map (results still in input order) and as_completed; a lazy
    iterable keeps its order (the control: the same batch, the long jobs start last)."""
    long = [dataclasses.replace(SQUARE, task_id=f"long{s}", metadata={"reference_s": s}) for s in (0.5, 3.0)]
    short = dataclasses.replace(SQUARE, task_id="short", metadata={"reference_s": LONG_JOB_S / 2})
    jobs = [Job(i, short, STAMPED, "per_test") for i in range(4)]
    jobs += [Job(4, long[0], STAMPED, "per_test"), Job(5, short, STAMPED, "per_test"),
             Job(6, long[1], STAMPED, "per_test")]

    def started(results: list[tuple[int, GradeResult]]) -> list[int]:  # job indexes by load time
        assert all(r.pass_rate == 1.0 for _i, r in results)
        return [i for i, r in sorted(results, key=lambda pair: float(pair[1].stdout.split()[0]))]

    with Pool(backend, workers=1) as pool:  # one judge: the start order is the submission order
        mapped = list(pool.map(jobs))
        assert [r.task_id for r in mapped] == [j.problem.task_id for j in jobs]
        assert started(list(enumerate(mapped))) == [6, 4, 0, 1, 2, 3, 5]
        assert started([(j.index, r) for j, r in pool.as_completed(jobs)]) == [6, 4, 0, 1, 2, 3, 5]
        assert started(list(enumerate(pool.map(iter(jobs))))) == list(range(7))


def test_only_a_sequence_is_reordered_and_at_most_limit_long_jobs_go_first() -> None:
    costs = [0.0, 2.0, LONG_JOB_S, 0.1, 5.0, LONG_JOB_S * 0.99, 7.0]
    jobs = [Job(i, dataclasses.replace(SQUARE, metadata={"reference_s": c}), "", "per_test") for i, c in enumerate(costs)]
    assert [p for p, _job in _long_first(jobs, 10)] == [6, 4, 1, 2]
    assert [p for p, _job in _long_first(jobs, 2)] == [6, 4]
    assert _long_first(iter(jobs), 10) == [] and _long_first((j for j in jobs), 10) == []
    odd = [Job(0, dataclasses.replace(SQUARE, metadata={"reference_s": v}), "", "per_test") for v in ("x", None, -3, [1])]
    assert _long_first(odd, 10) == []  # metadata from a user's file that is not a number is no hint


def test_concurrent_submit_from_threads(backend: str) -> None:
    """Eight threads submit and map at once on one pool: every thread gets exactly its own
    results, in its own order."""
    with Pool(backend, workers=2) as pool:
        outcomes: dict[int, list[float]] = {}

        def client(k: int) -> None:
            jobs = [Job(j, SQUARE, solution(0.01, wrong=(j + k) % 3 == 0), "per_test") for j in range(6)]
            if k % 2:
                outcomes[k] = [f.result(timeout=300).pass_rate for f in [pool.submit(job) for job in jobs]]
            else:
                outcomes[k] = [r.pass_rate for r in pool.map(jobs)]

        threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert pool.restarts == 0
    assert outcomes == {k: [0.0 if (j + k) % 3 == 0 else 1.0 for j in range(6)] for k in range(8)}


SLOW = Problem(  # ten tests of 0.4 s each: one solution takes ~4 s, over its 1 s time slice
    task_id="slow",
    prompt="",
    entry_point="square",
    tests=tuple(Test("function", f"assert candidate({i}) == {i * i}") for i in range(10)),
    limits=Limits(cpu_s=2, wall_s=1, solution_s=60),
)


def test_a_long_solution_yields_its_judge_between_tests_and_comes_back_whole(backend: str) -> None:
    wrong_on_7 = "import time\ndef square(x):\n    time.sleep(0.4)\n    return x * x + (x == 7)\n"
    with Pool(backend, workers=1) as pool:
        result = pool.submit(Job(0, SLOW, wrong_on_7, "per_test")).result(timeout=60)
    assert [t.verdict for t in result.tests] == [Verdict.PASSED] * 7 + [Verdict.WRONG_ANSWER] + [Verdict.PASSED] * 2
    assert result.info["slices"] >= 3, result.info  # ~4 s of tests in slices of ~1 s
    assert 3.5 < result.time_s < 15


def test_a_flood_of_long_solutions_delays_a_newcomer_by_about_one_slice(backend: str) -> None:
    """One client fills both judges with solutions that take 4 s each; another client's quick
    solution, submitted after, is graded within about one time slice (1 s) plus one test."""
    from sandbox.fair import Ticket

    flood = "import time\ndef square(x):\n    time.sleep(0.4)\n    return x * x\n"
    with Pool(backend, workers=2) as pool:
        with Ticket(group="flood").active():
            floods = [pool.submit(Job(i, SLOW, flood, "per_test")) for i in range(6)]
        time.sleep(1.5)  # both judges are inside a flood solution now
        started = time.monotonic()
        with Ticket(group="newcomer").active():
            quick = pool.submit(Job(100, SQUARE, solution(0.0), "per_test"))
        assert quick.result(timeout=60).pass_rate == 1.0
        waited = time.monotonic() - started
        assert all(f.result(timeout=120).pass_rate == 1.0 for f in floods)
    assert waited < 2.5, f"the newcomer waited {waited:.1f} s behind the flood (a flood solution takes ~4 s)"
