"""`sandbox serve`: an HTTP grading service in front of one warm pool of judges.

    POST /grade   {"problems": [Problem dicts] | null,
                   "completions": [{"task_id", "code" | "completion", "problem": {...} (optional)}],
                   "granularity": "per_test", "extract": "first", "row_offset": 0}
                  -> {"results": [GradeResult dicts, in input order]}
                  (or "task_ids": [...] with "completions": [strings])
    GET  /health  -> {"ok", "backend", "workers", "pending", "max_pending", "graded", ...}

Problems come from the server's preloaded set (`--problems FILE`), from the request's
`problems` list (rows in any registered dataset format, `Problem.to_dict()` included) and from a
row's own `problem`; a request's problems win over preloaded ones with the same task_id.
Completions rows are graded exactly as `sandbox.grade` grades them (same extraction, same
`no_code` and invalid-row results), because the server calls `sandbox.api.grade`.

Backpressure: at most `max_pending` completions are admitted at once (queued or being graded);
a request that does not fit gets 503 with Retry-After, and a request larger than `max_pending`
gets 413 (split it). The service binds to 127.0.0.1 unless told otherwise; any other interface
requires a token, checked as `Authorization: Bearer TOKEN` on every request (401 otherwise).

`Pool.grade` is not safe to call from several threads at once on one pool (each call drives the
same judges' pipes from its own threads), so requests never call it directly: a `Dispatcher`
owns the pool and runs one long-lived `Pool.grade` over a shared queue of jobs; every request
submits its jobs there and waits for its own results.
"""

from __future__ import annotations

import collections
import dataclasses
import hmac
import ipaddress
import itertools
import json
import logging
import os
import queue
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from .extract import POLICIES
from .pool import Job, Pool
from .problem import GradeResult, Limits, Problem

log = logging.getLogger("sandbox.server")

DEFAULT_MAX_PENDING = 1024
RETRY_AFTER_S = 1
MAX_REQUEST_THREADS = 256  # requests graded at once (each waits in a thread for its results)
TOKEN_ENV = "SANDBOX_TOKEN"

_STOP = object()
LIMIT_FIELDS = tuple(f.name for f in dataclasses.fields(Limits))


class RequestError(ValueError):
    """A malformed request: answered with 400 and this message."""


# --------------------------------------------------------------------------------------------
# Sharing one pool between concurrent requests


class Dispatcher:
    """Feeds one `Pool` from many threads.

    A single thread runs `pool.grade` over an endless stream of jobs taken from a shared queue
    (job indices are unique across callers); results come back in submission order and are
    handed to the waiting callers through futures. When the queue has been idle for a while
    (or after `generation_jobs` jobs, which bounds Pool.grade's bookkeeping), the current
    `pool.grade` call is allowed to finish and the next job starts a new one on the same warm
    workers. `grade(jobs)` has Pool.grade's signature, so a Dispatcher can stand in for a Pool
    in `sandbox.api.grade(..., pool=dispatcher)`.

    Results are delivered in submission order, so one slow solution delays the delivery (not
    the grading) of solutions submitted after it, by at most its own deadline.
    """

    def __init__(self, pool: Pool, *, generation_jobs: int = 100_000, idle_s: float = 1.0) -> None:
        self.pool = pool
        self.generation_jobs = generation_jobs
        self.idle_s = idle_s
        self.graded = 0
        self.queued = 0
        self._queue: queue.Queue[Any] = queue.Queue()
        self._index = itertools.count()
        self._lock = threading.Lock()
        self._closed = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="sandbox-dispatcher", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closed

    def submit(self, job: Job) -> Future[GradeResult]:
        """Queue one job (its index is replaced by a unique one); the future holds its result."""
        future: Future[GradeResult] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the dispatcher is closed")
            self.queued += 1
            self._queue.put((Job(next(self._index), job.problem, job.code, job.granularity), future))
        return future

    def grade(self, jobs: Iterable[Job], total: int | None = None) -> Iterator[GradeResult]:
        """Pool.grade's contract: yield one result per job, in input order."""
        futures = [self.submit(job) for job in jobs]
        for future in futures:
            yield future.result()

    def close(self, timeout: float = 10.0) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join(timeout)

    def _loop(self) -> None:
        item = self._queue.get()
        while item is not _STOP:
            item = self._generation(item)
        while True:  # fail whatever was queued behind the stop
            try:
                rest = self._queue.get_nowait()
            except queue.Empty:
                return
            if rest is not _STOP:
                rest[1].set_exception(RuntimeError("the grading service is shutting down"))

    def _generation(self, first: tuple[Job, Future[GradeResult]]) -> Any:
        """One pool.grade call; returns the next queue item (a job, or _STOP) for the next one."""
        inflight: collections.deque[Future[GradeResult]] = collections.deque()
        following: list[Any] = []

        def jobs() -> Iterator[Job]:  # runs in Pool.grade's feeder thread
            job, future = first
            inflight.append(future)
            yield job
            for _ in range(self.generation_jobs - 1):
                while True:
                    try:
                        item = self._queue.get(timeout=self.idle_s)
                        break
                    except queue.Empty:
                        if not inflight:  # idle and everything delivered: end this call
                            return
                if item is _STOP:
                    following.append(_STOP)
                    return
                job, future = item
                inflight.append(future)
                yield job

        try:
            for result in self.pool.grade(jobs()):
                future = inflight.popleft()
                with self._lock:
                    self.graded += 1
                    self.queued -= 1
                future.set_result(result)
        except BaseException as exc:  # a bug or a pool that cannot start: fail the waiting callers
            log.exception("grading failed")
            self.error = exc
            pending = list(inflight)
            if not first[1].done() and first[1] not in pending:
                pending.append(first[1])
            for future in pending:
                with self._lock:
                    self.queued -= 1
                if not future.done():
                    future.set_exception(exc)
            inflight.clear()
        if following:
            return following[0]
        return self._queue.get()


# --------------------------------------------------------------------------------------------
# Parsing requests


def _load_problem_rows(rows: list[Any], where: str) -> dict[str, Problem]:
    from .datasets import load_problems

    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RequestError(f"{where}[{i}] must be a JSON object (a Problem dict or a dataset row), got {type(row).__name__}")
    loaded = load_problems(rows)
    if loaded.errors:
        shown = "; ".join(str(e) for e in loaded.errors[:5])
        raise RequestError(f"{where}: {len(loaded.errors)} problem(s) could not be loaded: {shown}")
    return dict(loaded.problems)


def load_problem_files(paths: Iterable[str | os.PathLike[str]]) -> dict[str, Problem]:
    """The problems of several dataset files, merged; a task_id in two files is a ValueError naming both."""
    from .datasets import load_problems

    table: dict[str, Problem] = {}
    origin: dict[str, str] = {}
    for path in paths:
        loaded = load_problems(path)
        for error in loaded.errors[:20]:
            log.warning("problems: %s: %s", path, error)
        if not loaded.problems:
            raise ValueError(f"no usable problem in {path} ({len(loaded.errors)} bad rows)")
        for task_id, problem in loaded.problems.items():
            if task_id in origin:
                raise ValueError(f"task_id {task_id!r} is in both {origin[task_id]} and {path}; give each problem one task_id")
            origin[task_id] = str(path)
            table[task_id] = problem
    return table


def request_limits(asked: Any, maxima: Limits) -> Limits:
    """The limits a request is graded with: the server's limits (its defaults and maxima), lowered
    where the request's `limits` object asks, e.g. {"cpu_s": 0.5}; more than the maximum is refused."""
    if asked is None:
        return maxima
    if not isinstance(asked, dict):
        raise RequestError("'limits' must be an object such as {\"cpu_s\": 0.5, \"memory_mb\": 512}")
    changes: dict[str, Any] = {}
    for key, value in asked.items():
        if key not in LIMIT_FIELDS:
            raise RequestError(f"'limits.{key}' is not a limit; known: {', '.join(LIMIT_FIELDS)}")
        top = getattr(maxima, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= top:
            raise RequestError(f"'limits.{key}' must be a number in (0, {top}] (this server's maximum), got {value!r}")
        changes[key] = type(top)(value)
    return dataclasses.replace(maxima, **changes)


def capped(problem: Problem, limits: Limits) -> Problem:
    """`problem` with no limit above `limits` (a problem's own lower limits are kept)."""
    own = problem.limits
    lowered = {f: min(getattr(own, f), getattr(limits, f)) for f in LIMIT_FIELDS}
    return problem.with_limits(Limits(**lowered))


def parse_grade_request(payload: Any, preloaded: Mapping[str, Problem]) -> tuple[dict[str, Problem], list[Any], str, str]:
    """(problems table, completions rows, granularity, extract) for one /grade body, or RequestError."""
    if not isinstance(payload, dict):
        raise RequestError("the body must be a JSON object with 'completions' (and optionally 'problems', 'task_ids')")
    table = dict(preloaded)
    problems = payload.get("problems")
    inline: dict[str, Problem] = {}
    if problems is not None:
        if not isinstance(problems, list):
            raise RequestError("'problems' must be a list of Problem dicts (or dataset rows), or null")
        inline = _load_problem_rows(problems, "problems")
    completions = payload.get("completions")
    if not isinstance(completions, list):
        raise RequestError("'completions' must be a list of rows {'task_id', 'code' | 'completion'} (or of strings with 'task_ids')")
    task_ids = payload.get("task_ids")
    rows: list[Any] = []
    if task_ids is not None:
        if not isinstance(task_ids, list) or len(task_ids) != len(completions):
            raise RequestError(f"'task_ids' must be a list as long as 'completions' ({len(completions)})")
        for i, (task_id, completion) in enumerate(zip(task_ids, completions)):
            if isinstance(completion, str):
                rows.append({"task_id": task_id, "completion": completion})
            elif isinstance(completion, dict):
                rows.append({"task_id": task_id, **completion})
            else:
                raise RequestError(f"completions[{i}] must be a string (the model's answer) or an object, got {type(completion).__name__}")
    else:
        rows = list(completions)
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or row.get("problem") is None:
            continue
        problem_row = row["problem"]
        (problem,) = _load_problem_rows([problem_row], f"completions[{i}].problem").values()
        task_id = row.get("task_id")
        if task_id is not None and str(task_id) != problem.task_id:
            raise RequestError(f"completions[{i}]: task_id {task_id!r} differs from its problem's task_id {problem.task_id!r}")
        if problem.task_id in inline and inline[problem.task_id] != problem:
            raise RequestError(f"completions[{i}]: two different problems with task_id {problem.task_id!r} in one request; give them distinct task_ids")
        inline[problem.task_id] = problem
        rows[i] = {k: v for k, v in row.items() if k != "problem"} | {"task_id": problem.task_id}
    table.update(inline)
    granularity = payload.get("granularity", "per_test")
    if granularity not in ("per_test", "per_solution"):
        raise RequestError(f"'granularity' must be 'per_test' or 'per_solution', got {granularity!r}")
    extract = payload.get("extract", "first")
    if extract not in POLICIES:
        raise RequestError(f"'extract' must be one of {list(POLICIES)}, got {extract!r}")
    return table, rows, granularity, extract


def _renumber(results: list[GradeResult], offset: int) -> list[GradeResult]:
    """Row numbers in error messages count from 1 within a request; a client that splits one
    list into batches sends each batch's `row_offset` so messages name the row of the whole list."""
    if not offset:
        return results
    out = []
    for i, result in enumerate(results):
        prefix = f"completions row {i + 1}"
        if result.error.startswith(prefix) and not result.error[len(prefix):len(prefix) + 1].isdigit():
            result = dataclasses.replace(result, error=f"completions row {i + 1 + offset}" + result.error[len(prefix):])
        out.append(result)
    return out


# --------------------------------------------------------------------------------------------
# The app


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'; any other name or address counts as exposed."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_binding(host: str, token: str | None) -> None:
    """Refuse to expose the service beyond this machine without a token."""
    if not is_loopback(host) and not token:
        raise ValueError(
            f"refusing to listen on {host!r} without a token: anyone who reaches it could run code on this machine's judges. "
            f"Pass --token (or set {TOKEN_ENV}), or bind to 127.0.0.1"
        )


class ServiceState:
    def __init__(self, pool: Pool, dispatcher: Dispatcher, problems: dict[str, Problem], token: str | None, max_pending: int,
                 limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.pool = pool
        self.dispatcher = dispatcher
        self.problems = problems
        self.token = token
        self.max_pending = max_pending
        self.pending = 0
        self.requests = 0
        self.rejected = 0
        self.graded = 0
        self.started = time.time()
        self.lock = threading.Lock()
        self.limiter: Any = None

    def admit(self, n: int) -> bool:
        with self.lock:
            if self.pending + n > self.max_pending:
                self.rejected += 1
                return False
            self.pending += n
            self.requests += 1
            return True

    def release(self, n: int, graded: int = 0) -> None:
        with self.lock:
            self.pending -= n
            self.graded += graded

    def health(self) -> dict[str, Any]:
        workers = self.pool.workers
        return {
            "ok": self.dispatcher.alive,
            "backend": self.pool.backend.name,
            "workers": self.pool.size,
            "workers_alive": sum(1 for w in workers if w.process is not None and w.process.poll() is None),
            "pending": self.pending,
            "max_pending": self.max_pending,
            "graded": self.graded,  # completions answered
            "judged": self.dispatcher.graded,  # solutions run by the judges (no_code/invalid rows never reach them)
            "requests": self.requests,
            "rejected": self.rejected,
            "restarts": self.pool.restarts,
            "problems": len(self.problems),
            "limits": dataclasses.asdict(self.limits),
            "auth": self.token is not None,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started, 3),
        }


def create_app(pool: Pool, problems: Any = None, token: str | None = None, max_pending: int = DEFAULT_MAX_PENDING,
               limits: Limits | None = None) -> Any:
    """The FastAPI app serving `pool` (started here if it is not yet). The caller owns the pool
    and closes it after the server stops. `problems`: anything `sandbox.api.as_problems` takes.
    `limits`: every request is graded with these (default `Limits()`), or lower ones it asks for."""
    import anyio
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    from .api import as_problems, grade

    if max_pending < 1:
        raise ValueError(f"max_pending must be at least 1, got {max_pending}")
    table = as_problems(problems) if problems is not None else {}
    pool.start()
    dispatcher = Dispatcher(pool)
    state = ServiceState(pool, dispatcher, table, token or None, max_pending, limits)

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        state.limiter = anyio.CapacityLimiter(MAX_REQUEST_THREADS)
        yield
        dispatcher.close()

    app = FastAPI(title="sandbox", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.sandbox = state

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Callable[[Request], Any]) -> Any:
        if state.token is not None:
            given = request.headers.get("authorization", "")
            expected = f"Bearer {state.token}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return JSONResponse({"error": "missing or wrong token: send 'Authorization: Bearer TOKEN'"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    # Plain Starlette routes: the handler gets the Request as is (no parameter inference).
    async def health(request: Request) -> Any:
        body = state.health()
        return JSONResponse(body, status_code=200 if body["ok"] else 503)

    async def grade_endpoint(request: Request) -> Any:
        raw = await request.body()
        try:
            payload = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return JSONResponse({"error": f"the body is not valid JSON ({exc})"}, status_code=400)
        completions = payload.get("completions") if isinstance(payload, dict) else None
        if not isinstance(completions, list):
            return JSONResponse({"error": "the body must be a JSON object whose 'completions' is a list of rows "
                                          "{'task_id', 'code' | 'completion'} (or of strings, with 'task_ids')"}, status_code=400)
        offset = payload.get("row_offset", 0)
        if not isinstance(offset, int) or offset < 0:
            return JSONResponse({"error": f"'row_offset' must be a non-negative integer, got {offset!r}"}, status_code=400)
        n = len(completions)
        if n == 0:
            return JSONResponse({"results": []})
        if n > state.max_pending:
            return JSONResponse({"error": f"{n} completions in one request; this server admits at most {state.max_pending} at once: "
                                          "send smaller batches", "max_pending": state.max_pending}, status_code=413)
        if not state.dispatcher.alive:
            return JSONResponse({"error": "the grading pool is not running"}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})
        if not state.admit(n):
            return JSONResponse({"error": f"busy: {state.pending} completions pending (max {state.max_pending}); retry later",
                                 "pending": state.pending, "max_pending": state.max_pending},
                                status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})

        def work() -> list[GradeResult]:  # in a thread: loading inline problems and grading both block
            table, rows, granularity, extract = parse_grade_request(payload, state.problems)
            limits = request_limits(payload.get("limits"), state.limits)
            used = {str(row.get("task_id")) for row in rows if isinstance(row, dict)}
            table = {task_id: capped(problem, limits) for task_id, problem in table.items() if task_id in used}
            return grade(table, rows, pool=state.dispatcher, granularity=granularity, extract=extract)

        results: list[GradeResult] = []
        try:
            results = await anyio.to_thread.run_sync(work, limiter=state.limiter)
        except RequestError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except Exception as exc:
            log.exception("grading a request failed")
            return JSONResponse({"error": f"grading failed: {exc!r}"}, status_code=500)
        finally:
            state.release(n, len(results))
        return JSONResponse({"results": [r.to_dict() for r in _renumber(results, offset)]})

    app.router.add_route("/health", health, methods=["GET"])
    app.router.add_route("/grade", grade_endpoint, methods=["POST"])
    return app


# --------------------------------------------------------------------------------------------
# Running it


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one)."""
    infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    try:
        sock.bind(address)
        sock.listen(512)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def advertised_address(host: str, sock: socket.socket) -> str:
    """What clients should connect to: `host:port`, with this machine's name for a wildcard bind."""
    port = sock.getsockname()[1]
    name = host.strip("[]")
    if name in ("", "0.0.0.0", "::"):
        name = socket.getfqdn()
    if ":" in name:
        name = f"[{name}]"
    return f"{name}:{port}"


def write_address_file(path: str | os.PathLike[str], address: str, token: str | None) -> None:
    """Atomically write `host:port` (and the token on a second line) with mode 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(address + "\n")
            if token:
                f.write(token + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read_address_file(path: str | os.PathLike[str]) -> tuple[str, str | None]:
    """(`host:port`, token or None) from an address file."""
    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"the address file {path} is empty")
    return lines[0], (lines[1] if len(lines) > 1 else None)


def _uvicorn_server(app: Any, log_level: str, on_started: Callable[[], None] | None, on_stopped: Callable[[], None] | None = None) -> Any:
    import uvicorn

    class _Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and on_started is not None:
                on_started()

        async def shutdown(self, sockets: Any = None) -> None:
            # uvicorn re-raises a captured SIGTERM/SIGINT once serving ends, which kills the
            # process before `finally` blocks after run() execute: clean up here.
            await super().shutdown(sockets=sockets)
            if on_stopped is not None:
                on_stopped()

    config = uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=10, lifespan="on")
    return _Server(config)


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    backend: str = "auto",
    workers: int | None = None,
    problems: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | Mapping[str, Problem] | None = None,
    token: str | None = None,
    address_file: str | os.PathLike[str] | None = None,
    max_pending: int | None = None,
    log_level: str = "info",
    limits: Limits | None = None,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Run the service in the foreground until SIGINT/SIGTERM (what `sandbox serve` and its
    SLURM job run). The address file is written once the pool is warm and the socket listens,
    and removed again on a clean exit."""
    token = token or os.environ.get(TOKEN_ENV) or None
    check_binding(host, token)
    table: dict[str, Problem] = {}
    if isinstance(problems, Mapping):
        table = dict(problems)
    elif isinstance(problems, (str, os.PathLike)):
        table = load_problem_files([problems])
    elif problems is not None:
        table = load_problem_files(problems)
    sock = bind_socket(host, port)
    address = advertised_address(host, sock)
    pool = Pool(backend, workers=workers)
    written: list[Path] = []

    def started() -> None:
        if address_file is not None:
            write_address_file(address_file, address, token)
            written.append(Path(address_file))
        message = f"sandbox serve: listening on http://{address} ({pool.backend.name} backend, {pool.size} workers, " \
                  f"{len(table)} preloaded problems{', token required' if token else ''})"
        (announce or (lambda m: print(m, flush=True)))(message)

    def stopped() -> None:
        while written:
            path = written.pop()
            try:
                if read_address_file(path)[0] == address:
                    path.unlink()
            except (OSError, ValueError):
                pass
        pool.close()

    try:
        pool.start()
        app = create_app(pool, table, token, max_pending or max(DEFAULT_MAX_PENDING, pool.size * 64), limits)
        _uvicorn_server(app, log_level, started, stopped).run(sockets=[sock])
    finally:
        sock.close()
        stopped()


class BackgroundServer:
    """The app served from a thread of this process (tests, notebooks):

        with Pool("process", workers=2) as pool, BackgroundServer(create_app(pool)) as server:
            SandboxClient(server.url).grade(...)
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        self.sock = bind_socket(host, port)
        self.address = advertised_address(host, self.sock)
        self.url = f"http://{self.address}"
        self._started = threading.Event()
        self._server = _uvicorn_server(app, log_level, self._started.set)
        self._thread = threading.Thread(target=self._run, name="sandbox-server", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self.sock])
        except BaseException as exc:  # noqa: BLE001 -- reported by start()
            self._error = exc
            self._started.set()

    def start(self, timeout: float = 60.0) -> BackgroundServer:
        self._thread.start()
        if not self._started.wait(timeout) or self._error is not None:
            raise RuntimeError(f"the server did not start: {self._error!r}")
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# As a SLURM job


def _serve_job(options: dict[str, Any]) -> None:
    """The SLURM job's entry point (pickled by reference by submitit)."""
    logging.basicConfig(level=logging.INFO)
    serve(**options)


def submit_slurm(
    *,
    address_file: str | os.PathLike[str],
    log_dir: str | os.PathLike[str],
    partition: str | None = None,
    time_min: int = 1440,
    cpus: int = 1,
    mem: str | None = None,
    job_name: str = "sandbox-serve",
    additional: Mapping[str, Any] | None = None,
    **options: Any,
) -> Any:
    """Submit `serve(**options)` as a SLURM job through submitit; returns the submitit Job.

    The token (if any) travels in the job's environment (SANDBOX_TOKEN; sbatch exports the
    submitter's environment), not in submitit's pickle files."""
    import submitit

    token = options.pop("token", None) or os.environ.get(TOKEN_ENV) or None
    check_binding(options.get("host", "127.0.0.1"), token)
    address_file = Path(address_file).absolute()
    if address_file.exists():
        address_file.unlink()  # a stale address must not be mistaken for the new server's
    options["address_file"] = str(address_file)
    if isinstance(options.get("problems"), (str, os.PathLike)):
        options["problems"] = str(Path(options["problems"]).absolute())
    if options.get("workers") is None:
        options["workers"] = cpus
    folder = Path(log_dir).absolute()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    executor = submitit.SlurmExecutor(folder=folder / "%j", max_num_timeout=0)
    parameters: dict[str, Any] = {"time": time_min, "cpus_per_task": cpus, "job_name": job_name, "use_srun": False}
    if partition:
        parameters["partition"] = partition
    if mem:
        parameters["mem"] = mem
    if additional:
        parameters["additional_parameters"] = dict(additional)
    executor.update_parameters(**parameters)
    saved = os.environ.get(TOKEN_ENV)
    try:
        if token:
            os.environ[TOKEN_ENV] = token
        return executor.submit(_serve_job, options)
    finally:
        if token:
            if saved is None:
                os.environ.pop(TOKEN_ENV, None)
            else:
                os.environ[TOKEN_ENV] = saved


def wait_for_address(job: Any, address_file: str | os.PathLike[str], timeout: float) -> str:
    """Wait until the job has written its address file; raise if the job ends first."""
    deadline = time.monotonic() + timeout
    path = Path(address_file)
    while True:
        if path.exists():
            try:
                return read_address_file(path)[0]
            except (OSError, ValueError):
                pass
        if job.done():
            tail = ""
            try:
                tail = (job.stderr() or "")[-2000:]
            except Exception:  # noqa: BLE001, S110 -- best effort
                pass
            raise RuntimeError(f"SLURM job {job.job_id} ended ({job.state}) before writing {path}:\n{tail}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"SLURM job {job.job_id} ({job.state}) has not written {path} after {timeout:.0f} s; "
                               "it may still be pending: watch squeue, the file appears once the server listens")
        time.sleep(0.5)


__all__ = [
    "DEFAULT_MAX_PENDING",
    "BackgroundServer",
    "Dispatcher",
    "RequestError",
    "check_binding",
    "create_app",
    "is_loopback",
    "load_problem_files",
    "parse_grade_request",
    "read_address_file",
    "request_limits",
    "serve",
    "submit_slurm",
    "wait_for_address",
    "write_address_file",
]
