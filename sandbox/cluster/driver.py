"""The resubmitting driver: shards of completions go out as one submitit job array, and come
back merged in input order.

The driver shows progress over all shards, resubmits shards whose job failed, timed out, was
preempted or cancelled, or vanished from the scheduler (at most `max_retries` times, then their
rows become `sandbox_error` results that name the reason), and merges the shard results in input
order into `output` atomically. Rerunning the same command skips finished shards and re-attaches
to jobs that a killed driver left running, so nothing is lost and nothing is graded twice.
`executor="local"` runs the same code path through submitit's LocalExecutor (processes on this
machine, at most CPUs / cpus_per_job at once). The run directory is described in `layout`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..api import CompletionsLike, ProblemsLike, as_problems, completion_rows, job_for_row
from ..problem import ExecutorKind, Extraction, GradeResult, Granularity, Limits, Problem, Verdict
from ..rundir import LockedError, lock, write_jsonl
from .layout import ClusterError, Rows, RunDir, inputs_fingerprint, prepare, shard_indices
from .scheduler import (
    ALIVE_STATES,
    ENDED_STATES,
    cpus_here,
    job_error,
    job_handle,
    local_executor,
    local_state,
    queued_jobs_named,
    scancel,
    slurm_executor,
    slurm_states,
)
from .task import grade_shard

Executor = ExecutorKind  # the name callers used

SCHEDULER_POLL_MIN_S = 1.0  # squeue/sacct at most this often
SCHEDULER_POLL_MAX_S = 30.0  # ... and at least this often (clusters dislike hot polling)
ENDED_GRACE_S = 3.0  # an ended state must persist this long (a preempted job may be requeued)
COMPLETED_GRACE_S = 15.0  # a job that completed without a result file: wait for slow file systems


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
        if self._executor is None:
            folder = self.run.submitit / "%j"
            if self.executor_kind == "slurm":
                self._executor = slurm_executor(folder, time_min=self.time_min, cpus=self.cpus, job_name=self.job_name,
                                                partition=self.partition, additional=self.slurm_parameters)
            else:
                self._executor = local_executor(folder, time_min=self.time_min)
        return self._executor

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
            self.run.log_submission({"shard": shard.index, "job_id": shard.job_id, "executor": self.executor_kind,
                                             "attempt": shard.attempts, "driver_pid": os.getpid(), "time": now,
                                             "fingerprint": self.fingerprint})
        ids = [s.job_id or "" for s in shards]
        self.say(f"submitted {len(shards)} shard(s) as {self.executor_kind} job(s) {_ids_summary(ids)}", echo=False)

    def cancel(self, shard: _Shard) -> None:
        if shard.job_id is None:
            return
        if self.executor_kind == "slurm":
            scancel([shard.job_id])
        elif shard.handle is not None:
            with contextlib.suppress(Exception):
                shard.handle.cancel(check=False)

    # -- state
    def states(self, shards: list[_Shard]) -> dict[int, str]:
        if self.executor_kind == "slurm":
            by_id = slurm_states([s.job_id for s in shards if s.job_id])
            return {s.index: by_id.get(s.job_id or "", "MISSING") for s in shards}
        return {s.index: local_state(s.handle, s.job_id) for s in shards}

    def check_finished(self, shard: _Shard) -> bool:
        if (
            not shard.finished
            and self.run.result(shard.index).exists()
            and self.run.finished(shard.index, shard.rows, self.fingerprint)
        ):
            shard.finished = True
            shard.handle = None  # drop the handle (and a local job's finished process) once we know
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
            self.say(
                f"shard {shard.index}: {reason}; giving up after {shard.attempts} attempts: its {shard.rows} rows are reported "
                "as sandbox_error"
            )

    def classify(self, shard: _Shard, state: str, now: float, queue: list[_Shard]) -> None:
        if state in ALIVE_STATES:
            shard.ended_since = None
            return
        shard.ended_since = shard.ended_since or now
        waited = now - shard.ended_since
        job = shard.job_id
        if state in ("COMPLETED", "FINISHED"):
            if waited >= COMPLETED_GRACE_S:
                error = self.job_error(shard)
                self.lost(
                    shard, f"job {job} ended ({state}) without a complete result file" + (f": {error}" if error else ""), queue
                )
        elif state in ENDED_STATES:
            if waited >= ENDED_GRACE_S:
                error = self.job_error(shard)
                self.lost(shard, f"job {job} {state}" + (f": {error}" if error else ""), queue)
        elif waited >= self.lost_after_s:  # MISSING, UNKNOWN, anything else
            self.lost(shard, f"job {job} is in neither squeue nor sacct (state {state}) for {waited:.0f} s", queue)

    def job_error(self, shard: _Shard) -> str:
        if shard.job_id is None:
            return ""
        handle = shard.handle or job_handle(self.run.submitit / "%j", shard.job_id, self.executor_kind == "slurm")
        return job_error(handle)

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
            self.say(
                f"cancelling {len(switched)} SLURM job(s) of a previous driver: their shards are graded by the "
                f"{self.executor_kind} executor now"
            )
            scancel(switched)
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
            self.say(
                f"re-attached to {len(attached)} running job(s) of a previous driver: "
                f"{_ids_summary([s.job_id or '' for s in attached])}"
            )
        if self.executor_kind == "slurm":
            known = {str(r["job_id"]) for r in self.run.submissions()}
            orphans = [j for j in queued_jobs_named(self.job_name) if j not in known]
            if orphans:
                self.say(
                    f"cancelling {len(orphans)} job(s) of this run that no driver recorded (a driver died while submitting): "
                    f"{_ids_summary(orphans)}"
                )
                scancel(orphans)

    def capacity(self, running: int) -> int:
        if self.executor_kind == "slurm":
            return 1 << 30  # the scheduler queues them
        return max(0, max(1, cpus_here() // self.cpus) - running)

    # -- main loop
    def run_all(self) -> None:
        total_rows = sum(s.rows for s in self.shards)
        for s in self.shards:
            self.check_finished(s)
        done = [s for s in self.shards if s.finished]
        self.say(
            f"run directory {self.run.root}: {len(self.shards)} shards, {total_rows} rows; {len(done)} shards finished already",
            echo=False,
        )
        queue: list[_Shard] = []
        if len(done) < len(self.shards):
            self.reattach(queue)
        if done:
            self.say(
                f"skipping {len(done)} finished shard(s) of {len(self.shards)}"
                + ("" if len(done) < len(self.shards) else ": nothing to grade")
            )
        if self.progress:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total_rows, unit="solution", desc="grading", dynamic_ncols=True, mininterval=0.5, file=sys.stderr
            )
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
            left = [s.job_id for s in self.shards if s.job_id and not s.finished]
            if self.executor_kind == "slurm":
                self.say(f"interrupted: {len(left)} job(s) keep running ({_ids_summary(left)}); "
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


def _fallback(
    index: int, numbered: tuple[int, Any], table: dict[str, Problem], options: dict[str, Any], reason: str, attempts: int
) -> GradeResult:
    """The result of a row whose shard could not be graded: what needs no judge (invalid rows,
    no code) as local grading gives it, else sandbox_error with the reason."""
    rowno, row = numbered
    item = job_for_row(index, rowno, row, table, options["granularity"], options["extract"])
    if isinstance(item, GradeResult):
        return item
    return GradeResult.uniform(
        item.problem.task_id, len(item.problem.tests), Verdict.SANDBOX_ERROR, options["backend"], reason, attempts=attempts
    )


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
    extract: Extraction = "auto",
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
    from ..backends import BACKENDS

    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of: auto, {', '.join(BACKENDS)}")
    if output is None and workdir is None:
        raise ValueError("give `output` (the run directory defaults to OUTPUT.shards) or `workdir`")
    root = Path(workdir) if workdir is not None else Path(f"{os.fspath(output or '')}.shards")
    run = RunDir(root.absolute())
    table = as_problems(problems)
    if limits is not None:
        table = {k: p.with_limits(limits) for k, p in table.items()}
    rows = list(completion_rows(completions))
    options = {"backend": backend, "granularity": granularity, "extract": extract}
    fp = inputs_fingerprint(table, rows, options)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(lock(run.root, "driver"))
        except LockedError as error:
            raise ClusterError(str(error)) from None
        return _drive(run, table, rows, fp, options, output, executor=executor, jobs=jobs, cpus_per_job=cpus_per_job,
                          partition=partition, time_min=time_min, max_retries=max_retries, progress=progress, poll_s=poll_s,
                          lost_after_s=lost_after_s, slurm_parameters=slurm_parameters)
    raise AssertionError("unreachable")


def _drive(
    run: RunDir,
    table: dict[str, Problem],
    rows: Rows,
    fp: str,
    options: dict[str, Any],
    output: str | os.PathLike[str] | None,
    *,
    executor: Executor,
    jobs: int,
    cpus_per_job: int,
    partition: str | None,
    time_min: float,
    max_retries: int,
    progress: bool,
    poll_s: float,
    lost_after_s: float,
    slurm_parameters: Mapping[str, Any] | None,
) -> list[GradeResult]:
    """Prepare the run directory, run the driver, merge the results (under the driver's lock)."""
    manifest, note = prepare(run, table, rows, fp, options, jobs)
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
            for i in shard_indices(len(rows), len(driver.shards), shard.index):
                results[i] = _fallback(i, rows[i], table, options, reason, shard.attempts)
    missing = [i for i, r in enumerate(results) if r is None]
    if missing:
        raise ClusterError(
            f"{len(missing)} rows have no result (first: row index {missing[0]}); the run directory {run.root} is damaged: "
            "delete it"
        )
    final: list[GradeResult] = [r for r in results if r is not None]
    failed = [s for s in driver.shards if s.failed]
    driver.say(
        f"merged {len(final)} results"
        + (f"; {len(failed)} shard(s) failed: {sum(s.rows for s in failed)} rows are sandbox_error" if failed else ""),
        echo=bool(failed),
    )
    if output is not None:
        write_jsonl(Path(output), (r.to_dict() for r in final))
    return final
