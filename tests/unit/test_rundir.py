"""The run-directory core: every on-disk writer of the project stands on these guarantees."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from sandbox import rundir


def test_dumps_writes_any_text_and_reads_it_back(tmp_path: Path) -> None:
    nasty = "lone \ud800 surrogate, \udfff another, control \x00\x1b[31m, quote \" and é"
    path = tmp_path / "rows.jsonl"
    rundir.write_jsonl(path, [{"stdout": nasty}, {"n": 1}])
    assert path.read_bytes().decode("utf-8")  # valid UTF-8 on disk
    assert list(rundir.read_jsonl(path)) == [{"stdout": nasty}, {"n": 1}]
    assert json.loads(rundir.dumps(nasty)) == nasty


def test_clean_text_replaces_only_lone_surrogates() -> None:
    assert rundir.clean_text("ok é ∑") == "ok é ∑"
    assert rundir.clean_text("a\ud800b\udfff") == "a\ufffdb\ufffd"


def test_write_atomic_honours_the_umask_and_an_explicit_mode(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        rundir.write_atomic(tmp_path / "a.txt", "x")
        rundir.write_atomic(tmp_path / "secret", "token", mode=0o600)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    rundir.write_atomic(path, "old\n")

    def rows():
        yield "new\n"
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        rundir.write_atomic(path, rows())
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["out.jsonl"]


def test_atomic_dir_replaces_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "table"
    with rundir.atomic_dir(target) as tmp:
        (tmp / "part").write_text("1")
    assert (target / "part").read_text() == "1"
    with pytest.raises(ValueError), rundir.atomic_dir(target) as tmp:
        (tmp / "part").write_text("2")
        raise ValueError
    assert (target / "part").read_text() == "1"
    assert sorted(os.listdir(tmp_path)) == ["table"]


def test_remove_tree_never_follows_a_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    link = tmp_path / "link"
    link.symlink_to(outside)
    rundir.remove_tree(link)
    assert not link.exists() and (outside / "keep").exists()


def test_fingerprint_is_order_insensitive_for_keys_and_sensitive_to_values() -> None:
    assert rundir.fingerprint({"a": 1, "b": 2}) == rundir.fingerprint({"b": 2, "a": 1})
    assert rundir.fingerprint({"a": 1}) != rundir.fingerprint({"a": 2})
    assert rundir.fingerprint(1, 2) != rundir.fingerprint(12)
    assert rundir.fingerprint("x", "y") == rundir.Hasher().add("x").add("y").hexdigest()


def test_chunks_resume_and_refuse_other_inputs(tmp_path: Path) -> None:
    chunks = rundir.Chunks(tmp_path / "job", "f1", 3, kind="shards")
    chunks.write_rows(1, [{"i": 1}])
    again = rundir.Chunks(tmp_path / "job", "f1", 3, kind="shards")
    assert again.pending() == [0, 2] and again.read_rows(1) == [{"i": 1}]
    with pytest.raises(rundir.StaleError, match="other inputs.*--force grade"):
        rundir.Chunks(tmp_path / "job", "f2", 3, kind="shards", fix="rerun with --force grade")
    with pytest.raises(rundir.StaleError):
        rundir.Chunks(tmp_path / "job", "f1", 4, kind="shards")


def _hold_lock(folder: str, ready: object, release: object) -> None:
    with rundir.lock(folder):
        ready.set()  # type: ignore[attr-defined]
        release.wait(10)  # type: ignore[attr-defined]


def test_lock_names_the_holder_and_dies_with_it(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
    holder.start()
    assert ready.wait(10)
    with pytest.raises(rundir.LockedError, match=f"pid {holder.pid}"), rundir.lock(tmp_path, "qrpo"):
        pass
    holder.kill()
    holder.join()
    with rundir.lock(tmp_path):  # the kernel dropped the dead holder's lock
        pass


def test_append_log_survives_a_torn_last_line(tmp_path: Path) -> None:
    log = tmp_path / "ledger.jsonl"
    rundir.append_jsonl(log, {"event": "start"})
    with open(log, "a") as f:
        f.write('{"event": "fin')  # a crash mid-line
    assert rundir.read_log(log) == [{"event": "start"}]
    assert rundir.read_log(tmp_path / "missing") == []


def test_qrpo_status_reads_the_cluster_run_directory(tmp_path: Path) -> None:
    """The SLURM grading driver's run directory is a core chunk folder: `qrpo status` counts its
    finished shards with the same reader as a stage's chunks."""
    from qrpo.pipeline.layout import chunk_progress
    from sandbox.cluster.layout import RunDir, inputs_fingerprint, prepare
    from sandbox.problem import GradeResult, Problem, Test, Verdict

    problem = Problem(task_id="t", prompt="", entry_point="f", tests=(Test("function", "assert candidate(1) == 1"),))
    rows = [(i + 1, {"task_id": "t", "code": "def f(x):\n    return x\n"}) for i in range(5)]
    options = {"backend": "process", "granularity": "per_test", "extract": "auto"}
    fp = inputs_fingerprint({"t": problem}, rows, options)
    run = RunDir(tmp_path / "shards")
    manifest, note = prepare(run, {"t": problem}, rows, fp, options, jobs=3)
    assert note is None and manifest["count"] == 3 and manifest["shard_rows"] == [2, 2, 1]
    assert chunk_progress(run.root) == (0, 3)
    result = GradeResult.uniform("t", 1, Verdict.PASSED, "process", "")
    run.write_result(1, {"shard": 1, "rows": 2, "fingerprint": fp}, [(1, result), (4, result)])
    assert run.finished(1, 2, fp) and not run.finished(0, 2, fp)
    assert chunk_progress(run.root) == (1, 3)
    assert [i for i, _ in run.read_results(1)] == [1, 4]
