"""The array task: grade one shard of a run directory on this node's warm pool and write its
result file atomically (what submitit runs in each SLURM array task, or by hand from
slurm/templates/grade.sbatch).

One judge per allocated CPU (SLURM_CPUS_PER_TASK); the shard's lock makes a duplicate task wait
and then skip; SIGTERM (scancel, preemption, time limit) stops the grading and leaves the shard
unfinished for the driver to resubmit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..api import expected_outputs_for, job_for_row
from ..datasets import RowError
from ..problem import GradeResult, Problem
from ..rundir import lock, read_jsonl, write_atomic
from .layout import ClusterError, RunDir

PROGRESS_EVERY_S = 1.0


def _node_local_image_dir() -> str:
    """Where the apptainer backend unpacks its image on this node: $QRPO_IMAGE_CACHE, else a
    private directory under $TMPDIR (or /tmp), node-local disk on clusters."""
    if os.environ.get("QRPO_IMAGE_CACHE"):
        return os.environ["QRPO_IMAGE_CACHE"]
    base = Path(os.environ.get("TMPDIR") or "/tmp")
    path = base / f"qrpo-images-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(path)
        if st.st_uid == os.getuid() and (st.st_mode & 0o077) == 0 and not os.path.islink(path):
            return str(path)
    except OSError:
        pass
    return tempfile.mkdtemp(prefix="qrpo-images-")  # someone else owns the usual place: a fresh private one


def _task_job_id() -> str:
    try:
        import submitit

        return str(submitit.JobEnvironment().job_id)
    except Exception:  # noqa: BLE001 -- not under submitit (grade.sbatch, tests)
        if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
            return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
        return os.environ.get("SLURM_JOB_ID") or f"pid-{os.getpid()}"


def task_workers(cpus: int | None) -> int:
    """One judge per CPU of the allocation: SLURM_CPUS_PER_TASK inside a SLURM job, else `cpus`
    (the LocalExecutor), else this process's CPUs."""
    from ..pool import default_workers

    if os.environ.get("SUBMITIT_EXECUTOR") != "local" and os.environ.get("SLURM_CPUS_PER_TASK"):
        with contextlib.suppress(ValueError):
            return max(1, int(os.environ["SLURM_CPUS_PER_TASK"]))
    return max(1, cpus or default_workers())


class ShardInterrupted(RuntimeError):
    """SIGTERM reached an array task: its job is being cancelled, preempted or timed out."""


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """Stop grading at SIGTERM. submitit's wrapper ignores SIGTERM (it waits for USR2 to
    checkpoint), so a cancelled task would go on grading until SLURM's SIGKILL (KillWait later,
    often 30 s on clusters) and might even write a result nobody expects any more. SLURM only
    sends SIGTERM to a job it is ending; the shard is left unfinished and the driver resubmits
    it. Only around the grading itself: a result that is being written is not torn."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise ShardInterrupted("SIGTERM: the job is being cancelled, preempted or timed out; the shard is left unfinished")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def grade_shard(run_dir: str, shard: int, fingerprint: str, cpus: int | None = None) -> dict[str, Any]:
    """Grade one shard of a run directory and write its result file atomically.

    The function submitit runs in each array task (also usable by hand, see
    slurm/templates/grade.sbatch). Idempotent: a shard whose result file is complete is skipped.
    Returns a small summary (also recorded in ledger.jsonl)."""
    run = RunDir(Path(run_dir))
    manifest = run.read_manifest()
    if manifest is None or manifest.get("fingerprint") != fingerprint:
        raise ClusterError(
            f"{run.root} no longer holds the inputs this job was submitted for (fingerprint changed); not grading shard {shard}"
        )
    rows_expected = manifest["shard_rows"][shard]
    job_id = _task_job_id()
    event = {"shard": shard, "job_id": job_id, "host": socket.gethostname(), "pid": os.getpid()}
    with _claim(run, shard, event):
        if run.finished(shard, rows_expected, fingerprint):
            run.log_event({**event, "event": "skip", "time": time.time(), "reason": "already finished"})
            return {**event, "skipped": True, "rows": 0}
        return _grade_claimed_shard(run, manifest, shard, fingerprint, cpus, event)


def _claim(run: RunDir, shard: int, event: dict[str, Any]) -> contextlib.AbstractContextManager[None]:
    """Hold the shard's lock while grading it. A second task for the same shard (a job a killed
    driver started but never recorded, then submitted again) waits for the first and then finds
    the shard finished. The lock dies with its process."""

    def waiting(holder: str) -> None:
        run.log_event({**event, "event": "wait", "time": time.time(), "reason": f"another task (pid {holder}) holds the shard"})

    return lock(run.shards, "task", name=f"lock-{shard:05d}", on_busy=waiting)


def _grade_claimed_shard(run: RunDir, manifest: dict[str, Any], shard: int, fingerprint: str, cpus: int | None,
                         event: dict[str, Any]) -> dict[str, Any]:
    from ..backends import get_backend
    from ..pool import Pool

    rows_expected = manifest["shard_rows"][shard]
    job_id = event["job_id"]
    options = manifest["options"]
    table = {p.task_id: p for p in (Problem.from_dict(d) for d in read_jsonl(run.problems))}
    records = list(read_jsonl(run.input(shard)))
    if len(records) != rows_expected:
        raise ClusterError(
            f"{run.input(shard)} holds {len(records)} rows, the manifest says {rows_expected}: the run directory is damaged; "
            "delete it"
        )
    rows = [(record["index"], record["row"]) for record in records if "row" in record]
    workers = task_workers(cpus)
    backend = get_backend(options["backend"], unpack_dir=_node_local_image_dir())
    pool = Pool(backend, workers=max(1, min(workers, len(rows)))) if rows else None
    if pool is not None:  # HumanEval+ / MBPP+: the canonical's outputs, from the cache or computed here in the sandbox
        table = expected_outputs_for(table, rows, pool)
    ready: dict[int, GradeResult] = {}
    jobs = []
    for record in records:
        row = RowError(**record["row_error"]) if "row_error" in record else record["row"]
        item = job_for_row(record["index"], record["rowno"], row, table, options["granularity"], options["extract"])
        if isinstance(item, GradeResult):
            ready[record["index"]] = item
        else:
            jobs.append(item)
    results: list[tuple[int, GradeResult]] = []
    last_progress = 0.0
    started = time.time()
    try:
        with _stop_on_sigterm():
            run.log_event({**event, "event": "start", "time": started})
            graded = pool.map(jobs, total=len(jobs)) if pool and jobs else iter(())
            for record in records:
                index = record["index"]
                results.append((index, ready.pop(index) if index in ready else next(graded)))
                now = time.monotonic()
                if now - last_progress >= PROGRESS_EVERY_S:
                    last_progress = now
                    write_atomic(run.progress(shard), str(len(results)), fsync=False)
    except ShardInterrupted as exc:
        run.log_event({**event, "event": "interrupted", "time": time.time(), "rows": len(results), "reason": str(exc)})
        raise
    finally:
        if pool is not None:
            pool.close()
    finished = time.time()
    header = {
        "shard": shard, "rows": len(results), "fingerprint": fingerprint, "job_id": job_id,
        "host": socket.gethostname(), "workers": workers if jobs else 0, "backend": backend.name,
        "started": started, "finished": finished, "seconds": round(finished - started, 3),
    }
    run.write_result(shard, header, results)
    with contextlib.suppress(FileNotFoundError):
        run.progress(shard).unlink()
    run.log_event({**event, "event": "done", "time": finished, "rows": len(results), "seconds": header["seconds"]})
    return {**event, "skipped": False, "rows": len(results), "seconds": header["seconds"], "workers": header["workers"]}
