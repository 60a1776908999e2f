"""Grading throughput against workers: the local path and the SLURM path, in the same run.

Grades the same LeetCodeDataset v0.3.1-test canonical solutions (all must pass) with 1, 2, 4, ...
workers up to this machine's CPUs, three ways, and prints solutions/s and the scaling efficiency
throughput(n) / (n * throughput(1)) of each:

  local        `sandbox.api.grade(..., workers=n)`: one warm pool of n judges in this process;
  slurm jobs   `sandbox.cluster.grade_distributed(executor="slurm", jobs=n, cpus_per_job=1)`: n shards,
               one submitit job array of n one-CPU tasks, each with its own warm pool;
  slurm cpus   `grade_distributed(executor="slurm", jobs=1, cpus_per_job=n)`: one job whose pool has
               one judge per allocated CPU (SLURM_CPUS_PER_TASK).

Both granularities are measured (`per_test`, the default and the paper's: a fork per test;
`per_solution`: one process per solution). Every time is end to end (the SLURM path includes
submission, scheduling, the job's interpreter and pool start, the driver's polling and the
merge), so the SLURM rows carry their fixed cost. That cost is measured on its own: a one-shard
job of a single solution, driver wall time minus the grading time the task recorded (median of 3).
The "busy" column is how many CPUs the whole machine kept busy during the run (/proc/stat): a
worker that keeps more than one CPU busy (per_test: the kernel's fork/exit work runs beside the
judge) cannot scale linearly up to the machine's CPUs.

Claim: scaling efficiency >= 0.8 at all local CPUs (the local path; the SLURM rows are printed
against the same target). The machine is shared, so absolute numbers are noisy; the ratios are
measured in the same run, round-robin, best of --repeat.

Run:   . /var/tmp/qrpo-slurm/env.sh   # the local cluster: slurm/local-cluster/README.md
       python3 bench/sandbox_scaling.py [--n 48] [--backend process] [--granularity per_test,per_solution]
                                        [--repeat 1] [--no-slurm] [--json out.json]
Data:  ../shared/data/leetcode/LeetCodeDataset-v0.3.1-test.jsonl.gz from the repo root, or
       $QRPO_SHARED_DATA/leetcode/... when QRPO_SHARED_DATA (the shared data directory) is set.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox_throughput import ROOT, SLOW_PROBLEMS, data_file, load_workload  # the same solutions, chosen one way

TARGET = 0.8
GRANULARITIES = ("per_test", "per_solution")


def worker_counts(cpus: int) -> list[int]:
    counts, n = [], 1
    while n < cpus:
        counts.append(n)
        n *= 2
    return counts + [cpus]


def cpu_ticks() -> tuple[int, int]:
    """(all, idle) jiffies of the whole machine."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0, 0
    return sum(values), values[3] + values[4]


@dataclass
class Route:
    key: str
    label: str
    granularity: str
    run: Callable[[int], tuple[float, list[float], dict[str, Any]]]  # workers -> (seconds, pass rates, info)
    best: dict[int, float] = field(default_factory=dict)  # workers -> fastest seconds
    info: dict[int, dict[str, Any]] = field(default_factory=dict)
    failed: dict[int, list[str]] = field(default_factory=dict)


def slurm_available() -> tuple[bool, str]:
    if not shutil.which("sbatch") or not shutil.which("sinfo"):
        return False, "sbatch/sinfo not on PATH"
    try:
        import submitit  # noqa: F401
    except ImportError:
        return False, "submitit is not installed"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"sinfo does not answer: {exc}"
    if proc.returncode != 0 or not proc.stdout.strip():
        return False, f"sinfo failed: {proc.stderr.strip()[:200]} (is SLURM_CONF set? . /var/tmp/qrpo-slurm/env.sh)"
    return True, "sinfo: " + " ".join(proc.stdout.split())


def main(argv: Sequence[str] | None = None) -> None:
    import click

    @click.command(context_settings={"help_option_names": ["-h", "--help"]}, help=__doc__.split("\n\n")[0])
    @click.option(
        "--n",
        "n",
        default=48,
        show_default=True,
        help="Canonical solutions to grade (the same set for every path and worker count).",
    )
    @click.option("--backend", default="process", show_default=True, help="Judge backend: process, bubblewrap, apptainer.")
    @click.option(
        "--granularity", default=",".join(GRANULARITIES), show_default=True, help="Comma-separated: per_test, per_solution."
    )
    @click.option(
        "--repeat",
        default=1,
        show_default=True,
        type=click.IntRange(1),
        help="Round-robin runs; each measurement keeps its fastest.",
    )
    @click.option("--slurm/--no-slurm", default=True, show_default=True, help="Measure the SLURM path (needs the cluster).")
    @click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the numbers here as JSON.")
    def cli(n: int, backend: str, granularity: str, repeat: int, slurm: bool, json_path: str | None) -> None:
        sys.path.insert(0, str(ROOT))
        warnings.filterwarnings("ignore", message="the 'process' backend does not isolate")
        from sandbox.api import grade
        from sandbox.cluster import RunDir, grade_distributed
        from sandbox.pool import default_workers

        granularities = [g.strip() for g in granularity.split(",") if g.strip()]
        unknown = set(granularities) - set(GRANULARITIES)
        if unknown or not granularities:
            raise click.BadParameter(f"choose from {', '.join(GRANULARITIES)}", param_hint="--granularity")
        t0 = time.perf_counter()
        load0 = os.getloadavg()[0]
        path = data_file()
        chosen = load_workload(n, backend).problems
        table = {p.task_id: p for p in chosen}
        rows = [{"task_id": p.task_id, "code": p.metadata["canonical_solution"]} for p in chosen]
        tests = sum(len(p.tests) for p in chosen)
        cpus = default_workers()
        counts = worker_counts(cpus)
        scratch = Path(tempfile.mkdtemp(prefix="sandbox-scaling-"))
        ok, why = slurm_available() if slurm else (False, "--no-slurm")
        print(f"{len(rows)} LeetCode v0.3.1-test canonical solutions, {tests} tests (excluding {', '.join(SLOW_PROBLEMS)}); "
              f"backend {backend}; {cpus} CPUs; workers {counts}; granularity {', '.join(granularities)}; "
              f"Python {sys.version.split()[0]}; repeat {repeat}")
        print(f"SLURM path: {'yes, ' + why if ok else 'no (' + why + ')'}")

        def local(gran: str) -> Callable[[int], tuple[float, list[float], dict[str, Any]]]:
            def run(workers: int) -> tuple[float, list[float], dict[str, Any]]:
                started = time.perf_counter()
                results = grade(table, rows, backend=backend, workers=workers, granularity=gran)  # type: ignore[arg-type]
                return time.perf_counter() - started, [r.pass_rate for r in results], {}

            return run

        runs = [0]

        def distributed(
            gran: str, jobs: Callable[[int], int], cpus_per_job: Callable[[int], int]
        ) -> Callable[[int], tuple[float, list[float], dict[str, Any]]]:
            def run(workers: int) -> tuple[float, list[float], dict[str, Any]]:
                runs[0] += 1
                workdir = scratch / f"run-{runs[0]}"
                started = time.perf_counter()
                results = grade_distributed(
                    table,
                    rows,
                    None,
                    executor="slurm",
                    jobs=jobs(workers),
                    cpus_per_job=cpus_per_job(workers),
                    backend=backend,
                    granularity=gran,
                    workdir=workdir,
                    time_min=30,
                    progress=False,
                )  # type: ignore[arg-type]
                seconds = time.perf_counter() - started
                run_dir = RunDir(workdir)
                shards = run_dir.read_manifest()["count"]
                inside = max(run_dir.result_header(k)["seconds"] for k in range(shards))
                shutil.rmtree(workdir, ignore_errors=True)
                return seconds, [r.pass_rate for r in results], {"grading_in_tasks_s": round(inside, 2)}

            return run

        routes: list[Route] = []
        for gran in granularities:
            routes.append(Route("local", "local: grade(workers=n)", gran, local(gran)))
            if ok:
                routes.append(Route("jobs", "slurm: n jobs x 1 CPU", gran, distributed(gran, lambda w: w, lambda w: 1)))
                routes.append(Route("cpus", "slurm: 1 job x n CPUs", gran, distributed(gran, lambda w: 1, lambda w: w)))
        fixed: list[dict[str, float]] = []
        try:
            grade(table, rows[:2], backend=backend, workers=1)  # warm the file cache and imports
            for r in range(repeat):
                for workers in counts:
                    for route in routes:
                        if route.key == "cpus" and workers == 1:
                            continue  # the same as 1 job x 1 CPU
                        before = cpu_ticks()
                        try:
                            seconds, rates, info = route.run(workers)
                        except Exception as exc:  # noqa: BLE001 -- report and go on
                            print(
                                f"  run {r + 1}/{repeat} [{route.granularity}] {route.label} n={workers}: FAILED: "
                                f"{type(exc).__name__}: {exc}",
                                flush=True,
                            )
                            continue
                        after = cpu_ticks()
                        total = after[0] - before[0]
                        info["busy_cpus"] = (
                            round((total - (after[1] - before[1])) / total * cpus, 2) if total > 0 else float("nan")
                        )
                        print(
                            f"  run {r + 1}/{repeat} [{route.granularity}] {route.label} n={workers}: {len(rates)} solutions "
                            f"in {seconds:.2f} s {info}",
                            flush=True,
                        )
                        route.failed[workers] = [c["task_id"] for c, rate in zip(rows, rates) if rate != 1.0]
                        if workers not in route.best or seconds < route.best[workers]:
                            route.best[workers], route.info[workers] = seconds, info
            for gran in granularities:  # 1 job x 1 CPU is the n=1 point of both SLURM layouts
                by_key = {route.key: route for route in routes if route.granularity == gran}
                if "jobs" in by_key and 1 in by_key["jobs"].best:
                    by_key["cpus"].best[1], by_key["cpus"].info[1] = by_key["jobs"].best[1], by_key["jobs"].info[1]
            if ok:
                one = {chosen[0].task_id: chosen[0]}
                for k in range(3):
                    workdir = scratch / f"fixed-{k}"
                    started = time.perf_counter()
                    grade_distributed(one, rows[:1], None, executor="slurm", jobs=1, cpus_per_job=1, backend=backend,
                                      workdir=workdir, time_min=30, progress=False)
                    wall = time.perf_counter() - started
                    graded = RunDir(workdir).result_header(0)["seconds"]
                    fixed.append({"wall_s": wall, "grading_s": graded, "fixed_s": wall - graded})
                    print(
                        f"  fixed cost {k + 1}/3: 1 job, 1 solution: {wall:.2f} s wall, {graded:.2f} s grading in the task",
                        flush=True,
                    )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

        print()
        print(f"{'granularity':<13} {'path':<24} {'workers':>7} {'seconds':>8} {'solutions/s':>12} {'tests/s':>8} {'busy':>5} "
              f"{'efficiency':>10} {'vs local':>9}")
        numbers: list[dict[str, Any]] = []
        for gran in granularities:
            local_best = next(route.best for route in routes if route.granularity == gran and route.key == "local")
            for workers in counts:
                for route in routes:
                    if route.granularity != gran or workers not in route.best:
                        continue
                    seconds = route.best[workers]
                    one = route.best.get(1)
                    efficiency = (one / seconds) / workers if one else float("nan")
                    vs_local = local_best[workers] / seconds if workers in local_best else float("nan")
                    busy = route.info[workers].get("busy_cpus", float("nan"))
                    numbers.append(
                        {
                            "granularity": gran,
                            "path": route.key,
                            "label": route.label,
                            "workers": workers,
                            "seconds": seconds,
                            "solutions_per_s": len(rows) / seconds,
                            "tests_per_s": tests / seconds,
                            "efficiency": efficiency,
                            "vs_local": vs_local,
                            "not_passed": route.failed.get(workers, []),
                            "info": route.info.get(workers, {}),
                        }
                    )
                    print(
                        f"{gran:<13} {route.label:<24} {workers:>7} {seconds:>8.2f} {len(rows) / seconds:>12.2f} "
                        f"{tests / seconds:>8.0f} "
                        f"{busy:>5.2f} {efficiency:>10.2f} {vs_local:>8.2f}x"
                    )
        print()
        targets = []
        for route in routes:
            if cpus in route.best and 1 in route.best and cpus > 1:
                value = (route.best[1] / route.best[cpus]) / cpus
                passed = value >= TARGET
                targets.append(
                    {
                        "granularity": route.granularity,
                        "path": route.key,
                        "workers": cpus,
                        "efficiency": value,
                        "target": TARGET,
                        "pass": passed,
                    }
                )
                note = "" if route.key == "local" else "  (same target; includes the fixed cost)"
                busy1 = route.info[1].get("busy_cpus", float("nan"))
                print(f"[{route.granularity}] scaling efficiency of {route.label} at {cpus} CPUs >= {TARGET}: {value:.2f}  "
                      f"{'PASS' if passed else 'MISS'}{note}; one worker kept {busy1:.2f} CPUs busy")
        if fixed:
            median = statistics.median(f["fixed_s"] for f in fixed)
            print(
                f"SLURM path fixed cost per job: {median:.2f} s (median of {len(fixed)}: driver wall time of a one-solution, "
                "one-shard job "
                f"minus the task's grading time; runs {', '.join(format(f['fixed_s'], '.2f') for f in fixed)} s)"
            )
        sane = all(not row["not_passed"] for row in numbers)
        print(f"sanity: every path gave pass rate 1.0 on every chosen solution: {'yes' if sane else 'NO'}")
        for row in numbers:
            if row["not_passed"]:
                print(
                    f"  [{row['granularity']}] {row['label']} n={row['workers']} not 1.0 on: {', '.join(row['not_passed'][:10])}"
                )
        load1 = os.getloadavg()[0]
        elapsed = time.perf_counter() - t0
        print(f"load average {load0:.2f} at start, {load1:.2f} at end; whole run {elapsed:.0f} s")
        if json_path:
            out = {
                "data": str(path),
                "n": len(rows),
                "tests": tests,
                "backend": backend,
                "cpus": cpus,
                "workers": counts,
                "granularities": granularities,
                "repeat": repeat,
                "python": sys.version.split()[0],
                "rows": numbers,
                "targets": targets,
                "fixed_cost": fixed,
                "sanity_all_passed": sane,
                "load_average": [load0, load1],
                "elapsed_s": elapsed,
            }
            Path(json_path).parent.mkdir(parents=True, exist_ok=True)
            Path(json_path).write_text(json.dumps(out, indent=2, default=str) + "\n")
            print(f"wrote {json_path}")

    cli.main(args=list(argv) if argv is not None else None, standalone_mode=True)


if __name__ == "__main__":
    main()
