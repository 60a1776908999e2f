"""What the driver needs from the scheduler, as small named adapters on submitit.

submitit gives the executors, the `Job` handles and the jobs' result files; what it does not know
about SLURM, learned the hard way, lives here:
  * `slurm_executor` runs the task with `exec`, so that scancel's and the time limit's SIGTERM reach
    the Python process instead of the batch shell;
  * `slurm_states` reads squeue then sacct, because a pending array task cancelled inside its array
    record vanishes from sacct altogether ("MISSING", which the driver treats as lost);
  * `local_state` asks a LocalExecutor job through its handle, or, for a job a previous driver
    started, whether its process is still there.
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .layout import ClusterError

# Scheduler states (squeue/sacct, first word). Anything in squeue is alive; these are the
# sacct states after which a job will not run our task (again) by itself.
ALIVE_STATES = {
    "PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
    "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "STOPPED",
}
ENDED_STATES = {
    "COMPLETED", "FAILED", "TIMEOUT", "PREEMPTED", "CANCELLED", "NODE_FAIL", "OUT_OF_MEMORY",
    "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT",
    "FINISHED", "INTERRUPTED",  # submitit's LocalExecutor
}
SCHEDULER_TIMEOUT_S = 60


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=SCHEDULER_TIMEOUT_S, check=False)


def batch_python(*, use_srun: bool = False) -> str:
    """The interpreter line of a submitit batch script. Without srun the batch shell would run
    python as a child: `exec` makes python the job's main process, so scancel's and the time
    limit's SIGTERM reach it (the shell would die and leave python orphaned, outside SLURM's
    accounting under proctrack/linuxproc). With srun, srun itself forwards the signals."""
    return shlex.quote(sys.executable) if use_srun else "exec " + shlex.quote(sys.executable)


def package_setup() -> list[str]:
    """Batch-script lines that put this checkout first on the job's PYTHONPATH, so a job runs the
    code that submitted it (a plain checkout, not only an installed package)."""
    root = str(Path(__file__).resolve().parents[2])
    return [f"export PYTHONPATH={shlex.quote(root)}${{PYTHONPATH:+:$PYTHONPATH}}"]


def slurm_executor(folder: Path, *, job_name: str, time_min: float, cpus: int, partition: str | None = None,
                   account: str | None = None, additional: Mapping[str, Any] | None = None, nodes: int = 1,
                   gpus_per_node: int = 0, mem: str | None = None, max_num_timeout: int = 3,
                   signal_delay_s: int = 30) -> Any:
    """The one way this project makes a submitit SlurmExecutor (shard grading, the pipeline's
    stages, `serve --slurm`). Its batch script `exec`s the interpreter on one node (else, with
    use_srun=False, a scancel or time limit kills the shell with SIGTERM, submitit's python ignores
    SIGTERM, is orphaned, and with proctrack/linuxproc escapes the SIGKILL: a cancelled task would go
    on outside SLURM's accounting); on several nodes srun starts one task per node and forwards the
    signals itself."""
    import submitit

    if not shutil.which("sbatch"):
        raise ClusterError("SLURM's sbatch, squeue and sacct are not on PATH (set SLURM_CONF too if the cluster "
                           "needs it): run this on a SLURM login node, or choose the local executor")
    multi_node = nodes > 1
    executor = submitit.SlurmExecutor(folder=folder, python=batch_python(use_srun=multi_node),
                                      max_num_timeout=max_num_timeout)
    params: dict[str, Any] = {"time": max(1, math.ceil(time_min)), "cpus_per_task": cpus, "job_name": job_name,
                              "nodes": nodes, "ntasks_per_node": 1, "use_srun": multi_node,
                              "setup": package_setup(), "signal_delay_s": signal_delay_s}
    optional = {"partition": partition, "account": account, "mem": mem, "gpus_per_node": gpus_per_node}
    params.update({key: value for key, value in optional.items() if value})
    if additional:
        params["additional_parameters"] = dict(additional)
    executor.update_parameters(**params)
    return executor


def local_executor(folder: Path, *, time_min: float) -> Any:
    import submitit

    executor = submitit.LocalExecutor(folder=folder, python=shlex.quote(sys.executable))
    executor.update_parameters(timeout_min=time_min, setup=package_setup())
    return executor


def _first_word(state: str) -> str:
    return state.split()[0].rstrip("+").upper() if state.strip() else "UNKNOWN"


def slurm_states(job_ids: Iterable[str]) -> dict[str, str]:
    """State of each job id ("123" or array task "123_4"): squeue's if it lists the job (alive),
    else sacct's, else "MISSING" (a pending array task cancelled inside its array record leaves
    no sacct record at all). A failing squeue gives "UNKNOWN"."""
    from submitit.slurm.slurm import read_job_id

    ids = list(job_ids)
    if not ids:
        return {}
    states: dict[str, str] = {}
    bases = sorted({j.split("_")[0] for j in ids})
    queue_ok = True
    try:
        out = _run(["squeue", "--me", "-h", "-r", "-o", "%i|%T"])
        queue_ok = out.returncode == 0
        for line in out.stdout.splitlines() if queue_ok else []:
            job, _, state = line.strip().partition("|")
            states[job] = _first_word(state)
    except (OSError, subprocess.TimeoutExpired):
        queue_ok = False
    accounted: dict[str, str] = {}
    try:
        out = _run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(bases)])
        for line in out.stdout.splitlines() if out.returncode == 0 else []:
            job, _, state = line.strip().partition("|")
            try:
                parts = read_job_id(job)
            except Exception:  # noqa: BLE001, S112 -- a line we cannot read says nothing about our jobs
                continue
            for part in parts:
                if len(part) >= 3:
                    for a in range(int(part[1]), int(part[2]) + 1):
                        accounted[f"{part[0]}_{a}"] = _first_word(state)
                else:
                    accounted["_".join(part[:2])] = _first_word(state)
    except (OSError, subprocess.TimeoutExpired):
        pass
    result = {}
    for j in ids:
        if j in states:
            result[j] = states[j]
        elif not queue_ok:
            result[j] = "UNKNOWN"
        else:
            result[j] = accounted.get(j, "MISSING")
    return result


def scancel(job_ids: list[str]) -> None:
    if job_ids and shutil.which("scancel"):
        _run(["scancel", *job_ids])


def queued_jobs_named(name: str) -> list[str]:
    """Ids of this user's jobs (array tasks expanded) called `name` that squeue lists."""
    if not shutil.which("squeue"):
        return []
    out = _run(["squeue", "--me", "-h", "-r", "-n", name, "-o", "%i"])
    return [j.strip() for j in out.stdout.split() if j.strip()]


def job_handle(folder: Path, job_id: str, slurm: bool) -> Any:
    """submitit's handle of a job this process did not submit (its files are under `folder`)."""
    from submitit.local.local import LocalJob
    from submitit.slurm.slurm import SlurmJob

    return SlurmJob(folder=folder, job_id=job_id) if slurm else LocalJob(folder=folder, job_id=job_id)


def succeeded(job: Any) -> bool:
    """True when the job wrote a result file saying that its function returned."""
    return bool(job.paths.result_pickle.exists()) and job.exception() is None


def local_state(job: Any | None, job_id: str | None) -> str:
    """A LocalExecutor job's state: RUNNING, FINISHED (its function returned), FAILED or
    INTERRUPTED. Without a handle (a job a previous driver started), its process is looked up."""
    if job is None:
        return "RUNNING" if job_id and _local_alive(job_id) else "INTERRUPTED"
    state = job.state
    if state == "RUNNING":
        return "RUNNING"
    return "FINISHED" if state == "FINISHED" and succeeded(job) else "FAILED"


def _local_alive(pid: str) -> bool:
    try:
        cmdline = Path(f"/proc/{int(pid)}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False
    return b"submitit" in cmdline


def last_line(text: str, default: str = "") -> str:
    """The last non-blank line of what sbatch, submitit or a job's log said: where the reason is."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else default


def job_error(job: Any) -> str:
    """The last line of the error a submitit job recorded (its result file), else of its stderr."""
    try:
        if job.paths.result_pickle.exists():
            error = job.exception()
            if error is not None:
                text = str(error)
                parts = text.split("----------------------\n")
                trace = parts[1] if len(parts) >= 3 else text
                return last_line(trace, "error")[:500]
    except Exception:  # noqa: BLE001, S110 -- an unreadable result file: fall back to the log
        pass
    try:
        return last_line(job.paths.stderr.read_text(errors="replace"))[:500]
    except OSError:
        return ""


def cpus_here() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
