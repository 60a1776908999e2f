"""The resumable output of a local `sandbox grade`: OUTPUT.partial, one result row per line.

    OUTPUT.partial   line 1: {"partial": "sandbox grade", "format": 2, "fingerprint": FP, "rows": N}
                     then {"index": I, "row": ROW} per completions row (0-based I), appended as each
                     finishes, in any order

Each row is one O_APPEND write as soon as its solution is graded (not held back behind a slower
one), so Ctrl-C, SIGTERM or kill -9 loses at most the solutions still being graded: a rerun of the
same command reads the finished rows, drops a torn last line, and grades the rest.
The fingerprint (problems and completions file contents, and every option that changes results)
guards against resuming a different job: another job's partial file is refused, never mixed in.
When every row is there, OUTPUT is written atomically and the partial file removed. The file is
locked (`sandbox.rundir.lock`, the project's one lock) while a grade writes it, so two commands
never append to one file. Rows are encoded by `sandbox.rundir.dumps` (a solution's lone surrogates
cannot fail the write); files honour the umask.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .rundir import LockedError, StaleError, dumps, lock, read_jsonl, write_atomic

FORMAT = 2
KIND = "sandbox grade"


def file_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes (read in blocks: dataset files can be large)."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


class PartialOutput:
    """`with PartialOutput(output, fingerprint, rows) as part:` then the row indexes in `part.finished`
    are done (skip them), `part.append(index, row)` as each other row finishes, `part.finish()` once
    all are there."""

    def __init__(self, output: str | os.PathLike[str], fingerprint: str, rows: int) -> None:
        self.output = Path(output)
        self.path = self.output.with_name(self.output.name + ".partial")
        self.fingerprint, self.rows = fingerprint, rows
        self.finished: set[int] = set()
        self.fd = -1
        self._held = contextlib.ExitStack()

    def __enter__(self) -> PartialOutput:
        try:
            self._held.enter_context(lock(self.path.parent, "sandbox grade", name=self.path.name, note_pid=False))
        except LockedError:
            raise LockedError(f"another sandbox grade is writing {self.path}; wait for it to finish, "
                              "or give this one another --output") from None
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
            self._resume()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self._held.close()

    def _header(self) -> dict[str, Any]:
        return {"partial": KIND, "format": FORMAT, "fingerprint": self.fingerprint, "rows": self.rows}

    @property
    def done(self) -> int:
        """How many rows are finished."""
        return len(self.finished)

    def _resume(self) -> None:
        """Collect the finished rows of an earlier run of this job; cut a torn last line."""
        good = 0  # bytes of whole, valid lines
        lines = 0
        with open(self.path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break
                try:
                    value = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    break
                if lines == 0 and value != self._header():
                    self._refuse(value)
                if lines > 0:
                    self.finished.add(self._index(value))
                good += len(line)
                lines += 1
        os.ftruncate(self.fd, good)
        if lines == 0:
            self._write(self._header())

    def _index(self, entry: Any) -> int:
        index = entry.get("index") if isinstance(entry, dict) else None
        if not isinstance(index, int) or not 0 <= index < self.rows or "row" not in entry:
            raise StaleError(f"{self.path} has a line that is not a graded row ({str(entry)[:80]}): delete it to start over")
        return index

    def _refuse(self, header: Any) -> None:
        what = "not a partial file"
        if isinstance(header, dict):
            what = f"fingerprint {header.get('fingerprint')}, {header.get('rows')} rows"
        raise StaleError(f"{self.path} holds an interrupted grade of other inputs or options ({what}; now "
                         f"fingerprint {self.fingerprint}, {self.rows} rows): rerun with the inputs and options it was "
                         "started with to finish it, or delete it to start over")

    def _write(self, value: Any) -> None:
        os.write(self.fd, (dumps(value) + "\n").encode("utf-8"))

    def append(self, index: int, row: dict[str, Any]) -> None:
        """Record row `index` (0-based, any order): one write, visible to a rerun at once."""
        self._write({"index": index, "row": row})
        self.finished.add(index)

    def finish(self) -> list[dict[str, Any]]:
        """Write OUTPUT atomically from the partial file (rows in input order), remove the partial
        file; the rows."""
        os.fsync(self.fd)
        entries = read_jsonl(self.path)
        next(entries, None)  # the header
        by_index = {entry["index"]: entry["row"] for entry in entries}
        if len(by_index) != self.rows:
            missing = sorted(set(range(self.rows)) - set(by_index))[:5]
            raise RuntimeError(f"{self.path} has {len(by_index)} rows, expected {self.rows} (missing e.g. {missing})")
        rows = [by_index[i] for i in range(self.rows)]
        write_atomic(self.output, (dumps(row) + "\n" for row in rows))
        self.path.unlink()
        return rows
