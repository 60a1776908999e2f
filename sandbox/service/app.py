"""The FastAPI app: authentication, admission (backpressure), /health and /grade on one shared pool.

Every request is graded by `sandbox.api.grade` on the one `Pool`, an executor that is thread-safe by
contract: each request's jobs go to its queue and the request waits for its own futures (and cancels
them if it fails).
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
from collections.abc import Callable
from typing import Any

from ..pool import Pool
from ..problem import GradeResult, Limits, Problem
from .requests import RequestError, capped, parse_grade_request, renumber, request_limits

log = logging.getLogger("sandbox.service")

DEFAULT_MAX_PENDING = 1024
RETRY_AFTER_S = 1
MAX_REQUEST_THREADS = 256  # requests graded at once (each waits in a thread for its results)
TOKEN_ENV = "SANDBOX_TOKEN"


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
                 limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
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
            "judged": self.pool.judged,  # solutions run by the judges (no_code/invalid rows never reach them)
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

    from ..api import as_problems, grade

    if max_pending < 1:
        raise ValueError(f"max_pending must be at least 1, got {max_pending}")
    table = as_problems(problems) if problems is not None else {}
    pool.start()
    state = ServiceState(pool, table, token or None, max_pending, limits)

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        state.limiter = anyio.CapacityLimiter(MAX_REQUEST_THREADS)
        yield

    app = FastAPI(title="sandbox", lifespan=lifespan, docs_url="/docs", redoc_url=None, openapi_url="/openapi.json")
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
            return JSONResponse(
                {
                    "error": f"{n} completions in one request; this server admits at most {state.max_pending} at once: "
                    "send smaller batches",
                    "max_pending": state.max_pending,
                },
                status_code=413,
            )
        if not state.pool.alive:
            return JSONResponse(
                {"error": "the grading pool is not running"}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)}
            )
        if not state.admit(n):
            return JSONResponse({"error": f"busy: {state.pending} completions pending (max {state.max_pending}); retry later",
                                 "pending": state.pending, "max_pending": state.max_pending},
                                status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})

        def work() -> list[GradeResult]:  # in a thread: loading inline problems and grading both block
            table, rows, granularity, extract = parse_grade_request(payload, state.problems)
            limits = request_limits(payload.get("limits"), state.limits)
            used = {str(row.get("task_id")) for row in rows if isinstance(row, dict)}
            table = {task_id: capped(problem, limits) for task_id, problem in table.items() if task_id in used}
            return grade(table, rows, pool=state.pool, granularity=granularity, extract=extract)

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
        return JSONResponse({"results": [r.to_dict() for r in renumber(results, offset)]})

    app.router.add_route("/health", health, methods=["GET"])
    app.router.add_route("/grade", grade_endpoint, methods=["POST"])
    from .fusion import router as fusion_router  # SandboxFusion's protocol on the same pool

    app.include_router(fusion_router)
    return app
