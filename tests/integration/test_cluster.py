"""Distributed grading (`sandbox.cluster`) on the real local SLURM cluster, and through
submitit's LocalExecutor. No mocks: jobs are sbatch'ed, cancelled with scancel, and the driver
is SIGKILLed for real.

Needs the cluster of slurm/local-cluster (as root: `slurm/local-cluster/up --state-dir
/var/tmp/qrpo-slurm`, then `. /var/tmp/qrpo-slurm/env.sh` as the user running the tests) and
submitit. Without them the SLURM tests skip (fail under QRPO_REQUIRE_ALL_TESTS=1).

The problem set is tiny on purpose (4 problems, 3 tests each) and every solution variant has a
known pass rate, so each row's expected result is exact. Solutions run in the `process` backend
(fast; the isolation backends are tested elsewhere) except one run that shows `bubblewrap`
passes through to the jobs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from sandbox.api import grade
from sandbox.problem import GradeResult, Limits, Problem, Test

from ..conftest import REPO, backend_or_fail

pytestmark = pytest.mark.slow

N = 2000
LIMITS = Limits(cpu_s=2, wall_s=5, solution_s=30)
PROBLEMS = [
    Problem(task_id=f"affine-{k}", prompt="", entry_point="f", limits=LIMITS,
            tests=tuple(Test("function", f"assert candidate({x}) == {x * (k + 1) + k}") for x in (1, 2, 3)))
    for k in range(4)
]
# (code for problem k, pass rate, first non-passing verdict)
VARIANTS = [
    ("def f(x):\n    return x * {a} + {b}\n", 1.0, "passed"),
    ("def f(x):\n    return x * {a} + {b} + (x == 2)\n", 2 / 3, "wrong_answer"),
    ("def f(x):\n    return x * {a} + {b} + (x >= 2)\n", 1 / 3, "wrong_answer"),
    ("def f(x):\n    return 0\n", 0.0, "wrong_answer"),
    ("def f(x):\n    raise ValueError(x)\n", 0.0, "runtime_error"),
    ("def f(x)\n    return x\n", 0.0, "syntax_error"),
    ("def f(x):\n    return x * {a} + {b}\n", 1.0, "passed"),
]
UNKNOWN_ROW = 777  # a row whose task_id names no problem: an invalid row, graded by nobody
NO_CODE_ROW = 1500  # prose without a code block: no_code


def make_rows(n: int = N) -> list[dict]:
    rows = []
    for i in range(n):
        k, (code, _, _) = i % 4, VARIANTS[(i // 4) % len(VARIANTS)]
        rows.append({"task_id": f"affine-{k}", "code": code.format(a=k + 1, b=k)})
    if n > UNKNOWN_ROW:
        rows[UNKNOWN_ROW] = {"task_id": "no-such-problem", "code": "def f(x):\n    return x\n"}
    if n > NO_CODE_ROW:
        rows[NO_CODE_ROW] = {"task_id": "affine-0", "completion": "I would return x plus one."}
    return rows


ROWS = make_rows()


def expected(i: int) -> tuple[float, str | None]:
    if i == UNKNOWN_ROW:
        return 0.0, None
    if i == NO_CODE_ROW:
        return 0.0, "no_code"
    _, rate, verdict = VARIANTS[(i // 4) % len(VARIANTS)]
    return rate, verdict


def summary(results: list[GradeResult]) -> list[tuple]:
    return [(r.task_id, round(r.pass_rate, 6), [t.verdict.value for t in r.tests], r.error) for r in results]


def assert_expected(results: list[GradeResult], n: int) -> None:
    assert len(results) == n
    got = [(round(r.pass_rate, 6), r.verdict.value if r.verdict else None) for r in results]
    want = [(round(expected(i)[0], 6), expected(i)[1]) for i in range(n)]
    bad = [(i, g, w) for i, (g, w) in enumerate(zip(got, want)) if g != w]
    assert not bad, f"{len(bad)} rows differ from the expected pass rate/verdict, first: {bad[:5]}"


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session")
def reference() -> list[GradeResult]:
    """Local grading of all rows with the same backend: what every distributed run must equal."""
    results = grade(PROBLEMS, ROWS, backend="process", workers=2)
    assert_expected(results, N)
    return results


@pytest.fixture(scope="module")
def slurm_run(slurm, tmp_path_factory):
    """The 2,000-solution run: 8 shards as one job array, graded once for the module."""
    from sandbox.cluster import grade_distributed

    tmp = tmp_path_factory.mktemp("slurm-run")
    output, workdir = tmp / "graded.jsonl", tmp / "run"
    started = time.monotonic()
    results = grade_distributed(PROBLEMS, ROWS, output, executor="slurm", jobs=8, cpus_per_job=1, backend="process",
                                workdir=workdir, time_min=10, progress=False)
    seconds = time.monotonic() - started
    # The driver returns once every result file is there; the last tasks may still be exiting.
    wait_for_accounting([s["job_id"] for s in run_dir(workdir).submissions()])
    return results, output, workdir, seconds


def wait_for_accounting(job_ids: list[str], timeout: float = 60) -> dict[str, str]:
    """sacct states once no job is pending, running or completing any more."""
    deadline = time.monotonic() + timeout
    while True:
        states = sacct_states(job_ids)
        if all(states.get(j) not in (None, "PENDING", "RUNNING", "COMPLETING") for j in job_ids) or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


def run_dir(path: Path):
    from sandbox.cluster import RunDir

    return RunDir(path)


def sacct_states(job_ids: list[str]) -> dict[str, str]:
    bases = sorted({j.split("_")[0] for j in job_ids})
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(bases)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return {line.split("|")[0]: line.split("|")[1].split()[0] for line in out.stdout.splitlines() if "|" in line}


def sacct_job_count(name: str) -> int:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-S", "2000-01-01", "--name", name, "-o", "JobID"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return len(out.stdout.split())


def file_ids(paths: list[Path]) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths}


def cli(*args: str, **kwargs) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.Popen([sys.executable, "-m", "sandbox.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def write_inputs(tmp: Path, rows: list[dict]) -> tuple[Path, Path]:
    problems, completions = tmp / "problems.jsonl", tmp / "completions.jsonl"
    problems.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in PROBLEMS))
    completions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return problems, completions


def read_output(path: Path) -> list[GradeResult]:
    return [GradeResult.from_dict(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------
# (1) 2,000 solutions as one job array, identical to local grading, in input order


def test_slurm_array_matches_local_grading(slurm_run, reference):
    results, output, workdir, seconds = slurm_run
    run = run_dir(workdir)
    assert summary(results) == summary(reference)
    assert_expected(results, N)
    assert summary(read_output(output)) == summary(reference)  # the merged file, in input order
    assert {r.backend for i, r in enumerate(results) if i not in (UNKNOWN_ROW, NO_CODE_ROW)} == {"process"}
    manifest = run.read_manifest()
    assert manifest["count"] == 8 and sum(manifest["shard_rows"]) == N
    submissions = run.submissions()
    assert len(submissions) == 8 and sorted(s["shard"] for s in submissions) == list(range(8))
    arrays = {s["job_id"].split("_")[0] for s in submissions}
    assert len(arrays) == 1, f"the shards went out as several submissions: {submissions}"
    tasks = {s["job_id"] for s in submissions}
    assert len(tasks) == 8 and all("_" in t for t in tasks)  # array tasks 123_0 ... 123_7
    states = sacct_states(sorted(tasks))
    assert all(states.get(t) == "COMPLETED" for t in tasks), states
    for k in range(8):  # each shard's result file names the array task that wrote it
        header = run.result_header(k)
        assert header["rows"] == manifest["shard_rows"][k] and header["job_id"] in tasks
    done = Counter(e["shard"] for e in run.ledger_events() if e["event"] == "done")
    assert done == Counter(range(8))
    print(f"2,000 solutions in 8 array tasks: {seconds:.1f} s")


# ---------------------------------------------------------------------------------------------
# (2) a rerun skips every finished shard: no job is submitted


def test_rerun_skips_finished_shards(slurm_run, reference):
    from sandbox.cluster import grade_distributed

    _, output, workdir, _ = slurm_run
    run = run_dir(workdir)
    results_before = file_ids(run.result_files())
    name = run.job_name(run.read_manifest()["fingerprint"])
    jobs_before = sacct_job_count(name)
    assert jobs_before == 8, f"sacct lists {jobs_before} jobs named {name}"
    submissions_before = len(run.submissions())
    output.unlink()
    started = time.monotonic()
    results = grade_distributed(PROBLEMS, ROWS, output, executor="slurm", jobs=8, cpus_per_job=1, backend="process",
                                workdir=workdir, time_min=10, progress=False)
    assert time.monotonic() - started < 20
    assert summary(results) == summary(reference)
    assert summary(read_output(output)) == summary(reference)
    assert len(run.submissions()) == submissions_before  # the driver submitted nothing
    assert sacct_job_count(name) == jobs_before, "SLURM saw a new job"
    assert file_ids(run.result_files()) == results_before
    assert "nothing to grade" in run.driver_log.read_text()


def test_rerun_with_other_inputs_refuses_the_run_directory(slurm_run):
    from sandbox.cluster import ClusterError, grade_distributed

    _, output, workdir, _ = slurm_run
    changed = list(ROWS)
    changed[5] = {"task_id": "affine-1", "code": "def f(x):\n    return -1\n"}
    with pytest.raises(ClusterError, match="different inputs"):
        grade_distributed(PROBLEMS, changed, output, executor="slurm", jobs=8, backend="process", workdir=workdir, progress=False)
    with pytest.raises(ClusterError, match="different inputs"):  # grading options are part of the inputs too
        grade_distributed(PROBLEMS, ROWS, output, executor="slurm", jobs=8, backend="process", granularity="per_solution",
                          workdir=workdir, progress=False)


# ---------------------------------------------------------------------------------------------
# (3) scancel of array tasks mid-run: the driver resubmits them and the results are right


def test_scancelled_tasks_are_resubmitted(slurm, reference, tmp_path):
    from sandbox.cluster import grade_distributed

    n = 1200  # 300 rows a shard: a task cancelled when it starts cannot finish in SLURM's kill window
    workdir = tmp_path / "run"
    run = run_dir(workdir)
    box: dict = {}

    def drive() -> None:
        try:
            box["results"] = grade_distributed(
                PROBLEMS,
                ROWS[:n],
                tmp_path / "graded.jsonl",
                executor="slurm",
                jobs=4,
                cpus_per_job=1,
                backend="process",
                workdir=workdir,
                time_min=10,
                progress=False,
                lost_after_s=5,
            )
        except BaseException as exc:  # noqa: BLE001 -- reported by the test below
            box["error"] = exc

    driver = threading.Thread(target=drive)
    driver.start()
    cancelled: dict[int, tuple[str, str]] = {}  # shard -> (state when cancelled, job id)
    in_flight: dict[int, str] = {}  # RUNNING tasks cancelled, until their ledger says how they ended
    deadline = time.monotonic() + 120
    while len(cancelled) < 2 and time.monotonic() < deadline and driver.is_alive():
        events = run.ledger_events()
        for shard, job in list(in_flight.items()):
            ended = [e["event"] for e in events if e.get("job_id") == job and e["event"] in ("interrupted", "done")]
            if ended:  # "done": the task wrote its result before the cancel landed; cancel another one
                del in_flight[shard]
                if ended[0] == "interrupted":
                    cancelled[shard] = ("RUNNING", job)
        jobs = {s["shard"]: s["job_id"] for s in run.submissions()}
        started = {e["shard"] for e in events if e["event"] == "start"}
        queue = subprocess.run(
            ["squeue", "--me", "-h", "-r", "-o", "%i|%T"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
        states = dict(line.split("|") for line in queue.split())
        for shard, job in jobs.items():
            state = states.get(job)
            if shard in cancelled or shard in in_flight or run.result(shard).exists():
                continue
            # one task while it grades, one while it still waits inside the array record (it then
            # vanishes from sacct: the documented pitfall the driver must survive)
            kinds = {s for s, _ in cancelled.values()}
            if state == "RUNNING" and shard in started and "RUNNING" not in kinds and not in_flight:
                subprocess.run(["scancel", job], check=True, timeout=30)
                in_flight[shard] = job
            elif state == "PENDING" and "PENDING" not in kinds:
                subprocess.run(["scancel", job], check=True, timeout=30)
                if not run.result(shard).exists():
                    cancelled[shard] = (state, job)
        time.sleep(0.2)
    driver.join(timeout=300)
    assert not driver.is_alive(), "the driver did not finish"
    assert "error" not in box, box.get("error")
    assert {state for state, _ in cancelled.values()} == {"RUNNING", "PENDING"}, cancelled
    results = box["results"]
    assert summary(results) == summary(reference[:n])  # nothing lost, every row right, in order
    submissions = run.submissions()
    for shard, (_state, job) in cancelled.items():
        attempts = [s for s in submissions if s["shard"] == shard]
        assert [s["attempt"] for s in attempts] == [1, 2], attempts
        assert attempts[0]["job_id"] == job and attempts[1]["job_id"] != job
        assert run.result_header(shard)["job_id"] == attempts[1]["job_id"]  # graded by the resubmitted job
        assert f"shard {shard}: job {job}" in run.driver_log.read_text()
    running_job = next(j for s, j in cancelled.values() if s == "RUNNING")
    assert sacct_states([running_job]).get(running_job) == "CANCELLED"
    # the task stopped at SLURM's SIGTERM instead of grading on until the SIGKILL
    assert [e["event"] for e in run.ledger_events() if e["job_id"] == running_job] == ["start", "interrupted"]
    done = Counter(e["shard"] for e in run.ledger_events() if e["event"] == "done")
    assert done == Counter(range(4))  # every shard written exactly once
    assert sum(e["rows"] for e in run.ledger_events() if e["event"] == "done") == n


def test_shard_that_keeps_failing_becomes_sandbox_errors_then_a_rerun_grades_it(slurm, tmp_path):
    """A shard whose job is cancelled on every attempt: after max_retries its rows are reported as
    sandbox_error naming the reason (not dropped, not scored as the solutions' failure); a rerun
    grades only that shard."""
    from sandbox.cluster import grade_distributed

    n, workdir = 200, tmp_path / "run"
    run = run_dir(workdir)
    stop = threading.Event()

    def killer() -> None:
        seen: set[str] = set()
        while not stop.is_set():
            for s in run.submissions():
                if s["shard"] == 0 and s["job_id"] not in seen:
                    seen.add(s["job_id"])
                    subprocess.run(["scancel", s["job_id"]], timeout=30, check=False)
            time.sleep(0.02)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        results = grade_distributed(PROBLEMS, ROWS[:n], tmp_path / "graded.jsonl", executor="slurm", jobs=2, backend="process",
                                    workdir=workdir, time_min=10, progress=False, max_retries=1, lost_after_s=3)
    finally:
        stop.set()
        thread.join()
    assert len(results) == n
    assert [s["attempt"] for s in run.submissions() if s["shard"] == 0] == [1, 2]
    for i, r in enumerate(results):
        if i % 2 == 0:  # shard 0 holds the even rows
            assert r.verdict is not None and r.verdict.value == "sandbox_error", (i, r)
            assert r.pass_rate == 0.0 and r.total == 3
            assert "shard 0 was not graded" in r.error and ("CANCELLED" in r.error or "neither squeue nor sacct" in r.error), (
                r.error
            )
        else:
            assert (round(r.pass_rate, 6), r.verdict.value if r.verdict else None) == (round(expected(i)[0], 6), expected(i)[1])
    assert not run.result(0).exists() and run.result(1).exists()
    shard1 = file_ids([run.result(1)])
    results = grade_distributed(PROBLEMS, ROWS[:n], tmp_path / "graded.jsonl", executor="slurm", jobs=2, backend="process",
                                workdir=workdir, time_min=10, progress=False)
    assert_expected(results, n)
    assert file_ids([run.result(1)]) == shard1
    assert [s["shard"] for s in run.submissions()][-1] == 0 and len(run.submissions()) == 4


# ---------------------------------------------------------------------------------------------
# (4) the driver is SIGKILLed mid-run; a restart finishes without regrading anything


@pytest.mark.parametrize("executor", ["slurm", "local"])
def test_killed_driver_resumes_without_regrading(executor, submitit_installed, reference, tmp_path, request):
    """SIGKILL the driver (a CLI process) once some shards are finished, restart it: it finishes
    without rewriting a finished shard and without grading any shard twice. With SLURM the restart
    follows the jobs the first driver left running; the LocalExecutor's driver submits in waves
    (CPUs / cpus-per-job at once), so the first one may die between starting a job and recording
    it: the shard's lock makes the duplicate wait and then skip."""
    n = N if executor == "slurm" else 1200
    if executor == "slurm":
        request.getfixturevalue("slurm")
    problems, completions = write_inputs(tmp_path, ROWS[:n])
    output, workdir = tmp_path / "graded.jsonl", tmp_path / "run"
    run = run_dir(workdir)
    args = [
        "grade",
        "-p",
        str(problems),
        "-c",
        str(completions),
        "-o",
        str(output),
        "--backend",
        "process",
        "--executor",
        executor,
        "--jobs",
        "8",
        "--cpus-per-job",
        "1",
        "--time",
        "10",
        "--workdir",
        str(workdir),
        "--no-progress",
    ]
    first = cli(*args)
    deadline = time.monotonic() + 180
    finished: list[Path] = []
    while time.monotonic() < deadline and first.poll() is None:
        finished = run.result_files() if run.shards.exists() else []
        if len(finished) >= 2:
            break
        time.sleep(0.05)
    assert first.poll() is None, f"the driver ended before it could be killed: {first.communicate()}"
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    finished = run.result_files()
    assert 2 <= len(finished) < 8, f"{len(finished)} shards finished when the driver was killed"
    before = file_ids(finished)
    submitted_by_first = run.submissions()

    second = cli(*args)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 1, err[-3000:]  # every row graded but UNKNOWN_ROW, which is invalid: exit 1
    assert "not graded: output row 778: completions row 778, field 'task_id'" in out
    assert f"wrote {output} ({n} rows)" in out
    assert summary(read_output(output)) == summary(reference[:n])
    after = file_ids(run.result_files())
    assert len(after) == 8
    assert {name: after[name] for name in before} == before  # finished shards were not rewritten
    events = run.ledger_events()
    assert Counter(e["shard"] for e in events if e["event"] == "start") == Counter(range(8))  # nobody graded a shard twice
    assert Counter(e["shard"] for e in events if e["event"] == "done") == Counter(range(8))
    assert sum(e["rows"] for e in events if e["event"] == "done") == n
    finished_shards = {int(p.name.split("-")[1].split(".")[0]) for p in finished}
    resubmitted = [s for s in run.submissions()[len(submitted_by_first):] if s["shard"] in finished_shards]
    assert not resubmitted, f"the restart submitted finished shards again: {resubmitted}"
    if executor == "slurm":
        assert len(submitted_by_first) == 8
        assert run.submissions() == submitted_by_first  # the restart re-attached to the running jobs, submitted nothing
        assert "re-attached to" in run.driver_log.read_text()


# ---------------------------------------------------------------------------------------------
# the same code path on a machine without SLURM, and the backend passing through


def test_local_executor_through_the_cli(submitit_installed, reference, tmp_path):
    n = 300
    problems, completions = write_inputs(tmp_path, ROWS[:n])
    output = tmp_path / "graded.jsonl"
    proc = cli("grade", "-p", str(problems), "-c", str(completions), "-o", str(output), "--backend", "process",
               "--executor", "local", "--jobs", "3", "--cpus-per-job", "1", "--no-progress")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert summary(read_output(output)) == summary(reference[:n])
    run = run_dir(Path(f"{output}.shards"))
    assert run.read_manifest()["count"] == 3
    assert {s["executor"] for s in run.submissions()} == {"local"} and len(run.submissions()) == 3
    assert Counter(e["shard"] for e in run.ledger_events() if e["event"] == "done") == Counter(range(3))


def test_two_tasks_for_one_shard_grade_it_once(submitit_installed, tmp_path):
    """Two array tasks for the same shard at once (a killed driver's unrecorded job and its
    resubmission): the shard's lock lets one grade, the other waits and then skips."""
    from sandbox.cluster import grade_distributed

    n, workdir = 400, tmp_path / "run"
    grade_distributed(PROBLEMS, ROWS[:n], None, executor="local", jobs=1, backend="process", workdir=workdir, progress=False)
    run = run_dir(workdir)
    run.result(0).unlink()
    events_before = len(run.ledger_events())
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    code = ("import sys; from sandbox.cluster import grade_shard; "
            "print(grade_shard(sys.argv[1], 0, sys.argv[2], 1)['skipped'])")
    fingerprint = run.read_manifest()["fingerprint"]
    tasks = [subprocess.Popen([sys.executable, "-c", code, str(workdir), fingerprint], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = sorted(t.communicate(timeout=120)[0].strip() for t in tasks)
    assert [t.returncode for t in tasks] == [0, 0]
    assert outputs == ["False", "True"]  # one graded, one skipped
    new = [e["event"] for e in run.ledger_events()[events_before:]]
    assert Counter(new) == Counter({"start": 1, "done": 1, "wait": 1, "skip": 1}), new
    assert run.finished(0, n, fingerprint) and len(run.read_results(0)) == n
    assert_expected([r for _, r in sorted(run.read_results(0), key=lambda x: x[0])], n)


def test_cluster_options_need_an_executor(tmp_path):
    problems, completions = write_inputs(tmp_path, ROWS[:4])
    proc = cli("grade", "-p", str(problems), "-c", str(completions), "-o", str(tmp_path / "x.jsonl"), "--jobs", "3")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "--jobs needs --executor" in err


def test_bubblewrap_backend_passes_through_to_the_jobs(slurm, tmp_path):
    from sandbox.cluster import grade_distributed

    backend_or_fail("bubblewrap")
    n = 56
    results = grade_distributed(PROBLEMS, ROWS[:n], tmp_path / "graded.jsonl", executor="slurm", jobs=2, cpus_per_job=1,
                                backend="bubblewrap", time_min=10, progress=False)
    assert_expected(results, n)
    assert {r.backend for r in results} == {"bubblewrap"}  # no invalid or no-code row among the first 56
    run = run_dir(tmp_path / "graded.jsonl.shards")
    assert {run.result_header(k)["backend"] for k in range(2)} == {"bubblewrap"}
