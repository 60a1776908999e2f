"""Running the service: binding, uvicorn, `serve` (the CLI's `sandbox serve`), a background server for
tests and notebooks, and `serve --slurm` (the server as a submitit job, found through its address file)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from ..pool import Pool
from ..problem import Limits, Problem
from .address import read_address_file, write_address_file
from .app import DEFAULT_MAX_BODY_MB, DEFAULT_MAX_PENDING, TOKEN_ENV, check_binding, create_app

log = logging.getLogger("sandbox.service")

DEFAULT_MAX_CONNECTIONS = 2048  # open connections; requests beyond get 503 (uvicorn's limit_concurrency)
HEADER_TIMEOUT_S = 10.0  # a connection that has not sent a whole request head by then is closed
KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed after this long
MAX_HEAD_BYTES = 64 << 10  # request line + headers (h11's max incomplete event size)


def load_problem_files(paths: Iterable[str | os.PathLike[str]]) -> dict[str, Problem]:
    """The problems of several dataset files, merged; a task_id in two files is a ValueError naming both."""
    from ..datasets import load_problems

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
        sock.listen(4096)
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


def _header_timeout_protocol(timeout_s: float) -> type:
    """uvicorn's h11 protocol, closing a connection that has not sent a whole request head within
    `timeout_s` of connecting (or of its last response): half-open and slow-header connections
    cannot pile up and hold the server's file descriptors (uvicorn has no such timeout itself)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):
        _head_timer: Any = None

        def _arm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            self._head_timer = self.loop.call_later(timeout_s, self._head_timeout)

        def _head_timeout(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete) \
                    and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

    return HeaderTimeoutProtocol


def raise_open_files_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (connections are file
    descriptors; the usual soft 1024 is exhausted by a thousand idle clients); returns it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def _uvicorn_server(app: Any, log_level: str, on_started: Callable[[], None] | None,
                    on_stopped: Callable[[], None] | None = None, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                    header_timeout_s: float = HEADER_TIMEOUT_S) -> Any:
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

    config = uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=10, lifespan="on",
                            http=_header_timeout_protocol(header_timeout_s), limit_concurrency=max_connections,
                            timeout_keep_alive=KEEP_ALIVE_S, h11_max_incomplete_event_size=MAX_HEAD_BYTES)
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
    allow_inline_problems: bool = False,
    max_body_mb: int = DEFAULT_MAX_BODY_MB,
    request_timeout_s: float | None = None,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    header_timeout_s: float = HEADER_TIMEOUT_S,
) -> None:
    """Run the service in the foreground until SIGINT/SIGTERM (what `sandbox serve` and its
    SLURM job run). The address file is written once the pool is warm and the socket listens,
    and removed again on a clean exit. `allow_inline_problems`, `max_body_mb`, `request_timeout_s`:
    see `create_app`; `max_connections`, `header_timeout_s`: connection limits (see the README's
    trust model)."""
    token = token or os.environ.get(TOKEN_ENV) or None
    check_binding(host, token)
    table: dict[str, Problem] = {}
    if isinstance(problems, Mapping):
        table = dict(problems)
    elif isinstance(problems, (str, os.PathLike)):
        table = load_problem_files([problems])
    elif problems is not None:
        table = load_problem_files(problems)
    if raise_open_files_limit() < max_connections + 64:
        log.warning("the open-files limit is below --max-connections + 64: connections beyond it are refused by the kernel")
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
        app = create_app(pool, table, token, max_pending or max(DEFAULT_MAX_PENDING, pool.size * 64), limits,
                         allow_inline_problems=allow_inline_problems, max_body_bytes=max_body_mb << 20,
                         request_timeout_s=request_timeout_s)
        _uvicorn_server(app, log_level, started, stopped, max_connections, header_timeout_s).run(sockets=[sock])
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
    from ..cluster.layout import ClusterError
    from ..cluster.scheduler import last_line, slurm_executor

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
    # A server that hits its time limit is not resubmitted (max_num_timeout=0): clients would not find it.
    executor = slurm_executor(folder / "%j", job_name=job_name, time_min=time_min, cpus=cpus, partition=partition,
                              mem=mem, additional=additional, max_num_timeout=0)
    saved = os.environ.get(TOKEN_ENV)
    try:
        if token:
            os.environ[TOKEN_ENV] = token
        try:
            return executor.submit(_serve_job, options)
        except Exception as exc:  # noqa: BLE001 -- sbatch refused the job: say why in one line
            raise ClusterError(f"sbatch refused the server's job: {last_line(str(exc), type(exc).__name__)}") from None
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
