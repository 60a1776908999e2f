"""`qrpo`: the LeetCode pipeline from the command line.

    qrpo run                                  # the embedded default, tiny-cpu: a few minutes on a CPU
    qrpo run qrpo/configs/leetcode-paper.yaml --executor slurm
    qrpo status qrpo/configs/leetcode-paper.yaml
    qrpo grade CONFIG --force                 # one stage; --force redoes it

Every stage reads and writes tables under the config's output_dir, is skipped when its output exists for
the same inputs, and resumes from its saved chunks after an interruption.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import click

from sandbox.cli_common import EXIT_INTERRUPTED, Group, InputError

from . import __version__

if TYPE_CHECKING:
    from .pipeline.config import ExecutorKind, PipelineConfig

DEFAULT_CONFIG = "tiny-cpu"


def _load(config: str, overrides: tuple[str, ...], output_dir: str | None) -> PipelineConfig:
    from .pipeline.config import ConfigError, load_config

    items = list(overrides) + ([f"output_dir={output_dir}"] if output_dir else [])
    try:
        return load_config(config, items)
    except ConfigError as error:
        raise InputError(str(error)) from None


T = TypeVar("T")


def _guard(action: Callable[[], T]) -> T:
    """Run `action`; a bad config is a usage error (exit 2), a stage that cannot go on exits 1 with its
    one-line message; anything else is an internal error (sandbox.cli_common.Group logs its traceback)."""
    from sandbox.rundir import LockedError, StaleError

    from .pipeline.config import ConfigError
    from .pipeline.errors import StageError

    try:
        return action()
    except ConfigError as error:
        raise InputError(str(error)) from None
    except (StageError, StaleError, LockedError) as error:
        raise click.ClickException(str(error)) from None
    except KeyboardInterrupt:
        click.echo("interrupted; rerun the same command to resume (finished work is kept)", err=True)
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


def _executors() -> list[str]:
    from .pipeline.config import EXECUTORS

    return list(EXECUTORS)


config_argument = click.argument("config", required=False, default=DEFAULT_CONFIG)
set_option = click.option("--set", "-s", "overrides", multiple=True, metavar="KEY=VALUE",
                          help="Override a config key, e.g. --set generate.num_samples=4 (repeatable).")
output_option = click.option("--output-dir", "-o", default=None,
                             help="Where the stages write (default: the config's output_dir).")
executor_option = click.option("--executor", type=click.Choice(_executors()), default=None,
                               help="Run the heavy work here or as SLURM jobs (default: the config's executor).")


def _stage_names() -> list[str]:
    from .pipeline.stages import STAGES

    return list(STAGES)


def _forced_stages(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    names = _stage_names()
    for stage in value:
        if stage not in (*names, "all"):
            raise click.BadParameter(f"--force {stage}: no such stage; stages: {', '.join(names)} (or all); "
                                     f"for example --force {names[-1]}")
    return value


@click.group("qrpo", cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qrpo")
def main() -> None:
    """Quantile Reward Policy Optimization for code models: the LeetCode pipeline.

    Stages: model, prepare, generate, grade, build, train, evaluate. CONFIG is a YAML file or a bundled
    config name (tiny-cpu, leetcode-paper); it defaults to tiny-cpu.

    Exit codes: 0 done, 1 a stage cannot go on (the message says why), 2 usage error (an option or a
    config key), 3 internal error (a log file holds the traceback), 130 interrupted (rerun to resume).

    \b
    Example:
      qrpo run                     # tiny-cpu end to end on this machine
      qrpo status
    """


@main.command()
@config_argument
@executor_option
@click.option("--force", "force", multiple=True, metavar="STAGE", callback=_forced_stages,
              help="Redo STAGE and the stages after it (repeatable; `all` redoes everything).")
@click.option("--plan", "show_plan", is_flag=True, help="Print what the recipe will do (problems, steps, samples, "
              "GPU-hours) without running anything.")
@set_option
@output_option
def run(config: str, executor: ExecutorKind | None, force: tuple[str, ...], overrides: tuple[str, ...],
        output_dir: str | None, show_plan: bool = False) -> None:
    """Run every stage in order, skipping the finished ones; print where the report and plots are.

    \b
    Example:
      qrpo run qrpo/configs/tiny-cpu.yaml
      qrpo run qrpo/configs/leetcode-paper.yaml --executor slurm --force evaluate
      qrpo run leetcode-paper --plan
    """
    from .pipeline.driver import Pipeline
    from .pipeline.sweep import check_args

    cfg = _load(config, overrides, output_dir)
    if show_plan:
        from .pipeline.plan import plan

        _guard(lambda: click.echo("\n".join(plan(cfg))))
        return

    def action() -> None:
        check_args(cfg)
        pipeline = Pipeline(cfg, executor)
        with pipeline.lock():
            ran = pipeline.run_all(force)
        record = pipeline.layout.record("evaluate")
        click.echo(f"stages run: {', '.join(ran) or 'none (all done already)'}")
        if record is not None:
            click.echo(f"report: {record.summary.get('report')}")
            click.echo(f"plots: {', '.join(record.summary.get('plots', []))}")

    _guard(action)


@main.command()
@config_argument
@set_option
@output_option
def status(config: str, overrides: tuple[str, ...], output_dir: str | None) -> None:
    """Show which stages are done, partial, stale or pending.

    \b
    Example:
      qrpo status qrpo/configs/tiny-cpu.yaml
    """
    from .pipeline.driver import Pipeline

    cfg = _load(config, overrides, output_dir)

    def action() -> None:
        pipeline = Pipeline(cfg)
        click.echo(f"{cfg.name}: {pipeline.layout.root}")
        for stage, state, detail in pipeline.status():
            click.echo(f"  {stage:<9} {state:<10} {detail}")

    _guard(action)


def _stage_command(name: str, summary: str) -> None:
    @main.command(name=name, help=f"Stage {name}: {summary}.\n\nSkipped when its output exists for the same inputs.\n\n"
                                 f"\b\nExample:\n  qrpo {name} qrpo/configs/tiny-cpu.yaml\n  qrpo {name} CONFIG --force")
    @config_argument
    @executor_option
    @click.option("--force", is_flag=True, help="Delete this stage's output and redo it.")
    @set_option
    @output_option
    def command(config: str, executor: ExecutorKind | None, force: bool, overrides: tuple[str, ...],
                output_dir: str | None) -> None:
        from .pipeline.driver import Pipeline
        from .pipeline.sweep import check_args

        cfg = _load(config, overrides, output_dir)

        def action() -> None:
            if name == "train":
                check_args(cfg)
            pipeline = Pipeline(cfg, executor)
            with pipeline.lock():
                pipeline.run_stage(name, force=force)

        _guard(action)


def _register() -> None:
    from .pipeline.stages import STAGES

    for name, stage in STAGES.items():
        _stage_command(name, stage.SUMMARY)


_register()

if __name__ == "__main__":
    main()
