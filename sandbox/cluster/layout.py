"""The run directory of one distributed grading run: its files, its fingerprint, its creation.

A `sandbox.rundir.Chunks` folder (the format `qrpo status` reads), one chunk per shard:

    manifest.json             {"format", "kind", "fingerprint", "count": shards, "rows", "shard_rows", "options", ...}
    chunk-00003.jsonl         shard 3's results: a header line (job id, host, rows, fingerprint), then one
                              result per row; written once, atomically: the shard is finished iff this file
                              exists with the right row count and fingerprint
    problems.jsonl            the problems in the native format (Problem.to_dict): no re-detection
    shards/input-00003.jsonl  the completions rows of shard 3 with their global index and row number
    shards/progress-00003     rows graded so far by the running task (for the progress bar)
    shards/lock-00003         held by the task grading shard 3
    jobs.jsonl                every submission: shard, job id, attempt (append-only)
    ledger.jsonl              every task start / finish / skip, with its job id (append-only)
    driver.log                what the driver did and why
    .lock                     held by the driver
    submitit/                 submitit's pickles and the jobs' stdout/stderr logs

The manifest is written last, so a directory whose creation never finished is created again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..datasets import RowError
from ..problem import GradeResult, Problem
from ..rundir import (
    FORMAT,
    Chunks,
    Hasher,
    append_jsonl,
    read_json,
    read_jsonl,
    read_log,
    read_manifest,
    remove_tree,
    write_jsonl,
)

KIND = "sandbox grade shards"


class ClusterError(RuntimeError):
    """The distributed run cannot go on (stale run directory, no scheduler, failed submission)."""


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
        return self.root / f"chunk-{shard:05d}.jsonl"

    def result_files(self) -> list[Path]:
        return sorted(self.root.glob("chunk-*.jsonl"))

    def progress(self, shard: int) -> Path:
        return self.shards / f"progress-{shard:05d}"

    def job_name(self, fingerprint: str) -> str:
        """The SLURM job name of this run's jobs (unique per run directory and inputs)."""
        return "sandbox-grade-" + hashlib.sha256(f"{fingerprint}:{self.root.resolve()}".encode()).hexdigest()[:10]

    def read_manifest(self) -> dict[str, Any] | None:
        return read_manifest(self.root)

    def chunks(self, manifest: Mapping[str, Any]) -> Chunks:
        """The shards' result files as the run-directory core's chunk set."""
        return Chunks(self.root, manifest["fingerprint"], manifest["count"], kind=KIND, suffix=".jsonl")

    def result_header(self, shard: int) -> dict[str, Any] | None:
        """The header of a shard's result file, or None when it has none (yet)."""
        try:
            header = next(read_jsonl(self.result(shard)), None)
        except (FileNotFoundError, ValueError):
            return None
        return header if isinstance(header, dict) else None

    def finished(self, shard: int, rows: int, fingerprint: str) -> bool:
        """A shard is finished iff its result file exists, belongs to these inputs and holds
        exactly `rows` results."""
        try:
            lines = read_jsonl(self.result(shard))
            header = next(lines)
            count = sum(1 for _ in lines)
        except (FileNotFoundError, StopIteration, ValueError):
            return False
        return isinstance(header, dict) and header.get("fingerprint") == fingerprint and header.get("rows") == rows == count

    def read_results(self, shard: int) -> list[tuple[int, GradeResult]]:
        lines = read_jsonl(self.result(shard))
        next(lines)  # header
        return [(int(r["index"]), GradeResult.from_dict(r["result"])) for r in lines]

    def write_result(self, shard: int, header: dict[str, Any], results: list[tuple[int, GradeResult]]) -> None:
        write_jsonl(self.result(shard), [header] + [{"index": i, "result": r.to_dict()} for i, r in results])

    def read_progress(self, shard: int) -> int:
        value = read_json(self.progress(shard))
        return value if isinstance(value, int) else 0

    def log_submission(self, record: dict[str, Any]) -> None:
        append_jsonl(self.jobs_log, record)

    def log_event(self, record: dict[str, Any]) -> None:
        append_jsonl(self.ledger, record)

    def submissions(self) -> list[dict[str, Any]]:
        return read_log(self.jobs_log)

    def ledger_events(self) -> list[dict[str, Any]]:
        return read_log(self.ledger)


Rows = list[tuple[int, Mapping[str, Any] | RowError]]


def inputs_fingerprint(table: Mapping[str, Problem], rows: Rows, options: Mapping[str, Any]) -> str:
    """The fingerprint (sandbox.rundir.Hasher) of the problems, the completions rows and the options that change results."""
    hasher = Hasher().add({"format": FORMAT, "kind": KIND, "options": dict(options)})
    for task_id in sorted(table):
        hasher.add(["P", table[task_id].to_dict()])
    for rowno, row in rows:
        hasher.add(["C", rowno, row.to_dict() if isinstance(row, RowError) else plain(row)])
    return hasher.hexdigest()


def plain(row: Any) -> Any:
    """A completions row as JSON data (rows from Python may be any Mapping; non-mappings are kept
    as they are, and graded as invalid rows)."""
    return dict(row) if isinstance(row, Mapping) else row


def shard_indices(total: int, shards: int, shard: int) -> range:
    """Rows of a shard: strided (shard, shard + n, ...), so problems that come in runs (N samples
    per prompt, slow problems together) spread over all shards."""
    return range(shard, total, shards)


def prepare(run: RunDir, table: dict[str, Problem], rows: Rows, fp: str, options: dict[str, Any],
            jobs: int) -> tuple[dict[str, Any], str | None]:
    """Create the run directory's inputs, or check that an existing one holds these inputs.
    Returns the manifest and a note for the user (or None)."""
    manifest = run.read_manifest()
    if manifest is not None:
        if manifest.get("format") != FORMAT or manifest.get("kind") != KIND or manifest.get("fingerprint") != fp:
            raise ClusterError(
                f"the run directory {run.root} holds shards of different inputs (fingerprint "
                f"{str(manifest.get('fingerprint'))[:12]}, "
                f"these inputs {fp[:12]}: the problems, completions or grading options changed); its results cannot be reused. "
                f"Delete it, or give this run another --workdir (or --output)"
            )
        note = None
        if manifest["count"] != max(1, min(jobs, len(rows))):
            note = f"reusing the {manifest['count']} shards of {run.root} (jobs={jobs} applies to new run directories only)"
        return manifest, note
    # A fresh directory (or one whose creation never finished: no manifest): write everything, manifest last.
    remove_tree(run.shards)
    for stale in [run.jobs_log, run.ledger, *run.result_files()]:
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    run.shards.mkdir(parents=True)
    write_jsonl(run.problems, (p.to_dict() for p in table.values()))
    n = max(1, min(jobs, len(rows)))
    shard_rows = []
    for k in range(n):
        indices = shard_indices(len(rows), n, k)
        shard_rows.append(len(indices))
        write_jsonl(run.input(k), _input_records(rows, indices))
    extra = {"rows": len(rows), "shard_rows": shard_rows, "problems": len(table), "options": options,
             "assignment": "strided: shard k holds rows k, k + shards, k + 2 * shards, ..."}
    return Chunks(run.root, fp, n, kind=KIND, suffix=".jsonl", extra=extra).manifest, None


def _input_records(rows: Rows, indices: range) -> Iterator[dict[str, Any]]:
    for i in indices:
        rowno, row = rows[i]
        record: dict[str, Any] = {"index": i, "rowno": rowno}
        if isinstance(row, RowError):
            record["row_error"] = row.to_dict()
        else:
            record["row"] = plain(row)
        yield record
