"""Grading throughput: our judge against the paper's process-per-assert sandbox and in-process exec.

Grades the same LeetCodeDataset v0.3.1-test canonical solutions (all must pass) several ways in one
run, one worker each unless said otherwise, and prints solutions/s, tests/s and ratios:

  (a)  our judge, per_test granularity, through `Pool(backend, workers=1)`: the solution is loaded
       once by a runner forked from the zygote, then one fork of it per test;
  (a2) our judge, per_solution granularity (one runner serves every test of the solution);
  (b)  the paper's approach, reimplemented minimally: a harness process that, for each assert,
       forks (os.fork, as multiprocessing's fork start method does) a child which execs preamble +
       solution, binds `candidate = eval(entry_point)`, runs that one assert and reports pass/fail
       through a pipe; the harness waits with the same per-assert timeout as the judge (wall_s);
  (c)  unisolated in-process execution (exec preamble + solution once per solution in this process,
       then every assert): the speed limit;
  (a*) our judge, per_test, with one worker per CPU;
  (f)  reference, only with --only f or --only all (it adds ~15% to the run): the (b) harness, but the
       solution is loaded once and only the assert runs in each forked child: the floor of any
       fork-per-test design, i.e. what (a) would cost without the judge's own work;
  (d)  our judge, per_test, in the apptainer warm pool (one worker);
  (e)  the paper's layout in containers: a fresh `apptainer exec` of the SIF per solution, a process
       per assert; (e2) the same from the directory our pool unpacks the SIF to once;
  (o)  the per-solution overhead of (d) over the process backend, each solution graded alone
       (p50 and p90 in milliseconds).

Claims: (a)/(b) >= 2.0, (a2)/(c) >= 0.8, (d)/(e) >= 10, (d)/(a) >= 0.8 and (o) p50 < 5 ms (throughputs
measured in the same run; the machine is shared, so absolute numbers are noisy, ratios much less so).
Judge pools are warmed before timing (workers started, a couple of solutions graded), so the numbers
are steady-state throughput; the (b) harness is started and warmed the same way. With --repeat R
the methods run round-robin R times
and each keeps its fastest run.

Adding a method: append a `Method(key, label, run)` to `methods()`; `run(workload)` returns
(solutions, tests, seconds), optionally followed by pass_rates (one per solution) and an info dict,
timing only steady-state work. `judge_method(granularity, workers, backend)` builds one for any judge backend, e.g.
`Method("d", "apptainer warm pool", judge_method("per_test", backend="apptainer"))`.

With --dataset mbppplus or humanevalplus the workload is that release's canonical solutions on their base +
plus inputs, and the methods are (a2) / (a2*) our judge per_solution on one / every CPU against (p) / (p*)
evalplus's own evaluator with one / every worker (bench/evalplus_workload.py); claims (a2)/(p) >= 1.0 and
(a2*)/(p*) >= 1.0, with the isolation of --backend (bubblewrap for the claim). (a2*o) is (a2*) given the
jobs as an iterator, which the pool grades in input order: (a2*)/(a2*o) is what starting the long jobs
first (by their reference solution's time) buys, and (a2*o)/(p*) the comparison without it.

Run:   python3 bench/sandbox_throughput.py [--n 120] [--backend process|bubblewrap] [--repeat 1] [--only all] [--json out.json]
       python3 bench/sandbox_throughput.py --dataset mbppplus --n 400 --backend bubblewrap
Data:  ../shared/data/leetcode/LeetCodeDataset-v0.3.1-test.jsonl.gz from the repo root, or
       $QRPO_SHARED_DATA/leetcode/... when QRPO_SHARED_DATA (the shared data directory) is set.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
DATA_FILE = "leetcode/LeetCodeDataset-v0.3.1-test.jsonl.gz"
# Canonical solutions that take seconds on their own tests: they would measure the solution, not the sandbox.
SLOW_PROBLEMS = ("find-the-number-of-subsequences-with-equal-gcd", "maximum-number-of-moves-to-kill-all-pawns")
TARGETS = (
    ("a", "b", 2.0),
    ("a2", "c", 0.8),
    ("d", "e", 10.0),
    ("d", "e2", 10.0),
    ("d", "a", 0.8),
)  # (numerator, denominator, minimum ratio of solutions/s)
OVERHEAD_REPEATS = 3
RECURSION_LIMIT = 10000  # what the judge's runner sets; the paper harness and (c) use the same


# ---------------------------------------------------------------------------------------------
# (b) the paper's sandbox: a harness process, a fork per assert. Standard library only: the harness is
# a fresh `python3 -I` that imports this file (without the sandbox package) and runs `_harness_loop`.


def _fresh_namespace() -> dict[str, Any]:
    """A registered module namespace (code using `dataclasses` looks its module up in sys.modules)."""
    module = types.ModuleType("__solution__")
    sys.modules["__solution__"] = module
    return module.__dict__


def _in_fork(run: Callable[[], object], timeout: float) -> bool:
    """Fork; the child calls `run` and reports pass (it returned) or fail (it raised) through a
    pipe, then exits. The parent waits at most `timeout` seconds, then kills the child."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        ok = b"0"
        try:
            run()
            ok = b"1"
        except BaseException:  # noqa: BLE001
            pass
        finally:
            try:
                os.write(write_fd, ok)
            finally:
                os._exit(0)
    os.close(write_fd)
    passed = False
    if select.select([read_fd], [], [], timeout)[0]:
        passed = os.read(read_fd, 1) == b"1"
    else:
        os.kill(pid, signal.SIGKILL)
    os.close(read_fd)
    os.waitpid(pid, 0)
    return passed


def _load(job: dict[str, Any]) -> dict[str, Any]:
    """exec preamble + solution in a fresh namespace and bind the candidate."""
    namespace = _fresh_namespace()
    exec(compile(job["preamble"] + "\n" + job["code"], "<solution>", "exec"), namespace)
    namespace[job["candidate"]] = eval(job["entry_point"], namespace)
    return namespace


def paper_grade(job: dict[str, Any]) -> list[bool]:
    """(b): per assert, a forked child runs preamble + solution from scratch, binds the candidate
    and runs that one assert (with the test file's setup)."""

    def one(test: str) -> None:
        namespace = _load(job)
        namespace["qrpo_test_data"] = job["test_data"]
        exec(compile(job["test_setup"] + "\n" + test, "<test>", "exec"), namespace)

    return [_in_fork(lambda test=test: one(test), job["timeout"]) for test in job["tests"]]


def fork_grade(job: dict[str, Any]) -> list[bool]:
    """(f): the solution is loaded once, here; per assert, a forked child of the loaded process
    runs that one (pre-compiled) assert. The floor of any fork-per-test design such as (a)."""
    try:
        namespace = _load(job)
        namespace["qrpo_test_data"] = job["test_data"]
        exec(compile(job["test_setup"], "<test_setup>", "exec"), namespace)
    except BaseException:  # noqa: BLE001
        return [False] * len(job["tests"])
    tests = [compile(test, "<test>", "exec") for test in job["tests"]]
    return [_in_fork(lambda code=code: exec(code, namespace), job["timeout"]) for code in tests]


def _harness_loop(warm_modules: Sequence[str]) -> None:
    """The harness: pre-imports what the zygote pre-imports (both sides start from the same warm
    modules), then grades one job per stdin line, {"preamble", "code", "entry_point", "candidate",
    "test_setup", "test_data", "tests", "timeout", "mode": "paper"|"fork"}, answering a JSON list of pass/fail per assert."""
    for name in warm_modules:
        try:
            __import__(name)
        except Exception:  # noqa: BLE001
            pass
    sys.setrecursionlimit(max(sys.getrecursionlimit(), RECURSION_LIMIT))
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    replies = os.fdopen(os.dup(1), "w")  # the reply channel; what solutions print goes to stderr
    os.dup2(2, 1)
    for line in sys.stdin:
        job = json.loads(line)
        grade = fork_grade if job.get("mode") == "fork" else paper_grade
        replies.write(json.dumps(grade(job)) + "\n")
        replies.flush()


def _harness_once() -> None:
    """(e) inside a fresh container: grade the one job on stdin the paper's way, print verdicts."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), RECURSION_LIMIT))
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    replies.write(json.dumps(paper_grade(json.loads(sys.stdin.readline()))) + "\n")
    replies.flush()


# ---------------------------------------------------------------------------------------------
# The benchmark


class Measurement(NamedTuple):
    solutions: int
    tests: int
    seconds: float
    pass_rates: list[float] | None = None  # one per solution, when the method can tell
    info: dict[str, Any] | None = None  # anything worth printing (backend, containment, restarts)


@dataclass
class Workload:
    problems: list[Any]  # sandbox.problem.Problem, each with its canonical solution to grade
    backend: str
    cpus: int
    dataset: str = "leetcode"  # or one of evalplus_workload.DATASETS
    source: Path | None = None  # the file the problems came from (evalplus reads the same one)

    @property
    def tests(self) -> int:
        return sum(len(p.tests) for p in self.problems)

    def code(self, problem: Any) -> str:
        return problem.metadata["canonical_solution"]


@dataclass
class Method:
    key: str
    label: str
    run: Callable[[Workload], tuple]
    workers: int | Callable[[Workload], int] = 1
    default: bool = True  # measured without --only; False for references that only explain a result
    best: Measurement | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def worker_count(self, workload: Workload) -> int:
        return self.workers(workload) if callable(self.workers) else self.workers


def warm_count(workers: int, total: int) -> int:
    """A couple of solutions per worker, graded before timing."""
    return min(total, 2 * workers)


def judge_method(granularity: str, workers: int | None = 1, backend: str | None = None, in_order: bool = False,
                 ) -> Callable[[Workload], Measurement]:
    """Our judge through a warm `Pool`; workers=None means one per CPU; backend=None takes --backend;
    in_order hands the jobs over as an iterator, which the pool grades in its order (a list's long
    jobs, by their reference time, start first: the baseline of that scheduling)."""
    from sandbox.pool import Job, Pool

    def run(workload: Workload) -> Measurement:
        problems = workload.problems
        pool = Pool(backend or workload.backend, workers=workers or workload.cpus)
        try:
            pool.start()
            warm = problems[: warm_count(pool.size, len(problems))]
            list(pool.grade([Job(i, p, workload.code(p), granularity) for i, p in enumerate(warm)]))
            jobs = [Job(i, p, workload.code(p), granularity) for i, p in enumerate(problems)]
            started = time.perf_counter()
            results = list(pool.grade(iter(jobs) if in_order else jobs, total=len(jobs)))
            seconds = time.perf_counter() - started
        finally:
            pool.close()
        info = {
            "backend": pool.backend.name,
            "containment": sorted({str(r.info.get("containment", "")) for r in results}),
            "trusted_fraction": sum(r.trusted_fraction * r.total for r in results) / max(1, sum(r.total for r in results)),
            "restarts": pool.restarts,
        }
        return Measurement(len(results), sum(r.total for r in results), seconds, [r.pass_rate for r in results], info)

    return run


def harness_job(workload: Workload, problem: Any, mode: str) -> dict[str, Any]:
    return {
        "mode": mode,
        "preamble": problem.preamble,
        "code": workload.code(problem),
        "entry_point": problem.entry_point,
        "candidate": problem.candidate,
        "test_setup": problem.test_setup,
        "test_data": problem.test_data,
        "tests": [t.source for t in problem.tests],
        "timeout": problem.limits.wall_s,
    }


def harness_method(mode: str) -> Callable[[Workload], Measurement]:
    """(b) with mode "paper", (f) with mode "fork": one harness process (a fresh interpreter with
    the zygote's modules pre-imported), fed one solution at a time; it forks a child per assert."""
    return lambda workload: _harness_run(workload, mode)


def _harness_run(workload: Workload, mode: str) -> Measurement:
    from sandbox.judge.runner import WARM_MODULES

    boot = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
        f"import sandbox_throughput as b; b._harness_loop({list(WARM_MODULES)!r})"
    )
    harness = subprocess.Popen(
        [sys.executable, "-I", "-c", boot], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
    )
    assert harness.stdin and harness.stdout

    def grade(problem: Any) -> list[bool]:
        harness.stdin.write(json.dumps(harness_job(workload, problem, mode)) + "\n")
        harness.stdin.flush()
        line = harness.stdout.readline()
        if not line:
            raise RuntimeError(f"the paper harness died (exit status {harness.poll()})")
        return json.loads(line)

    try:
        for problem in workload.problems[: warm_count(1, len(workload.problems))]:
            grade(problem)
        started = time.perf_counter()
        verdicts = [grade(p) for p in workload.problems]
        seconds = time.perf_counter() - started
    finally:
        harness.stdin.close()
        harness.wait(timeout=30)
    rates = [sum(v) / len(v) if v else 0.0 for v in verdicts]
    return Measurement(len(verdicts), sum(map(len, verdicts)), seconds, rates)


def in_process_method(workload: Workload) -> Measurement:
    """(c): no isolation at all; exec each solution once here and run its asserts. The speed limit."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), RECURSION_LIMIT))

    def grade(problem: Any) -> list[bool]:
        namespace = _fresh_namespace()
        exec(compile(problem.preamble + "\n" + workload.code(problem), "<solution>", "exec"), namespace)
        namespace[problem.candidate] = eval(problem.entry_point, namespace)
        namespace["qrpo_test_data"] = problem.test_data
        exec(compile(problem.test_setup, "<test_setup>", "exec"), namespace)
        verdicts = []
        for test in problem.tests:
            try:
                exec(compile(test.source, "<test>", "exec"), namespace)
                verdicts.append(True)
            except Exception:  # noqa: BLE001
                verdicts.append(False)
        return verdicts

    for problem in workload.problems[: warm_count(1, len(workload.problems))]:
        grade(problem)
    started = time.perf_counter()
    verdicts = [grade(p) for p in workload.problems]
    seconds = time.perf_counter() - started
    return Measurement(len(verdicts), sum(map(len, verdicts)), seconds, [sum(v) / len(v) for v in verdicts])


def fresh_container_method(unpacked: bool) -> Callable[[Workload], Measurement]:
    return lambda workload: _fresh_container_run(workload, unpacked)


def _fresh_container_run(workload: Workload, unpacked: bool) -> Measurement:
    """(e) the paper's layout in containers: a fresh container per solution (`apptainer exec` of
    the image, same flags as our workers), inside it the paper's harness with a process per
    assert. (e) execs the SIF, as one would; (e2) the directory our pool unpacks it to once."""
    from sandbox.backends.apptainer import ApptainerBackend

    backend = ApptainerBackend()
    backend.prepare()
    assert backend.apptainer and backend.rootfs and backend.image
    here = Path(__file__).resolve().parent
    image = backend.rootfs if unpacked else backend.image
    argv = [
        backend.apptainer,
        "-s",
        "exec",
        *backend.container_flags(),
        "--bind",
        f"{here}:/opt/bench:ro",
        image,
        "python3",
        "-I",
        "-c",
        "import sys; sys.path.insert(0, '/opt/bench'); import sandbox_throughput as b; b._harness_once()",
    ]

    def grade(problem: Any) -> list[bool]:
        job = json.dumps(harness_job(workload, problem, "paper"))
        out = subprocess.run(argv, input=job + "\n", capture_output=True, text=True, env=backend.judge_env(), timeout=600)
        if out.returncode != 0 or not out.stdout.strip():
            raise RuntimeError(f"apptainer exec failed ({out.returncode}): {out.stderr.strip()[-300:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    for problem in workload.problems[:1]:
        grade(problem)
    started = time.perf_counter()
    verdicts = [grade(p) for p in workload.problems]
    seconds = time.perf_counter() - started
    return Measurement(len(verdicts), sum(map(len, verdicts)), seconds, [sum(v) / len(v) for v in verdicts], {"image": image})


def overhead_method(workload: Workload) -> Measurement:
    """(o) per-solution overhead of the apptainer pool over the process backend: the same
    solution graded alone through a warm one-worker pool of each, interleaved; p50/p90 of the
    difference in milliseconds (target: p50 < 5 ms)."""
    from sandbox.pool import Job, Pool

    pools = {name: Pool(name, workers=1) for name in ("process", "apptainer")}
    times: dict[str, list[float]] = {name: [] for name in pools}
    try:
        for pool in pools.values():
            pool.start()
            list(pool.grade([Job(0, workload.problems[0], workload.code(workload.problems[0]), "per_test")]))
        started = time.perf_counter()
        for i, problem in enumerate(workload.problems):
            best = {name: float("inf") for name in pools}
            for rep in range(OVERHEAD_REPEATS):  # the fastest of a few: what the sandbox costs, not the noise
                for name, pool in (list(pools.items()) if (i + rep) % 2 else list(pools.items())[::-1]):
                    t0 = time.perf_counter()
                    list(pool.grade([Job(i, problem, workload.code(problem), "per_test")]))
                    best[name] = min(best[name], time.perf_counter() - t0)
            for name in pools:
                times[name].append(best[name])
        seconds = time.perf_counter() - started
    finally:
        for pool in pools.values():
            pool.close()
    diffs = sorted((a - p) * 1000 for a, p in zip(times["apptainer"], times["process"]))
    p50, p90 = diffs[len(diffs) // 2], diffs[int(len(diffs) * 0.9)]
    return Measurement(
        2 * len(diffs) * OVERHEAD_REPEATS,
        2 * workload.tests * OVERHEAD_REPEATS,
        seconds,
        None,
        {"overhead_ms_p50": round(p50, 2), "overhead_ms_p90": round(p90, 2), "target_p50_ms": 5.0, "pass": p50 < 5.0},
    )


# The MBPP+ / HumanEval+ workload (--dataset): our judge against evalplus's evaluator, base + plus inputs.
PLUS_TARGETS = (("a2", "p", 1.0), ("a2*", "p*", 1.0))
PLUS_INFO = (("a2*", "a2*o", "long jobs first (pool.LONG_JOB_S) against input order"),)  # ratios shown, no target


def plus_methods() -> list[Method]:
    from evalplus_workload import evalplus_method

    return [
        Method("a2", "judge per_solution", judge_method("per_solution")),
        Method("p", "evalplus evaluate()", evalplus_method(1)),
        Method("a2*", "judge per_solution, all CPUs", judge_method("per_solution", workers=None), workers=lambda w: w.cpus),
        Method("p*", "evalplus evaluate(), all CPUs", evalplus_method(None), workers=lambda w: w.cpus),
        Method("a2*o", "(a2*), jobs in input order", judge_method("per_solution", workers=None, in_order=True),
               workers=lambda w: w.cpus),
    ]


def methods(dataset: str = "leetcode") -> list[Method]:
    """The methods measured, in order. (d) apptainer warm pool and (e) `apptainer exec` per
    solution go here."""
    if dataset != "leetcode":
        return plus_methods()
    return [
        Method("a", "judge per_test", judge_method("per_test")),
        Method("a2", "judge per_solution", judge_method("per_solution")),
        Method("b", "paper: fork per assert", harness_method("paper")),
        Method("c", "in-process, no isolation", in_process_method),
        Method("a*", "judge per_test, all CPUs", judge_method("per_test", workers=None), workers=lambda w: w.cpus),
        Method("f", "reference: plain fork per test", harness_method("fork"), default=False),
        Method("d", "apptainer warm pool per_test", judge_method("per_test", backend="apptainer")),
        Method("e", "paper in containers: exec SIF/solution", fresh_container_method(unpacked=False)),
        Method("e2", "same, exec unpacked dir/solution", fresh_container_method(unpacked=True)),
        Method("o", "overhead apptainer vs process (alone)", overhead_method),
    ]


def data_file() -> Path:
    shared = os.environ.get("QRPO_SHARED_DATA")
    base = Path(shared) if shared else ROOT.parent / "shared" / "data"
    return base / DATA_FILE


def load_workload(n: int, backend: str, dataset: str = "leetcode") -> Workload:
    from sandbox.datasets import load_problems
    from sandbox.pool import default_workers

    if dataset != "leetcode":
        import evalplus_workload

        problems, source = evalplus_workload.load_problems(dataset, n, backend)
        return Workload(problems, backend, default_workers(), dataset, source)

    path = data_file()
    if not path.exists():
        raise SystemExit(f"{path} not found; set QRPO_SHARED_DATA to the shared data directory (holding {DATA_FILE})")
    loaded = load_problems(path)
    chosen = [p for p in loaded if p.task_id not in SLOW_PROBLEMS and p.metadata.get("canonical_solution")][:n]
    return Workload(chosen, backend, default_workers())


def _rate(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("nan")


def report(workload: Workload, table: list[Method], repeat: int, elapsed: float, load: tuple[float, float]) -> dict[str, Any]:
    done = {m.key: m for m in table if m.best}
    plus = workload.dataset != "leetcode"
    key_b, key_c = ("p", "p*") if plus else ("b", "c")  # the two baselines each row is compared with
    base_b, base_c = done.get(key_b), done.get(key_c)

    def ratio(m: Method, base: Method | None) -> float:
        if not (m.best and base and base.best):
            return float("nan")
        return _rate(m.best.solutions, m.best.seconds) / _rate(base.best.solutions, base.best.seconds)

    rows = []
    print()
    vs_b, vs_c = f"vs ({key_b})", f"vs ({key_c})"
    print(f"{'method':<34} {'workers':>7} {'solutions/s':>12} {'tests/s':>10} {vs_b:>8} {vs_c:>8} {'pass=1.0':>9}")
    for m in table:
        if not m.best:
            continue
        b = m.best
        full = sum(r == 1.0 for r in b.pass_rates) if b.pass_rates is not None else None
        row = {
            "key": m.key, "label": m.label, "workers": m.worker_count(workload),
            "solutions": b.solutions, "tests": b.tests, "seconds": b.seconds,
            "solutions_per_s": _rate(b.solutions, b.seconds), "tests_per_s": _rate(b.tests, b.seconds),
            f"ratio_to_{key_b}": ratio(m, base_b), f"ratio_to_{key_c}": ratio(m, base_c),
            "all_passed": full, "failed": [p.task_id for p, r in zip(workload.problems, b.pass_rates or []) if r != 1.0],
            "info": m.info,
        }
        rows.append(row)
        passed = "n/a" if full is None else f"{full}/{b.solutions}"
        ratios = (row[f"ratio_to_{key_b}"], row[f"ratio_to_{key_c}"])
        to_b, to_c = (f"{x:.2f}x" if x == x else "-" for x in ratios)  # x != x: NaN, no base
        print(
            f"{'(' + m.key + ') ' + m.label:<34} {row['workers']:>7} {row['solutions_per_s']:>12.1f} {row['tests_per_s']:>10.0f} "
            f"{to_b:>8} {to_c:>8} {passed:>9}"
        )
    print()
    targets = []
    for num, den, minimum in PLUS_TARGETS if plus else TARGETS:
        if num in done and den in done:
            value = ratio(done[num], done[den])
            ok = value >= minimum
            targets.append({"ratio": f"({num})/({den})", "value": value, "target": minimum, "pass": ok})
            print(f"target ({num})/({den}) >= {minimum:.1f}: {value:.2f}  {'PASS' if ok else 'MISS'}")
    for num, den, what in PLUS_INFO if plus else ():
        if num in done and den in done:
            print(f"({num})/({den}): {ratio(done[num], done[den]):.2f}  {what}")
    sane = all(r["all_passed"] in (None, r["solutions"]) for r in rows)
    print(f"sanity: every method gave pass rate 1.0 on every chosen solution: {'yes' if sane else 'NO'}")
    for r in rows:
        if r["failed"]:
            print(f"  ({r['key']}) not 1.0 on: {', '.join(r['failed'][:10])}{' ...' if len(r['failed']) > 10 else ''}")
    for m in table:
        if m.info:
            print(f"  ({m.key}) {json.dumps(m.info, default=str)}")
    print(f"load average {load[0]:.2f} at start, {load[1]:.2f} at end; whole run {elapsed:.0f} s")
    return {
        "data": str(workload.source or data_file()), "dataset": workload.dataset,
        "n": len(workload.problems), "tests": workload.tests, "backend": workload.backend,
        "cpus": workload.cpus, "repeat": repeat, "python": sys.version.split()[0], "methods": rows, "targets": targets,
        "sanity_all_passed": sane, "load_average": list(load), "elapsed_s": elapsed,
        "note": "steady state: pools/harness warmed (workers started, 2 solutions per worker graded) before timing; "
                "best of --repeat round-robin runs",
    }


def main(argv: Sequence[str] | None = None) -> None:
    import click
    from evalplus_workload import DATASETS  # here, not at the top: the (b) harness imports this file with -I

    @click.command(context_settings={"help_option_names": ["-h", "--help"]}, help=__doc__.split("\n\n")[0])
    @click.option(
        "--n", "n", default=120, show_default=True, help="Canonical solutions to grade (the same set for every method)."
    )
    @click.option(
        "--backend",
        default="process",
        show_default=True,
        help="Judge backend for (a), (a2), (a*): process, bubblewrap, apptainer.",
    )
    @click.option(
        "--repeat", default=1, show_default=True, type=click.IntRange(1), help="Round-robin runs; each method keeps its fastest."
    )
    @click.option(
        "--only",
        default="",
        help="Comma-separated method keys to run, e.g. a,b,f; 'all' adds the (f) reference to the default set.",
    )
    @click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the numbers here as JSON.")
    @click.option(
        "--dataset",
        type=click.Choice(["leetcode", *DATASETS]),
        default="leetcode",
        show_default=True,
        help="mbppplus / humanevalplus: the plus workload, our judge against evalplus's evaluator on base + plus inputs "
        "(the first --n problems).",
    )
    def cli(n: int, backend: str, repeat: int, only: str, json_path: str | None, dataset: str) -> None:
        sys.path.insert(0, str(ROOT))
        t0 = time.perf_counter()
        load0 = os.getloadavg()[0]
        workload = load_workload(n, backend, dataset)
        keys = only.split(",") if only else []
        table = [m for m in methods(dataset) if (m.default if not keys else ("all" in keys or m.key in keys))]
        if not table:
            raise click.BadParameter(
                f"no method has a key in {only!r}; keys: {', '.join(m.key for m in methods(dataset))}", param_hint="--only"
            )
        what = (f"{dataset} canonical solutions (base + plus inputs), {workload.tests} tests, from {workload.source}"
                if dataset != "leetcode" else
                f"LeetCode v0.3.1-test canonical solutions, {workload.tests} tests (excluding {', '.join(SLOW_PROBLEMS)})")
        print(f"{len(workload.problems)} {what}; backend {backend}; {workload.cpus} CPUs; "
              f"Python {sys.version.split()[0]}; repeat {repeat}")
        print("Timing is steady state: each method's pool (or harness) is started and graded a couple of solutions "
              "per worker before its clock starts.")
        for r in range(repeat):
            for m in table:
                try:
                    result = Measurement(*m.run(workload))
                except Exception as exc:  # noqa: BLE001 -- e.g. a backend that is not installed here
                    print(
                        f"  run {r + 1}/{repeat} ({m.key}) {m.label}: FAILED, left out: {type(exc).__name__}: {exc}", flush=True
                    )
                    m.info = {"error": f"{type(exc).__name__}: {exc}"}
                    continue
                print(f"  run {r + 1}/{repeat} ({m.key}) {m.label}: {result.solutions} solutions, {result.tests} tests "
                      f"in {result.seconds:.2f} s", flush=True)
                if m.best is None or result.seconds < m.best.seconds:
                    m.best, m.info = result, dict(result.info or {})
        numbers = report(workload, table, repeat, time.perf_counter() - t0, (load0, os.getloadavg()[0]))
        if json_path:
            Path(json_path).parent.mkdir(parents=True, exist_ok=True)
            Path(json_path).write_text(json.dumps(numbers, indent=2, default=str) + "\n")
            print(f"wrote {json_path}")

    cli.main(args=list(argv) if argv is not None else None, standalone_mode=True)


if __name__ == "__main__":
    main()
