"""The runner's world: its namespaces, a fresh tmpfs and IPC namespace per solution (and per test
when an earlier one left anything), dropped capabilities, and its rlimits.

Used only on the untrusted side (`runner`), before and between the solution's tests. The
README's trust model says which guarantee each mechanism gives; bench/fresh_world.py measures
what it costs.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import resource
import signal
from typing import Any

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

@functools.cache
def libc_handle() -> Any:
    """One handle: each new CDLL builds its function pointers again (~10 us a call)."""
    return ctypes.CDLL(None, use_errno=True)


def set_dumpable(flag: bool) -> None:
    """A non-dumpable process cannot be ptraced and its /proc/PID/{mem,fd,environ} are closed to
    other processes of the same user: untrusted code cannot read the judge's memory or steal its
    pipes."""
    libc_handle().prctl(PR_SET_DUMPABLE, int(flag), 0, 0, 0)


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies, so nothing outlives the pool (kill -9
    included): pool -> judge -> zygote -> intermediate -> runner -> everything in its PID ns."""
    parent = os.getppid()
    libc_handle().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def enter_namespaces(fresh_world: bool) -> bool:
    flags = CLONE_NEWUSER | CLONE_NEWPID | (CLONE_NEWNS | CLONE_NEWIPC if fresh_world else 0)
    uid, gid = os.getuid(), os.getgid()
    if libc_handle().unshare(flags) != 0:
        return False
    _map_ids(uid, gid)
    if fresh_world:
        libc_handle().mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None)  # nothing propagates out
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
    libc = libc_handle()
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
        drop_capabilities()
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
    libc = libc_handle()
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


def drop_capabilities() -> None:
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    libc_handle().capset(ctypes.byref(header), data)


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
