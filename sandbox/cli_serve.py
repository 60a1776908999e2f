"""`sandbox serve`: the command that starts the grading service, here or as a SLURM job.

Its many options (network, admission, limits, and the `--slurm` job's resources) are checked
here, before anything listens or is submitted, so a mistake is one line naming the option; the
service itself lives in `sandbox.service`, which knows nothing of click.
"""

from __future__ import annotations

import os
import re
from typing import Any

import click

from .cli_common import FloatIn, IntIn
from .cli_options import backend_option, limit_options, resolve_backend, workers_option
from .problem import CPUS_PER_JOB, SLURM_MINUTES, Limits


def _memory_size(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"[1-9][0-9]*[KMGT]?", value):
        raise click.BadParameter(f"{value!r} is not a SLURM memory size; for example --mem 8G")
    return value


def _sbatch_items(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> dict[str, str]:
    items = {}
    for item in value:
        key, sep, setting = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE; for example --sbatch account=abc")
        items[key.strip().replace("-", "_")] = setting
    return items


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on; anything but loopback requires --token.")
@click.option("--port", type=IntIn(0, 65535, 8000), default=0, show_default=True,
              help="TCP port (0: a free one; see --address-file).")
@backend_option
@workers_option
@click.option("--problems", "-p", "problem_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Problems to preload (any dataset format; repeatable: the files are merged, a task_id in two files "
                   "is an error).")
@limit_options("; requests may ask for less, never more")
@click.option("--token", envvar="SANDBOX_TOKEN", default=None,
              help="Require 'Authorization: Bearer TOKEN' on every request [env SANDBOX_TOKEN].")
@click.option("--address-file", type=click.Path(dir_okay=False), default=None,
              help="Write host:port (and the token) here, mode 0600, once listening.")
@click.option("--max-pending", type=IntIn(1, 10_000_000, 4096), default=None,
              help="Completions admitted at once; beyond: 503 + Retry-After (default max(1024, 64 per worker)).")
@click.option("--allow-inline-problems", is_flag=True,
              help="Accept problems in requests (their tests are code; each such request gets judges of its own).")
@click.option("--max-body-mb", type=IntIn(1, 4096, 32), default=32, show_default=True,
              help="Largest request body; larger ones get 413 before they are read.")
@click.option("--request-timeout", type=FloatIn(0, 86_400, 600, low_open=True), default=None,
              help="Cancel a request still grading after this many seconds (504).")
@click.option("--max-connections", type=IntIn(16, 1_000_000, 2048), default=2048, show_default=True,
              help="Open connections at once; requests beyond get 503.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--slurm", is_flag=True, help="Run the server as a SLURM job (submitit) and wait for its address file.")
@click.option("--partition", default=None, help="--slurm: partition (default: the cluster's default).")
@click.option("--time", "time_min", type=IntIn.of(SLURM_MINUTES), default=1440, show_default=True,
              help="--slurm: time limit in minutes.")
@click.option("--cpus", type=IntIn.of(CPUS_PER_JOB), default=1, show_default=True,
              help="--slurm: CPUs for the job (also the default --workers).")
@click.option("--mem", default=None, callback=_memory_size, help="--slurm: memory, e.g. 8G.")
@click.option("--job-name", default="sandbox-serve", show_default=True, help="--slurm: job name.")
@click.option("--log-dir", type=click.Path(file_okay=False), default="sandbox-serve-logs", show_default=True,
              help="--slurm: submitit folder (job logs).")
@click.option("--sbatch", "sbatch_params", multiple=True, metavar="KEY=VALUE", callback=_sbatch_items,
              help="--slurm: extra sbatch option, e.g. --sbatch account=abc (repeatable).")
@click.option("--wait", type=FloatIn(0, 86_400, 600, low_open=True), default=600, show_default=True,
              help="--slurm: seconds to wait for the address file.")
def serve(host: str, port: int, backend: str, workers: int | None, problem_files: tuple[str, ...], cpu: float | None,
          memory: int | None, wall: float | None, token: str | None, address_file: str | None, max_pending: int | None,
          allow_inline_problems: bool, max_body_mb: int, request_timeout: float | None, max_connections: int,
          log_level: str, slurm: bool, partition: str | None, time_min: int, cpus: int, mem: str | None, job_name: str,
          log_dir: str, sbatch_params: dict[str, str], wait: float) -> None:
    """Serve grading over HTTP from a warm pool (POST /grade, GET /health).

    --cpu, --memory and --wall are the limits every request is graded with, and the most a
    request may ask for (its "limits" field may lower them).

    \b
    Examples:
      sandbox serve --backend bubblewrap --problems problems.jsonl --address-file ~/sandbox.addr
      sandbox serve -p leetcode-train.jsonl -p leetcode-test.jsonl --cpu 2 --memory 2048 --wall 5
      sandbox serve --slurm --cpus 16 --host 0.0.0.0 --token "$(openssl rand -hex 16)" \\
          --problems problems.jsonl --address-file /shared/sandbox.addr
    Clients: sandbox.client.SandboxClient("/shared/sandbox.addr").grade(problems, rows)
    """
    from . import service
    from .api import limits_from
    from .cluster.layout import ClusterError

    try:
        service.check_binding(host, token)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--host'") from None
    if slurm and address_file is None:
        raise click.UsageError("--slurm needs --address-file (on a filesystem both the job and the clients see)")
    if not slurm:
        ctx = click.get_current_context()
        given = [name for name in ("partition", "time_min", "cpus", "mem", "sbatch_params", "wait")
                 if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
        if given:
            flag = given[0].replace("_min", "").replace("_params", "").replace("_", "-")
            raise click.UsageError(f"--{flag} applies to --slurm only")
    try:
        table = service.load_problem_files(problem_files) if problem_files else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--problems'") from None
    limits = limits_from(cpu, memory, wall) or Limits()
    options: dict[str, Any] = {"host": host, "port": port, "backend": backend, "workers": workers, "token": token,
                               "max_pending": max_pending, "log_level": log_level, "limits": limits,
                               "allow_inline_problems": allow_inline_problems, "max_body_mb": max_body_mb,
                               "request_timeout_s": request_timeout, "max_connections": max_connections}
    if not slurm:
        try:
            service.serve(address_file=address_file, problems=table, **(options | {"backend": resolve_backend(backend)}))
        except (ValueError, OSError) as exc:
            raise click.ClickException(str(exc)) from None
        return
    assert address_file is not None
    try:
        job = service.submit_slurm(address_file=address_file, log_dir=log_dir, partition=partition, time_min=time_min,
                                   cpus=cpus, mem=mem, job_name=job_name, additional=sbatch_params or None,
                                   problems=[os.path.abspath(p) for p in problem_files] or None, **options)
    except ClusterError as exc:  # no sbatch here, or sbatch refused the job
        raise click.ClickException(str(exc)) from None
    click.echo(f"job_id: {job.job_id}")
    try:
        address = service.wait_for_address(job, address_file, wait)
    except (RuntimeError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"address: {address}")
    click.echo(f"address file: {os.path.abspath(address_file)}  (stop with: scancel {job.job_id})")
