"""Expected outputs of HumanEval+ / MBPP+ problems, computed from the canonical solution.

evalplus stores only inputs; its evaluator runs the canonical solution on them before grading.
We do the same, but inside the sandbox: the canonical program plus a small driver is graded as
an ordinary solution (same backend, same isolation), the driver calls the function on every
input (a deep copy, as evalplus's `trusted_exec` does) and writes the tagged-JSON outputs to its
stdout, which comes back in the GradeResult. The outputs are cached on disk, one file per
problem named by task_id and a digest of everything that determines them (canonical program,
inputs, driver), so a changed row is recomputed and an unchanged dataset never is.

The cache lives in `$QRPO_CACHE_DIR/reference` (default `~/.cache/qrpo/reference`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from sandbox import rundir
from sandbox.datasets.evalplus import ORACLE_SOURCE, effective_atol, test_setup
from sandbox.problem import GradeResult, Limits, Problem, Test

MARKER = "QRPO-REFERENCE "
DRIVER_VERSION = 3
# The canonical solutions are trusted but some are slow on large plus inputs.
REFERENCE_LIMITS = Limits(cpu_s=600.0, wall_s=200.0, memory_mb=4096, file_size_mb=512, output_kb=512 * 1024, solution_s=600.0)
TIME_FACTOR = 4.0  # evalplus's DEFAULT_GT_TIME_LIMIT_FACTOR
NOT_NONE = frozenset({"check_str", "text_match_three", "text_starta_endb"})  # evalplus MBPP_OUTPUT_NOT_NONE_TASKS

DRIVER = '''
def _qrpo_reference_main():
    import contextlib, copy, io, json, os, time
    inputs = qrpo_decode(json.loads({inputs!r}))
    fn = globals()[{entry_point!r}]
    for inp in inputs:
        start = time.perf_counter()
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                out = fn(*copy.deepcopy(inp))
            if {not_none!r}:
                out = out is not None
            record = {{"ok": _qrpo_encode(out), "time_s": time.perf_counter() - start}}
        except BaseException as exc:
            record = {{"error": (type(exc).__name__ + ": " + str(exc))[:300]}}
        out = None
        data = ("\\n{marker}" + json.dumps(record) + "\\n").encode()
        del record
        while data:
            data = data[os.write(1, data):]


def _qrpo_encode(value):
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 1 << 1000:
        return {{"i": hex(value)}}
    if value is None or isinstance(value, (bool, int, str, float)):
        return value
    if isinstance(value, list):
        return [_qrpo_encode(v) for v in value]
    if isinstance(value, tuple):
        return {{"t": [_qrpo_encode(v) for v in value]}}
    if isinstance(value, frozenset):
        return {{"fs": [_qrpo_encode(v) for v in value]}}
    if isinstance(value, set):
        return {{"s": [_qrpo_encode(v) for v in value]}}
    if isinstance(value, dict):
        return {{"d": [[_qrpo_encode(k), _qrpo_encode(v)] for k, v in value.items()]}}
    if isinstance(value, complex):
        return {{"c": [value.real, value.imag]}}
    if isinstance(value, bytes):
        return {{"b": value.hex()}}
    return {{"u": repr(value)[:200]}}


_qrpo_reference_main()


def _qrpo_done():
    return 1
'''


class ReferenceError(RuntimeError):
    """The canonical solution could not produce the expected outputs (a dataset problem)."""


def cache_dir() -> Path:
    root = os.environ.get("QRPO_CACHE_DIR") or os.path.join(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "qrpo")
    return Path(root) / "reference"


def needs_expected(problem: Problem) -> bool:
    info = problem.metadata.get("evalplus")
    return isinstance(info, dict) and "inputs" in info


def _digest(problem: Problem) -> str:
    info = problem.metadata["evalplus"]
    return rundir.fingerprint(DRIVER_VERSION, info["dataset"], problem.entry_point, info["program"], info["inputs"])


def _cache_path(problem: Problem) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", problem.task_id)
    return cache_dir() / f"{safe}-{_digest(problem)}.json"


def reference_problem(problem: Problem) -> tuple[Problem, str]:
    """The job that computes `problem`'s expected outputs: (a problem with one trivial test,
    the code to grade: canonical program + driver)."""
    info = problem.metadata["evalplus"]
    driver = DRIVER.format(inputs=info["inputs"], entry_point=problem.entry_point, marker=MARKER,
                           not_none=info["dataset"] == "mbpp" and problem.entry_point in NOT_NONE)
    code = info["program"] + "\n\n" + ORACLE_SOURCE + "\n" + driver
    job = Problem(task_id=problem.task_id, prompt="", tests=(Test(kind="function", source="assert candidate() == 1"),),
                  entry_point="_qrpo_done", limits=REFERENCE_LIMITS)
    return job, code


def parse_outputs(result: GradeResult) -> list[dict[str, Any]]:
    """The driver's records from a graded reference job; ReferenceError when it did not run."""
    records = []
    for line in result.stdout.split("\n"):
        if line.startswith(MARKER):
            try:
                records.append(json.loads(line[len(MARKER):]))
            except json.JSONDecodeError as exc:
                raise ReferenceError(f"{result.task_id}: the canonical solution's outputs were cut short ({exc})") from None
    if result.pass_rate != 1.0 or not records:
        detail = result.error or "; ".join(t.detail for t in result.tests if t.detail)[:500]
        raise ReferenceError(f"{result.task_id}: the canonical solution did not produce outputs ({detail or 'no output'})")
    return records


def with_expected(problem: Problem, records: list[dict[str, Any]]) -> Problem:
    """`problem` with its expected outputs in the judge-only test setup. An input on which the
    canonical solution raised keeps an unrepresentable expected value (equal to nothing), as
    evalplus could not grade it either; it is counted in metadata["evalplus"]["reference_errors"]."""
    info = dict(problem.metadata["evalplus"])
    inputs = json.loads(info.pop("inputs"))
    info.pop("program")
    if len(records) != len(inputs):
        raise ReferenceError(f"{problem.task_id}: {len(records)} outputs for {len(inputs)} inputs")
    expected = [r["ok"] if "ok" in r else {"u": r.get("error", "")} for r in records]
    errors = [i for i, r in enumerate(records) if "ok" not in r]
    from sandbox.datasets.evalplus_oracle import qrpo_decode

    decoded = [qrpo_decode(e) for e in expected]
    base = info["base"]
    atol = effective_atol(info["atol"], decoded[:base]) + effective_atol(info["atol"], decoded[base:])
    info["reference_time_s"] = [round(float(r.get("time_s", 0.0)), 6) for r in records]
    if errors:
        info["reference_errors"] = errors
    setup, data = test_setup(info["dataset"], problem.entry_point, qrpo_decode(inputs), decoded, atol)
    # evalplus allows each input max(1 s, 4 x the canonical's time): a problem whose canonical
    # solution is slow gets its per-test limits raised to match (never lowered).
    slowest = TIME_FACTOR * max(info["reference_time_s"], default=0.0)
    limits = problem.limits
    if slowest > limits.cpu_s:
        limits = dataclasses.replace(limits, cpu_s=slowest, wall_s=max(limits.wall_s, slowest + 2.0))
    return dataclasses.replace(problem, test_setup=setup, test_data=data, limits=limits,
                               metadata={**problem.metadata, "evalplus": info,
                                         "reference_s": round(sum(info["reference_time_s"]), 6)})


GradeJobs = Callable[[list[tuple[Problem, str]]], Iterable[GradeResult]]


def attach_expected(problems: Mapping[str, Problem], grade_jobs: GradeJobs, only: Iterable[str] | None = None,
                    ) -> dict[str, Problem]:
    """Problems with the expected outputs of every evalplus problem filled in, from the disk
    cache or by grading the canonical solution with `grade_jobs` (a list of (problem, code) ->
    results in order). `only` limits the work to those task_ids. A problem whose canonical
    solution fails gets a test setup that raises the reason: its tests are sandbox errors."""
    table = dict(problems)
    wanted = set(table) if only is None else set(only) & set(table)
    todo: list[Problem] = []
    for task_id in sorted(wanted):
        problem = table[task_id]
        if not needs_expected(problem):
            continue
        path = _cache_path(problem)
        if path.exists():
            try:
                table[task_id] = with_expected(problem, json.loads(path.read_text(encoding="utf-8"))["records"])
                continue
            except (OSError, ValueError, KeyError, ReferenceError):
                pass  # a damaged cache file is recomputed
        todo.append(problem)
    if not todo:
        return table
    results = list(grade_jobs([reference_problem(p) for p in todo]))
    for problem, result in zip(todo, results):
        try:
            records = parse_outputs(result)
            table[problem.task_id] = with_expected(problem, records)
        except ReferenceError as exc:
            # Graded as sandbox_error with this reason, never as the solution's failure.
            warnings.warn(str(exc), stacklevel=2)
            table[problem.task_id] = dataclasses.replace(problem, test_setup=f"raise RuntimeError({str(exc)[:400]!r})\n")
            continue
        path = _cache_path(problem)
        path.parent.mkdir(parents=True, exist_ok=True)
        rundir.write_atomic(path, json.dumps({"task_id": problem.task_id, "records": records}))
    return table
