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

import base64
import gc
import json
import os
import signal
import socket
import sys
import time
import traceback
import types
from typing import Any

from . import codec, protocol, seccomp, world
from .world import (
    CLONE_NEWIPC,
    PR_SET_CHILD_SUBREAPER,
    apply_limits,
    die_with_parent,
    drop_capabilities,
    enter_namespaces,
    fresh_world,
    libc_handle,
    remember_clean,
    set_cpu_limit,
    set_dumpable,
    world_touched,
)

# Modules the datasets' preambles import; loading them once in the zygote makes each runner cheap.
WARM_MODULES = (
    "random functools collections string math datetime typing itertools heapq bisect operator re "
    "json copy fractions decimal statistics array sortedcontainers"
).split()

# Fixed descriptor numbers inside a runner.
FD_IN, FD_OUT, FD_STDOUT, FD_STDERR = 3, 4, 5, 6
# An answer whose value holds a PACKED body of SPLICE_MIN characters or more (and has at most
# SPLICE_NODES nodes to look through) is written with protocol.dumps_spliced.
SPLICE_MIN = 1 << 16
SPLICE_NODES = 4


# ---------------------------------------------------------------------------------------------
# zygote


def zygote_main(control_fd: int, fresh: bool = True) -> None:
    """Serve spawn requests from the judge over a unix socket. Each request carries the runner's
    descriptors (SCM_RIGHTS); the reply is the runner's pid as seen from here."""
    set_dumpable(False)
    die_with_parent()
    for name in WARM_MODULES:
        try:
            __import__(name)
        except Exception:  # noqa: BLE001  a module the image lacks is simply not warm
            pass
    libc_handle().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
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
            _intermediate(fds[:4], fds[4], write_pid, fresh)
        os.close(write_pid)
        for fd in fds:
            os.close(fd)
        with os.fdopen(read_pid, "rb") as f:
            answer = f.read()
        sock.sendall(answer.ljust(64, b" ")[:64])


def _intermediate(fds: list[int], status_fd: int, report_fd: int, fresh: bool) -> None:
    """Between the zygote and the runner: new session and namespaces, then fork the runner
    (PID 1 of its namespace) and report its pid; then wait for it and tell the judge how it
    ended (on `status_fd`, which the runner does not hold)."""
    try:
        die_with_parent()
        os.setsid()
        contained = enter_namespaces(fresh)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        pid = os.fork()
        if pid == 0:
            os.close(report_fd)
            os.close(status_fd)
            die_with_parent()
            _runner_start(fds, fresh and contained)
        for fd in fds:
            os.close(fd)
        containment = ("pidns+fresh" if fresh else "pidns") if contained else "pgroup"
        os.write(report_fd, f"{pid} {os.getpid()} {containment}".encode())
        os.close(report_fd)
        _pid, status = os.waitpid(pid, 0)
        os.write(status_fd, json.dumps(_status(status)).encode())
    finally:
        os._exit(0)


def _runner_start(fds: list[int], fresh: bool) -> None:
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
        Runner(fresh).serve()
    except BaseException:  # noqa: BLE001  the runner's own failure: logged to the capture, exit 1
        traceback.print_exc()
        code = 1
    os._exit(code)


# ---------------------------------------------------------------------------------------------
# runner


class Runner:
    """Executes one solution for the judge. Everything here is untrusted once the solution has
    been loaded: the judge believes nothing it says except as a value to compare."""

    def __init__(self, fresh: bool = False) -> None:
        self.fresh = fresh
        self.namespace: dict[str, Any] = {}
        self.helpers: dict[str, type] = {}
        self.function: Any = None
        self.load: dict[str, Any] = {}

    def send(self, message: dict[str, Any]) -> None:
        value = message.get("ok")
        if type(value) is dict and len(value["nodes"]) <= SPLICE_NODES:
            long = [(node, 1) for node in value["nodes"]
                    if node[0] in codec.SEQUENCE_TAGS and type(node[1]) is str and len(node[1]) >= SPLICE_MIN]
            if long:
                protocol.write_data(FD_OUT, protocol.dumps_spliced(message, long))
                return
        protocol.write_message(FD_OUT, message)

    def serve(self) -> None:
        self.load = protocol.read_message(FD_IN)
        workdir = self.load["workdir"]
        if self.fresh and fresh_world(workdir):
            remember_clean(workdir)
        else:
            os.makedirs(workdir, exist_ok=True)
            os.chdir(workdir)
        apply_limits(self.load["limits"])
        if self.load["mode"] != "stdio":  # a stdio program runs in a fork of its own, filtered there
            seccomp.install()  # memfd_create and shmget fail: memory no process is charged for
        os.environ.clear()
        os.environ.update({"TMPDIR": workdir, "HOME": workdir, "PATH": "/usr/bin:/bin"})
        sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
        if self.load["mode"] == "stdio":
            self.serve_stdio()
        else:
            self.serve_function()

    def fresh_test(self, full: bool | None = None) -> None:
        """In a per-test fork: a world no earlier test can reach, and a hard CPU limit. New
        mount and IPC namespaces with fresh tmpfs when `full` (None: when `world_touched` says
        an earlier test or the load left something), else the runner's clean ones (and a new
        IPC namespace where IPC objects cannot be listed). Capabilities are dropped either
        way, so the test can neither unmount nor mount over the shared ones."""
        if self.fresh:
            workdir = self.load["workdir"]
            if world_touched() if full is None else full:
                fresh_world(workdir, per_test=True)
            else:
                if not world.ipc_listed:
                    libc_handle().unshare(CLONE_NEWIPC)
                drop_capabilities()
        set_cpu_limit(self.load["limits"]["cpu_s"])

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
        try:
            exec(compiled, self.namespace)
        except BaseException as exc:  # noqa: BLE001  SystemExit too: a solution that exits at import fails
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
                    self.send(self._call(call))
            elif op in ("call", "opaque") and per_test:
                self._test_forked(message)
            elif op in ("call", "opaque"):
                self.send(self._call(message) if op == "call" else self._opaque(message))
            elif op != "done":
                return

    def _batch_forked(self, calls: list[dict[str, Any]]) -> None:
        """per_test, calls known ahead: one fork per call, forked ahead. While one child
        answers, the next is already forked (and has evaluated the entry point) and waits at
        its gate, so fork costs overlap with work. After each child, report how it ended."""
        child, gate = self._fork_gated(calls[0], None)
        for index in range(len(calls)):
            os.write(gate, b"x")
            os.close(gate)
            # forked while this test runs, it shares the world; if the test leaves anything
            # there, it is sent away unused and a child with a fresh world of its own replaces it
            following = self._fork_gated(calls[index + 1], False) if index + 1 < len(calls) else None
            _pid, status = os.waitpid(child, 0)
            self.send({"test": calls[index]["test"], "exited": _status(status)})
            if following:
                child, gate = following
                if self.fresh and world_touched():
                    os.close(gate)  # EOF at the gate: it exits without running
                    os.waitpid(child, 0)
                    child, gate = self._fork_gated(calls[index + 1], True)

    def _fork_gated(self, call: dict[str, Any], full: bool | None) -> tuple[int, int]:
        gate_r, gate_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.close(gate_w)
                self.fresh_test(full)  # waiting at the gate costs no CPU
                self.function = self._entry_point()
                if os.read(gate_r, 1) == b"x":  # else the runner is gone
                    self.send(self._call(call))
            except BaseException:  # noqa: BLE001  the fork's exit status says it failed
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
                self.fresh_test()
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
            except BaseException:  # noqa: BLE001  the fork's exit status says it failed
                code = 3
            finally:
                _exit_flushed(code)
        _pid, status = os.waitpid(pid, 0)
        self.send({"test": first["test"], "exited": _status(status)})

    def _entry_point(self) -> Any:
        try:
            return eval(self.load["entry_point"], self.namespace)
        except BaseException as exc:  # noqa: BLE001  reported on the first call
            return _Broken(exc)

    def _call(self, message: dict[str, Any]) -> dict[str, Any]:
        test = message["test"]
        function = self.function
        if isinstance(function, _Broken):
            return _raised(test, function.exc)
        try:
            args = codec.decode(message["args"], self.helpers)
            kwargs = codec.decode(message["kwargs"], self.helpers)
        except codec.DecodeError as exc:
            return {"test": test, "raise": "DecodeError", "detail": str(exc)}
        started = time.perf_counter()
        try:
            value = function(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001  the solution's exception is its answer
            return _raised(test, exc)
        elapsed = time.perf_counter() - started
        try:
            return {"test": test, "ok": codec.encode(value, self.helpers), "time_s": elapsed}
        except codec.TooLarge as exc:
            return {"test": test, "raise": "TooLarge", "detail": f"the returned value is over the judge's budget: {exc}"}
        except codec.EncodeError as exc:
            return {"test": test, "unencodable": str(exc), "time_s": elapsed}
        except BaseException as exc:  # noqa: BLE001  a rigged __hash__ or __iter__ raising
            return _raised(test, exc)

    def _opaque(self, message: dict[str, Any]) -> dict[str, Any]:
        """A test the judge cannot run itself: the assert runs here, and says pass or fail."""
        namespace = dict(self.namespace)
        namespace[message["candidate"]] = self.function
        try:
            exec(compile(message["source"], "<test>", "exec"), namespace)
        except AssertionError:
            return {"test": message["test"], "passed": False}
        except BaseException as exc:  # noqa: BLE001  the solution's exception is its answer
            return _raised(message["test"], exc)
        return {"test": message["test"], "passed": True}

    # -- stdio tests -----------------------------------------------------------------------

    def serve_stdio(self) -> None:
        """Each test: a fork runs the program with stdin and stdout on memory files (no path a
        program could replace), and stdout is read back up to the file size limit."""
        load = self.load
        try:
            compiled = compile(load["preamble"] + "\n" + load["code"], "<solution>", "exec")
        except (SyntaxError, ValueError) as exc:
            self.send({"loaded": False, "verdict": "syntax_error", "detail": _describe(exc)})
            return
        self.send({"loaded": True})
        limit = int(load["limits"]["file_size_mb"]) * 1024 * 1024
        while True:
            message = protocol.read_message(FD_IN)
            if message.get("op") != "stdio":
                return
            stdin = os.memfd_create("stdin")
            stdout = os.memfd_create("stdout")
            data = message["stdin"].encode("utf-8", "surrogateescape")
            while data:
                data = data[os.write(stdin, data):]
            os.lseek(stdin, 0, os.SEEK_SET)
            pid = os.fork()
            if pid == 0:
                self._run_program(compiled, stdin, stdout)
            os.close(stdin)
            _pid, status = os.waitpid(pid, 0)
            out = os.pread(stdout, limit + 1, 0)
            os.close(stdout)
            # base64: a program's output holds brackets and commas, which the judge counts
            # (and refuses in bulk) before parsing a frame
            self.send({"test": message["test"], "exited": _status(status), "stdout": base64.b64encode(out).decode("ascii")})

    def _run_program(self, compiled: Any, stdin: int, stdout: int) -> None:
        code = 0
        try:
            self.fresh_test()
            seccomp.install()  # after the runner made this test's memory files
            os.dup2(stdin, 0)
            os.dup2(stdout, 1)
            os.close(stdin)
            os.close(stdout)
            sys.stdin = open(0, encoding="utf-8", errors="surrogateescape", closefd=False)
            sys.stdout = open(1, "w", encoding="utf-8", errors="surrogateescape", closefd=False)
            try:
                exec(compiled, new_module("__main__"))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except MemoryError:
                code = 137
            except BaseException:  # noqa: BLE001  the program failed: exit status 1, traceback to stderr
                traceback.print_exc(file=sys.__stderr__)
                code = 1
        finally:
            try:
                sys.stdout.flush()
            except BaseException:  # noqa: BLE001  a failed flush fails the program
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


def _raised(test: int, exc: BaseException) -> dict[str, Any]:
    return {"test": test, "raise": type(exc).__name__, "detail": _describe(exc)}


def _status(status: int) -> dict[str, Any]:
    if os.WIFSIGNALED(status):
        return {"signal": os.WTERMSIG(status)}
    return {"code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1}
