"""The untrusted side: a zygote that starts runners, and the runner that executes solutions.

Neither process ever holds a test's expected value. The judge starts one zygote per worker (a
fresh interpreter that pre-imports the modules solutions use). For each solution the zygote
forks; the fork enters a new user and PID namespace when the kernel allows it (so the solution
cannot signal the judge, and killing the runner kills every process it started) and forks the
runner, which loads the preamble and the solution and then serves the judge's requests:

  function tests: for each test a fork of the loaded solution (`per_test`) or the runner itself
  (`per_solution`) evaluates the entry point and answers `call` messages with the encoded value.
  stdio tests: a fork per test runs the program with the test's stdin; the runner returns stdout.
"""

from __future__ import annotations

import ctypes
import gc
import json
import math
import os
import resource
import signal
import socket
import sys
import time
import traceback
import types
from typing import Any

from . import codec, protocol

CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
PR_SET_DUMPABLE = 4
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

# Modules the datasets' preambles import; loading them once in the zygote makes each runner cheap.
WARM_MODULES = (
    "random functools collections string math datetime typing itertools heapq bisect operator re "
    "json copy fractions decimal statistics array sortedcontainers"
).split()

# Fixed descriptor numbers inside a runner.
FD_IN, FD_OUT, FD_STDOUT, FD_STDERR = 3, 4, 5, 6


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def set_dumpable(flag: bool) -> None:
    """A non-dumpable process cannot be ptraced and its /proc/PID/{mem,fd,environ} are closed to
    other processes of the same user: untrusted code cannot read the judge's memory or steal its
    pipes."""
    _libc().prctl(PR_SET_DUMPABLE, int(flag), 0, 0, 0)


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies, so nothing outlives the pool (kill -9
    included): pool -> judge -> zygote -> intermediate -> runner -> everything in its PID ns."""
    parent = os.getppid()
    _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def _enter_namespaces() -> bool:
    return _libc().unshare(CLONE_NEWUSER | CLONE_NEWPID) == 0


def apply_limits(limits: dict[str, Any]) -> None:
    """rlimits of the runner, inherited by everything the solution starts."""
    mb = 1024 * 1024
    pairs = [
        (resource.RLIMIT_AS, int(limits["memory_mb"]) * mb),
        (resource.RLIMIT_FSIZE, int(limits["file_size_mb"]) * mb),
        (resource.RLIMIT_NOFILE, int(limits["open_files"])),
        (resource.RLIMIT_NPROC, int(limits["processes"])),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_CPU, int(math.ceil(float(limits["solution_s"]))) + 5),
    ]
    for which, value in pairs:
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            soft, hard = resource.getrlimit(which)
            if hard == resource.RLIM_INFINITY or value < hard:
                resource.setrlimit(which, (value, value if hard == resource.RLIM_INFINITY else hard))


def set_cpu_limit(seconds: float) -> None:
    """Move the soft CPU limit `seconds` past what this process has used (SIGXCPU then). The
    hard limit, fixed once per runner, cannot be raised again by the solution."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    spent = used.ru_utime + used.ru_stime
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = int(math.ceil(spent + seconds))
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


# ---------------------------------------------------------------------------------------------
# zygote


def zygote_main(control_fd: int) -> None:
    """Serve spawn requests from the judge over a unix socket. Each request carries the runner's
    descriptors (SCM_RIGHTS); the reply is the runner's pid as seen from here."""
    set_dumpable(False)
    die_with_parent()
    for name in WARM_MODULES:
        try:
            __import__(name)
        except Exception:
            pass
    _libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # runners and orphans are reaped automatically
    sock = socket.socket(fileno=control_fd)
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(sock, 4096, 5)
        except OSError:
            return
        if not msg:
            return
        read_pid, write_pid = os.pipe()
        pid = os.fork()
        if pid == 0:
            sock.close()
            os.close(read_pid)
            _intermediate(fds[:4], fds[4], write_pid)
        os.close(write_pid)
        for fd in fds:
            os.close(fd)
        with os.fdopen(read_pid, "rb") as f:
            answer = f.read()
        sock.sendall(answer.ljust(64, b" ")[:64])


def _intermediate(fds: list[int], status_fd: int, report_fd: int) -> None:
    """Between the zygote and the runner: new session and namespaces, then fork the runner
    (PID 1 of its namespace) and report its pid; then wait for it and tell the judge how it
    ended (on `status_fd`, which the runner does not hold)."""
    try:
        die_with_parent()
        os.setsid()
        contained = _enter_namespaces()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        pid = os.fork()
        if pid == 0:
            os.close(report_fd)
            os.close(status_fd)
            die_with_parent()
            _runner_start(fds)
        for fd in fds:
            os.close(fd)
        os.write(report_fd, f"{pid} {os.getpid()} {'pidns' if contained else 'pgroup'}".encode())
        os.close(report_fd)
        _pid, status = os.waitpid(pid, 0)
        os.write(status_fd, json.dumps(_status(status)).encode())
    finally:
        os._exit(0)


def _runner_start(fds: list[int]) -> None:
    # Move the received descriptors out of the way first, then into their fixed numbers.
    moved = [os.dup(fd) for fd in fds]
    for fd in fds:
        os.close(fd)
    for target, fd in zip((FD_IN, FD_OUT, FD_STDOUT, FD_STDERR), moved):
        os.dup2(fd, target, inheritable=False)
        os.close(fd)
    os.closerange(FD_STDERR + 1, 4096)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(FD_STDOUT, 1)
    os.dup2(FD_STDERR, 2)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    code = 0
    try:
        Runner().serve()
    except BaseException:
        traceback.print_exc()
        code = 1
    os._exit(code)


# ---------------------------------------------------------------------------------------------
# runner


class Runner:
    """Executes one solution for the judge. Everything here is untrusted once the solution has
    been loaded: the judge believes nothing it says except as a value to compare."""

    def __init__(self) -> None:
        self.namespace: dict[str, Any] = {}
        self.helpers: dict[str, type] = {}
        self.function: Any = None
        self.load: dict[str, Any] = {}

    def send(self, message: dict[str, Any]) -> None:
        protocol.write_message(FD_OUT, message)

    def serve(self) -> None:
        self.load = protocol.read_message(FD_IN)
        apply_limits(self.load["limits"])
        os.chdir(self.load["workdir"])
        os.environ.clear()
        os.environ.update({"TMPDIR": self.load["workdir"], "HOME": self.load["workdir"], "PATH": "/usr/bin:/bin"})
        sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
        if self.load["mode"] == "stdio":
            self.serve_stdio()
        else:
            self.serve_function()

    # -- function tests --------------------------------------------------------------------

    def serve_function(self) -> None:
        load = self.load
        source = load["preamble"] + "\n" + load["code"]
        try:
            compiled = compile(source, "<solution>", "exec")
        except (SyntaxError, ValueError) as exc:
            self.send({"loaded": False, "verdict": "syntax_error", "detail": _describe(exc)})
            return
        self.namespace = new_module("__solution__")
        set_cpu_limit(load["limits"]["cpu_s"])
        try:
            exec(compiled, self.namespace)
        except BaseException as exc:  # SystemExit too: a solution that exits at import fails
            self.send({"loaded": False, "verdict": _verdict_of(exc), "detail": _describe(exc)})
            return
        self.helpers = {name: self.namespace[name] for name in load["helpers"] if isinstance(self.namespace.get(name), type)}
        per_test = load["granularity"] == "per_test"
        if not per_test:
            self.function = self._entry_point()
        else:
            gc.freeze()  # forks share the loaded heap: keep the collector from touching (copying) it
        self.send({"loaded": True})
        while True:
            message = protocol.read_message(FD_IN)
            op = message.get("op")
            if op == "batch" and per_test:
                self._batch_forked(message["calls"])
            elif op == "batch":
                for call in message["calls"]:
                    set_cpu_limit(load["limits"]["cpu_s"])
                    self.send(self._call(call))
            elif op in ("call", "opaque") and per_test:
                self._test_forked(message)
            elif op in ("call", "opaque"):
                if message.get("new_test"):
                    set_cpu_limit(load["limits"]["cpu_s"])
                self.send(self._call(message) if op == "call" else self._opaque(message))
            elif op != "done":
                return

    def _batch_forked(self, calls: list[dict[str, Any]]) -> None:
        """per_test, calls known ahead: one fork per call, forked ahead. While one child
        answers, the next is already forked (and has evaluated the entry point) and waits at
        its gate, so fork costs overlap with work. After each child, report how it ended."""
        child, gate = self._fork_gated(calls[0])
        for index in range(len(calls)):
            os.write(gate, b"x")
            os.close(gate)
            following = self._fork_gated(calls[index + 1]) if index + 1 < len(calls) else None
            _pid, status = os.waitpid(child, 0)
            self.send({"exited": _status(status)})
            if following:
                child, gate = following

    def _fork_gated(self, call: dict[str, Any]) -> tuple[int, int]:
        gate_r, gate_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.close(gate_w)
                set_cpu_limit(self.load["limits"]["cpu_s"])  # waiting at the gate costs no CPU
                self.function = self._entry_point()
                if os.read(gate_r, 1) == b"x":  # else the runner is gone
                    self.send(self._call(call))
            except BaseException:
                code = 3
            finally:
                _exit_flushed(code)
        os.close(gate_r)
        return pid, gate_w

    def _test_forked(self, first: dict[str, Any]) -> None:
        """per_test, an interactive test: its fork answers this call and then reads the
        judge's further calls itself until the test is done."""
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                set_cpu_limit(self.load["limits"]["cpu_s"])
                self.function = self._entry_point()
                request = first
                while True:
                    op = request.get("op")
                    if op not in ("call", "opaque"):
                        break
                    self.send(self._call(request) if op == "call" else self._opaque(request))
                    if request.get("last"):
                        break
                    request = protocol.read_message(FD_IN)
            except BaseException:
                code = 3
            finally:
                _exit_flushed(code)
        _pid, status = os.waitpid(pid, 0)
        self.send({"exited": _status(status)})

    def _entry_point(self) -> Any:
        try:
            return eval(self.load["entry_point"], self.namespace)
        except BaseException as exc:
            return _Broken(exc)

    def _call(self, message: dict[str, Any]) -> dict[str, Any]:
        function = self.function
        if isinstance(function, _Broken):
            return _raised(function.exc)
        try:
            args = codec.decode(message["args"], self.helpers)
            kwargs = codec.decode(message["kwargs"], self.helpers)
        except codec.DecodeError as exc:
            return {"raise": "DecodeError", "detail": str(exc)}
        started = time.perf_counter()
        try:
            value = function(*args, **kwargs)
        except BaseException as exc:
            return _raised(exc)
        elapsed = time.perf_counter() - started
        try:
            return {"ok": codec.encode(value, self.helpers), "time_s": elapsed}
        except codec.EncodeError as exc:
            return {"unencodable": str(exc), "time_s": elapsed}
        except BaseException as exc:
            return _raised(exc)

    def _opaque(self, message: dict[str, Any]) -> dict[str, Any]:
        """A test the judge cannot run itself: the assert runs here, and says pass or fail."""
        namespace = dict(self.namespace)
        namespace[message["candidate"]] = self.function
        try:
            exec(compile(message["source"], "<test>", "exec"), namespace)
        except AssertionError:
            return {"passed": False}
        except BaseException as exc:
            return _raised(exc)
        return {"passed": True}

    # -- stdio tests -----------------------------------------------------------------------

    def serve_stdio(self) -> None:
        load = self.load
        try:
            compiled = compile(load["preamble"] + "\n" + load["code"], "<solution>", "exec")
        except (SyntaxError, ValueError) as exc:
            self.send({"loaded": False, "verdict": "syntax_error", "detail": _describe(exc)})
            return
        self.send({"loaded": True})
        limit = int(load["limits"]["output_kb"]) * 1024
        while True:
            message = protocol.read_message(FD_IN)
            if message.get("op") != "stdio":
                return
            with open("stdin.txt", "w", encoding="utf-8", errors="surrogateescape") as f:
                f.write(message["stdin"])
            pid = os.fork()
            if pid == 0:
                self._run_program(compiled)
            _pid, status = os.waitpid(pid, 0)
            try:
                with open("stdout.txt", "rb") as f:
                    out = f.read(limit + 1)
            except OSError:
                out = b""
            self.send({"exited": _status(status), "stdout": out.decode("utf-8", "replace")})

    def _run_program(self, compiled: Any) -> None:
        code = 0
        try:
            stdin = os.open("stdin.txt", os.O_RDONLY)
            stdout = os.open("stdout.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(stdin, 0)
            os.dup2(stdout, 1)
            sys.stdin = open(0, "r", encoding="utf-8", errors="surrogateescape", closefd=False)
            sys.stdout = open(1, "w", encoding="utf-8", errors="surrogateescape", closefd=False)
            set_cpu_limit(self.load["limits"]["cpu_s"])
            try:
                exec(compiled, new_module("__main__"))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except MemoryError:
                code = 137
            except BaseException:
                traceback.print_exc(file=sys.__stderr__)
                code = 1
        finally:
            try:
                sys.stdout.flush()
            except BaseException:
                code = code or 1
            os._exit(code)


def _exit_flushed(code: int) -> None:
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def new_module(name: str) -> dict[str, Any]:
    """A registered module namespace: code such as `dataclasses` looks its module up in
    sys.modules, so exec'ing into a bare dict breaks it."""
    module = types.ModuleType(name)
    sys.modules[name] = module
    return module.__dict__


class _Broken:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _describe(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return text[-500:]


def _verdict_of(exc: BaseException) -> str:
    return "memory" if isinstance(exc, MemoryError) else "runtime_error"


def _raised(exc: BaseException) -> dict[str, Any]:
    return {"raise": type(exc).__name__, "detail": _describe(exc)}


def _status(status: int) -> dict[str, Any]:
    if os.WIFSIGNALED(status):
        return {"signal": os.WTERMSIG(status)}
    return {"code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1}
