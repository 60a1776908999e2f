"""Nothing lost on Ctrl-C or kill -9: a local `sandbox grade` of 2,000 solutions is interrupted with
SIGINT, then with SIGKILL, and rerun; the output equals an uninterrupted run row by row, rows
recorded before an interruption are never graded again, and only the solutions being graded when
it came (one a judge, or a few a judge for kill -9) run twice. Every 97th solution times out:
finished rows must not wait behind it to be recorded.

Gradings are counted for real: each solution appends its row number to a file outside the sandbox
when it is loaded (the process backend lets it write to the home directory; /tmp is private to each
solution), so the count is what the judges ran, not what the CLI says it did.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import REPO

N = 2000
WORKERS = 2
UMASK = 0o027


@pytest.fixture
def counter() -> Iterator[Path]:
    """A file the solutions can append to: under the home directory, which the process backend shares."""
    folder = Path(tempfile.mkdtemp(prefix="qrpo-test-gradings-", dir=Path.home()))
    yield folder / "gradings.log"
    shutil.rmtree(folder, ignore_errors=True)


def make_inputs(tmp: Path, counter: Path, n: int = N) -> tuple[Path, Path]:
    problem = {"task_id": "add", "prompt": "", "entry_point": "add",
               "tests": [{"kind": "function", "source": "assert candidate(1, 2) == 3"},
                         {"kind": "function", "source": "assert candidate(5, 5) == 10"}]}
    problems = tmp / "problems.jsonl"
    problems.write_text(json.dumps(problem) + "\n")
    completions = tmp / "completions.jsonl"
    with completions.open("w") as f:
        for i in range(n):
            bodies = ["return a - b", "return a + b", "return a * 2 if a == b else a + b"]
            body = bodies[i % 3] if i % 97 else "while a == 5: pass\n    return a + b"  # the last test times out
            code = f"open({str(counter)!r}, 'a').write('{i}\\n')\ndef add(a, b):\n    {body}\n"
            f.write(json.dumps({"task_id": "add", "code": code}) + "\n")
    return problems, completions


def command(problems: Path, completions: Path, output: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sandbox.cli", "grade", "-p", str(problems), "-c", str(completions), "-o", str(output),
            "--backend", "process", "--workers", str(WORKERS), "--granularity", "per_solution", "--no-progress",
            "--wall", "1", "--cpu", "0.5", *extra]


def env() -> dict[str, str]:
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environment.get("PYTHONPATH")]))
    return environment


def as_from_a_terminal() -> None:
    """The child as a terminal starts it: our umask, and SIGINT at its default. A test run started in the
    background of a non-interactive shell (`cmd &`) inherits SIGINT ignored, and Python then installs no
    KeyboardInterrupt handler: Ctrl-C would be a no-op (as it should be for `nohup sandbox grade &`)."""
    os.umask(UMASK)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(argv, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=as_from_a_terminal)


def finish(argv: list[str]) -> subprocess.CompletedProcess:
    proc = start(argv)
    stdout, stderr = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def recorded(output: Path) -> int:
    """Rows in OUTPUT.partial (whole lines after the header)."""
    partial = output.with_name(output.name + ".partial")
    if not partial.exists():
        return 0
    data = partial.read_bytes()
    return max(data.count(b"\n") - 1, 0)


def recorded_rows(output: Path) -> set[int]:
    """The row indexes OUTPUT.partial holds."""
    lines = output.with_name(output.name + ".partial").read_text(encoding="utf-8").split("\n")[1:-1]
    return {json.loads(line)["index"] for line in lines}


def wait_for(proc: subprocess.Popen, output: Path, rows: int, timeout: float = 400) -> None:
    deadline = time.monotonic() + timeout
    while recorded(output) < rows:
        assert proc.poll() is None, f"the grade ended early (exit {proc.returncode}): {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, f"only {recorded(output)} rows after {timeout} s"
        time.sleep(0.02)


def gradings(counter: Path) -> list[int]:
    return [int(line) for line in counter.read_text().split()]


def comparable(path: Path) -> list[dict]:
    """The rows without their timings (the only fields that differ between two runs): the time
    taken, and a timeout's detail (the CPU seconds measured when it was stopped, or the wall clock
    when the machine was too busy to give it its CPU time)."""
    rows = []
    for line in path.read_text(encoding="utf-8").split("\n")[:-1]:
        row = json.loads(line)
        row.pop("time_s")
        for test in row["tests"]:
            test.pop("time_s")
            if test["verdict"] == "timeout":
                test.pop("detail")
        rows.append(row)
    return rows


def test_sigint_and_sigkill_then_rerun_give_the_uninterrupted_output_and_grade_no_recorded_row_twice(tmp_path, counter):
    problems, completions = make_inputs(tmp_path, counter)

    reference = tmp_path / "reference" / "graded.jsonl"
    proc = finish(command(problems, completions, reference))
    assert proc.returncode == 0, proc.stderr[-2000:]
    once = gradings(counter)
    assert sorted(once) == list(range(N))  # the counter is real: one line per grading
    counter.unlink()
    expected = comparable(reference)
    verdicts = collections.Counter(row["verdict"] for row in expected)
    assert verdicts["passed"] > 0 and verdicts["wrong_answer"] > 0 and verdicts["timeout"] > 0, verdicts

    output = tmp_path / "run" / "graded.jsonl"
    partial = output.with_name("graded.jsonl.partial")
    argv = command(problems, completions, output)

    # 1. Ctrl-C in the middle
    first = start(argv)
    wait_for(first, output, 300)
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=60)
    assert first.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    k1 = recorded(output)
    assert 300 <= k1 < N
    before_sigint = recorded_rows(output)
    assert len(before_sigint) == k1
    assert f"interrupted: {k1} of {N} rows are saved in {partial}; rerun the same command" in stderr
    assert not output.exists()
    assert stat.S_IMODE(partial.stat().st_mode) == 0o666 & ~UMASK
    l1 = len(gradings(counter))

    # a different job (other options) must not resume it, nor touch it
    other = finish(command(problems, completions, output, "--memory", "512"))
    assert other.returncode == 2
    assert "holds an interrupted grade of other inputs or options" in other.stderr and "Traceback" not in other.stderr
    assert recorded(output) == k1 and len(gradings(counter)) == l1

    # 2. kill -9 in the middle of the resumed run
    second = start(argv)
    wait_for(second, output, k1 + 400)
    second.kill()
    second.wait(timeout=60)
    k2 = recorded(output)
    assert k1 + 400 <= k2 < N
    before_sigkill = recorded_rows(output)
    time.sleep(1.5)  # judges the killed CLI left behind die with it (PR_SET_PDEATHSIG); let in-flight ones finish
    l2 = len(gradings(counter))

    # 3. the rerun finishes
    third = finish(argv)
    assert third.returncode == 0, third.stderr[-2000:]
    assert f"resuming: {k2} of {N} rows were graded before" in third.stderr
    assert not partial.exists()
    assert stat.S_IMODE(output.stat().st_mode) == 0o666 & ~UMASK
    assert comparable(output) == expected  # row by row, every field but the timings

    ran = gradings(counter)
    counts = collections.Counter(ran)
    assert sorted(counts) == list(range(N))
    assert not set(ran[l1:l2]) & before_sigint, "a row recorded before Ctrl-C was graded again"
    assert not set(ran[l2:]) & before_sigkill, "a row recorded before kill -9 was graded again"
    twice = sorted(i for i, c in counts.items() if c > 1)
    # only rows in flight at an interruption run again: the one each judge was grading at Ctrl-C (every
    # finished one is recorded first), and at kill -9 those plus the few finished in the last instant
    # that the CLI had not written yet
    again_after_sigint = set(ran[:l1]) & set(ran[l1:])
    assert len(again_after_sigint) <= WORKERS, sorted(again_after_sigint)
    assert max(counts.values()) <= 3 and len(twice) <= 2 * WORKERS + 4, twice
    print(f"interrupted at {k1} (SIGINT) and {k2} (SIGKILL) of {N}; gradings {len(ran)}; graded twice {len(twice)}: {twice}")


def test_sigterm_stops_like_ctrl_c_and_the_rerun_finishes(tmp_path, counter):
    """A job's time limit or `kill` sends SIGTERM: the rows so far are kept, as with Ctrl-C. It comes
    while row 194 (a solution that times out) is being graded and the other judge has gone on: the
    rows it finished meanwhile are recorded too, and only the two in flight run again."""
    n = 400
    problems, completions = make_inputs(tmp_path, counter, n)
    output = tmp_path / "graded.jsonl"
    argv = command(problems, completions, output)
    first = start(argv)
    wait_for(first, output, 100)
    deadline = time.monotonic() + 300
    while 194 not in gradings(counter):  # the slow one has started (it runs ~0.5 s)
        assert first.poll() is None and time.monotonic() < deadline, "row 194 never started"
        time.sleep(0.01)
    time.sleep(0.2)
    first.terminate()
    _, stderr = first.communicate(timeout=60)
    assert first.returncode == 130, stderr[-2000:]
    assert "rerun the same command to grade the rest" in stderr and "Traceback" not in stderr
    k = recorded(output)
    assert 100 <= k < n
    again = finish(argv)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming: {k} of {n} rows were graded before" in again.stderr
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").split("\n")[:-1]]
    expected = ["wrong_answer" if i % 3 == 0 else "passed" for i in range(n)]
    for i in range(0, n, 97):
        expected[i] = "timeout"
    assert [row["verdict"] for row in rows] == expected
    counts = collections.Counter(gradings(counter))
    assert sorted(counts) == list(range(n)) and sum(counts.values()) <= n + WORKERS
