"""Distributed grading: shards of completions go out as one submitit job array.

    from sandbox.cluster import grade_distributed
    results = grade_distributed("problems.jsonl", "completions.jsonl", "graded.jsonl",
                                executor="slurm", jobs=16, cpus_per_job=8, partition="cpu", time_min=60)

or `sandbox grade -p P -c C -o graded.jsonl --executor slurm --jobs 16 --cpus-per-job 8`.

Each array task runs a local warm pool (`sandbox.pool.Pool`) with one judge per allocated CPU
(SLURM_CPUS_PER_TASK) and writes its shard's results atomically (temporary file, fsync, rename).
The driver shows progress over all shards, resubmits shards whose job failed, timed out, was
preempted or cancelled, or vanished from the scheduler (at most `max_retries` times, then their
rows become `sandbox_error` results that name the reason), and merges the shard results in input
order into `output` atomically. Rerunning the same command skips finished shards and re-attaches
to jobs that a killed driver left running, so nothing is lost and nothing is graded twice.
`executor="local"` runs the same code path through submitit's LocalExecutor (processes on this
machine, at most CPUs / cpus_per_job at once).

The run directory (`workdir`, default `OUTPUT.shards/`) holds:

    manifest.json            shard count, rows per shard, input fingerprint, grading options
    problems.jsonl           the problems in the native format (Problem.to_dict): no re-detection
    shards/input-00003.jsonl the completions rows of shard 3 with their global index and row number
    shards/result-00003.jsonl a header line (job id, host, rows, fingerprint) then one result per row;
                             written once, atomically: the shard is finished iff this file exists
                             with the right row count and fingerprint
    shards/progress-00003    rows graded so far by the running task (for the progress bar)
    jobs.jsonl               every submission: shard, job id, attempt (append-only)
    ledger.jsonl             every task start / finish / skip, with its job id (append-only)
    driver.log               what the driver did and why
    submitit/                submitit's pickles and the jobs' stdout/stderr logs

The fingerprint hashes the problems (with limits), the completions and the options that change
results (backend, granularity, extract). A rerun with different inputs refuses the directory with
a message instead of mixing stale shards in; options that do not change results (jobs, CPUs,
partition, time) may change between runs (the shard layout of the first run is kept).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import pickle
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from .api import CompletionsLike, ProblemsLike, _completion_rows, _job, as_problems
from .datasets import RowError
from .problem import GradeResult, Granularity, Limits, Problem, Verdict

__all__ = ["ClusterError", "RunDir", "grade_distributed", "grade_shard"]

RUN_FORMAT = 1
Executor = Literal["local", "slurm"]

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
SCHEDULER_POLL_MIN_S = 1.0  # squeue/sacct at most this often
SCHEDULER_POLL_MAX_S = 30.0  # ... and at least this often (clusters dislike hot polling)
ENDED_GRACE_S = 3.0  # an ended state must persist this long (a preempted job may be requeued)
COMPLETED_GRACE_S = 15.0  # a job that completed without a result file: wait for slow file systems
PROGRESS_EVERY_S = 1.0


class ClusterError(RuntimeError):
    """The distributed run cannot go on (stale run directory, no scheduler, failed submission)."""


# ---------------------------------------------------------------------------------------------
# Files


def _write_atomic(path: Path, lines: Iterable[str], fsync: bool = True) -> None:
    """Write lines to `path` via a temporary file in the same directory, then rename."""
    write_atomic(path, (line + "\n" for line in lines), fsync=fsync)


def write_atomic(path: Path, chunks: Iterable[str], fsync: bool = True) -> None:
    """Write `chunks` to `path` via a temporary file in the same directory, then rename: readers see the
    old file or the whole new one, and a crash leaves no half-written file (the pipeline relies on it too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for chunk in chunks:
                f.write(chunk)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line (O_APPEND: concurrent writers on one machine do not interleave)."""
    data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON rows of a JSONL file written by write_atomic (blank lines skipped)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


@dataclasses.dataclass(frozen=True)
class RunDir:
    """The files of one distributed run (see the module docstring)."""

    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def problems(self) -> Path:
        return self.root / "problems.jsonl"

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    @property
    def jobs_log(self) -> Path:
        return self.root / "jobs.jsonl"

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.jsonl"

    @property
    def driver_log(self) -> Path:
        return self.root / "driver.log"

    @property
    def submitit(self) -> Path:
        return self.root / "submitit"

    def input(self, shard: int) -> Path:
        return self.shards / f"input-{shard:05d}.jsonl"

    def result(self, shard: int) -> Path:
        return self.shards / f"result-{shard:05d}.jsonl"

    def progress(self, shard: int) -> Path:
        return self.shards / f"progress-{shard:05d}"

    def job_name(self, fingerprint: str) -> str:
        """The SLURM job name of this run's jobs (unique per run directory and inputs)."""
        return "sandbox-grade-" + hashlib.sha256(f"{fingerprint}:{self.root.resolve()}".encode()).hexdigest()[:10]

    def read_manifest(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.manifest.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def result_header(self, shard: int) -> dict[str, Any] | None:
        """The header of a shard's result file, or None when it has none (yet)."""
        try:
            with open(self.result(shard), encoding="utf-8") as f:
                return json.loads(f.readline())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def finished(self, shard: int, rows: int, fingerprint: str) -> bool:
        """A shard is finished iff its result file exists, belongs to these inputs and holds
        exactly `rows` results."""
        try:
            with open(self.result(shard), encoding="utf-8") as f:
                header = json.loads(f.readline())
                count = sum(1 for line in f if line.strip())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return False
        return header.get("fingerprint") == fingerprint and header.get("rows") == rows == count

    def read_results(self, shard: int) -> list[tuple[int, GradeResult]]:
        lines = read_records(self.result(shard))
        next(lines)  # header
        return [(int(r["index"]), GradeResult.from_dict(r["result"])) for r in lines]

    def read_progress(self, shard: int) -> int:
        try:
            return int(self.progress(shard).read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def submissions(self) -> list[dict[str, Any]]:
        try:
            return list(read_records(self.jobs_log))
        except FileNotFoundError:
            return []

    def ledger_events(self) -> list[dict[str, Any]]:
        try:
            return list(read_records(self.ledger))
        except FileNotFoundError:
            return []


def fingerprint(table: Mapping[str, Problem], rows: list[tuple[int, Mapping[str, Any] | RowError]], options: Mapping[str, Any]) -> str:
    """sha256 of the problems, the completions rows and the options that change results."""
    digest = hashlib.sha256()
    digest.update(_dumps({"format": RUN_FORMAT, "options": dict(options)}).encode())
    for task_id in sorted(table):
        digest.update(b"\x00P")
        digest.update(_dumps(table[task_id].to_dict()).encode())
    for rowno, row in rows:
        digest.update(b"\x00C")
        digest.update(_dumps([rowno, row.to_dict() if isinstance(row, RowError) else _plain(row)]).encode())
    return digest.hexdigest()


def _plain(row: Any) -> Any:
    """A completions row as JSON data (rows from Python may be any Mapping; non-mappings are kept
    as they are, and graded as invalid rows)."""
    return dict(row) if isinstance(row, Mapping) else row


def _shard_indices(total: int, shards: int, shard: int) -> range:
    """Rows of a shard: strided (shard, shard + n, ...), so problems that come in runs (N samples
    per prompt, slow problems together) spread over all shards."""
    return range(shard, total, shards)


# ---------------------------------------------------------------------------------------------
# The array task


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
    from .pool import default_workers

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
        raise ClusterError(f"{run.root} no longer holds the inputs this job was submitted for (fingerprint changed); not grading shard {shard}")
    rows_expected = manifest["shard_rows"][shard]
    job_id = _task_job_id()
    event = {"shard": shard, "job_id": job_id, "host": socket.gethostname(), "pid": os.getpid()}
    with _claim(run, shard, event):
        if run.finished(shard, rows_expected, fingerprint):
            _append_line(run.ledger, {**event, "event": "skip", "time": time.time(), "reason": "already finished"})
            return {**event, "skipped": True, "rows": 0}
        return _grade_claimed_shard(run, manifest, shard, fingerprint, cpus, event)


@contextlib.contextmanager
def _claim(run: RunDir, shard: int, event: dict[str, Any]) -> Iterator[None]:
    """Hold the shard's lock file while grading it. A second task for the same shard (a job a
    killed driver started but never recorded, then submitted again) waits for the first and
    then finds the shard finished. The lock dies with its process. Where the file system has no
    locks (ENOLCK), grading goes on unclaimed."""
    fd = os.open(run.shards / f"lock-{shard:05d}", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _append_line(run.ledger, {**event, "event": "wait", "time": time.time(), "reason": "another task holds the shard"})
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)



def _with_expected_here(table: dict[str, Problem], records: list[dict[str, Any]], backend_name: str, workers: int,
                        ) -> dict[str, Problem]:
    """Expected outputs of the shard's HumanEval+ / MBPP+ problems (sandbox.datasets.reference):
    from the shared disk cache, else computed here in the sandbox by a short-lived pool."""
    from .backends import get_backend
    from .datasets.reference import attach_expected, needs_expected
    from .pool import Job as PoolJob
    from .pool import Pool

    wanted = {str(r["row"].get("task_id")) for r in records if isinstance(r.get("row"), dict)}
    if not any(needs_expected(table[t]) for t in wanted if t in table):
        return table

    def run(jobs: list[tuple[Problem, str]]) -> list[GradeResult]:
        backend = get_backend(backend_name, unpack_dir=_node_local_image_dir())
        batch = (PoolJob(index=i, problem=p, code=c, granularity="per_solution") for i, (p, c) in enumerate(jobs))
        with Pool(backend, workers=max(1, min(workers, len(jobs)))) as pool:
            return list(pool.grade(batch, total=len(jobs)))

    return attach_expected(table, run, only=wanted)

def _grade_claimed_shard(run: RunDir, manifest: dict[str, Any], shard: int, fingerprint: str, cpus: int | None,
                         event: dict[str, Any]) -> dict[str, Any]:
    from .backends import get_backend
    from .pool import Pool

    rows_expected = manifest["shard_rows"][shard]
    job_id = event["job_id"]
    options = manifest["options"]
    table = {p.task_id: p for p in (Problem.from_dict(d) for d in read_records(run.problems))}
    records = list(read_records(run.input(shard)))
    if len(records) != rows_expected:
        raise ClusterError(f"{run.input(shard)} holds {len(records)} rows, the manifest says {rows_expected}: the run directory is damaged; delete it")
    table = _with_expected_here(table, records, options["backend"], task_workers(cpus))  # h15: HumanEval+ / MBPP+
    ready: dict[int, GradeResult] = {}
    jobs = []
    for record in records:
        row = RowError(**record["row_error"]) if "row_error" in record else record["row"]
        item = _job(record["index"], record["rowno"], row, table, options["granularity"], options["extract"])
        if isinstance(item, GradeResult):
            ready[record["index"]] = item
        else:
            jobs.append(item)
    workers = task_workers(cpus)
    backend = get_backend(options["backend"], unpack_dir=_node_local_image_dir())
    results: list[tuple[int, GradeResult]] = []
    last_progress = 0.0
    pool = Pool(backend, workers=max(1, min(workers, len(jobs)))) if jobs else None
    started = time.time()
    try:
        with _stop_on_sigterm():
            _append_line(run.ledger, {**event, "event": "start", "time": started})
            graded = pool.grade(iter(jobs), total=len(jobs)) if pool else iter(())
            for record in records:
                index = record["index"]
                results.append((index, ready.pop(index) if index in ready else next(graded)))
                now = time.monotonic()
                if now - last_progress >= PROGRESS_EVERY_S:
                    last_progress = now
                    _write_atomic(run.progress(shard), [str(len(results))], fsync=False)
    except ShardInterrupted as exc:
        _append_line(run.ledger, {**event, "event": "interrupted", "time": time.time(), "rows": len(results), "reason": str(exc)})
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
    _write_atomic(run.result(shard), [json.dumps(header)] + [json.dumps({"index": i, "result": r.to_dict()}, ensure_ascii=False) for i, r in results])
    with contextlib.suppress(FileNotFoundError):
        run.progress(shard).unlink()
    _append_line(run.ledger, {**event, "event": "done", "time": finished, "rows": len(results), "seconds": header["seconds"]})
    return {**event, "skipped": False, "rows": len(results), "seconds": header["seconds"], "workers": header["workers"]}


# ---------------------------------------------------------------------------------------------
# Scheduler state


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
        out = subprocess.run(["squeue", "--me", "-h", "-r", "-o", "%i|%T"], capture_output=True, text=True, timeout=60, check=False)
        queue_ok = out.returncode == 0
        for line in out.stdout.splitlines() if queue_ok else []:
            job, _, state = line.strip().partition("|")
            states[job] = _first_word(state)
    except (OSError, subprocess.TimeoutExpired):
        queue_ok = False
    accounted: dict[str, str] = {}
    try:
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(bases)], capture_output=True, text=True, timeout=60, check=False)
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


def _local_alive(pid: str) -> bool:
    try:
        cmdline = Path(f"/proc/{int(pid)}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False
    return b"submitit" in cmdline


def _job_outcome(run: RunDir, job_id: str) -> str | None:
    """"success" or "error" from a finished submitit job's result pickle; None without one."""
    from submitit.core.utils import JobPaths

    try:
        with open(JobPaths(run.submitit / "%j", job_id=job_id, task_id=0).result_pickle, "rb") as f:
            return str(pickle.load(f)[0])  # written by our own task in our own run directory
    except Exception:  # noqa: BLE001 -- absent or unreadable
        return None


def _job_error(run: RunDir, job_id: str) -> str:
    """The last line of the error a submitit job recorded, if any."""
    from submitit.core.utils import JobPaths

    paths = JobPaths(run.submitit / "%j", job_id=job_id, task_id=0)
    try:
        with open(paths.result_pickle, "rb") as f:
            outcome, value = pickle.load(f)  # written by our own task in our own run directory
        if outcome == "error":
            lines = [line for line in str(value).strip().splitlines() if line.strip()]
            return lines[-1][:500] if lines else "error"
    except Exception:  # noqa: BLE001, S110 -- no result pickle: the job was killed
        pass
    try:
        tail = [line for line in paths.stderr.read_text(errors="replace").splitlines() if line.strip()]
        return tail[-1][:500] if tail else ""
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------
# The driver


@dataclasses.dataclass
class _Shard:
    index: int
    rows: int
    finished: bool = False
    job_id: str | None = None
    handle: Any = None  # the submitit Job (None when re-attached after a driver restart)
    attempts: int = 0
    ended_since: float | None = None
    failed: str | None = None  # final: the reason its rows are reported as sandbox_error
    history: list[str] = dataclasses.field(default_factory=list)


class _Driver:
    def __init__(self, run: RunDir, manifest: dict[str, Any], *, executor: Executor, cpus_per_job: int, partition: str | None,
                 time_min: float, max_retries: int, progress: bool, poll_s: float, lost_after_s: float,
                 slurm_parameters: Mapping[str, Any] | None) -> None:
        self.run = run
        self.manifest = manifest
        self.fingerprint = manifest["fingerprint"]
        self.executor_kind = executor
        self.cpus = cpus_per_job
        self.partition = partition
        self.time_min = time_min
        self.max_retries = max_retries
        self.progress = progress
        self.poll_s = poll_s
        self.lost_after_s = lost_after_s
        self.slurm_parameters = dict(slurm_parameters or {})
        self.shards = [_Shard(k, n) for k, n in enumerate(manifest["shard_rows"])]
        self.job_name = run.job_name(self.fingerprint)
        self._executor: Any = None
        self.bar: Any = None
        self.submitted = 0
        self.resubmitted = 0
        self.last_submit = time.time()
        self.last_query = 0.0

    # -- messages
    def say(self, message: str, echo: bool = True) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}"
        with open(self.run.driver_log, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        if echo:
            if self.bar is not None:
                self.bar.write(f"sandbox.cluster: {message}", file=sys.stderr)
            else:
                print(f"sandbox.cluster: {message}", file=sys.stderr)

    # -- submission
    def executor(self) -> Any:
        if self._executor is not None:
            return self._executor
        import submitit

        package_root = str(Path(__file__).resolve().parents[1])
        setup = [f"export PYTHONPATH={shlex.quote(package_root)}${{PYTHONPATH:+:$PYTHONPATH}}"]
        folder = self.run.submitit / "%j"
        if self.executor_kind == "slurm":
            if not shutil.which("sbatch"):
                raise ClusterError("--executor slurm needs SLURM's sbatch, squeue and sacct on PATH (and SLURM_CONF if the cluster needs it); "
                                   "use --executor local on a machine without SLURM")
            # `exec`: the interpreter replaces the batch shell. Otherwise, with use_srun=False, a
            # scancel or time limit kills the shell with SIGTERM, submitit's python ignores SIGTERM,
            # is orphaned, and (with proctrack/linuxproc) escapes the SIGKILL: a cancelled task
            # would go on grading outside SLURM's accounting.
            ex = submitit.SlurmExecutor(folder=folder, python="exec " + shlex.quote(sys.executable))
            params: dict[str, Any] = {"time": max(1, round(self.time_min)), "cpus_per_task": self.cpus, "job_name": self.job_name,
                                      "use_srun": False, "setup": setup, "signal_delay_s": 30}
            if self.partition:
                params["partition"] = self.partition
            if self.slurm_parameters:
                params["additional_parameters"] = self.slurm_parameters
            ex.update_parameters(**params)
        else:
            ex = submitit.LocalExecutor(folder=folder, python=shlex.quote(sys.executable))
            ex.update_parameters(timeout_min=self.time_min, setup=setup)
        self._executor = ex
        return ex

    def submit(self, shards: list[_Shard]) -> None:
        if not shards:
            return
        ex = self.executor()
        try:
            handles = ex.map_array(grade_shard, [str(self.run.root)] * len(shards), [s.index for s in shards],
                                   [self.fingerprint] * len(shards), [self.cpus] * len(shards))
        except Exception as exc:  # sbatch refused: say why, keep the finished shards
            raise ClusterError(f"submitting {len(shards)} shard(s) with the {self.executor_kind} executor failed: {exc}") from exc
        now = self.last_submit = time.time()
        for shard, handle in zip(shards, handles):
            shard.job_id, shard.handle, shard.ended_since = str(handle.job_id), handle, None
            shard.attempts += 1
            if shard.attempts > 1:
                self.resubmitted += 1
            self.submitted += 1
            _append_line(self.run.jobs_log, {"shard": shard.index, "job_id": shard.job_id, "executor": self.executor_kind,
                                             "attempt": shard.attempts, "driver_pid": os.getpid(), "time": now,
                                             "fingerprint": self.fingerprint})
        ids = [s.job_id for s in shards]
        self.say(f"submitted {len(shards)} shard(s) as {self.executor_kind} job(s) {_ids_summary(ids)}", echo=False)

    def cancel(self, shard: _Shard) -> None:
        if shard.job_id is None:
            return
        if self.executor_kind == "slurm":
            subprocess.run(["scancel", shard.job_id], capture_output=True, timeout=60, check=False)
        elif shard.handle is not None:
            with contextlib.suppress(Exception):
                shard.handle.cancel(check=False)

    # -- state
    def states(self, shards: list[_Shard]) -> dict[int, str]:
        if self.executor_kind == "slurm":
            by_id = slurm_states([s.job_id for s in shards if s.job_id])
            return {s.index: by_id.get(s.job_id or "", "MISSING") for s in shards}
        out = {}
        for s in shards:
            if s.handle is not None:
                process = s.handle._process
                if process is not None and process.poll() is None:
                    out[s.index] = "RUNNING"
                else:  # the controller exits 0 even when the task raised: ask its result pickle
                    out[s.index] = "FAILED" if process is None or process.returncode != 0 or _job_outcome(self.run, s.job_id or "") != "success" else "FINISHED"
            else:  # re-attached after a driver restart: the controller process is not ours
                out[s.index] = "RUNNING" if s.job_id and _local_alive(s.job_id) else "INTERRUPTED"
        return out

    def check_finished(self, shard: _Shard) -> bool:
        if not shard.finished and self.run.result(shard.index).exists() and self.run.finished(shard.index, shard.rows, self.fingerprint):
            shard.finished = True
            if shard.handle is not None and self.executor_kind == "local":
                shard.handle._process = None  # drop the Popen (and its zombie) once we know
        return shard.finished

    def lost(self, shard: _Shard, reason: str, queue: list[_Shard]) -> None:
        self.cancel(shard)
        shard.history.append(reason)
        shard.job_id, shard.handle, shard.ended_since = None, None, None
        if shard.attempts < 1 + self.max_retries:
            self.say(f"shard {shard.index}: {reason}; resubmitting (attempt {shard.attempts + 1} of {1 + self.max_retries})")
            queue.append(shard)
        else:
            shard.failed = f"{reason} (after {shard.attempts} attempts)"
            self.say(f"shard {shard.index}: {reason}; giving up after {shard.attempts} attempts: its {shard.rows} rows are reported as sandbox_error")

    def classify(self, shard: _Shard, state: str, now: float, queue: list[_Shard]) -> None:
        if state in ALIVE_STATES:
            shard.ended_since = None
            return
        shard.ended_since = shard.ended_since or now
        waited = now - shard.ended_since
        job = shard.job_id
        if state in ("COMPLETED", "FINISHED"):
            if waited >= COMPLETED_GRACE_S:
                error = _job_error(self.run, job or "")
                self.lost(shard, f"job {job} ended ({state}) without a complete result file" + (f": {error}" if error else ""), queue)
        elif state in ENDED_STATES:
            if waited >= ENDED_GRACE_S:
                error = _job_error(self.run, job or "")
                self.lost(shard, f"job {job} {state}" + (f": {error}" if error else ""), queue)
        elif waited >= self.lost_after_s:  # MISSING, UNKNOWN, anything else
            self.lost(shard, f"job {job} is in neither squeue nor sacct (state {state}) for {waited:.0f} s", queue)

    def reattach(self, queue: list[_Shard]) -> None:
        """After a driver restart: follow the jobs the previous driver left running instead of
        submitting their shards again; cancel jobs of this run that were never recorded."""
        latest: dict[int, dict[str, Any]] = {}
        for record in self.run.submissions():
            if record.get("fingerprint") == self.fingerprint:
                latest[int(record["shard"])] = record
        unfinished = [s for s in self.shards if not s.finished]
        candidates = [s for s in unfinished if s.index in latest and latest[s.index].get("executor") == self.executor_kind]
        switched = [str(latest[s.index]["job_id"]) for s in unfinished
                    if s.index in latest and latest[s.index].get("executor") == "slurm" and self.executor_kind != "slurm"]
        if switched and shutil.which("scancel"):  # the executor changed: stop the old jobs before grading their shards here
            self.say(f"cancelling {len(switched)} SLURM job(s) of a previous driver: their shards are graded by the {self.executor_kind} executor now")
            subprocess.run(["scancel", *switched], capture_output=True, timeout=60, check=False)
        for s in candidates:
            s.job_id = str(latest[s.index]["job_id"])
        states = self.states(candidates) if candidates else {}
        attached = []
        for s in unfinished:
            if s.index in states and states[s.index] in ALIVE_STATES:
                s.attempts = 1
                attached.append(s)
            else:
                s.job_id = None
                queue.append(s)
        if attached:
            self.say(f"re-attached to {len(attached)} running job(s) of a previous driver: {_ids_summary([s.job_id or '' for s in attached])}")
        if self.executor_kind == "slurm" and shutil.which("squeue"):
            known = {str(r["job_id"]) for r in self.run.submissions()}
            out = subprocess.run(["squeue", "--me", "-h", "-r", "-n", self.job_name, "-o", "%i"], capture_output=True, text=True, timeout=60, check=False)
            orphans = [j.strip() for j in out.stdout.split() if j.strip() and j.strip() not in known]
            if orphans:
                self.say(f"cancelling {len(orphans)} job(s) of this run that no driver recorded (a driver died while submitting): {_ids_summary(orphans)}")
                subprocess.run(["scancel", *orphans], capture_output=True, timeout=60, check=False)

    def capacity(self, running: int) -> int:
        if self.executor_kind == "slurm":
            return 1 << 30  # the scheduler queues them
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(0, max(1, cpus // self.cpus) - running)

    # -- main loop
    def run_all(self) -> None:
        total_rows = sum(s.rows for s in self.shards)
        for s in self.shards:
            self.check_finished(s)
        done = [s for s in self.shards if s.finished]
        self.say(f"run directory {self.run.root}: {len(self.shards)} shards, {total_rows} rows; {len(done)} shards finished already", echo=False)
        queue: list[_Shard] = []
        if len(done) < len(self.shards):
            self.reattach(queue)
        if done:
            self.say(f"skipping {len(done)} finished shard(s) of {len(self.shards)}" + ("" if len(done) < len(self.shards) else ": nothing to grade"))
        if self.progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total_rows, unit="solution", desc="grading", dynamic_ncols=True, mininterval=0.5, file=sys.stderr)
        try:
            while True:
                active = [s for s in self.shards if not s.finished and s.failed is None and s.job_id is not None]
                for s in active:
                    self.check_finished(s)
                active = [s for s in active if not s.finished]
                if not active and not queue:
                    break
                now = time.time()
                # Result files are checked every poll; the scheduler less often as jobs age
                # (every second at first, then about a tenth of the time since the last submission,
                # at most every SCHEDULER_POLL_MAX_S), so a failure is noticed quickly early on and
                # long runs do not hammer squeue/sacct.
                interval = min(SCHEDULER_POLL_MAX_S, max(SCHEDULER_POLL_MIN_S, self.poll_s, (now - self.last_submit) / 10))
                if active and now - self.last_query >= interval * 0.99:
                    self.last_query = now
                    for shard, state in self.states(active).items():
                        s = self.shards[shard]
                        if not self.check_finished(s):  # it may have finished since
                            self.classify(s, state, now, queue)
                running = sum(1 for s in self.shards if s.job_id is not None and not s.finished)
                take = min(len(queue), self.capacity(running))
                if take:
                    batch, queue = queue[:take], queue[take:]
                    self.submit(batch)
                self.update_bar(len(queue))
                if any(s.job_id is not None and not s.finished for s in self.shards) or queue:
                    time.sleep(self.poll_s)
        except KeyboardInterrupt:
            running = [s.job_id for s in self.shards if s.job_id and not s.finished]
            if self.executor_kind == "slurm":
                self.say(f"interrupted: {len(running)} job(s) keep running ({_ids_summary([j for j in running if j])}); "
                         "rerun the same command to resume (it follows them), or scancel them")
            else:
                self.say("interrupted; rerun the same command to resume (finished shards are kept)")
            raise
        finally:
            self.update_bar(0)
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    def update_bar(self, queued: int) -> None:
        if self.bar is None:
            return
        finished = [s for s in self.shards if s.finished]
        running = [s for s in self.shards if not s.finished and s.job_id is not None]
        rows = sum(s.rows for s in finished) + sum(min(s.rows, self.run.read_progress(s.index)) for s in running)
        failed = sum(1 for s in self.shards if s.failed)
        self.bar.n = rows
        postfix = f"shards {len(finished)}/{len(self.shards)} done, {len(running)} submitted"
        if queued:
            postfix += f", {queued} queued"
        if self.resubmitted:
            postfix += f", {self.resubmitted} resubmitted"
        if failed:
            postfix += f", {failed} failed"
        self.bar.set_postfix_str(postfix, refresh=False)
        self.bar.refresh()


def _ids_summary(ids: list[str], limit: int = 8) -> str:
    return ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


# ---------------------------------------------------------------------------------------------
# Preparing the run directory


@contextlib.contextmanager
def _driver_lock(run: RunDir) -> Iterator[None]:
    """One driver per run directory at a time (the lock dies with the process)."""
    run.root.mkdir(parents=True, exist_ok=True)
    with open(run.root / ".driver.lock", "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            raise ClusterError(f"another driver (pid {holder}) is using {run.root}; wait for it or give this run its own --workdir") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _prepare(run: RunDir, table: dict[str, Problem], rows: list[tuple[int, Mapping[str, Any] | RowError]], fp: str,
             options: dict[str, Any], jobs: int) -> tuple[dict[str, Any], str | None]:
    """Create the run directory's inputs, or check that an existing one holds these inputs.
    Returns the manifest and a note for the user (or None)."""
    manifest = run.read_manifest()
    if manifest is not None:
        if manifest.get("format") != RUN_FORMAT or manifest.get("fingerprint") != fp:
            raise ClusterError(
                f"the run directory {run.root} holds shards of different inputs (fingerprint {str(manifest.get('fingerprint'))[:12]}, "
                f"these inputs {fp[:12]}: the problems, completions or grading options changed); its results cannot be reused. "
                f"Delete it, or give this run another --workdir (or --output)")
        note = None
        if manifest["shards"] != max(1, min(jobs, len(rows))):
            note = f"reusing the {manifest['shards']} shards of {run.root} (jobs={jobs} applies to new run directories only)"
        return manifest, note
    # A fresh directory (or one whose creation never finished: no manifest): write everything, manifest last.
    if run.shards.exists():
        shutil.rmtree(run.shards)
    for stale in (run.jobs_log, run.ledger):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    run.shards.mkdir(parents=True)
    _write_atomic(run.problems, (json.dumps(p.to_dict(), ensure_ascii=False) for p in table.values()))
    n = max(1, min(jobs, len(rows)))
    shard_rows = []
    for k in range(n):
        indices = _shard_indices(len(rows), n, k)
        shard_rows.append(len(indices))
        lines = []
        for i in indices:
            rowno, row = rows[i]
            record: dict[str, Any] = {"index": i, "rowno": rowno}
            if isinstance(row, RowError):
                record["row_error"] = row.to_dict()
            else:
                record["row"] = _plain(row)
            lines.append(json.dumps(record, ensure_ascii=False, default=str))
        _write_atomic(run.input(k), lines)
    manifest = {"format": RUN_FORMAT, "fingerprint": fp, "rows": len(rows), "shards": n, "shard_rows": shard_rows,
                "assignment": "strided: shard k holds rows k, k + shards, k + 2 * shards, ...", "problems": len(table),
                "options": options, "created": time.time()}
    _write_atomic(run.manifest, [json.dumps(manifest, indent=1)])
    return manifest, None


def _fallback(index: int, numbered: tuple[int, Any], table: dict[str, Problem], options: dict[str, Any], reason: str, attempts: int) -> GradeResult:
    """The result of a row whose shard could not be graded: what needs no judge (invalid rows,
    no code) as local grading gives it, else sandbox_error with the reason."""
    rowno, row = numbered
    item = _job(index, rowno, row, table, options["granularity"], options["extract"])
    if isinstance(item, GradeResult):
        return item
    return GradeResult.uniform(item.problem.task_id, len(item.problem.tests), Verdict.SANDBOX_ERROR, options["backend"], reason, attempts=attempts)


def grade_distributed(
    problems: ProblemsLike,
    completions: CompletionsLike,
    output: str | os.PathLike[str] | None = None,
    *,
    executor: Executor = "local",
    jobs: int = 4,
    cpus_per_job: int = 1,
    partition: str | None = None,
    time_min: float = 60,
    backend: str = "auto",
    workdir: str | os.PathLike[str] | None = None,
    max_retries: int = 2,
    progress: bool = True,
    granularity: Granularity = "per_test",
    extract: str = "first",
    limits: Limits | None = None,
    poll_s: float = 0.5,
    lost_after_s: float = 60.0,
    slurm_parameters: Mapping[str, Any] | None = None,
) -> list[GradeResult]:
    """Grade completions as `jobs` shards on SLURM (`executor="slurm"`) or on this machine
    (`"local"`), each shard a job with `cpus_per_job` CPUs and one warm judge per CPU.

    Returns one GradeResult per completion in input order (as `sandbox.api.grade` does) and
    writes them to `output` (JSONL, atomically) when given. The run directory (`workdir`,
    default `OUTPUT.shards`) makes the run resumable: call again with the same arguments after
    any failure and only unfinished shards are graded. `time_min` is each job's time limit in
    minutes; `partition` and `slurm_parameters` (extra sbatch options, e.g. {"account": "x"})
    go to sbatch. Shards whose job fails, times out, is preempted, cancelled or vanishes are
    resubmitted up to `max_retries` times; after that their rows come back as `sandbox_error`
    results naming the reason (rerun to retry them). `lost_after_s`: how long a job may be
    absent from both squeue and sacct before it counts as lost. `poll_s`: how often result
    files are checked (the scheduler is asked every second at first, backing off to every 30 s).
    """
    if executor not in ("local", "slurm"):
        raise ValueError(f"executor must be 'local' or 'slurm', got {executor!r}")
    for name, value, low in (("jobs", jobs, 1), ("cpus_per_job", cpus_per_job, 1), ("max_retries", max_retries, 0)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    from .backends import BACKENDS

    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of: auto, {', '.join(BACKENDS)}")
    if output is None and workdir is None:
        raise ValueError("give `output` (the run directory defaults to OUTPUT.shards) or `workdir`")
    run = RunDir(Path(workdir) if workdir is not None else Path(f"{os.fspath(output)}.shards"))
    run = RunDir(run.root.absolute())
    table = as_problems(problems)
    if limits is not None:
        table = {k: p.with_limits(limits) for k, p in table.items()}
    rows = list(_completion_rows(completions))
    options = {"backend": backend, "granularity": granularity, "extract": extract}
    fp = fingerprint(table, rows, options)
    with _driver_lock(run):
        manifest, note = _prepare(run, table, rows, fp, options, jobs)
        driver = _Driver(run, manifest, executor=executor, cpus_per_job=cpus_per_job, partition=partition, time_min=time_min,
                         max_retries=max_retries, progress=progress, poll_s=poll_s, lost_after_s=lost_after_s,
                         slurm_parameters=slurm_parameters)
        if note:
            driver.say(note)
        if rows:
            driver.run_all()
        results: list[GradeResult | None] = [None] * len(rows)
        for shard in driver.shards:
            if shard.finished:
                for index, result in run.read_results(shard.index):
                    results[index] = result
            else:
                reason = f"shard {shard.index} was not graded: {shard.failed or 'unknown reason'}"
                for i in _shard_indices(len(rows), len(driver.shards), shard.index):
                    results[i] = _fallback(i, rows[i], table, options, reason, shard.attempts)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            raise ClusterError(f"{len(missing)} rows have no result (first: row index {missing[0]}); the run directory {run.root} is damaged: delete it")
        final: list[GradeResult] = [r for r in results if r is not None]
        failed = [s for s in driver.shards if s.failed]
        driver.say(f"merged {len(final)} results" + (f"; {len(failed)} shard(s) failed: {sum(s.rows for s in failed)} rows are sandbox_error" if failed else ""),
                   echo=bool(failed))
        if output is not None:
            _write_atomic(Path(output), (json.dumps(r.to_dict(), ensure_ascii=False) for r in final))
    return final
