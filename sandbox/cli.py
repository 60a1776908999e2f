"""`sandbox`: grade untrusted code from the command line.

Every command has --help with an example. Output files are written atomically (a temporary
file renamed into place), so a crash never leaves a half-written result file.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from .datasets import TEST_SETS
from .extract import POLICIES as EXTRACT_POLICIES
from .problem import GradeResult, Limits
from .rundir import write_atomic


def write_jsonl_atomic(path: str | Path, rows: list[dict]) -> None:
    """Write rows to `path` via a temporary file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def summary(results: list[GradeResult]) -> str:
    """A few lines a person reads: counts per verdict, mean pass rate, what graded them."""
    graded = [r for r in results if r.tests]
    verdicts = collections.Counter(r.verdict.value for r in graded if r.verdict)
    tests = sum(r.total for r in graded)
    trusted = sum(sum(t.trusted for t in r.tests) for r in graded)
    lines = [
        f"completions: {len(results)}   graded: {len(graded)}   invalid rows: {len(results) - len(graded)}",
        f"mean pass rate: {sum(r.pass_rate for r in graded) / max(len(graded), 1):.3f}   "
        f"fully passed: {sum(r.pass_rate == 1.0 for r in graded)}",
        "verdicts (first failing test per completion): " + ", ".join(f"{k}={v}" for k, v in verdicts.most_common()),
        f"tests: {tests}   judged in the trusted process: {trusted / max(tests, 1):.2%}",
        f"backend: {', '.join(sorted({r.backend for r in graded if r.backend})) or '-'}",
    ]
    errors = [r for r in results if r.error and not r.tests]
    for r in errors[:5]:
        lines.append(f"invalid: {r.error}")
    return "\n".join(lines)


def _limits(cpu: float | None, memory: int | None, wall: float | None) -> Limits | None:
    if cpu is None and memory is None and wall is None:
        return None
    base = Limits()
    return Limits(
        cpu_s=cpu if cpu is not None else base.cpu_s,
        wall_s=wall if wall is not None else max(base.wall_s, (cpu or base.cpu_s) + 2),
        memory_mb=memory if memory is not None else base.memory_mb,
    )


backend_option = click.option("--backend", default="auto", show_default=True, help="auto, apptainer, bubblewrap or process.")
workers_option = click.option("--workers", type=int, default=None, help="Warm judges to run (default: one per CPU).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Grade untrusted code against unit tests, without privileges."""


@main.command()
@click.option("--problems", "-p", required=True, type=click.Path(exists=True, dir_okay=False), help="Dataset file (JSONL or .jsonl.gz) in any registered format.")
@click.option("--completions", "-c", required=True, type=click.Path(exists=True, dir_okay=False), help="JSONL rows with task_id plus code or completion.")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="Where to write one JSON result per completion, in input order.")
@backend_option
@workers_option
@click.option("--granularity", type=click.Choice(["per_test", "per_solution"]), default="per_test", show_default=True, help="A fork per test (clean state, as the paper) or one process per solution.")
@click.option("--extract", type=click.Choice(EXTRACT_POLICIES), default="auto", show_default=True,
              help="How to get code from 'completion': a ```python block (first/last/longest), the prompt's continuation "
                   "(continuation: human-eval style), the whole text (full); auto: a block, else the format's convention.")
@click.option("--tests", "test_set", type=click.Choice(TEST_SETS), default="plus", show_default=True,
              help="HumanEval+/MBPP+: base inputs only, or base + plus inputs (evalplus's headline score).")
@click.option("--format", "dataset_format", default="auto", show_default=True, help="Dataset format of --problems (a registered name; auto detects it per row).")
@click.option("--adapter", default=None, help="A dataset adapter of your own, as module:Class (registered, then used as --format).")
@click.option("--details/--no-details", default=False, show_default=True,
              help="Describe each failed test (call, value returned, value expected; stdio: first difference). "
                   "Off by default: online RL must not see expected values.")
@click.option("--summary", "summary_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the batch summary (pass rates, pass@k, verdict counts, tests/s) as JSON here.")
@click.option("--max-tests", type=int, default=None, help="Keep the first N tests of each problem (paper: 100).")
@click.option("--min-tests", type=int, default=None, help="Drop problems with fewer tests (paper: 20).")
@click.option("--cpu", type=float, default=None, help="CPU seconds per test (default 1).")
@click.option("--memory", type=int, default=None, help="Memory per test in MiB (default 1024).")
@click.option("--wall", type=float, default=None, help="Wall seconds per test (default 3).")
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("--executor", type=click.Choice(["local", "slurm"]), default=None,
              help="Grade in shards as submitit jobs: slurm (one job array) or local (processes here). Default: grade in this process.")
@click.option("--jobs", type=click.IntRange(1), default=4, show_default=True, help="With --executor: number of shards (one job each).")
@click.option("--cpus-per-job", type=click.IntRange(1), default=1, show_default=True, help="With --executor: CPUs per job, one warm judge per CPU.")
@click.option("--partition", default=None, help="With --executor slurm: the SLURM partition (default: the cluster's default).")
@click.option("--time", "time_min", type=click.FloatRange(min=0, min_open=True), default=60, show_default=True, help="With --executor: time limit per job, in minutes.")
@click.option("--workdir", type=click.Path(file_okay=False), default=None, help="With --executor: the run directory (default OUTPUT.shards); rerun to resume.")
@click.option("--max-retries", type=click.IntRange(0), default=2, show_default=True, help="With --executor: resubmissions of a failed, timed-out, preempted or lost shard.")
def grade(problems: str, completions: str, output: str, backend: str, workers: int | None, granularity: str, extract: str,
          max_tests: int | None, min_tests: int | None, cpu: float | None, memory: int | None, wall: float | None, progress: bool,
          executor: str | None = None, jobs: int = 4, cpus_per_job: int = 1, partition: str | None = None, time_min: float = 60,
          workdir: str | None = None, max_retries: int = 2, test_set: str = "plus", dataset_format: str = "auto",
          adapter: str | None = None, summary_path: str | None = None, details: bool = False) -> None:
    """Grade completions against problems and write one result row per completion.

    With --executor the completions are graded in shards as submitit jobs (a SLURM job array, or
    local processes); rerunning the same command skips finished shards (see sandbox.cluster).

    \b
    Example:
      sandbox grade -p LeetCodeDataset-v0.3.1-test.jsonl.gz -c samples.jsonl -o graded.jsonl --backend bubblewrap
      sandbox grade -p problems.jsonl -c samples.jsonl -o graded.jsonl --executor slurm --jobs 16 --cpus-per-job 8 --partition cpu --time 60
    """
    from .api import grade as grade_all
    from .datasets import load_problems

    ctx = click.get_current_context()
    cluster_options = ["jobs", "cpus_per_job", "partition", "time_min", "workdir", "max_retries"]
    if executor is None:
        given = [name for name in cluster_options if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
        if given:
            raise click.UsageError(f"--{given[0].replace('_min', '').replace('_', '-')} needs --executor local or --executor slurm")
    elif workers is not None:
        raise click.UsageError("--workers sets the judges of in-process grading; with --executor each job runs one judge per CPU: use --cpus-per-job")
    from .datasets import UnknownFormatError, load_adapter

    try:
        if adapter is not None:
            dataset_format = load_adapter(adapter).name
        loaded = load_problems(problems, format=dataset_format, max_tests=max_tests, min_tests=min_tests, tests=test_set)  # type: ignore[arg-type]
    except UnknownFormatError as exc:
        raise click.ClickException(str(exc)) from None
    for error in loaded.errors[:20]:
        click.echo(f"problems: {error}", err=True)
    if not loaded.problems:
        raise click.ClickException(f"no usable problem in {problems} ({len(loaded.errors)} bad rows); see the messages above")
    started = time.monotonic()
    if executor is not None:
        from .cluster import ClusterError, grade_distributed

        try:
            results = grade_distributed(loaded, completions, output, executor=executor, jobs=jobs, cpus_per_job=cpus_per_job,  # type: ignore[arg-type]
                                        partition=partition, time_min=time_min, backend=backend, workdir=workdir, max_retries=max_retries,
                                        progress=progress, granularity=granularity, extract=extract, limits=_limits(cpu, memory, wall))  # type: ignore[arg-type]
        except ClusterError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(summary(results))
        click.echo(f"wrote {output} ({len(results)} rows) in {time.monotonic() - started:.1f} s "
                   f"(run directory {workdir or str(output) + '.shards'})")
        return
    from .datasets import read_jsonl
    from .extract import no_code_hint
    from .metrics import format_summary, result_row, summarize

    rows = [row for _, row in read_jsonl(completions)]
    # Bad lines are RowErrors, graded as invalid rows.
    results = grade_all(loaded, rows, backend=backend, workers=workers, granularity=granularity,  # type: ignore[arg-type]
                        extract=extract, limits=_limits(cpu, memory, wall), progress=progress, details=details)
    write_jsonl_atomic(output, [result_row(row, r) for row, r in zip(rows, results)])
    numbers = summarize(results, time.monotonic() - started)
    click.echo(format_summary(numbers))
    hint = no_code_hint(numbers["solution_verdicts"].get("no_code", 0), len(results), extract, set(loaded.formats))
    if hint:
        numbers["warning"] = hint
        click.echo(hint, err=True)
    if summary_path:
        write_atomic(summary_path, json.dumps(numbers, indent=1) + "\n")
    click.echo(f"wrote {output} ({len(results)} rows) in {time.monotonic() - started:.1f} s")


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
    rows = [json.loads(line) for line in demo_files.completions_path().read_text().splitlines() if line.strip()]
    started = time.monotonic()
    results = grade_all(loaded, rows, backend=backend, workers=workers, progress=sys.stderr.isatty())
    click.echo(f"{'task_id':<34} {'verdict':<14} {'passed':>9}  note")
    for row, result in zip(rows, results):
        verdict = result.verdict.value if result.verdict else "invalid"
        click.echo(f"{result.task_id:<34} {verdict:<14} {result.passed:>4}/{result.total:<4}  {row.get('note', '')[:60]}")
    click.echo("")
    click.echo(summary(results))
    click.echo(f"graded {len(results)} completions in {time.monotonic() - started:.1f} s")


@main.command()
def doctor() -> None:
    """Report what this machine offers for sandboxing and which backend `auto` picks.

    \b
    Example:
      sandbox doctor
    """
    from .backends import describe_auto
    from .backends import apptainer as app
    from .machine import probes

    for name, ok, detail in probes():
        click.echo(f"{name:<22} {'yes' if ok else 'no ':<4} {detail}")
    click.echo("")
    picked = None
    for name, ok, reason in describe_auto():
        click.echo(f"backend {name:<11} {'yes' if ok else 'no ':<4} {reason}")
        if ok and picked is None:
            picked = (name, reason)
    if picked:
        click.echo(f"auto picks: {picked[0]} ({picked[1]})")
    if app.find_apptainer() and not app.find_image():
        click.echo("hint: build the sandbox image with `sandbox image build` to enable the apptainer backend")


@main.group()
def image() -> None:
    """Build and check the Apptainer image the apptainer backend runs."""


@image.command("build")
@click.option("--recipe", type=click.Choice(["debian", "docker"]), default="debian", show_default=True,
              help="debian: debootstrap, needs only a Debian mirror; docker: python:3.12-slim, for clusters.")
@click.option("--output", type=click.Path(dir_okay=False), default=None, help="Where to write the SIF (default ~/.cache/qrpo/sandbox-debian.sif).")
@click.option("--force", is_flag=True, help="Rebuild even if the output exists.")
def image_build(recipe: str, output: str | None, force: bool) -> None:
    """Build the sandbox image (a SIF) from containers/sandbox-*.def.

    \b
    Example:
      sandbox image build --recipe debian --output ~/.cache/qrpo/sandbox-debian.sif
    """
    from .backends.apptainer import containers_dir, find_apptainer

    script = containers_dir() / "build-image.sh"
    argv = ["bash", str(script), "--recipe", recipe]
    if output:
        argv += ["--output", output]
    if force:
        argv.append("--force")
    apptainer = find_apptainer()
    if apptainer:
        argv += ["--apptainer", apptainer]
    code = subprocess.call(argv)
    if code != 0:
        raise click.ClickException(f"image build failed (exit {code}); see the messages above")


@image.command("check")
@click.option("--image", "image_path", type=click.Path(exists=True), default=None, help="The image to check (default: the configured one).")
def image_check(image_path: str | None) -> None:
    """Verify that an image runs the judge: grade a known solution in it, check isolation.

    \b
    Example:
      sandbox image check --image ~/.cache/qrpo/sandbox-debian.sif
    """
    from .backends.apptainer import ApptainerBackend
    from .backends.base import BackendUnavailable
    from .pool import Job, Pool
    from .problem import Problem, Test

    backend = ApptainerBackend(image=image_path)
    try:
        backend.prepare()
    except BackendUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    probe = backend.run_in_container("python3", "-c", "import sys, sortedcontainers; print(sys.version.split()[0])")
    if probe.returncode != 0:
        raise click.ClickException(f"python3 with sortedcontainers does not run in the image: {probe.stderr.strip()[-300:]}")
    click.echo(f"python {probe.stdout.strip()} and sortedcontainers: ok")
    problem = Problem(task_id="check", prompt="", entry_point="f", tests=(Test("function", "assert candidate(2) == 4"),))
    with Pool(backend, workers=1) as pool:
        result = next(pool.grade(iter([Job(0, problem, "def f(x):\n    return x * x\n", "per_test")])))
    if result.pass_rate != 1.0:
        raise click.ClickException(f"the judge did not grade a correct solution as passed: {result.tests}")
    click.echo(f"judge: ok (containment {result.info.get('containment')}, limits via {backend.limits_via})")
    click.echo(f"image {backend.image} works (workers start from {backend.rootfs})")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on; anything but loopback requires --token.")
@click.option("--port", type=int, default=0, show_default=True, help="TCP port (0: a free one; see --address-file).")
@backend_option
@workers_option
@click.option("--problems", "-p", type=click.Path(exists=True, dir_okay=False), default=None, help="Problems to preload (any dataset format); requests may also send problems inline.")
@click.option("--token", envvar="SANDBOX_TOKEN", default=None, help="Require 'Authorization: Bearer TOKEN' on every request [env SANDBOX_TOKEN].")
@click.option("--address-file", type=click.Path(dir_okay=False), default=None, help="Write host:port (and the token) here, mode 0600, once listening.")
@click.option("--max-pending", type=int, default=None, help="Completions admitted at once; beyond: 503 + Retry-After (default max(1024, 64 per worker)).")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--slurm", is_flag=True, help="Run the server as a SLURM job (submitit) and wait for its address file.")
@click.option("--partition", default=None, help="--slurm: partition (default: the cluster's default).")
@click.option("--time", "time_min", type=int, default=1440, show_default=True, help="--slurm: time limit in minutes.")
@click.option("--cpus", type=int, default=1, show_default=True, help="--slurm: CPUs for the job (also the default --workers).")
@click.option("--mem", default=None, help="--slurm: memory, e.g. 8G.")
@click.option("--job-name", default="sandbox-serve", show_default=True, help="--slurm: job name.")
@click.option("--log-dir", type=click.Path(file_okay=False), default="sandbox-serve-logs", show_default=True, help="--slurm: submitit folder (job logs).")
@click.option("--sbatch", "sbatch_params", multiple=True, metavar="KEY=VALUE", help="--slurm: extra sbatch option, e.g. --sbatch account=abc (repeatable).")
@click.option("--wait", type=float, default=600, show_default=True, help="--slurm: seconds to wait for the address file.")
def serve(host: str, port: int, backend: str, workers: int | None, problems: str | None, token: str | None, address_file: str | None,
          max_pending: int | None, log_level: str, slurm: bool, partition: str | None, time_min: int, cpus: int, mem: str | None,
          job_name: str, log_dir: str, sbatch_params: tuple[str, ...], wait: float) -> None:
    """Serve grading over HTTP from a warm pool (POST /grade, GET /health).

    \b
    Examples:
      sandbox serve --backend bubblewrap --problems problems.jsonl --address-file ~/sandbox.addr
      sandbox serve --slurm --cpus 16 --host 0.0.0.0 --token "$(openssl rand -hex 16)" \\
          --problems problems.jsonl --address-file /shared/sandbox.addr
    Clients: sandbox.client.SandboxClient("/shared/sandbox.addr").grade(problems, rows)
    """
    from . import server as service

    try:
        service.check_binding(host, token)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    options = {"host": host, "port": port, "backend": backend, "workers": workers, "problems": problems, "token": token,
               "max_pending": max_pending, "log_level": log_level}
    if not slurm:
        try:
            service.serve(address_file=address_file, **options)
        except (ValueError, OSError) as exc:
            raise click.ClickException(str(exc)) from None
        return
    if address_file is None:
        raise click.ClickException("--slurm needs --address-file (on a filesystem both the job and the clients see)")
    additional = {}
    for item in sbatch_params:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.ClickException(f"--sbatch expects KEY=VALUE, got {item!r}")
        additional[key.strip().replace("-", "_")] = value
    job = service.submit_slurm(address_file=address_file, log_dir=log_dir, partition=partition, time_min=time_min, cpus=cpus,
                               mem=mem, job_name=job_name, additional=additional or None, **options)
    click.echo(f"job_id: {job.job_id}")
    try:
        address = service.wait_for_address(job, address_file, wait)
    except (RuntimeError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"address: {address}")
    click.echo(f"address file: {os.path.abspath(address_file)}  (stop with: scancel {job.job_id})")


if __name__ == "__main__":
    main()
