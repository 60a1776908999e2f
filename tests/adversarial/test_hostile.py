"""The adversarial suite: hostile solutions get the verdict they must get, and afterwards the
host and the pool are unharmed (no judge restarted, nothing left running, no file written)."""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.backends.base import JUDGE_DIR
from sandbox.pool import Job, Pool
from sandbox.problem import Limits, Problem, Test

from ..conftest import BACKENDS, backend_or_fail, missing
from .cases import CASES, Case

SECRET = "QRPO-SECRET-" + secrets.token_hex(16)
LIMITS = Limits(cpu_s=1.0, wall_s=2.0, memory_mb=512, solution_s=20.0)
PREAMBLE = '''
from typing import *
class ListNode:
    def __init__(self, val=0, next=None):
        self.val = val
        self.next = next
def is_same_list(a, b):
    while a and b:
        if a.val != b.val: return False
        a, b = a.next, b.next
    return a is None and b is None
'''
ADD = Problem(
    task_id="add",
    prompt="Add two integers.",
    preamble=PREAMBLE,
    entry_point="Solution().add",
    tests=tuple(Test("function", f"assert candidate({a}, {b}) == {a + b}") for a, b in [(1, 2), (40, 2), (-5, 5)]),
    limits=LIMITS,
)
ORACLE = Problem(
    task_id="oracle",
    prompt="Return the secret.",
    preamble=PREAMBLE,
    entry_point="Solution().answer",
    tests=(Test("function", f"assert candidate() == {SECRET!r}"),),
    limits=LIMITS,
)
GOOD = "class Solution:\n    def add(self, a, b):\n        return a + b\n"
PWNED = ["/etc/qrpo-pwned", "/usr/qrpo-pwned", str(Path.home() / "qrpo-pwned"), "/root/qrpo-pwned", str(JUDGE_DIR / "pwned.py")]
PROCESS_EXCUSED = sorted(c.name for c in CASES if c.container_only)


def descendants(roots: list[int]) -> set[int]:
    """Every live process below `roots` (the pool's judges). The zygote is a child subreaper,
    so a solution's double-forked daemons stay in this tree."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def idle_family(pool: Pool) -> set[int]:
    """What a pool at rest runs below its judges: wrappers, the judge, its zygote."""
    return descendants([w.pid for w in pool.workers])


@pytest.fixture(scope="module", params=BACKENDS)
def pool(request: pytest.FixtureRequest) -> Iterator[Pool]:
    name = backend_or_fail(request.param)
    with Pool(name, workers=2, max_attempts=2) as pool:
        yield pool
    assert pool.restarts == 0, f"hostile solutions restarted {pool.restarts} judge(s) on {name}"


def grade_one(pool: Pool, problem: Problem, code: str):
    return next(pool.grade(iter([Job(0, problem, code, "per_test")])))


def test_the_process_backend_is_excused_only_from_container_items() -> None:
    assert PROCESS_EXCUSED == sorted(
        ["steal_from_judge_memory", "write_outside_tmp", "fill_tmp", "network_access", "host_environment_and_home"]
    )


def test_there_are_at_least_30_hostile_solutions() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_solution(pool: Pool, case: Case, monkeypatch: pytest.MonkeyPatch, tmp_path_factory) -> None:
    if case.container_only and pool.backend.name == "process":
        return  # excused by name: see PROCESS_EXCUSED
    if case.name.startswith("fork_bomb") and os.geteuid() == 0:
        missing("root is exempt from RLIMIT_NPROC: run the fork bombs as an unprivileged user (./run test does)")
    listener = None
    code = case.code
    if case.marker == "network":
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        code = code.replace("PORT", str(listener.getsockname()[1]))
    code = code.replace("HOST_HOME", str(Path.home())).replace("JUDGE_DIR", str(JUDGE_DIR))
    if case.marker == "host-marker":
        marker = Path.home() / ".qrpo-host-marker"
        marker.write_text("host")
        monkeypatch.setenv("QRPO_HOST_MARKER_X", "1")
    problem = ORACLE if case.problem == "oracle" else ADD
    workers_before = sorted(w.pid for w in pool.workers)
    family_before = idle_family(pool)
    result = grade_one(pool, problem, code)
    verdict = result.verdict.value if result.verdict else None
    details = [t.detail for t in result.tests]
    assert verdict in case.expect, f"{case.name}: got {verdict} ({details}), expected one of {sorted(case.expect)}"
    if case.problem == "oracle":
        assert result.passed == 0, "a hostile solution recovered the secret expected value"
    assert all(t.trusted for t in result.tests), "hostile tests must be judged in the trusted process"

    # The pool is unharmed: same judges, still grading correctly.
    assert sorted(w.pid for w in pool.workers) == workers_before, "a judge was replaced"
    assert pool.restarts == 0
    after = grade_one(pool, ADD, GOOD)
    assert after.pass_rate == 1.0, f"pool broken after {case.name}: {after.tests}"

    # The host is unharmed: nothing left running, nothing written, nothing reached.
    deadline = time.monotonic() + 3  # an intermediate may still be exiting after it reported
    while (left := idle_family(pool) - family_before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"processes started by the solution outlived grading: {sorted(left)}"
    if case.marker == "pwned-files":
        assert not [p for p in PWNED if os.path.exists(p)]
    if case.marker == "tmp-files":
        assert not [p for p in os.listdir("/tmp") if p.startswith("qrpo-fill-")]
    if case.marker == "host-marker":
        (Path.home() / ".qrpo-host-marker").unlink()
    if listener is not None:
        with pytest.raises(BlockingIOError):
            listener.accept()
        listener.close()
