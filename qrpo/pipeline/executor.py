"""Where a stage's work runs: here (`local`) or as SLURM jobs (`slurm`, through submitit).

A stage hands `Executor.map` a module-level function and one argument tuple per job; the executor returns
the results in order or raises `StageError`. The functions are idempotent (they skip the chunks that are
saved already), so after a failure or an interrupted driver the stage simply calls `map` again: finished
work is kept, and SLURM jobs a killed driver left running are waited for rather than duplicated.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from sandbox.rundir import append_jsonl, read_log

from .config import ExecutorKind, SlurmConfig, SlurmJobConfig
from .errors import StageError

POLL_S = 2.0


class Executor(Protocol):
    @property
    def kind(self) -> ExecutorKind: ...

    def map(self, stage: str, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], job: SlurmJobConfig) -> list[Any]:
        """fn(*args) for each args in `calls`; results in order."""
        ...


class LocalExecutor:
    """Runs the calls one after the other in this process (the stages show their own progress bars)."""

    kind: ExecutorKind = "local"

    def map(self, stage: str, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], job: SlurmJobConfig) -> list[Any]:
        return [fn(*args) for args in calls]


class SlurmExecutor:
    """One submitit job array per `map`, logs under OUTPUT_DIR/slurm/<stage>/."""

    kind: ExecutorKind = "slurm"

    def __init__(self, root: Path, config: SlurmConfig) -> None:
        self.root = root
        self.config = config

    def map(self, stage: str, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], job: SlurmJobConfig) -> list[Any]:
        from sandbox.cluster.scheduler import last_line  # imported here: `qrpo` starts without the cluster code

        if not calls:
            return []
        if not shutil.which("sbatch"):
            raise StageError("--executor slurm needs SLURM's sbatch and squeue on PATH (and SLURM_CONF if the cluster "
                             "needs it); use --executor local here")
        folder = self.root / "slurm" / stage
        folder.mkdir(parents=True, exist_ok=True)
        self._wait_for_leftovers(stage, folder)
        executor = self._executor(stage, folder, job)
        try:
            jobs = executor.map_array(fn, *zip(*calls))
        except Exception as error:  # noqa: BLE001 -- sbatch refused: say why in one line
            raise StageError(f"{stage}: submitting {len(calls)} SLURM job(s) failed: "
                             f"{last_line(str(error), type(error).__name__)}; "
                             "check the slurm section of the config") from None
        for handle in jobs:
            append_jsonl(folder / "jobs.jsonl", {"job_id": str(handle.job_id), "time": time.time()})
        print(f"qrpo {stage}: submitted {len(jobs)} SLURM job(s) {jobs[0].job_id.split('_')[0]} (logs: {folder})",
              file=sys.stderr)
        return self._wait(stage, jobs)

    def _executor(self, stage: str, folder: Path, job: SlurmJobConfig) -> Any:
        from sandbox.cluster.scheduler import slurm_executor

        return slurm_executor(folder / "%j", job_name=f"qrpo-{stage}", time_min=job.time_min, cpus=job.cpus_per_task,
                              nodes=job.nodes, gpus_per_node=job.gpus_per_node,
                              mem=f"{int(job.mem_gb * 1024)}M" if job.mem_gb else None, partition=self.config.partition,
                              account=self.config.account, additional=self.config.additional, signal_delay_s=60)

    def _wait(self, stage: str, jobs: list[Any]) -> list[Any]:
        from sandbox.cluster.scheduler import last_line

        from .progress import bar as progress_bar

        bar = progress_bar(total=len(jobs), desc=f"{stage} (SLURM)", unit="job")
        try:
            pending = set(range(len(jobs)))
            while pending:
                for i in sorted(pending):
                    if jobs[i].done():
                        pending.discard(i)
                        bar.update(1)
                if pending:
                    time.sleep(POLL_S)
        except KeyboardInterrupt:
            ids = ", ".join(str(j.job_id) for j in jobs)
            print(f"qrpo {stage}: interrupted; SLURM job(s) {ids} keep running and a rerun waits for them "
                  "(or scancel them)", file=sys.stderr)
            raise
        finally:
            bar.close()
        results = []
        for handle in jobs:
            try:
                results.append(handle.result())
            except Exception as error:  # noqa: BLE001 -- submitit's FailedJobError and friends
                last = last_line(str(error), type(error).__name__)[:300]
                raise StageError(f"{stage}: SLURM job {handle.job_id} failed: {last} (log: {handle.paths.stderr}); "
                                 "fix the cause and rerun: finished work is kept") from None
        return results

    def _wait_for_leftovers(self, stage: str, folder: Path) -> None:
        """Jobs an earlier driver submitted and that still run: wait for them instead of duplicating them."""
        ids = [str(row["job_id"]) for row in read_log(folder / "jobs.jsonl") if isinstance(row, dict) and "job_id" in row]
        alive = _alive(ids)
        if not alive:
            return
        print(f"qrpo {stage}: waiting for {len(alive)} SLURM job(s) an earlier run left running: "
              f"{', '.join(sorted(alive)[:8])}", file=sys.stderr)
        while alive:
            time.sleep(POLL_S)
            alive = _alive(sorted(alive))


def _alive(job_ids: list[str]) -> set[str]:
    """Those of `job_ids` that squeue still lists (pending, running, completing)."""
    if not job_ids or not shutil.which("squeue"):
        return set()
    bases = sorted({j.split("_")[0] for j in job_ids})
    out = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(bases), "-o", "%i"], capture_output=True, text=True,
                         timeout=60, check=False)
    listed = {line.strip() for line in out.stdout.splitlines() if line.strip()}
    return {j for j in job_ids if j in listed}


def make_executor(kind: ExecutorKind, root: Path, config: SlurmConfig) -> Executor:
    if kind == "slurm":
        return SlurmExecutor(root, config)
    if kind == "local":
        return LocalExecutor()
    raise StageError(f"unknown executor {kind!r}; choose local or slurm")


def thread_env(threads: int | None) -> dict[str, str]:
    """Environment for subprocesses and jobs: OMP/MKL threads when the config fixes them."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env
