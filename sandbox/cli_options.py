"""The options several `sandbox` commands share (`grade`, `demo`, `serve`), defined once.

One definition each keeps the commands in step: the same choices, ranges, defaults and help text,
and one way to turn --backend into the `Backend` the commands use (--cpu/--memory/--wall become
`Limits` by `sandbox.api.limits_from`, as in the Python API). Add an option here when a second
command needs it.
"""

from __future__ import annotations

from typing import Any, get_args

import click

from .cli_common import FloatIn, IntIn, options
from .problem import CPU_S, MEMORY_MB, WALL_S, WORKERS, BackendChoice

BACKEND_CHOICES = list(get_args(BackendChoice))

backend_option = click.option("--backend", type=click.Choice(BACKEND_CHOICES), default="auto", show_default=True,
                              help="Isolation: auto picks apptainer, then bubblewrap, then process (see `sandbox doctor`).")
workers_option = click.option("--workers", type=IntIn.of(WORKERS), default=None,
                              help="Warm judges to run (default: one per CPU).")


def limit_options(role: str) -> Any:
    """--cpu/--memory/--wall: per-test limits (Limits). `role` ends each help text."""
    return options(
        click.option("--cpu", type=FloatIn.of(CPU_S), default=None, help=f"CPU seconds per test (default 1){role}."),
        click.option("--memory", type=IntIn.of(MEMORY_MB), default=None,
                     help=f"Memory (address space) per test in MiB (default 1024){role}."),
        click.option("--wall", type=FloatIn.of(WALL_S), default=None,
                     help=f"Wall seconds per test (default 3, and at least --cpu + 2){role}."),
    )


def resolve_backend(name: str) -> Any:
    """The Backend for `name`, or a usage error on --backend saying why it cannot run here."""
    from .backends import BackendUnavailable, get_backend

    try:
        return get_backend(name)
    except BackendUnavailable as exc:
        raise click.BadParameter(str(exc), param_hint="'--backend'") from None
