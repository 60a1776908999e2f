"""The resumable output of `sandbox grade` (sandbox.partial) under the run-directory lock: a second
grade of the same output is refused without touching the rows, and a killed grade frees it."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

import pytest

from sandbox.partial import PartialOutput
from sandbox.rundir import LockedError, StaleError


def _write_rows_and_hang(output: str, ready: object) -> None:
    part = PartialOutput(output, "fp", 3).__enter__()
    part.append(0, {"row": 0})
    part.append(2, {"row": 2})
    ready.set()  # type: ignore[attr-defined]
    while True:
        signal.pause()


def test_a_second_grade_of_the_same_output_is_refused_and_the_rows_are_untouched(tmp_path: Path) -> None:
    output = tmp_path / "graded.jsonl"
    with PartialOutput(output, "fp", 3) as first:
        first.append(2, {"row": 2})  # rows are recorded as they finish, in any order
        before = first.path.read_bytes()
        with pytest.raises(LockedError, match=f"another sandbox grade is writing {first.path}.*another --output"):
            PartialOutput(output, "fp", 3).__enter__()
        assert first.path.read_bytes() == before  # the lock neither reads nor rewrites the rows
        first.append(0, {"row": 0})
    with PartialOutput(output, "fp", 3) as again:  # released on close: the rerun resumes
        assert again.finished == {0, 2} and again.done == 2
        with pytest.raises(RuntimeError, match=r"has 2 rows, expected 3 \(missing e.g. \[1\]\)"):
            again.finish()
        again.append(1, {"row": 1})
        assert again.finish() == [{"row": 0}, {"row": 1}, {"row": 2}]  # input order
    assert sorted(os.listdir(tmp_path)) == ["graded.jsonl"]  # no lock file is left beside the output


def test_a_killed_grade_frees_its_output_and_its_rows_are_resumed(tmp_path: Path) -> None:
    output = tmp_path / "graded.jsonl"
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    holder = ctx.Process(target=_write_rows_and_hang, args=(str(output), ready))
    holder.start()
    try:
        assert ready.wait(10)
        with pytest.raises(LockedError):
            PartialOutput(output, "fp", 3).__enter__()
    finally:
        holder.kill()
        holder.join()
    with PartialOutput(output, "fp", 3) as rerun:  # the kernel dropped the dead holder's lock
        assert rerun.finished == {0, 2}


def test_a_torn_last_line_is_cut_and_a_foreign_line_refused(tmp_path: Path) -> None:
    output = tmp_path / "graded.jsonl"
    with PartialOutput(output, "fp", 3) as part:
        part.append(1, {"row": 1})
        path = part.path
    with path.open("ab") as f:
        f.write(b'{"index": 0, "row": {"ro')  # kill -9 in the middle of a write
    with PartialOutput(output, "fp", 3) as rerun:
        assert rerun.finished == {1}
        rerun.append(0, {"row": 0})
        rerun.append(2, {"row": 2})
        assert [row["row"] for row in rerun.finish()] == [0, 1, 2]
    with PartialOutput(output, "fp", 3) as part:
        part.append(0, {"row": 0})
    with path.open("a") as f:
        f.write('{"index": 7, "row": {}}\n')  # not a row of these 3
    with pytest.raises(StaleError, match="has a line that is not a graded row"):
        PartialOutput(output, "fp", 3).__enter__()
