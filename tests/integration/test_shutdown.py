"""Clean shutdown: after Ctrl-C and after the grading process is killed outright, no judge,
container, runner or solution process is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import REPO

SCRIPT = r"""
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even if started with SIGINT ignored
sys.path.insert(0, {repo!r})
from sandbox.pool import Job, Pool
from sandbox.problem import Limits, Problem, Test
problem = Problem(task_id="slow", prompt="", entry_point="f", tests=(Test("function", "assert candidate(1) == 1"),),
                  limits=Limits(cpu_s=30, wall_s=60, solution_s=120))
code = "import os, time\nif os.fork() == 0:\n    time.sleep(600)\ndef f(x):\n    time.sleep(600)\n    return x\n"
with Pool({backend!r}, workers=2) as pool:
    print("WORKERS", " ".join(str(w.pid) for w in pool.workers), flush=True)
    for result in pool.grade(Job(i, problem, code, "per_test") for i in range(8)):
        pass
"""


def tree(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.add(pid)
    return out


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_nothing_outlives_the_grading_process(backend: str, how: signal.Signals) -> None:
    process = subprocess.Popen([sys.executable, "-c", SCRIPT.format(repo=str(REPO), backend=backend)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("WORKERS"), line
    time.sleep(3)  # solutions are now sleeping inside runners, with a forked child each
    family = tree(process.pid)
    assert len(family) >= 6, f"expected judges, zygotes, runners and solution children, found {len(family)}"
    os.kill(process.pid, how)
    process.wait(timeout=60)
    deadline = time.monotonic() + 20
    while alive(family) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = {pid: Path(f"/proc/{pid}/cmdline").read_bytes()[:100] for pid in alive(family) if Path(f"/proc/{pid}").exists()}
    assert not left, f"left behind after {how.name}: {left}"
