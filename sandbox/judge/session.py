"""The judge's side of one runner: spawning it, talking to it under deadlines, and turning how it
ended or what it raised into a verdict.

Everything the runner sends is parsed by `frames` and every failure becomes a `SolutionFailure`
for the current solution. Frames carry the id of the test they answer, so a late report of an
earlier test (a per_test fork's `exited`) is skipped, never read as the next test's answer.
The proxy through which trusted test code calls the solution over a Session is `calls`.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import stat
import subprocess
import time
from typing import TYPE_CHECKING, Any

from . import codec, frames, protocol, treewatch
from .verdicts import MEMORY, RUNTIME_ERROR, TIMEOUT

if TYPE_CHECKING:
    from .calls import PreparedProblem
    from .server import Judge

JUDGE_DIR = os.path.dirname(os.path.abspath(__file__))
PACKAGE = os.path.basename(JUDGE_DIR)
PACKAGE_PARENT = os.path.dirname(JUDGE_DIR)
SIGNAL_TIMEOUT = {signal.SIGXCPU, signal.SIGKILL}
REPLY_LIMIT = 32 * 1024 * 1024  # bytes of one frame from the runner (16 MiB of stdout fits, escaped)
WRITE_GRACE_S = 5.0  # a runner that does not take a request within this long has stopped reading
MESSAGE_LIMIT = 500  # characters of an exception message handed to test code


class SolutionFailure(BaseException):
    """The solution failed a call (timeout, crash, broken protocol, over budget). Raised through
    the test code, and also recorded by `FunctionTests`: whatever the test code does with it
    (`except:` included), the test gets this verdict."""

    def __init__(self, verdict: str, detail: str) -> None:
        super().__init__(detail)
        self.verdict = verdict
        self.detail = detail


class Zygote:
    """The fresh interpreter that forks runners. It never holds test data."""

    def __init__(self, python: str, fresh_world: bool = True) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        boot = (f"import sys; sys.path.insert(0, {PACKAGE_PARENT!r}); from {PACKAGE}.runner import zygote_main; "
                f"zygote_main({child.fileno()}, {fresh_world!r})")
        self.process = subprocess.Popen(
            [python, "-I", "-c", boot],
            pass_fds=[child.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        )
        child.close()
        self.sock = parent

    def spawn(self, fds: list[int]) -> tuple[int, int, str]:
        socket.send_fds(self.sock, [b"spawn"], fds)
        answer = b""
        while len(answer) < 64:
            chunk = self.sock.recv(64 - len(answer))
            if not chunk:
                raise RuntimeError("the zygote exited")
            answer += chunk
        pid, pgid, containment = answer.decode().split()
        return int(pid), int(pgid), containment

    def close(self) -> None:
        self.sock.close()
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def exit_verdict(status: frames.Status | None) -> tuple[str, str]:
    if status is None:
        return RUNTIME_ERROR, "the solution's process ended"
    if status.signal is not None:
        if status.signal in SIGNAL_TIMEOUT:
            return TIMEOUT, f"killed by signal {status.signal} (CPU time limit)"
        if status.signal == signal.SIGXFSZ:
            return RUNTIME_ERROR, "output or file size limit exceeded"
        return RUNTIME_ERROR, f"killed by signal {status.signal}"
    return RUNTIME_ERROR, f"the process exited with code {status.code} before answering"


def raise_verdict(answer: frames.Raised) -> tuple[str, str]:
    return (MEMORY if answer.name == "MemoryError" else RUNTIME_ERROR), answer.detail[:MESSAGE_LIMIT]


def read_regular(path: str, limit: int) -> bytes:
    """Read a file the solution may have replaced: never follow a link, never block on a FIFO,
    never read a directory or device."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return b""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        return os.pread(fd, limit, 0)
    except OSError:
        return b""
    finally:
        os.close(fd)


class Session:
    """One runner for one solution: load it, then serve tests until closed or killed."""

    def __init__(self, judge: Judge, request: dict[str, Any], prepared: PreparedProblem) -> None:
        self.judge = judge
        self.problem = request["problem"]
        self.limits = self.problem["limits"]
        self.request = request
        self.prepared = prepared
        self.workdir = judge.new_workdir()
        self.out_fd = -1
        self.in_fd = -1
        self.pid = 0
        self.pgid = 0
        self.containment = ""
        self.alive = False
        self.spawns = 0
        self.status_fd = -1
        self.next_test = 0
        self.last_answered = 0  # the latest test id whose answer was read
        self.per_solution = request.get("granularity") == "per_solution"
        self.watch = treewatch.TreeWatch(int(self.limits["memory_mb"]), float(self.limits["cpu_s"]))

    # -- runner lifecycle ------------------------------------------------------------------

    def start(self) -> frames.Loaded:
        """Spawn and load a runner."""
        self.spawn()
        return self.loaded()

    def new_test(self) -> int:
        self.next_test += 1
        return self.next_test

    def answered(self, test: int) -> bool:
        """An answer to `test` or a later one was read (the runner took its request)."""
        return self.last_answered >= test

    def spawn(self) -> None:
        """Start a runner and send it the solution; it loads while we do other work."""
        to_runner_r, to_runner_w = os.pipe()
        from_runner_r, from_runner_w = os.pipe()
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        stdout_fd = os.open(os.path.join(self.workdir, ".stdout"), flags | os.O_APPEND, 0o600)
        stderr_fd = os.open(os.path.join(self.workdir, ".stderr"), flags | os.O_APPEND, 0o600)
        status_r, status_w = os.pipe()
        fds = [to_runner_r, from_runner_w, stdout_fd, stderr_fd, status_w]
        try:
            self.pid, self.pgid, self.containment = self.judge.zygote.spawn(fds)
        finally:
            for fd in fds:
                os.close(fd)
        if self.status_fd >= 0:
            os.close(self.status_fd)
        self.status_fd = status_r
        os.set_blocking(to_runner_w, False)  # every write has a deadline
        self.in_fd, self.out_fd = from_runner_r, to_runner_w
        self.watch.start(self.pid)
        self.reader = protocol.Reader(from_runner_r, self.judge.hangup_fd, tick=self.watch.check)
        self.alive = True
        self.spawns += 1
        problem = self.problem
        self.send({
            "limits": self.limits,
            "workdir": self.workdir,
            "mode": problem["tests"][0]["kind"] if problem["tests"] else "function",
            "preamble": problem.get("preamble", ""),
            "code": self.request["code"],
            "entry_point": problem.get("entry_point", ""),
            "helpers": sorted(self.prepared.helpers),
            "granularity": self.request.get("granularity", "per_test"),
        }, quiet=True)

    def loaded(self) -> frames.Loaded:
        """Wait for the runner's load answer."""
        deadline = time.monotonic() + max(10.0, float(self.limits["wall_s"]) * 3)
        if not self.alive:  # killed while we sent it the solution: it stopped reading
            return frames.Loaded(False, TIMEOUT, "the solution's process stopped reading")
        try:
            return self._check_load(frames.load(self.reader.read(deadline, REPLY_LIMIT)))
        except protocol.Timeout:
            self.kill()
            return frames.Loaded(False, TIMEOUT, "loading the solution took too long")
        except treewatch.OverLimit as exc:
            self.kill()
            return frames.Loaded(False, exc.verdict, str(exc))
        except frames.FrameError as exc:
            self.kill()
            return frames.Loaded(False, RUNTIME_ERROR, f"the solution broke the protocol while loading ({exc})")
        except protocol.ProtocolError as exc:
            self.kill()
            return frames.Loaded(False, RUNTIME_ERROR, f"the solution ended the process while loading ({exc})")

    def _check_load(self, load: frames.Loaded) -> frames.Loaded:
        if not load.ok:
            self.kill()
        return load

    def kill(self) -> None:
        """Kill the runner and everything it started: in a PID namespace, killing its init does
        that; otherwise we kill its process group (which a solution could have left)."""
        if not self.alive:
            return
        self.alive = False
        for target in (self.pid, -self.pgid):
            try:
                os.kill(target, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for fd in (self.in_fd, self.out_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.wait_gone()

    def wait_gone(self, timeout: float = 20.0) -> None:
        """Block until the runner's parent reports it reaped: in a PID namespace that happens only
        after every process in it is dead, so nothing a solution started outlives its grading."""
        if self.status_fd < 0:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not select.select([self.status_fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                break
            try:
                if not os.read(self.status_fd, 256):
                    break
            except OSError:
                break
        os.close(self.status_fd)
        self.status_fd = -1

    def close(self) -> tuple[str, str]:
        if self.alive:
            try:
                protocol.write_message(self.out_fd, {"op": "close"}, time.monotonic() + 0.1)
            except OSError:  # Timeout included: it is killed next anyway
                pass
            self.kill()
        limit = int(self.limits["output_kb"]) * 1024
        outputs = [read_regular(os.path.join(self.workdir, name), limit).decode("utf-8", "replace")
                   for name in (".stdout", ".stderr")]
        self.judge.remove_workdir(self.workdir)
        if self.status_fd >= 0:
            os.close(self.status_fd)
            self.status_fd = -1
        return outputs[0], outputs[1]

    # -- talking to the runner -------------------------------------------------------------

    def send(self, message: dict[str, Any], quiet: bool = False) -> None:
        """Send a request; a runner that stops reading is killed (a timeout for the solution)."""
        self.send_data(protocol.dumps(message), quiet)

    def send_data(self, data: bytes, quiet: bool = False) -> None:
        """`send` of a message already made by `protocol.dumps`."""
        try:
            protocol.write_data(self.out_fd, data, time.monotonic() + WRITE_GRACE_S)
        except protocol.Timeout:
            self.kill()
            if not quiet:
                raise SolutionFailure(TIMEOUT, "the solution's process stopped reading its requests") from None
        except OSError:
            pass  # the runner is gone; the read that follows reports it

    def receive(self, test: int) -> frames.Answer:
        """The next frame answering `test`, within the test's wall limit. Frames of earlier tests
        (late `exited` reports) are skipped; anything malformed is the solution's failure."""
        if not self.alive:
            raise SolutionFailure(RUNTIME_ERROR, "the solution's process ended earlier")
        timeout = float(self.limits["wall_s"])
        deadline = time.monotonic() + timeout
        self.watch.begin_test()
        while True:
            try:
                answer = frames.answer(self.reader.read(deadline, REPLY_LIMIT, codec.MAX_FRAME_CONTAINERS,
                                                         codec.MAX_FRAME_COMMAS))
            except protocol.Timeout:
                self.kill()
                raise SolutionFailure(TIMEOUT, f"no answer within {timeout:g} s") from None
            except treewatch.OverLimit as exc:
                self.kill()
                raise SolutionFailure(exc.verdict, str(exc)) from None
            except (frames.FrameError, protocol.Malformed) as exc:
                self.kill()
                raise SolutionFailure(RUNTIME_ERROR, f"the solution's process broke the protocol: {exc}") from None
            except protocol.ProtocolError:
                status = self.exit_status()
                self.kill()
                raise SolutionFailure(*exit_verdict(status)) from None
            if answer.test == test:
                self.last_answered = test
                return answer
            if answer.test > test:
                self.kill()
                raise SolutionFailure(RUNTIME_ERROR, "the solution's process broke the protocol: a frame for a later test")

    def exit_status(self) -> frames.Status | None:
        """How the runner ended, as its parent (our code, outside its namespace) saw it."""
        if self.status_fd < 0 or not select.select([self.status_fd], [], [], 1.0)[0]:
            return None
        try:
            return frames.status_bytes(os.read(self.status_fd, 256))
        except OSError:
            return None
