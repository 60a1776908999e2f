"""Grading thousands of solutions leaves nothing behind: processes, Apptainer instances, temp
directories and open files are back to where they started once the pool is closed."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest

from sandbox.pool import Job, Pool
from sandbox.problem import Limits, Problem, Test

from ..conftest import backend_or_fail

PROBLEM = Problem(
    task_id="double",
    prompt="",
    entry_point="double",
    tests=tuple(Test("function", f"assert candidate({i}) == {2 * i}") for i in range(1, 4)),
    limits=Limits(cpu_s=1, wall_s=3, solution_s=20),
)
SOLUTIONS = [
    "def double(x):\n    return 2 * x\n",
    "def double(x):\n    return x + x + 0\n",
    "def double(x):\n    return x\n",  # wrong
    "import os\ndef double(x):\n    open(f'/tmp/leak-{os.getpid()}', 'w').write('x')\n    return 2 * x\n",
]


def my_processes() -> set[int]:
    """Live processes of this user (zombies and exiting processes do not count)."""
    uid = os.getuid()
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid != uid:
                    continue
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state not in ("Z", "X"):
                out.add(int(entry))
    return out


def temp_entries() -> set[str]:
    """Entries of this user in the temp folder (other users' work on a shared /tmp is not ours)."""
    uid, folder = os.getuid(), tempfile.gettempdir()
    out = set()
    for name in os.listdir(folder):
        try:
            if os.lstat(os.path.join(folder, name)).st_uid == uid:
                out.add(name)
        except FileNotFoundError:
            continue
    return out


def apptainer_instances() -> list[str]:
    import subprocess

    from sandbox.backends.apptainer import find_apptainer

    binary = find_apptainer()
    if not binary:
        return []
    out = subprocess.run([binary, "-s", "instance", "list", "--json"], capture_output=True, text=True, timeout=60)
    return [line for line in out.stdout.splitlines() if '"instance"' in line]


@pytest.mark.slow
@pytest.mark.parametrize("name,count", [("apptainer", 2000), ("process", 400)])
def test_grading_leaves_nothing_behind(name: str, count: int) -> None:
    backend_or_fail(name)
    before = (my_processes(), temp_entries(), apptainer_instances(), len(os.listdir("/proc/self/fd")))
    jobs = (Job(i, PROBLEM, SOLUTIONS[i % len(SOLUTIONS)], "per_test") for i in range(count))
    with Pool(name, workers=2) as pool:
        results = list(pool.grade(jobs, total=count))
        assert pool.restarts == 0
    assert len(results) == count
    wrong = [
        (i, r.pass_rate, [t.detail for t in r.tests][:1])
        for i, r in enumerate(results)
        if r.pass_rate != (0.0 if i % 4 == 2 else 1.0)
    ]
    assert not wrong, f"{len(wrong)} results differ, first: {wrong[:3]}"
    deadline = time.monotonic() + 10  # killed judges and zygotes may still be exiting
    while (new := my_processes() - before[0]) and time.monotonic() < deadline:
        time.sleep(0.1)
    after = (my_processes(), temp_entries(), apptainer_instances(), len(os.listdir("/proc/self/fd")))
    leaked_processes = {p: Path(f"/proc/{p}/cmdline").read_bytes()[:120] for p in new if Path(f"/proc/{p}").exists()}
    assert not leaked_processes, f"processes left behind: {leaked_processes}"
    new_temp = {t for t in after[1] - before[1] if not t.startswith("pytest-")}
    if name == "process":
        # The process backend does not isolate /tmp: the solution's own files stay (documented);
        # the judge's work directories must not.
        new_temp = {t for t in new_temp if not t.startswith("leak-")}
    assert not new_temp, f"temp entries left behind: {sorted(new_temp)[:10]}"
    assert after[2] == before[2], "apptainer instances left behind"
    assert after[3] == before[3], "file descriptors leaked in the grading process"


def test_the_judge_frees_the_problems_it_evicts_from_its_frozen_cache(monkeypatch) -> None:
    """The judge keeps its prepared problems in the collector's permanent generation (so full
    collections do not walk their expected values); a problem evicted from the cache must still
    be freed: its namespace (and the data in it) at once, its remaining cycles (a class is one)
    at the next of the full collections that come once per CACHED_PROBLEMS evictions."""
    import gc
    import weakref

    from sandbox.judge import server

    monkeypatch.setattr(server, "CACHED_PROBLEMS", 2)
    judge = server.Judge()
    functions, classes = [], []
    try:
        for i in range(6):
            problem = Problem(task_id=f"p{i}", prompt="", entry_point="double", limits=PROBLEM.limits,
                              test_setup=f"class Helper{i}:\n    pass\ndef helper_{i}(x):\n    return 2 * x\n",
                              tests=(Test("function", f"assert candidate({i}) == helper_{i}({i})"),))
            result = judge.grade({"id": i, "problem": problem.to_dict(), "code": SOLUTIONS[0], "granularity": "per_solution"})
            assert [t["verdict"] for t in result["tests"]] == ["passed"], result
            namespace = judge.cache[server.problem_key(problem.to_dict())].namespace
            functions.append(weakref.ref(namespace[f"helper_{i}"]))
            classes.append(weakref.ref(namespace[f"Helper{i}"]))
            del namespace
            assert gc.get_freeze_count() > 0  # the cache is frozen
            assert [ref() is None for ref in functions] == [j < i - 1 for j in range(i + 1)]  # evicted: freed at once
        assert len(judge.cache) == 2
        gc.collect()
        assert [ref() is None for ref in classes] == [True] * 4 + [False] * 2
    finally:
        judge.close()
        gc.unfreeze()
