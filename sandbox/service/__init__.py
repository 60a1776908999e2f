"""`sandbox serve`: an HTTP grading service in front of one warm pool of judges.

    POST /grade   {"problems": [Problem dicts] | null,
                   "completions": [{"task_id", "code" | "completion", "problem": {...} (optional)}],
                   "granularity": "per_test", "extract": "auto", "row_offset": 0}
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

Every request is graded by `sandbox.api.grade` on the one shared `Pool`, an executor that is
thread-safe by contract: each request's jobs go to its queue and the request waits for its own
futures (and cancels them if it fails).

    app.py       the FastAPI app: auth, admission, /health, /grade on one shared `sandbox.pool.Pool`
    requests.py  parsing a /grade body (problems, completions, options) into what `sandbox.api.grade` takes
    schema.py    pydantic models of /grade and /health (GradeRequest, GradeResponse, HealthResponse), in /openapi.json
    address.py   the address file (host:port and token, mode 0600, atomic)
    run.py       `serve`, `BackgroundServer`, `submit_slurm`/`wait_for_address` (`serve --slurm`)
"""

from __future__ import annotations

from .address import read_address_file, write_address_file
from .app import DEFAULT_MAX_PENDING, TOKEN_ENV, ServiceState, check_binding, create_app, is_loopback
from .requests import RequestError, capped, parse_grade_request, request_limits
from .run import BackgroundServer, advertised_address, bind_socket, load_problem_files, serve, submit_slurm, wait_for_address

__all__ = [
    "DEFAULT_MAX_PENDING",
    "TOKEN_ENV",
    "BackgroundServer",
    "RequestError",
    "ServiceState",
    "advertised_address",
    "bind_socket",
    "capped",
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
