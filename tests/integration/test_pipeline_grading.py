"""The pipeline's grading (`qrpo.pipeline.sandbox_grading.grade_rows`) through an executor, with the real judge:
the pending chunks go to `executor.map` as one call here and as `sandbox.jobs` stripes on SLURM, every chunk in
exactly one call; the grades are those `sandbox.grade` gives the same rows; a rerun grades only the chunks that
are not saved. The executor here runs the calls in this process and records them (the SLURM executor itself is
exercised by test_pipeline.py::test_tiny_pipeline_on_slurm)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from qrpo.pipeline.config import PipelineConfig, SlurmJobConfig
from qrpo.pipeline.sandbox_grading import grade_rows, limits_of
from sandbox import demo
from sandbox.api import grade
from sandbox.datasets import load_problems
from sandbox.problem import GradeResult


class RecordingExecutor:
    """Runs each call here, in order, and keeps what it was given."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.maps: list[tuple[str, list[tuple[Any, ...]], SlurmJobConfig]] = []

    def map(self, stage: str, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], job: SlurmJobConfig) -> list[Any]:
        self.maps.append((stage, list(calls), job))
        return [fn(*args) for args in calls]


def summary(results: list[GradeResult]) -> list[tuple[str, int, int, list[str]]]:
    return [(r.task_id, r.passed, r.total, [t.verdict.value for t in r.tests]) for r in results]


def chunk_indices(calls: list[tuple[Any, ...]]) -> list[list[int]]:
    return [sorted(args[4]) for args in calls]  # grade_chunks(folder, fp, count, problems, work, ...)


def test_grade_rows_sends_stripes_of_chunks_through_the_executor_and_resumes(tmp_path) -> None:
    config = PipelineConfig.model_validate(
        {"sandbox": {"backend": "process", "chunk_size": 3, "jobs": 3, "cpus_per_job": 1, "time_min": 7.5}})
    problems = load_problems(demo.path()).problems
    rows = [{"task_id": r["task_id"], "completion": r["completion"]}
            for r in map(json.loads, demo.path(demo.COMPLETIONS).read_text().splitlines())
            if r["expected_verdict"] != "timeout" and "completion" in r]  # a timeout costs seconds, says nothing here
    assert len(rows) == 19  # 7 chunks of 3 (the last one of 1)
    expected = summary(grade(problems, rows, backend="process", limits=limits_of(config), extract=config.sandbox.extract,
                           granularity=config.sandbox.granularity))

    slurm = RecordingExecutor("slurm")
    got = grade_rows(problems, rows, tmp_path / "on-slurm", config, slurm, "grade")
    assert summary(got) == expected
    [(stage, calls, job)] = slurm.maps
    assert stage == "grade" and job.cpus_per_task == 1 and job.time_min == 8
    assert chunk_indices(calls) == [[0, 3, 6], [1, 4], [2, 5]]  # one stripe per job, every chunk once
    assert all(args[5]["workers"] == 1 for args in calls)  # one judge per CPU of the job

    local = RecordingExecutor("local")
    assert summary(grade_rows(problems, rows, tmp_path / "here", config, local, "grade")) == expected
    assert [chunk_indices(calls) for _, calls, _ in local.maps] == [[[0, 1, 2, 3, 4, 5, 6]]]  # one call, one pool

    # A rerun grades nothing; with chunk 4 lost, it grades chunk 4 only, in one call.
    again = RecordingExecutor("slurm")
    assert summary(grade_rows(problems, rows, tmp_path / "on-slurm", config, again, "grade")) == expected
    assert again.maps == []
    (tmp_path / "on-slurm" / "chunks" / "chunk-00004.jsonl").unlink()
    assert summary(grade_rows(problems, rows, tmp_path / "on-slurm", config, again, "grade")) == expected
    assert [chunk_indices(calls) for _, calls, _ in again.maps] == [[[4]]]
