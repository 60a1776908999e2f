"""One warm worker: a long-lived judge process (in its backend's isolation) and the pipes to it.

The pool (`sandbox.pool`) owns the workers and decides what each grades; this module only
starts a judge, sends it one request at a time, and kills its whole session when it dies, hangs
or answers garbage (`WorkerError`), or when the pool cancels the item it is grading (`kill`).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from typing import Any

from .backends import Backend
from .judge import protocol


class _Spawner:
    """Starts every judge from one long-lived thread. Judges (and bwrap's --die-with-parent)
    use PR_SET_PDEATHSIG, which fires when the *thread* that forked them exits; spawning from
    short-lived threads would kill judges at random, so they are all born here."""

    def __init__(self) -> None:
        self.requests: queue.Queue[tuple[list[str], dict[str, Any], queue.Queue[Any]]] = queue.Queue()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def _serve(self) -> None:
        while True:
            argv, kwargs, reply = self.requests.get()
            try:
                reply.put(subprocess.Popen(argv, **kwargs))
            except BaseException as exc:  # noqa: BLE001 -- handed to the caller, which raises it
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
        process: subprocess.Popen[bytes] = result
        return process


SPAWNER = _Spawner()


class WorkerError(RuntimeError):
    """The judge process failed (died, hung, broke the protocol): an infrastructure failure."""


class Worker:
    """One judge process and the pipes to it. `grade` is called by one thread at a time (the
    pool's thread for this worker); `kill` may be called from any thread."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0
        self._process_lock = threading.Lock()  # guards `process` against a concurrent kill

    def start(self) -> None:
        process = SPAWNER.popen(
            self.backend.judge_command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=self.backend.judge_env(),
            start_new_session=True,
        )
        with self._process_lock:
            self.process = process
        self.started += 1
        assert process.stdin and process.stdout
        protocol.widen(process.stdin.fileno(), process.stdout.fileno())
        try:
            protocol.write_message(process.stdin.fileno(), {"op": "ping", "id": 0})
            pong = protocol.read_message(process.stdout.fileno(), time.monotonic() + 120)
        except (OSError, protocol.ProtocolError) as exc:
            self.stop()
            raise WorkerError(f"the {self.backend.name} judge did not start: {exc}") from None
        if not pong.get("pong"):
            self.stop()
            raise WorkerError(f"the {self.backend.name} judge answered {pong!r} to a ping")

    @property
    def pid(self) -> int:
        process = self.process
        return process.pid if process else 0

    @property
    def alive(self) -> bool:
        process = self.process
        return process is not None and process.poll() is None

    def ensure_started(self) -> None:
        """Replace a judge that is gone (never started, died, or was killed) with a fresh one."""
        if not self.alive:
            self.stop()
            self.start()

    def grade(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one request to the running judge and wait for its answer; WorkerError (judge
        stopped) on any failure. Never starts a judge, so a `kill` from another thread after the
        caller's last check always ends this call."""
        process = self.process
        if process is None:
            raise WorkerError("the judge is not running")
        assert process.stdin and process.stdout
        try:
            protocol.write_request(process.stdin.fileno(), request)
            response = protocol.read_message(process.stdout.fileno(), time.monotonic() + timeout)
        except protocol.Timeout:
            self.stop()
            raise WorkerError(f"the judge did not answer within {timeout:.0f} s") from None
        except (OSError, protocol.ProtocolError) as exc:
            code = _exit_status(process)
            self.stop()
            raise WorkerError(f"the judge died ({exc}; exit status {code})") from None
        if response.get("id") != request["id"] or "error" in response or "tests" not in response:
            self.stop()
            raise WorkerError(f"the judge failed: {str(response.get('error', response))[:300]}")
        return response

    def kill(self) -> None:
        """Kill the judge's session from another thread (a cancelled item): the grading thread
        then sees the judge die and reaps it. Never signals a reaped (possibly reused) pid,
        because `stop` detaches the process under the same lock before waiting for it."""
        with self._process_lock:
            if self.process is not None:
                _killpg(self.process.pid)

    def stop(self) -> None:
        """Kill the judge's whole session (judge, zygote, runners) and reap it."""
        with self._process_lock:
            process, self.process = self.process, None
        if process is None:
            return
        _killpg(process.pid)
        process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            if stream:
                stream.close()


def _exit_status(process: subprocess.Popen[bytes]) -> int | None:
    """The exit status of a judge whose pipe just closed (it is usually exiting: give it a moment)."""
    try:
        return process.wait(timeout=1.0)
    except subprocess.TimeoutExpired:
        return None


def _killpg(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
