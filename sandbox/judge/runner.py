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
import ctypes
import functools
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
CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 2, 4, 1 << 14, 1 << 18
FRESH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")  # every place a solution can write, plus its workdir
FRESH_SIZE_MB = 64  # each fresh tmpfs; memory in it counts against the machine, not the rlimits
MQUEUE_DIR = "/tmp/.mqueue"  # the runner's POSIX message queues, listed (see world_touched)
ipc_listed = False  # whether world_touched sees IPC objects too (else every test gets its own IPC namespace)
clean: dict[str, tuple[int, int]] = {}  # (size, mtime) of each writable place in the fresh world
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


@functools.cache
def _libc() -> Any:
    """One handle: each new CDLL builds its function pointers again (~10 us a call)."""
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


def _enter_namespaces(fresh_world: bool) -> bool:
    flags = CLONE_NEWUSER | CLONE_NEWPID | (CLONE_NEWNS | CLONE_NEWIPC if fresh_world else 0)
    uid, gid = os.getuid(), os.getgid()
    if _libc().unshare(flags) != 0:
        return False
    _map_ids(uid, gid)
    if fresh_world:
        _libc().mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None)  # nothing propagates out
    return True


def _map_ids(uid: int, gid: int) -> None:
    """Keep our own uid and gid inside a new user namespace (files we create stay ours). A
    non-dumpable process cannot write its own maps, so it is dumpable only meanwhile."""
    set_dumpable(True)
    for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", f"{uid} {uid} 1"),
                       ("/proc/self/gid_map", f"{gid} {gid} 1")):
        try:
            with open(path, "w") as f:
                f.write(text)
        except OSError:
            pass
    set_dumpable(False)


def fresh_world(workdir: str, per_test: bool = False) -> bool:
    """A fresh, empty tmpfs on every writable place and on the workdir, in a mount namespace
    of our own (and a fresh IPC namespace: SysV shared memory, semaphores, POSIX message
    queues), so nothing an earlier solution or test left is visible. Per solution, the runner
    then moves into a nested user namespace, where these mounts are locked: the solution cannot
    unmount them to reach what is below. Per test (a fork of the loaded solution), capabilities
    are dropped after mounting, for the same reason. Returns False where the kernel refuses
    (then `containment` in the result says so and only the workdir is recreated)."""
    libc = _libc()
    if per_test and libc.unshare(CLONE_NEWNS | CLONE_NEWIPC) != 0:
        return False
    options = f"size={FRESH_SIZE_MB}m,mode=1777".encode()
    ok = True
    for path in (*FRESH_DIRS, workdir):
        if os.path.isdir(path) and not os.path.islink(path):
            ok = libc.mount(b"tmpfs", path.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options) == 0 and ok
        elif path == workdir:
            os.makedirs(path, exist_ok=True)
    os.chdir(workdir)  # the new mount, not the directory below it
    if per_test:
        _drop_capabilities()
    else:
        global ipc_listed
        try:
            os.mkdir(MQUEUE_DIR, 0o755)
            ipc_listed = ok and libc.mount(b"mqueue", MQUEUE_DIR.encode(), b"mqueue", MS_NOSUID | MS_NODEV, None) == 0
        except OSError:
            ipc_listed = False
        uid, gid = os.getuid(), os.getgid()
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) == 0:
            _map_ids(uid, gid)
            os.chdir(workdir)
    return ok


def remember_clean(workdir: str) -> None:
    """Note how the fresh world looks (before the solution loads), for `world_touched`."""
    clean.clear()
    for path in (*FRESH_DIRS, workdir, *((MQUEUE_DIR,) if ipc_listed else ())):
        try:
            st = os.stat(path)
        except OSError:
            continue  # not a place anyone can write (fresh_world skips it too)
        clean[path] = (st.st_size, st.st_mtime_ns)


def world_touched() -> bool:
    """Whether anything was left in a writable place or in the IPC namespace since
    `remember_clean`. A per-test fork shares the runner's fresh world while nothing is there
    (new mount and IPC namespaces and four mounts cost ~0.4 ms per test, 37 ms for a 100-test
    solution: bench/fresh_world.py); once a test (or the solution's load) leaves anything, every
    later test gets a world of its own. Cheap (~15 us): a tmpfs or mqueue directory's size grows
    with each entry in it, and the kernel counts the SysV objects. True where nothing was noted."""
    if not clean:
        return True
    for path, before in clean.items():
        try:
            st = os.stat(path)
        except OSError:
            return True
        if (st.st_size, st.st_mtime_ns) != before:
            return True
    return ipc_listed and _sysv_objects() != 0


_INFO = (ctypes.c_int * 32)()  # room for struct shm_info, msginfo and seminfo


def _sysv_objects() -> int:
    """SysV shared memory segments, message queues and semaphore sets in this IPC namespace
    (the kernel's in-use counts: SHM_INFO, MSG_INFO, SEM_INFO; ~5 us for the three). -1 if
    the kernel would not say."""
    libc = _libc()
    total = 0
    for call, args, field in ((libc.shmctl, (0, 14), 0), (libc.msgctl, (0, 12), 0), (libc.semctl, (0, 0, 19), 7)):
        if call(*args, _INFO) < 0:
            return -1
        total += _INFO[field]
    return total


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _drop_capabilities() -> None:
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    _libc().capset(ctypes.byref(header), data)


def apply_limits(limits: dict[str, Any]) -> None:
    """rlimits of the runner, inherited by everything the solution starts."""
    mb = 1024 * 1024
    pairs = [
        (resource.RLIMIT_AS, int(limits["memory_mb"]) * mb),
        (resource.RLIMIT_FSIZE, int(limits["file_size_mb"]) * mb),
        (resource.RLIMIT_NOFILE, int(limits["open_files"])),
        (resource.RLIMIT_NPROC, int(limits["processes"])),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_CPU, int(math.ceil(float(limits["solution_s"])))),  # the whole solution, hard
    ]
    for which, value in pairs:
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            soft, hard = resource.getrlimit(which)
            if hard == resource.RLIM_INFINITY or value < hard:
                resource.setrlimit(which, (value, value if hard == resource.RLIM_INFINITY else hard))


def set_cpu_limit(seconds: float) -> None:
    """In a fresh fork (whose CPU time starts at zero): a hard CPU limit of `seconds`, soft =
    hard, so the solution can neither raise it nor gain from time spent before. Whole seconds
    are the kernel's unit; the judge's tree watch enforces fractions (per_solution)."""
    limit = max(1, int(math.ceil(seconds)))
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (limit, limit))


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
        contained = _enter_namespaces(fresh)
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
                if not ipc_listed:
                    _libc().unshare(CLONE_NEWIPC)
                _drop_capabilities()
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
