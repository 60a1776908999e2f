"""A warm pool of judges as a long-lived executor: `submit(job) -> Future`, ordered `map`,
`as_completed`, cancellation of queued and running work.

    with Pool("bubblewrap", workers=4) as pool:
        future = pool.submit(Job(0, problem, code, "per_test"))    # concurrent.futures.Future
        for result in pool.map(jobs): ...                          # input order, streamed
        for job, result in pool.as_completed(jobs): ...            # as each finishes
        pool.cancel(futures)                                       # one request's work, queued or running

Started once (by `start`, `with`, or the first submit), the pool keeps one thread per worker
(`sandbox.worker.Worker`: one judge process) taking jobs from one queue: the client that has used
the least judge time goes first, its requests in turn (`sandbox.fair`). A `per_test` job yields
its judge between tests once it has run for a time slice (max(1 s, the test wall limit)); the rest
of its tests wait for its client's next turn and the slices come back as one result, so a flood of
looping solutions from one client delays another client's small request by about one slice per
judge, not by a whole solution's 60 s. Of a list handed to `map` or `as_completed`, the jobs whose
problem's reference solution took LONG_JOB_S or more are queued first, the costliest first (longest
processing time first: a slow one queued last would end the batch alone on one judge). Thread-safe
by contract: any number of threads may submit, map and cancel at once (a server's requests, a reward
function called from several threads) and share the warm judges.

Cancelling a future that is still queued drops it; cancelling one that is being graded kills its
worker's judge at once (the thread then reaps it, and the next item starts a fresh one), so a
cancellation takes effect well within a second even for a solution that loops forever. To make
that possible a future stays *pending* until its result is set: `Future.running()` is never
true, and `Future.cancel()` always succeeds on unfinished work.

A worker that dies, hangs past its item's deadline or answers garbage is killed and replaced,
and its item is retried on a fresh judge; after `max_attempts` the item is reported as
`sandbox_error` with the reason. It is never silently scored as a failure of the solution.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import os
import threading
from collections.abc import Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Any

from . import fair
from .backends import Backend, get_backend
from .problem import GradeResult, Granularity, Problem, TestResult, Verdict
from .worker import Worker, WorkerError

log = logging.getLogger("sandbox.pool")

DEADLINE_MARGIN_S = 30.0
# map() keeps this many jobs per worker submitted ahead of the consumer. Results are yielded in input
# order, so a slow solution at the head holds the window: with 4 a worker, the other judges drained
# the rest and sat idle behind it (2 judges: -25% throughput on LeetCode solutions, bench/sandbox_scaling.py);
# 32 keeps them busy. The cost of more: graded but unyielded results an interrupted run grades again.
LOOKAHEAD_PER_WORKER = 32
# A job whose problem's reference solution took this long or longer (Problem.expected_s) is submitted
# when map/as_completed start, costliest first, wherever it sits in the batch: started last, it ends
# the batch alone on one judge while the others idle (MBPP+'s Mbpp/599 takes 8.5 s of a 15 s batch on
# two judges). Shorter jobs keep their order: the tail one of them can add is small (grading costs up
# to ~2.5x the reference's time where outputs are large: Mbpp/630, 0.86 s -> 2.0 s).
LONG_JOB_S = 0.25
CLOSE_JOIN_S = 10.0
SLICE_MIN_S = 1.0  # a per_test job yields its judge between tests after max(this, wall_s) seconds

__all__ = ["DEADLINE_MARGIN_S", "LONG_JOB_S", "Job", "Pool", "Worker", "WorkerError", "default_workers"]


@dataclass
class Job:
    """One solution to grade. `index` is the request id the judge echoes (unique per worker at
    any time, which one request at a time per worker guarantees; callers number their own)."""

    index: int
    problem: Problem
    code: str
    granularity: Granularity | str
    details: bool = False  # failed tests carry a description with the expected value (h15)


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Pool:
    """A long-lived executor grading `Job`s on warm judges; see the module docstring."""

    def __init__(
        self, backend: str | Backend = "auto", workers: int | None = None, max_attempts: int = 3, progress: bool = False
    ) -> None:
        self.backend = backend if isinstance(backend, Backend) else get_backend(backend)
        self.size = workers or default_workers()
        self.max_attempts = max_attempts
        self.progress = progress
        self.workers: list[Worker] = []
        self.restarts = 0  # judges replaced after a failure (not after a cancellation)
        self.judged = 0  # items graded by a judge (results set)
        self._cond = threading.Condition()
        self._start_lock = threading.Lock()
        # least-served client first; an item is a job, its future, and what earlier slices of it graded
        self._queue: fair.FairQueue[tuple[Job, Future[GradeResult], GradeResult | None]] = fair.FairQueue()
        self._running: dict[Future[GradeResult], Worker] = {}
        self._threads: list[threading.Thread] = []
        self._closing = False

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> Pool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        """Started, not closed, and every worker thread serving."""
        return bool(self._threads) and not self._closing and all(t.is_alive() for t in self._threads)

    @property
    def pending(self) -> int:
        """Items submitted and not finished (queued, including cancelled ones not yet dropped, or running)."""
        with self._cond:
            return len(self._queue) + len(self._running)

    @property
    def running(self) -> int:
        """Items being graded now."""
        with self._cond:
            return len(self._running)

    def start(self) -> None:
        """Start the judges and their threads (idempotent, thread-safe; a closed pool starts again)."""
        with self._start_lock:
            if self._threads:
                return
            self.backend.prepare()
            workers = [Worker(self.backend) for _ in range(self.size)]
            errors: list[str] = []

            def start(worker: Worker) -> None:
                try:
                    worker.start()
                except WorkerError as exc:  # retried when the worker gets an item
                    errors.append(str(exc))

            starters = [threading.Thread(target=start, args=(w,)) for w in workers]
            for t in starters:
                t.start()
            for t in starters:
                t.join()
            if len(errors) == len(workers):
                for worker in workers:
                    worker.stop()
                self.backend.cleanup()
                raise WorkerError(f"no judge of the {self.backend.name} backend could start: {errors[0]}")
            with self._cond:
                self._closing = False
            self.workers = workers
            self._threads = [threading.Thread(target=self._serve, args=(w,), name=f"sandbox-worker-{i}", daemon=True)
                             for i, w in enumerate(workers)]
            for t in self._threads:
                t.start()

    def close(self) -> None:
        """Cancel queued and running work, stop the judges and their threads."""
        with self._start_lock:
            with self._cond:
                self._closing = True
                queued = [future for _, future, _ in self._queue.drain()]
                running = list(self._running)
                self._cond.notify_all()
            for future in queued + running:
                future.cancel()
            for t in self._threads:
                t.join(CLOSE_JOIN_S)
            for worker in self.workers:
                worker.stop()
            self._threads = []
            self.workers = []
            self.backend.cleanup()

    # -- the executor -------------------------------------------------------------------------

    def submit(self, job: Job) -> Future[GradeResult]:
        """Queue one job; its future holds the GradeResult (cancel it to drop or stop the work).
        Under an active `sandbox.fair.Ticket` the job takes its turn with that ticket's client and
        request, and the ticket's `cancel` cancels it."""
        self.start()
        future: Future[GradeResult] = Future()
        future.add_done_callback(self._on_done)
        ticket = fair.current()
        with self._cond:
            if self._closing:
                raise RuntimeError("the pool is closed")
            if ticket is None:
                self._queue.put((job, future, None))
            else:
                self._queue.put((job, future, None), ticket.group, ticket.request)
            self._cond.notify()
        if ticket is not None:
            ticket.track(future)
        return future

    def map(self, jobs: Iterable[Job], total: int | None = None) -> Generator[GradeResult, None, None]:
        """Grade jobs; yield results in input order as they become ready. Jobs are submitted
        lazily, LOOKAHEAD_PER_WORKER per worker ahead of the consumer, except that the long jobs of
        a sequence start at once (`_long_first`); closing the iterator early (or an exception in the
        consumer) cancels what it submitted and has not yet yielded."""
        self.start()
        window: collections.deque[Future[GradeResult]] = collections.deque()
        limit = max(1, self.size * LOOKAHEAD_PER_WORKER)
        early = {position: self.submit(job) for position, job in _long_first(jobs, limit)}
        source = enumerate(jobs)
        bar = _progress(total, self.progress)
        try:
            while True:
                for position, job in source:
                    future = early.pop(position, None)
                    window.append(future if future is not None else self.submit(job))
                    if len(window) >= limit:
                        break
                if not window:
                    return
                result = window.popleft().result()
                bar.update(1)
                yield result
        finally:
            self.cancel(window)
            self.cancel(early.values())
            bar.close()

    grade = map  # the name callers used before the pool was an executor

    def as_completed(self, jobs: Iterable[Job], total: int | None = None) -> Completed:
        """Grade jobs; iterate (job, result) as each finishes, LOOKAHEAD_PER_WORKER per worker in
        flight (a sequence's long jobs first, `_long_first`). What resumable output uses: a slow
        solution holds back no finished one."""
        self.start()
        limit = max(1, self.size * LOOKAHEAD_PER_WORKER)
        early = _long_first(jobs, limit)
        order: Iterator[Job] = iter(jobs)
        if early:
            first = {position for position, _job in early}
            order = itertools.chain((job for _p, job in early), (job for p, job in enumerate(jobs) if p not in first))
        return Completed(self, order, limit, _progress(total, self.progress))

    def cancel(self, futures: Iterable[Future[GradeResult]]) -> int:
        """Cancel every unfinished future given (for example all of one request's); returns how many."""
        return sum(future.cancel() for future in list(futures))

    # -- inside ------------------------------------------------------------------------------

    def _on_done(self, future: Future[GradeResult]) -> None:
        """Runs in the thread that finished or cancelled the future: a cancelled running item
        gets its judge killed now."""
        if not future.cancelled():
            return
        with self._cond:
            worker = self._running.get(future)
        if worker is not None:
            worker.kill()

    def _serve(self, worker: Worker) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                (job, future, before), group, request = self._queue.pop_with_group()
                if future.done():  # cancelled while queued
                    continue
                self._running[future] = worker
                token = self._queue.begin(group)  # its client is charged the judge time it takes
            try:
                result = self._run(worker, job, future)
            except BaseException as exc:  # a bug of ours: surface it to the caller, don't hang
                log.exception("grading %s failed", job.problem.task_id)
                with self._cond:
                    self._running.pop(future, None)
                    self._queue.end(token)
                _settle(future, exc)
                continue
            rest = _rest(job, result)
            if result is not None and before is not None:
                result = _joined(before, result, job.problem)
            with self._cond:
                self._running.pop(future, None)
                self._queue.end(token)
                if rest is not None and result is not None and not self._closing:
                    # its slice is over: the rest waits for its client's next turn (first in its request)
                    self._queue.put((rest, future, result), group, request, first=True)
                    self._cond.notify()
                    continue
                if result is not None:
                    self.judged += 1
            if result is not None:
                _settle(future, result)

    def _run(self, worker: Worker, job: Job, future: Future[GradeResult]) -> GradeResult | None:
        """Grade one job with retries on fresh judges; None once the future is cancelled."""
        problem = job.problem
        request = {"id": job.index, "problem": problem.to_dict(), "code": job.code, "granularity": job.granularity,
                   "details": job.details}
        if job.granularity == "per_test":  # tests are independent forks: the judge may stop between them
            request["slice_s"] = max(SLICE_MIN_S, problem.limits.wall_s)
        timeout = problem.limits.solution_s + problem.limits.wall_s * 2 + DEADLINE_MARGIN_S
        errors = []
        for attempt in range(1, self.max_attempts + 1):
            try:
                worker.ensure_started()
                if future.cancelled():  # a cancel from now on kills this judge, which grade() notices
                    return None
                response = worker.grade(request, timeout)
            except WorkerError as exc:
                if future.cancelled():
                    return None
                errors.append(str(exc))
                with self._cond:
                    self.restarts += 1
                continue
            tests = tuple(TestResult.from_dict(t) for t in response["tests"])
            n = len(problem.tests)
            if not (1 <= len(tests) < n if response.get("yielded") else len(tests) == n):
                errors.append(f"the judge returned {len(tests)} verdicts for {len(problem.tests)} tests")
                worker.stop()
                continue
            return GradeResult(
                task_id=problem.task_id,
                tests=tests,
                backend=self.backend.name,
                stdout=response.get("stdout", ""),
                stderr=response.get("stderr", ""),
                time_s=float(response.get("time_s", 0.0)),
                attempts=attempt,
                info=dict(response.get("info") or {}),
            )
        reason = f"grading failed {self.max_attempts} times: " + " | ".join(errors)[-1000:]
        return GradeResult.uniform(
            problem.task_id, len(problem.tests), Verdict.SANDBOX_ERROR, self.backend.name, reason, attempts=self.max_attempts
        )


def _long_first(jobs: Iterable[Job], limit: int) -> list[tuple[int, Job]]:
    """(position, job) of the jobs expected to take LONG_JOB_S or more, costliest first, at most
    `limit` of them (what map holds besides its window). Only a sequence is looked through: a
    lazy iterable stays lazy, in its order."""
    if not isinstance(jobs, Sequence):
        return []
    long = [(position, job) for position, job in enumerate(jobs) if job.problem.expected_s >= LONG_JOB_S]
    return sorted(long, key=lambda pair: -pair[1].problem.expected_s)[:limit]


def _rest(job: Job, result: GradeResult | None) -> Job | None:
    """What is left of `job` after a result that covers only its first tests (the judge's time
    slice ended): the remaining tests, with what remains of the solution's overall time."""
    if result is None or result.total >= len(job.problem.tests):
        return None
    limits = job.problem.limits
    left = max(0.001, limits.solution_s - result.time_s)
    problem = dataclasses.replace(job.problem, tests=job.problem.tests[result.total:],
                                  limits=dataclasses.replace(limits, solution_s=left))
    return dataclasses.replace(job, problem=problem)


def _joined(before: GradeResult, after: GradeResult, problem: Problem) -> GradeResult:
    """Two slices of one solution's grading as one result."""
    cap = problem.limits.output_kb * 1024
    return dataclasses.replace(
        after,
        tests=before.tests + after.tests,
        stdout=(before.stdout + after.stdout)[:cap],
        stderr=(before.stderr + after.stderr)[:cap],
        time_s=before.time_s + after.time_s,
        attempts=max(before.attempts, after.attempts),
        info={**after.info, "slices": int(before.info.get("slices", 1)) + 1},
    )


def _settle(future: Future[GradeResult], outcome: GradeResult | BaseException) -> None:
    """Set a result or exception unless the future was cancelled meanwhile."""
    try:
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
    except InvalidStateError:
        pass


class Completed:
    """(job, result) pairs in the order they finish; close() (or `with`) cancels the unfinished.
    Iterate it, or poll it without blocking forever: `wait(timeout)` then `finished()`, which hands
    over every result that is done and not yet taken. A resumable grade polls, so that a stop
    request (a signal handler setting a flag) records every finished result and loses none."""

    def __init__(self, pool: Pool, jobs: Iterator[Job], limit: int, bar: Any) -> None:
        self._pool, self._jobs, self._limit, self._bar = pool, jobs, limit, bar
        self._flying: dict[Future[GradeResult], Job] = {}
        self._cond = threading.Condition()
        self._ready: collections.deque[Future[GradeResult]] = collections.deque()

    def __iter__(self) -> Completed:
        return self

    def __enter__(self) -> Completed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __next__(self) -> tuple[Job, GradeResult]:
        while True:
            for pair in self.finished():
                return pair
            if not self.wait():
                raise StopIteration

    def wait(self, timeout: float | None = None) -> bool:
        """Keep the window full, then wait up to `timeout` s until a result is ready to take.
        False once every job has been taken."""
        while len(self._flying) < self._limit:
            job = next(self._jobs, None)
            if job is None:
                break
            future = self._pool.submit(job)
            self._flying[future] = job
            future.add_done_callback(self._arrived)
        if not self._flying:
            return False
        with self._cond:
            self._cond.wait_for(lambda: bool(self._ready), timeout)
        return True

    def _arrived(self, future: Future[GradeResult]) -> None:
        with self._cond:
            self._ready.append(future)
            self._cond.notify()

    def finished(self) -> Iterator[tuple[Job, GradeResult]]:
        """The results that are done and not taken yet, without waiting for the others."""
        while True:
            with self._cond:
                if not self._ready:
                    return
                future = self._ready.popleft()
            if future in self._flying:
                result = future.result()  # a cancelled future (the pool closed under us) raises here
                self._bar.update(1)
                yield self._flying.pop(future), result

    def close(self) -> None:
        self._pool.cancel(list(self._flying))
        self._flying.clear()
        self._bar.close()


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int | None, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="solution", dynamic_ncols=True, mininterval=0.5)
