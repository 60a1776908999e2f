"""The judge's side of one runner: spawning it, talking to it under deadlines, and the proxy
through which trusted test code calls the untrusted solution.

Everything the runner sends is parsed by `frames` and every failure becomes a `SolutionFailure`
for the current solution. Frames carry the id of the test they answer, so a late report of an
earlier test (a per_test fork's `exited`) is skipped, never read as the next test's answer.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import select
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import codec, compare, frames, protocol, treewatch
from .verdicts import MEMORY, PASSED, RUNTIME_ERROR, SANDBOX_ERROR, TIMEOUT, WRONG_ANSWER

if TYPE_CHECKING:
    from .server import Judge

JUDGE_DIR = os.path.dirname(os.path.abspath(__file__))
PACKAGE = os.path.basename(JUDGE_DIR)
PACKAGE_PARENT = os.path.dirname(JUDGE_DIR)
SIGNAL_TIMEOUT = {signal.SIGXCPU, signal.SIGKILL}
REPLY_LIMIT = 32 * 1024 * 1024  # bytes of one frame from the runner (16 MiB of stdout fits, escaped)
WRITE_GRACE_S = 5.0  # a runner that does not take a request within this long has stopped reading
MESSAGE_LIMIT = 500  # characters of an exception message handed to test code
# What a solution's `raise` becomes when test code must not catch it: it tried to leave, or its
# value was over the codec's budgets (the runner reports that as "TooLarge").
UNCATCHABLE = frozenset({"SystemExit", "KeyboardInterrupt", "GeneratorExit", "TooLarge"})


def judge_cpu_budget(limits: dict[str, Any]) -> float:
    """CPU seconds the judge itself may spend on one test (decoding, comparing, the test code):
    a backstop behind the codec's budgets, far above what any real test needs."""
    return max(5.0, 2 * float(limits["wall_s"]))


@contextlib.contextmanager
def cpu_budget(seconds: float, expired: Callable[[], BaseException]) -> Iterator[None]:
    """Raise `expired()` in this (the judge's main) thread once it has used `seconds` of CPU
    inside the block. The flag makes sure it never fires after the block is left."""
    armed = [True]

    def handler(_signum: int, _frame: object) -> None:
        if armed[0]:
            armed[0] = False
            raise expired()

    previous = signal.signal(signal.SIGPROF, handler)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


class SolutionFailure(BaseException):
    """The solution failed a call (timeout, crash, broken protocol, over budget). Raised through
    the test code, and also recorded by `FunctionTests`: whatever the test code does with it
    (`except:` included), the test gets this verdict."""

    def __init__(self, verdict: str, detail: str) -> None:
        super().__init__(detail)
        self.verdict = verdict
        self.detail = detail


class SolutionError(Exception):
    """What test code sees when the solution raised an exception that is not a builtin one."""


class Captured(BaseException):
    """Carries a call's arguments out of a test run with the recorder in place."""

    def __init__(self, call_args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super().__init__()
        self.call_args, self.kwargs = call_args, kwargs


class NeedsOpaque(Exception):
    """The test passes something to the candidate that is not plain data (decided by the test
    code alone: every value a solution can return crosses back as plain data)."""


@dataclass
class PreparedTest:
    source: str
    code: Any  # compiled, or None when the source does not compile
    trusted: bool  # judged here (calls proxied) rather than opaquely in the runner
    single_call: bool  # exactly one call, not in a loop: the runner may exit right after it
    prefetchable: bool = False  # its call's arguments can be computed before the test runs


@dataclass
class PreparedProblem:
    namespace: dict[str, Any]
    helpers: dict[str, type]
    tests: list[PreparedTest]
    error: str


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


def solution_exception(answer: frames.Raised) -> BaseException | None:
    """The exception test code sees for a solution's `raise`: the real builtin class (or its
    nearest builtin base that takes a message), else SolutionError. None for what test code must
    never catch (SystemExit, KeyboardInterrupt, GeneratorExit: the solution tried to leave)."""
    message = answer.detail
    prefix = answer.name + ": "
    message = (message[len(prefix):] if message.startswith(prefix) else message)[:MESSAGE_LIMIT]
    if answer.name in UNCATCHABLE:
        return None
    cls = getattr(builtins, answer.name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        return SolutionError(f"{answer.name}: {message}"[:MESSAGE_LIMIT])
    if not issubclass(cls, Exception):
        return None
    for base in cls.__mro__:
        if isinstance(base, type) and issubclass(base, Exception):
            try:
                return base(message)
            except TypeError:  # UnicodeDecodeError and friends need more arguments
                continue
    return SolutionError(message)


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
        try:
            protocol.write_message(self.out_fd, message, time.monotonic() + WRITE_GRACE_S)
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


class FunctionTests:
    """Runs the function tests of one solution in the judge, calls proxied to a Session.

    per_test: each test is served by its own fork of the loaded solution, which exits after the
    test; the runner then reports `exited` for that test, which later reads skip. per_solution:
    the runner itself answers every call."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.test = 0  # id of the open test
        self.open_test = False  # a call of the current test was sent and its fork may still wait
        self.single_call = False
        self.prefetched: frames.Answer | None = None  # the answer to this test's call, sent in a batch
        self.recording = False  # capture a call's arguments instead of making it
        self.failure: SolutionFailure | None = None  # wins over whatever the test code did
        self.raised: BaseException | None = None  # the solution's last exception, as handed to the test
        self.needs_opaque = False  # a call's arguments were not plain data (test code decides this)
        self.last_call: tuple[tuple[Any, ...], dict[str, Any], Any] | None = None  # h15: for --details

    def fail(self, verdict: str, detail: str) -> SolutionFailure:
        if self.failure is None:
            self.failure = SolutionFailure(verdict, detail)
        return self.failure

    def _request(self, message: dict[str, Any]) -> frames.Answer:
        session = self.session
        if not session.alive:
            self.open_test = False
            raise self.fail(RUNTIME_ERROR, "the solution's process ended earlier in this test")
        message["new_test"] = not self.open_test
        if not self.open_test:
            self.test = session.new_test()
        message["test"] = self.test
        self.open_test = True
        try:
            session.send(message)
            answer = session.receive(self.test)
        except SolutionFailure as failure:
            self.open_test = False
            raise self.fail(failure.verdict, failure.detail) from None
        if isinstance(answer, frames.Exited):  # the fork serving this test died before answering
            self.open_test = False
            raise self.fail(*exit_verdict(answer.status))
        if message.get("last"):
            self.open_test = False
        return answer

    def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.recording:
            raise Captured(args, kwargs)
        if self.failure is not None:
            raise self.failure
        helpers = self.session.prepared.helpers
        try:
            message = {"op": "call", "args": codec.encode(list(args), helpers), "kwargs": codec.encode(dict(kwargs), helpers),
                       "last": self.single_call}
        except codec.TooLarge as exc:
            raise self.fail(RUNTIME_ERROR, f"the arguments of a call are too large to send: {exc}") from None
        except codec.EncodeError as exc:
            self.needs_opaque = True
            raise NeedsOpaque(str(exc)) from None
        if self.prefetched is not None:
            answer, self.prefetched = self.prefetched, None
        else:
            answer = self._request(message)
        if isinstance(answer, frames.Raised):
            raised = solution_exception(answer)
            if raised is None:
                raise self.fail(*raise_verdict(answer))
            self.raised = raised
            raise raised
        if isinstance(answer, frames.Unencodable):
            raise self.fail(WRONG_ANSWER, f"returned a value that is not plain data: {answer.detail[:200]}")
        if not isinstance(answer, frames.Value):
            self.session.kill()
            raise self.fail(RUNTIME_ERROR, "the solution's process broke the protocol: not a call's answer")
        try:
            value = codec.decode(answer.doc, helpers)
            self.last_call = (args, kwargs, value)  # h15: described with --details
            return value
        except codec.TooLarge as exc:
            raise self.fail(RUNTIME_ERROR, f"returned a value over the judge's budget: {exc}") from None
        except codec.DecodeError as exc:
            raise self.fail(WRONG_ANSWER, f"returned a malformed value: {exc}") from None
        except MemoryError:
            raise self.fail(RUNTIME_ERROR, "returned a value over the judge's memory budget") from None

    def finish_test(self) -> None:
        """End the current test: its fork exits (per_test)."""
        if self.open_test and self.session.alive:
            self.session.send({"op": "done"}, quiet=True)
        self.open_test = False

    def run_test(self, test: PreparedTest, namespace: dict[str, Any]) -> tuple[str, str, bool]:
        """Run one trusted test here; returns (verdict, detail, trusted). A failure of the
        solution recorded during the test decides its verdict, whatever the test code caught."""
        if test.code is None:
            return SANDBOX_ERROR, "the test code does not compile", True
        if not test.trusted:
            return self.run_opaque(test)
        self.single_call = test.single_call
        self.failure = None
        self.raised = None
        self.needs_opaque = False
        self.last_call = None
        verdict, detail = PASSED, ""
        seconds = judge_cpu_budget(self.session.limits)
        over: list[bool] = []

        def expired() -> SolutionFailure:
            over.append(True)
            return self.fail(TIMEOUT, f"the judge spent over {seconds:g} s of CPU on this test's replies")

        try:
            with cpu_budget(seconds, expired):
                try:
                    exec(test.code, namespace)
                except BaseException as exc:  # noqa: BLE001  every outcome of test code is a verdict
                    verdict, detail = self._outcome(exc)
                    if isinstance(exc, AssertionError) and self.session.request.get("details") and exc is not self.raised:
                        last = self.last_call  # h15: a bounded description with the expected value
                        detail = compare.describe_failure(test.source, namespace, last[:2] if last else None,
                                                          last[2] if last else None)
        except SolutionFailure as failure:  # the budget ran out just outside the inner block
            verdict, detail = failure.verdict, failure.detail
        finally:
            self.finish_test()
        if self.failure is not None:
            if over:
                self.session.kill()  # it may have stopped anywhere, mid-request included
            return self.failure.verdict, self.failure.detail, True
        if self.needs_opaque:
            return self.run_opaque(test)
        return verdict, detail, True

    def _outcome(self, exc: BaseException) -> tuple[str, str]:
        if isinstance(exc, (protocol.HostGone, KeyboardInterrupt)):
            raise exc
        if isinstance(exc, SolutionFailure):
            return exc.verdict, exc.detail
        if exc is self.raised:  # the solution's exception, not caught by the test
            return (MEMORY if isinstance(exc, MemoryError) else RUNTIME_ERROR), f"{type(exc).__name__}: {exc}"[:MESSAGE_LIMIT]
        if isinstance(exc, AssertionError):
            return WRONG_ANSWER, f"assertion failed{': ' + str(exc)[:200] if str(exc) else ''}"
        if isinstance(exc, RecursionError):
            return WRONG_ANSWER, "comparing the returned value exceeded the recursion limit"
        return WRONG_ANSWER, f"the test failed on the returned value: {type(exc).__name__}: {str(exc)[:200]}"

    def run_opaque(self, test: PreparedTest) -> tuple[str, str, bool]:
        """The assert runs in the untrusted process, which says pass or fail: reported as such."""
        problem = self.session.problem
        message = {"op": "opaque", "source": problem.get("test_setup", "") + "\n" + test.source,
                   "candidate": problem.get("candidate", "candidate"), "last": True}
        self.failure = None
        try:
            answer = self._request(message)
        except SolutionFailure as failure:
            return failure.verdict, failure.detail, False
        if isinstance(answer, frames.Raised):
            verdict, detail = raise_verdict(answer)
            return verdict, detail, False
        if not isinstance(answer, frames.OpaqueDone):
            self.session.kill()
            return RUNTIME_ERROR, "the solution's process broke the protocol: not an opaque test's answer", False
        return ("passed", "", False) if answer.passed else (WRONG_ANSWER, "assertion failed (opaque)", False)
