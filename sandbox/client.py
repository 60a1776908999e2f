"""`SandboxClient`: grade through one or more `sandbox serve` servers.

    client = SandboxClient(["/shared/sandbox-a.addr", "http://127.0.0.1:8000"], timeout=300)
    results = client.grade("problems.jsonl", [{"task_id": "two-sum", "completion": text}, ...])
    results = client.grade(["two-sum", "add-digits"], [text1, text2])    # problems preloaded on the server

Servers are given as address files (written by `sandbox serve --address-file`: `host:port` and
an optional token line), URLs, or `host:port`. Address files are re-read before every request,
so a server restarted elsewhere is picked up. Completions are sent in batches of `batch_size`;
batches go round robin over the servers (several at once, `concurrency`), and a batch that
meets a connection error, a timeout, 503 (busy) or another 5xx is retried with exponential
backoff on the next server, up to `retries` times. A batch larger than a server admits (413)
is split. Results come back as `GradeResult`s, one per completion, in input order.

Typed: `grade_request` takes a `sandbox.service.schema.GradeRequest` (or a dict, validated
against it before anything is sent) and returns a `GradeResponse`, batched, retried and split
exactly as `grade`; `server_health` returns a `HealthResponse`. The same models describe /grade and
/health in the server's /openapi.json.

    from sandbox.service.schema import CompletionRow, GradeRequest
    response = client.grade_request(GradeRequest(completions=[CompletionRow(task_id="two-sum", code=src)]))
    response.results[0].pass_rate, response.to_results()   # ResultRow models, or GradeResults

Uses httpx when it is installed, else urllib from the standard library.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .problem import GradeResult, Problem
from .rundir import dumps

if TYPE_CHECKING:
    from .service.schema import GradeRequest, GradeResponse, HealthResponse

TOKEN_ENV = "SANDBOX_TOKEN"
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):\d{1,5}")


class SandboxClientError(RuntimeError):
    """A batch could not be graded (retries exhausted, or a request the server rejects)."""


class SandboxAuthError(SandboxClientError):
    """The server wants a (different) token: 401."""


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None, connection: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.connection = connection


class _TooLarge(Exception):
    pass


@dataclass(frozen=True)
class Server:
    """Where one server is: a URL, or an address file read on every use."""

    spec: str
    address_file: Path | None = None

    def resolve(self, token: str | None) -> tuple[str, str | None]:
        """(base URL, token) -- the explicit token wins over the address file's."""
        if self.address_file is None:
            return self.spec, token
        try:
            from .service.address import read_address_file  # no FastAPI needed: plain file parsing

            address, file_token = read_address_file(self.address_file)
        except FileNotFoundError:
            raise _Retryable(f"{self.address_file} does not exist (is the server up?)", connection=True) from None
        except (OSError, ValueError) as exc:
            raise _Retryable(f"cannot read {self.address_file}: {exc}", connection=True) from None
        url = address if address.startswith(("http://", "https://")) else f"http://{address}"
        return url.rstrip("/"), token or file_token


def as_server(spec: str | os.PathLike[str]) -> Server:
    if isinstance(spec, os.PathLike):
        return Server(os.fspath(spec), Path(spec))
    text = str(spec).strip()
    if text.startswith(("http://", "https://")):
        return Server(text.rstrip("/"))
    if not os.path.exists(text) and _HOST_PORT.fullmatch(text):
        return Server(f"http://{text}")
    return Server(text, Path(text))


class _Transport:
    """POST/GET JSON with a timeout: httpx if available, else urllib."""

    def __init__(self, timeout: float, connect_timeout: float) -> None:
        self.timeout = timeout
        self.httpx: Any
        self.client: Any
        try:
            import httpx
        except ImportError:
            self.httpx = None
            self.client = None
        else:
            self.httpx = httpx
            self.client = httpx.Client(timeout=httpx.Timeout(timeout, connect=min(connect_timeout, timeout)), trust_env=False,
                                       limits=httpx.Limits(max_connections=64, max_keepalive_connections=16))

    def request(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if self.client is not None:
            httpx = self.httpx
            try:
                response = self.client.request(method, url, content=body, headers=headers)
            except httpx.TimeoutException as exc:
                raise _Retryable(f"{url}: timed out after {self.timeout:.0f} s ({type(exc).__name__})") from None
            except httpx.TransportError as exc:  # connection refused/reset, DNS, protocol errors
                raise _Retryable(f"{url}: {type(exc).__name__}: {exc}", connection=True) from None
            return response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.content
        request = urllib.request.Request(url, data=body, headers=headers, method=method)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=self.timeout) as response:
                return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()
        except TimeoutError:
            raise _Retryable(f"{url}: timed out after {self.timeout:.0f} s") from None
        except (urllib.error.URLError, ConnectionError, OSError) as exc:
            raise _Retryable(f"{url}: {exc}", connection=True) from None

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


class SandboxClient:
    """Grade through `sandbox serve` servers; see the module docstring.

    `timeout`: seconds per request (a batch); `retries`: retries per batch (attempts = retries+1);
    `backoff`: first retry delay, doubled each time up to `max_backoff` (a 503's Retry-After is
    honoured); `concurrency`: batches in flight at once (default: 2 per server).
    """

    def __init__(
        self,
        servers: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        token: str | None = None,
        *,
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
        retries: int = 8,
        batch_size: int = 64,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        concurrency: int | None = None,
        granularity: str = "per_test",
        extract: str = "auto",
    ) -> None:
        specs = [servers] if isinstance(servers, (str, os.PathLike)) else list(servers)
        if not specs:
            raise ValueError("SandboxClient needs at least one server (address file, URL or host:port)")
        if batch_size < 1 or retries < 0:
            raise ValueError("batch_size must be >= 1 and retries >= 0")
        self.servers = [as_server(s) for s in specs]
        self.token = token or os.environ.get(TOKEN_ENV) or None
        self.timeout = timeout
        self.retries = retries
        self.batch_size = batch_size
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.concurrency = concurrency or 2 * len(self.servers)
        self.granularity = granularity
        self.extract = extract
        self._transport = _Transport(timeout, connect_timeout)
        self._next = itertools.count()
        self._lock = threading.Lock()
        self.stats = {"requests": 0, "retries": 0, "failovers": 0, "busy": 0, "splits": 0}

    # ----------------------------------------------------------------------------------------

    def __enter__(self) -> SandboxClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._transport.close()

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    def _send(self, server: Server, method: str, path: str, payload: Any = None) -> Any:
        url, token = server.resolve(self.token)
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        body = None
        if payload is not None:
            body = dumps(payload).encode("utf-8")  # a lone surrogate in a completion is escaped, not a crash
            headers["Content-Type"] = "application/json"
        self._count("requests")
        status, response_headers, content = self._transport.request(method, url + path, body, headers)
        if status == 200:
            try:
                return json.loads(content)
            except json.JSONDecodeError:
                raise _Retryable(f"{url}: invalid JSON in a 200 response") from None
        message = _error_text(content)
        if status == 401:
            raise SandboxAuthError(f"{url}: 401 {message} (pass token=..., set {TOKEN_ENV}, or use the server's address file)")
        if status == 413:
            raise _TooLarge(message)
        if status in (408, 429) or status >= 500:
            retry_after = _retry_after(response_headers.get("retry-after"))
            if status in (429, 503):
                self._count("busy")
            raise _Retryable(f"{url}: {status} {message}", retry_after=retry_after)
        raise SandboxClientError(f"{url}: {status} {message}")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_backoff))
        return delay

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        """One request with retries, starting at the next server round robin."""
        start = next(self._next)
        errors: list[str] = []
        for attempt in range(self.retries + 1):
            server = self.servers[(start + attempt) % len(self.servers)]
            try:
                return self._send(server, method, path, payload)
            except _Retryable as exc:
                errors.append(str(exc))
                if attempt == self.retries:
                    break
                self._count("retries")
                if len(self.servers) > 1:
                    self._count("failovers")
                # A dead server is skipped at once while another one has not been tried yet.
                fresh = exc.connection and len(self.servers) > 1 and (attempt + 1) % len(self.servers) != 0
                if not fresh:
                    time.sleep(self._delay(attempt + 1, exc.retry_after))
        raise SandboxClientError(f"{method} {path} failed after {self.retries + 1} attempts: " + " | ".join(errors[-4:]))

    # ----------------------------------------------------------------------------------------

    def health(self) -> list[dict[str, Any]]:
        """Each server's /health (or {"ok": False, "error": ...}), in the order given."""
        out = []
        for server in self.servers:
            try:
                out.append(self._send(server, "GET", "/health"))
            except (SandboxClientError, _Retryable, _TooLarge) as exc:
                out.append({"ok": False, "server": server.spec, "error": str(exc)})
        return out

    def grade(
        self,
        problems_or_task_ids: Any,
        completions: Iterable[Any],
        *,
        granularity: str | None = None,
        extract: str | None = None,
    ) -> list[GradeResult]:
        """Grade completions; one GradeResult per completion, in input order.

        `problems_or_task_ids`: problems (a dataset file, LoadedProblems, {task_id: Problem} or
        Problems), sent along with the batches that need them; or None to use the server's
        preloaded problems; or a list of task_ids, one per completion, with `completions` as
        the model's answers (strings). `completions`: rows {"task_id", "code" | "completion"}
        (a row may also carry its own "problem"; `CompletionRow` models too), or strings together
        with task_ids.
        """
        rows, table = self._rows(problems_or_task_ids, completions)
        options = {"granularity": granularity or self.granularity, "extract": extract or self.extract}
        return [GradeResult.from_dict(row) for row in self._grade_rows(rows, table, options)]

    def grade_request(self, request: GradeRequest | Mapping[str, Any]) -> GradeResponse:
        """Grade one /grade body given as a `GradeRequest` (a dict is validated against it first:
        pydantic's ValidationError names the field, and nothing is sent). Sent in batches of
        `batch_size` like `grade`, the request's `problems` along with the batches that need them;
        the answer is validated against `GradeResponse` (SandboxClientError if it does not match)."""
        from pydantic import ValidationError

        from .service.schema import GradeRequest, GradeResponse

        if not isinstance(request, GradeRequest):
            request = GradeRequest.model_validate(request)
        body = request.body()
        completions: list[Any] = body.pop("completions")
        task_ids = body.pop("task_ids", None)
        problems = body.pop("problems", None)
        offset: int = body.pop("row_offset", 0)
        table: dict[str, Problem] = {}
        if problems:
            from .api import as_problems

            table = as_problems(problems)
        if task_ids is not None:  # paired as the server pairs them: a row's own fields win
            completions = [{"task_id": t, "completion": c} if isinstance(c, str) else {"task_id": t, **c}
                           for t, c in zip(task_ids, completions)]
        results = self._grade_rows(completions, table, body, offset)  # body: granularity, extract, limits, ...
        try:
            return GradeResponse.model_validate({"results": results})
        except ValidationError as exc:
            raise SandboxClientError(f"the server's answer does not match GradeResponse: {exc}") from None

    def server_health(self, index: int = 0) -> HealthResponse:
        """The /health of `self.servers[index]` as a `HealthResponse` (SandboxClientError when the
        server cannot be reached, is down (503) or answers something else)."""
        from pydantic import ValidationError

        from .service.schema import HealthResponse

        server = self.servers[index]
        try:
            answer = self._send(server, "GET", "/health")
        except (_Retryable, _TooLarge) as exc:
            raise SandboxClientError(f"{server.spec}: {exc}") from None
        try:
            return HealthResponse.model_validate(answer)
        except ValidationError as exc:
            raise SandboxClientError(f"{server.spec}: /health does not match HealthResponse: {exc}") from None

    def _grade_rows(self, rows: list[Any], table: Mapping[str, Problem], options: dict[str, Any], offset: int = 0) -> list[Any]:
        """The result dicts of `rows`, in order: batches of `batch_size`, `concurrency` at once."""
        if not rows:
            return []
        starts = range(0, len(rows), self.batch_size)
        if len(starts) == 1 or self.concurrency == 1:
            parts = [self._grade_batch(rows[i:i + self.batch_size], offset + i, table, options) for i in starts]
        else:
            with ThreadPoolExecutor(
                max_workers=min(self.concurrency, len(starts)), thread_name_prefix="sandbox-client"
            ) as executor:
                parts = list(executor.map(
                    lambda i: self._grade_batch(rows[i:i + self.batch_size], offset + i, table, options), starts))
        return [result for part in parts for result in part]

    def _rows(self, problems_or_task_ids: Any, completions: Iterable[Any]) -> tuple[list[Any], dict[str, Problem]]:
        completions = list(completions)
        if (
            isinstance(problems_or_task_ids, (list, tuple))
            and problems_or_task_ids
            and all(isinstance(t, str) for t in problems_or_task_ids)
        ):
            task_ids = list(problems_or_task_ids)
            if len(task_ids) != len(completions):
                raise ValueError(f"{len(task_ids)} task_ids for {len(completions)} completions; give one task_id per completion")
            rows = [
                {"task_id": t, "completion": c} if isinstance(c, str) else {"task_id": t, **c}
                for t, c in zip(task_ids, completions)
            ]
            return rows, {}
        table: dict[str, Problem] = {}
        if problems_or_task_ids is not None:
            from .api import as_problems

            table = as_problems(problems_or_task_ids)
        from pydantic import BaseModel

        rows = []
        for row in completions:
            if isinstance(row, BaseModel):  # a CompletionRow: fields left at None are absent
                row = row.model_dump(mode="json", exclude_none=True)
            if isinstance(row, Mapping):
                row = dict(row)
                if isinstance(row.get("problem"), Problem):
                    row["problem"] = row["problem"].to_dict()
            rows.append(row)
        return rows, table

    def _grade_batch(
        self, rows: list[Any], offset: int, table: Mapping[str, Problem], options: dict[str, Any]
    ) -> list[Any]:
        needed: dict[str, Problem] = {}
        for row in rows:
            task_id = row.get("task_id") if isinstance(row, Mapping) else None
            if task_id is not None and str(task_id) in table:
                needed[str(task_id)] = table[str(task_id)]
        payload = {
            "problems": [p.to_dict() for p in needed.values()] or None,
            "completions": rows,
            "row_offset": offset,
            **options,
        }
        try:
            response = self._call("POST", "/grade", payload)
        except _TooLarge as exc:
            if len(rows) == 1:
                raise SandboxClientError(f"the server refuses even a single completion: {exc}") from None
            self._count("splits")
            half = len(rows) // 2
            return self._grade_batch(rows[:half], offset, table, options) + self._grade_batch(
                rows[half:], offset + half, table, options
            )
        results = response.get("results") if isinstance(response, dict) else None
        if not isinstance(results, list) or len(results) != len(rows):
            raise SandboxClientError(
                f"the server answered {len(results) if isinstance(results, list) else 'no'} results for {len(rows)} completions"
            )
        return results


def _error_text(content: bytes) -> str:
    try:
        data = json.loads(content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return content[:300].decode("utf-8", "replace")
    if isinstance(data, dict):
        return str(data.get("error") or data.get("detail") or data)[:500]
    return str(data)[:500]


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


__all__ = ["SandboxAuthError", "SandboxClient", "SandboxClientError", "Server", "as_server"]
