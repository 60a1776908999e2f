"""A warm pool of judges. Each worker is one long-lived judge process (in its backend's
isolation) fed by one thread; results stream back in input order.

A worker that dies, hangs past its item's deadline or answers garbage is killed and replaced,
and its item is retried on a fresh judge; after `max_attempts` the item is reported as
`sandbox_error` with the reason. It is never silently scored as a failure of the solution.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .backends import Backend, get_backend
from .judge import protocol
from .problem import GradeResult, Problem, TestResult, Verdict

DEADLINE_MARGIN_S = 30.0


@dataclass
class Job:
    index: int
    problem: Problem
    code: str
    granularity: str
    details: bool = False  # failed tests carry a description with the expected value (h15)


class _Spawner:
    """Starts every judge from one long-lived thread. Judges (and bwrap's --die-with-parent)
    use PR_SET_PDEATHSIG, which fires when the *thread* that forked them exits; spawning from
    short-lived worker threads would kill judges at random, so they are all born here."""

    def __init__(self) -> None:
        self.requests: queue.Queue[tuple[list[str], dict[str, Any], queue.Queue[Any]]] = queue.Queue()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def _serve(self) -> None:
        while True:
            argv, kwargs, reply = self.requests.get()
            try:
                reply.put(subprocess.Popen(argv, **kwargs))
            except BaseException as exc:
                reply.put(exc)

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._serve, name="qrpo-judge-spawner", daemon=True)
                self.thread.start()
        reply: queue.Queue[Any] = queue.Queue()
        self.requests.put((argv, kwargs, reply))
        result = reply.get()
        if isinstance(result, BaseException):
            raise result
        return result


SPAWNER = _Spawner()


class WorkerError(RuntimeError):
    """The judge process failed (died, hung, broke the protocol): an infrastructure failure."""


class Worker:
    """One judge process and the pipes to it."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0
        self.lock = threading.Lock()  # one request at a time: concurrent Pool.grade calls share workers

    def start(self) -> None:
        self.process = SPAWNER.popen(
            self.backend.judge_command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=self.backend.judge_env(),
            start_new_session=True,
        )
        self.started += 1
        assert self.process.stdin and self.process.stdout
        try:
            protocol.write_message(self.process.stdin.fileno(), {"op": "ping", "id": 0})
            pong = protocol.read_message(self.process.stdout.fileno(), time.monotonic() + 120)
        except (OSError, protocol.ProtocolError) as exc:
            self.stop()
            raise WorkerError(f"the {self.backend.name} judge did not start: {exc}") from None
        if not pong.get("pong"):
            self.stop()
            raise WorkerError(f"the {self.backend.name} judge answered {pong!r} to a ping")

    @property
    def pid(self) -> int:
        return self.process.pid if self.process else 0

    def grade(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        with self.lock:
            return self._grade(request, timeout)

    def _grade(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        if self.process is None or self.process.poll() is not None:
            self.start()
        assert self.process and self.process.stdin and self.process.stdout
        try:
            protocol.write_message(self.process.stdin.fileno(), request)
            response = protocol.read_message(self.process.stdout.fileno(), time.monotonic() + timeout)
        except protocol.Timeout:
            self.stop()
            raise WorkerError(f"the judge did not answer within {timeout:.0f} s") from None
        except (OSError, protocol.ProtocolError) as exc:
            code = self.process.poll()
            self.stop()
            raise WorkerError(f"the judge died ({exc}; exit status {code})") from None
        if response.get("id") != request["id"] or "error" in response or "tests" not in response:
            self.stop()
            raise WorkerError(f"the judge failed: {str(response.get('error', response))[:300]}")
        return response

    def stop(self) -> None:
        """Kill the judge's whole session (judge, zygote, runners)."""
        process, self.process = self.process, None
        if process is None:
            return
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            if stream:
                stream.close()


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Pool:
    """`with Pool("bubblewrap", workers=4) as pool: results = list(pool.grade(jobs))`.

    Thread-safe: concurrent `grade` calls (a server's requests) share the warm workers, each
    worker serving one request at a time."""

    def __init__(self, backend: str | Backend = "auto", workers: int | None = None, max_attempts: int = 3, progress: bool = False) -> None:
        self.backend = backend if isinstance(backend, Backend) else get_backend(backend)
        self.size = workers or default_workers()
        self.max_attempts = max_attempts
        self.progress = progress
        self.workers: list[Worker] = []
        self.restarts = 0
        self._lock = threading.Lock()

    def __enter__(self) -> Pool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if self.workers:
            return
        self.backend.prepare()
        self.workers = [Worker(self.backend) for _ in range(self.size)]
        errors: list[str] = []

        def start(worker: Worker) -> None:
            try:
                worker.start()
            except WorkerError as exc:  # retried lazily when the worker gets an item
                errors.append(str(exc))

        threads = [threading.Thread(target=start, args=(w,)) for w in self.workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if len(errors) == len(self.workers):
            self.close()
            raise WorkerError(f"no judge of the {self.backend.name} backend could start: {errors[0]}")

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers = []
        self.backend.cleanup()

    def _run(self, worker: Worker, job: Job) -> GradeResult:
        problem = job.problem
        request = {"id": job.index, "problem": problem.to_dict(), "code": job.code, "granularity": job.granularity,
                   "details": job.details}
        timeout = problem.limits.solution_s + problem.limits.wall_s * 2 + DEADLINE_MARGIN_S
        errors = []
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = worker.grade(request, timeout)
            except WorkerError as exc:
                errors.append(str(exc))
                with self._lock:
                    self.restarts += 1
                continue
            tests = tuple(TestResult.from_dict(t) for t in response["tests"])
            if len(tests) != len(problem.tests):
                errors.append(f"the judge returned {len(tests)} verdicts for {len(problem.tests)} tests")
                worker.stop()
                continue
            info = dict(response.get("info") or {})
            return GradeResult(
                task_id=problem.task_id,
                tests=tests,
                backend=self.backend.name,
                stdout=response.get("stdout", ""),
                stderr=response.get("stderr", ""),
                time_s=float(response.get("time_s", 0.0)),
                attempts=attempt,
                info=info,
            )
        reason = f"grading failed {self.max_attempts} times: " + " | ".join(errors)[-1000:]
        return GradeResult.uniform(problem.task_id, len(problem.tests), Verdict.SANDBOX_ERROR, self.backend.name, reason, attempts=self.max_attempts)

    def grade(self, jobs: Iterable[Job], total: int | None = None) -> Iterator[GradeResult]:
        """Grade jobs on all workers; yield results in input order as they become ready."""
        self.start()
        work: queue.Queue[Job | None] = queue.Queue(maxsize=self.size * 4)
        done: dict[int, GradeResult] = {}
        ready = threading.Condition()
        failure: list[BaseException] = []

        def serve(worker: Worker) -> None:
            while True:
                job = work.get()
                if job is None:
                    return
                try:
                    result = self._run(worker, job)
                except BaseException as exc:  # a bug of ours: surface it, don't hang
                    failure.append(exc)
                    result = GradeResult.uniform(job.problem.task_id, len(job.problem.tests), Verdict.SANDBOX_ERROR, self.backend.name, repr(exc))
                with ready:
                    done[job.index] = result
                    ready.notify_all()

        threads = [threading.Thread(target=serve, args=(w,), daemon=True) for w in self.workers]
        for t in threads:
            t.start()
        order: list[int] = []
        feeder_done = threading.Event()

        def feed() -> None:
            try:
                for job in jobs:
                    with ready:
                        order.append(job.index)
                        ready.notify_all()
                    work.put(job)
            finally:
                for _ in threads:
                    work.put(None)
                with ready:
                    feeder_done.set()
                    ready.notify_all()

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        bar = _progress(total, self.progress)
        position = 0
        try:
            while True:
                with ready:
                    while not (position < len(order) and order[position] in done) and not (feeder_done.is_set() and position >= len(order)):
                        ready.wait(0.5)
                    if position >= len(order) and feeder_done.is_set():
                        break
                    result = done.pop(order[position])
                position += 1
                bar.update(1)
                yield result
        finally:
            bar.close()
        for t in threads:
            t.join()
        if failure:
            raise failure[0]


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
