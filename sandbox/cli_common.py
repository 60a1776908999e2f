"""What the `sandbox` and `qrpo` command lines share: bounded option types and the error policy.

Exit codes (the README's "Exit codes" lists them for users):

    0    the command did its job (`grade`: every row was graded)
    1    some rows could not be graded (the summary counts and lists them), or the work could not
         go on (a stale or locked directory, a failed job): the message says why
    2    usage error: a bad option, value or input file; one line naming the option and a fix
    3    an unexpected internal error: one line, plus the path of a log file with the traceback
    130  interrupted (Ctrl-C, SIGTERM); rerun the same command to resume

No user error prints a traceback: options are checked by click before any work starts (numbers
against a range with an example of a valid value), our own errors become one-line messages, and
anything else is an internal error whose traceback goes to a log file, not to the terminal.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import click

from .problem import Range

EXIT_OK = 0
EXIT_INVALID_ROWS = 1
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130

F = TypeVar("F", bound=Callable[..., Any])


def version() -> str:
    """The installed distribution's version (both CLIs belong to the `qrpo` distribution)."""
    try:
        return metadata.version("qrpo")
    except metadata.PackageNotFoundError:
        return "unknown (not installed; run `pip install -e .`)"


# --------------------------------------------------------------------------------------------
# Numbers with a range and an example


class _WithExample(click.ParamType):
    """A range type whose error names a valid value: `--cpu: -1.0 is not in the range 0.1<=x<=3600;
    for example --cpu 2`."""

    example: str

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as exc:
            name = max(param.opts, key=len) if param is not None and param.opts else "the value"
            self.fail(f"{exc.message.rstrip('.')}; for example {name} {self.example}", param, ctx)


class IntIn(_WithExample, click.IntRange):
    """An integer in [low, high] (or (low, high] with low_open); `example` is a valid value shown in the error."""

    def __init__(self, low: int, high: int, example: int, *, low_open: bool = False, high_open: bool = False) -> None:
        click.IntRange.__init__(self, low, high, min_open=low_open, max_open=high_open)
        self.example = str(example)

    @classmethod
    def of(cls, bounds: Range) -> IntIn:
        """The option type of a range of the shared table (sandbox.problem: CPU_S, MEMORY_MB, ...)."""
        numbers = (bounds.low, bounds.high, bounds.example)
        if any(n != int(n) for n in numbers):
            raise ValueError(f"{bounds} is not a range of integers")
        return cls(*(int(n) for n in numbers), low_open=bounds.low_open, high_open=bounds.high_open)


class FloatIn(_WithExample, click.FloatRange):
    """A number in [low, high] (or (low, high] with low_open); `example` is shown in the error."""

    def __init__(self, low: float, high: float, example: float, *, low_open: bool = False,
                 high_open: bool = False) -> None:
        click.FloatRange.__init__(self, low, high, min_open=low_open, max_open=high_open)
        self.example = str(example)

    @classmethod
    def of(cls, bounds: Range) -> FloatIn:
        """The option type of a range of the shared table (sandbox.problem: CPU_S, MEMORY_MB, ...)."""
        return cls(bounds.low, bounds.high, bounds.example, low_open=bounds.low_open, high_open=bounds.high_open)


class InputError(click.ClickException):
    """A usage error about an input rather than an option's syntax (a config key, a data file):
    exit 2, one line, without the `--help` hint."""

    exit_code = EXIT_USAGE


def options(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """Several click options as one decorator, applied in the order listed (as if stacked)."""

    def apply(function: F) -> F:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


# --------------------------------------------------------------------------------------------
# Errors


def one_line(text: str) -> str:
    return " ".join(text.split())


def log_dir() -> Path:
    """Where internal-error logs go: $QRPO_LOG_DIR, else $XDG_STATE_HOME/qrpo/logs (~/.local/state)."""
    if os.environ.get("QRPO_LOG_DIR"):
        return Path(os.environ["QRPO_LOG_DIR"])
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "qrpo" / "logs"


def write_traceback_log(prog: str, argv: Sequence[str]) -> Path:
    """Save the current exception's traceback (and the command line) to a new log file; its path.
    Mode 0600: a traceback may show tokens or paths."""
    from .rundir import write_atomic

    text = f"{prog} {' '.join(argv)}\n{time.strftime('%Y-%m-%dT%H:%M:%S%z')} pid {os.getpid()} version {version()}\n\n" \
           + traceback.format_exc()
    name = f"{prog}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    for folder in (log_dir(), Path(tempfile.gettempdir()) / f"qrpo-logs-{os.getuid()}"):
        try:
            write_atomic(folder / name, text, mode=0o600)
            return folder / name
        except OSError:
            continue
    return Path("(could not write a log; the traceback follows)\n" + text)


def _warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """Warnings as one line on stderr (no source line that looks like a traceback)."""
    click.echo(f"warning: {message}", err=True)


class Group(click.Group):
    """A click group that applies the error policy above to every command under it."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        name = prog_name or self.name or "command"
        warnings.showwarning = _warning_line
        try:
            code = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()
            code = EXIT_USAGE
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx is not None else name
            click.echo(f"Error: {one_line(exc.format_message())} (see `{command} --help`)", err=True)
            code = EXIT_USAGE
        except InputError as exc:
            click.echo(f"Error: {one_line(exc.format_message())}", err=True)
            code = EXIT_USAGE
        except click.ClickException as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            code = exc.exit_code
        except (click.Abort, KeyboardInterrupt):
            click.echo("interrupted; rerun the same command to resume (finished work is kept)", err=True)
            code = EXIT_INTERRUPTED
        except Exception as exc:  # noqa: BLE001 -- the policy: one line and a log, never a traceback
            path = write_traceback_log(name, argv)
            click.echo(f"Error: internal error ({type(exc).__name__}: {one_line(str(exc))[:300]}); "
                       f"the traceback is in {path}; please report it", err=True)
            code = EXIT_INTERNAL
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else EXIT_OK)
