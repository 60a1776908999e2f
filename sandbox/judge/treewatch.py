"""Limits for a runner's whole process tree, where no cgroup is delegated to us.

rlimits bind one process at a time: three 450 MB children pass a 1 GiB RLIMIT_AS, and a
solution can move its own soft CPU limit. While the judge waits for an answer it samples the
runner's tree every `INTERVAL` seconds (from /proc, outside the solution's reach: the runner's
PID namespace cannot name the judge) and ends the solution when the tree together holds more
resident memory than `memory_mb`, or has used more CPU time during the current test than
`cpu_s`. Memory that no process holds resident (memory files, System V segments) is refused by
the runner's seccomp filter instead (`seccomp`). Not seen: shared pages a child inherited after
its parent filled and unmapped them (a child's page table is filled lazily, so they are in
nobody's RSS), bounded by `processes` x RLIMIT_AS while the solution lives. Processes are found
through /proc/PID/task/TID/children, so orphans (reparented to the runner, the PID 1 of its
namespace) stay counted. A sample costs ~50 us per process.
"""

from __future__ import annotations

import os
import time

from .verdicts import MEMORY, TIMEOUT

INTERVAL = 0.05
TICKS = os.sysconf("SC_CLK_TCK")
MAX_PROCESSES = 4096  # a tree bigger than this is a fork bomb: RLIMIT_NPROC ends it first


class OverLimit(Exception):
    """The runner's tree went over a limit; `verdict` is the solution's."""

    def __init__(self, verdict: str, detail: str) -> None:
        super().__init__(detail)
        self.verdict = verdict


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(4096).decode("ascii", "replace")
    except OSError:
        return ""


def tree(root: int) -> list[int]:
    out = [root]
    i = 0
    while i < len(out) and len(out) < MAX_PROCESSES:
        pid = out[i]
        i += 1
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            out.extend(int(c) for c in _read(f"/proc/{pid}/task/{tid}/children").split())
    return out


def resident(pid: int) -> int:
    """Bytes of anonymous and shared-memory pages `pid` has resident (RssAnon + RssShmem of
    /proc/PID/status, readable for a non-dumpable process too). Shared memory counts: children
    that each map and fill MAP_SHARED memory held 1.3 GB under a 512 MiB limit while only
    private pages (statm's resident - shared) were counted. File pages (the interpreter's
    libraries) do not."""
    total = 0
    for line in _read(f"/proc/{pid}/status").splitlines():
        if line.startswith(("RssAnon:", "RssShmem:")):
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                total += int(fields[1]) * 1024
    return total


def usage(root: int) -> tuple[int, float]:
    """(resident bytes, CPU seconds) of the tree under `root`; the CPU time of reaped children
    is included through their parent's cutime/cstime."""
    memory = 0
    cpu = 0
    for pid in tree(root):
        memory += resident(pid)
        stat = _read(f"/proc/{pid}/stat")
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) >= 15:
            cpu += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return memory, cpu / TICKS


class TreeWatch:
    def __init__(self, memory_mb: int, cpu_s: float | None = None) -> None:
        self.memory = memory_mb * 1024 * 1024
        self.cpu_s = cpu_s
        self.root = 0
        self.next = 0.0
        self.cpu_at_start: float | None = None

    def start(self, root: int) -> None:
        self.root = root
        self.cpu_at_start = None
        self.next = time.monotonic() + INTERVAL

    def begin_test(self) -> None:
        """CPU is limited per test: counted from the first sample of the test (taken after
        INTERVAL), so a test answered sooner costs no sample at all."""
        self.cpu_at_start = None
        self.next = time.monotonic() + INTERVAL

    def check(self) -> None:
        """Called by the reader while it waits; samples at most every INTERVAL."""
        now = time.monotonic()
        if not self.root or now < self.next:
            return
        self.next = now + INTERVAL
        memory, cpu = usage(self.root)
        if memory > self.memory:
            raise OverLimit(MEMORY, f"the solution's processes together held {memory >> 20} MiB, "
                                    f"over the limit of {self.memory >> 20} MiB")
        if self.cpu_at_start is None:
            self.cpu_at_start = cpu
        elif self.cpu_s is not None and cpu - self.cpu_at_start > self.cpu_s + 0.1:
            raise OverLimit(TIMEOUT, f"the solution's processes used {cpu - self.cpu_at_start:.2f} s of CPU, "
                                     f"over the limit of {self.cpu_s:g} s")
