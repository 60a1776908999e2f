"""The FastAPI app: authentication, admission (backpressure), /health and /grade on one shared pool.

Every request is graded by `sandbox.api.grade` on the one `Pool`, an executor that is thread-safe by
contract, under a `sandbox.fair.Ticket`: the judges take work in turn from each client and each of
its requests, and when a client disconnects (or its request runs past the server's request
timeout) the ticket cancels that request's queued and running work within a fraction of a second.

Trust: clients are untrusted. Their completions run in the shared judges, which is what the judges
are for. A problem sent in a request (inline) carries trusted test code, so it is refused unless
the server allows inline problems, and then the request is graded by a judge of its own that is
stopped after the request: it can never touch the shared judges. Bodies are capped before they are
read whole, and every result row is serialised on its own, so one bad row gives an error row.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import json
import logging
import os
import threading
import time
from concurrent.futures import CancelledError
from typing import Any

from .. import fair
from ..pool import Pool
from ..problem import GradeResult, Limits, Problem, Verdict
from ..rundir import dumps
from .requests import RequestError, capped, has_inline_problems, parse_grade_request, renumber, request_limits

log = logging.getLogger("sandbox.service")

DEFAULT_MAX_PENDING = 1024
RETRY_AFTER_S = 1
MAX_REQUEST_THREADS = 256  # requests graded at once (each waits in a thread for its results)
TOKEN_ENV = "SANDBOX_TOKEN"
DEFAULT_MAX_BODY_MB = 32
DISCONNECT_POLL_S = 0.1
INLINE_WORKERS = 2  # judges of a request with its own problems (started for it, stopped after it)
CLIENT_HEADER = "x-sandbox-client"  # optional: names the client for fair sharing (else its IP address)


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
    def __init__(self, pool: Pool, problems: dict[str, Problem], token: str | None, max_pending: int,
                 limits: Limits | None = None, allow_inline_problems: bool = False,
                 max_body_bytes: int = DEFAULT_MAX_BODY_MB << 20, request_timeout_s: float | None = None) -> None:
        self.limits = limits or Limits()
        self.allow_inline_problems = allow_inline_problems
        self.max_body_bytes = max_body_bytes
        self.request_timeout_s = request_timeout_s
        self.judged_apart = 0  # solutions run by the judges of requests with their own problems
        self.cancelled = 0  # requests whose client went away (or timed out) before their results
        self.pool = pool
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
            "ok": self.pool.alive,
            "backend": self.pool.backend.name,
            "workers": self.pool.size,
            "workers_alive": sum(1 for w in workers if w.alive),
            "pending": self.pending,
            "max_pending": self.max_pending,
            "graded": self.graded,  # completions answered
            "judged": self.pool.judged + self.judged_apart,  # solutions run by judges (no_code/invalid rows never are)
            "requests": self.requests,
            "rejected": self.rejected,
            "cancelled": self.cancelled,
            "running": self.pool.running,
            "queued": self.pool.pending - self.pool.running,
            "inline_problems": self.allow_inline_problems,
            "max_body_bytes": self.max_body_bytes,
            "restarts": self.pool.restarts,
            "problems": len(self.problems),
            "limits": dataclasses.asdict(self.limits),
            "auth": self.token is not None,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started, 3),
        }


class BodyTooLarge(Exception):
    """A request body over the server's cap (answered with 413 before the rest is read)."""


async def read_body(request: Any, cap: int) -> bytes:
    """The body of `request`, refused (BodyTooLarge) as soon as it is known to exceed `cap` bytes:
    from its Content-Length before reading anything, else while streaming it, never holding more
    than `cap` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > cap):
        raise BodyTooLarge(f"the body is {declared} bytes; this server accepts at most {cap} (send smaller batches)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise BodyTooLarge(f"the body exceeds {cap} bytes, the most this server accepts (send smaller batches)")
        chunks.append(chunk)
    return b"".join(chunks)


def results_body(results: list[GradeResult]) -> bytes:
    """{"results": [...]} with every row serialised on its own: a row that cannot be (never seen,
    but a solution's output is arbitrary) becomes a sandbox_error row; lone surrogates are escaped."""
    rows = []
    for result in results:
        try:
            rows.append(dumps(result.to_dict()))
        except Exception as exc:  # noqa: BLE001 -- one row must not fail the request
            log.exception("serialising a result of %s failed", result.task_id)
            error = GradeResult.uniform(result.task_id, len(result.tests), Verdict.SANDBOX_ERROR, result.backend,
                                        f"the result could not be serialised: {exc!r}")
            rows.append(dumps(error.to_dict()))
    return ('{"results":[' + ",".join(rows) + "]}").encode("utf-8")


class _Authenticate:
    """Pure ASGI middleware (no BaseHTTPMiddleware, whose wrapped `receive` hides disconnects):
    every HTTP request must carry `Authorization: Bearer TOKEN` when the server has a token."""

    def __init__(self, app: Any, token: str | None) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.expected is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        if hmac.compare_digest(given, self.expected):
            await self.app(scope, receive, send)
            return
        from starlette.responses import JSONResponse

        response = JSONResponse({"error": "missing or wrong token: send 'Authorization: Bearer TOKEN'"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


def create_app(pool: Pool, problems: Any = None, token: str | None = None, max_pending: int = DEFAULT_MAX_PENDING,
               limits: Limits | None = None, *, allow_inline_problems: bool = False,
               max_body_bytes: int = DEFAULT_MAX_BODY_MB << 20, request_timeout_s: float | None = None) -> Any:
    """The FastAPI app serving `pool` (started here if it is not yet). The caller owns the pool
    and closes it after the server stops. `problems`: anything `sandbox.api.as_problems` takes.
    `limits`: every request is graded with these (default `Limits()`), or lower ones it asks for.
    `allow_inline_problems`: accept problems in requests (graded in a judge of the request's own).
    `max_body_bytes`: larger bodies get 413 unread. `request_timeout_s`: a request still grading
    after this long is cancelled (504); None: no limit but the client's own patience."""
    import anyio
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response

    from ..api import as_problems, grade
    from .schema import describe_routes

    if max_pending < 1:
        raise ValueError(f"max_pending must be at least 1, got {max_pending}")
    if max_body_bytes < 1024:
        raise ValueError(f"max_body_bytes must be at least 1024, got {max_body_bytes}")
    table = as_problems(problems) if problems is not None else {}
    pool.start()
    state = ServiceState(pool, table, token or None, max_pending, limits, allow_inline_problems, max_body_bytes,
                         request_timeout_s)

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        state.limiter = anyio.CapacityLimiter(MAX_REQUEST_THREADS)
        yield

    app = FastAPI(title="sandbox", lifespan=lifespan, docs_url="/docs", redoc_url=None, openapi_url="/openapi.json")
    app.state.sandbox = state
    app.add_middleware(_Authenticate, token=state.token)

    async def health(request: Request) -> Any:
        body = state.health()
        return JSONResponse(body, status_code=200 if body["ok"] else 503)

    async def grade_endpoint(request: Request) -> Any:
        try:
            raw = await read_body(request, state.max_body_bytes)
        except BodyTooLarge as exc:
            return JSONResponse({"error": str(exc), "max_body_bytes": state.max_body_bytes}, status_code=413,
                                headers={"Connection": "close"})
        try:
            payload = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return JSONResponse({"error": f"the body is not valid JSON ({exc})"}, status_code=400)
        completions = payload.get("completions") if isinstance(payload, dict) else None
        if not isinstance(completions, list):
            return JSONResponse({"error": "the body must be a JSON object whose 'completions' is a list of rows "
                                          "{'task_id', 'code' | 'completion'} (or of strings, with 'task_ids')"}, status_code=400)
        offset = payload.get("row_offset", 0)
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            return JSONResponse({"error": f"'row_offset' must be a non-negative integer, got {offset!r}"}, status_code=400)
        inline = has_inline_problems(payload)
        if inline and not state.allow_inline_problems:
            return JSONResponse({"error": "this server does not accept problems in requests (they carry test code that "
                                          "would run in its judges); use the task_ids of its preloaded problems, or start "
                                          "it with --allow-inline-problems"}, status_code=403)
        n = len(completions)
        if n == 0:
            return JSONResponse({"results": []})
        if n > state.max_pending:
            return JSONResponse({"error": f"{n} completions in one request; this server admits at most "
                                          f"{state.max_pending} at once: send smaller batches",
                                 "max_pending": state.max_pending}, status_code=413)
        if not state.pool.alive:
            return JSONResponse({"error": "the grading pool is not running"}, status_code=503,
                                headers={"Retry-After": str(RETRY_AFTER_S)})
        if not state.admit(n):
            return JSONResponse({"error": f"busy: {state.pending} completions pending (max {state.max_pending}); retry later",
                                 "pending": state.pending, "max_pending": state.max_pending},
                                status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})

        client = request.headers.get(CLIENT_HEADER) or (request.client.host if request.client else "")
        ticket = fair.Ticket(group=client)

        def work() -> list[GradeResult]:  # in a thread: loading inline problems and grading both block
            table, rows, granularity, extract = parse_grade_request(payload, state.problems)
            limits = request_limits(payload.get("limits"), state.limits)
            used = {str(row.get("task_id")) for row in rows if isinstance(row, dict)}
            table = {task_id: capped(problem, limits) for task_id, problem in table.items() if task_id in used}
            if not inline:
                with ticket.active():
                    return grade(table, rows, pool=state.pool, granularity=granularity, extract=extract)
            # A request's own problems run trusted test code: never in the shared judges.
            size = min(state.pool.size, INLINE_WORKERS, max(1, len(rows)))
            with Pool(state.pool.backend, workers=size) as private, ticket.active():
                try:
                    return grade(table, rows, pool=private, granularity=granularity, extract=extract)
                finally:
                    with state.lock:
                        state.judged_apart += private.judged

        results: list[GradeResult] = []
        outcome = "done"
        error: Exception | None = None
        try:
            async with anyio.create_task_group() as group:
                async def watch() -> None:
                    nonlocal outcome
                    deadline = None if state.request_timeout_s is None else time.monotonic() + state.request_timeout_s
                    while not await request.is_disconnected():
                        if deadline is not None and time.monotonic() > deadline:
                            outcome = "timeout"
                            break
                        await anyio.sleep(DISCONNECT_POLL_S)
                    else:
                        outcome = "disconnected"
                    ticket.cancel()  # the thread's grade() raises CancelledError and returns

                group.start_soon(watch)
                try:
                    results = await anyio.to_thread.run_sync(work, limiter=state.limiter)
                except Exception as exc:  # noqa: BLE001 -- answered below, outside the task group
                    error = exc
                finally:
                    group.cancel_scope.cancel()
            if error is not None:
                raise error
        except RequestError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except CancelledError:
            with state.lock:
                state.cancelled += 1
            if outcome == "timeout":
                return JSONResponse({"error": f"the request took longer than this server's {state.request_timeout_s} s; "
                                              "send smaller batches"}, status_code=504)
            return Response(status_code=499)  # nobody is listening
        except Exception as exc:
            log.exception("grading a request failed")
            return JSONResponse({"error": f"grading failed: {exc!r}"}, status_code=500)
        finally:
            state.release(n, len(results))
        return Response(results_body(renumber(results, offset)), media_type="application/json")

    # Plain Starlette routes: the handler gets the Request as is (no parameter inference, so nothing
    # reads the body before the cap does); schema.py's models describe them in /openapi.json.
    app.router.add_route("/health", health, methods=["GET"])
    app.router.add_route("/grade", grade_endpoint, methods=["POST"])
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe_routes(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    from .fusion import router as fusion_router  # SandboxFusion's protocol on the same pool

    app.include_router(fusion_router)
    return app
