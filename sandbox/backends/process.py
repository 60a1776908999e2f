"""`process`: the judge runs as a plain host process. The runner still gets rlimits and, where
the kernel allows unprivileged user namespaces, its own user and PID namespace, but the
solution can read and write whatever the user can. For development and trusted code only."""

from __future__ import annotations

import sys
import warnings

from .base import JUDGE_DIR, Backend, judge_boot


class ProcessBackend(Backend):
    name = "process"
    isolates = "rlimits and (when possible) a PID namespace only: no file system or network isolation"

    def __init__(self, python: str | None = None, **_: object) -> None:
        self.python = python or sys.executable

    def available(self) -> tuple[bool, str]:
        return True, "always available; it does not isolate the file system or the network"

    def judge_command(self) -> list[str]:
        return [self.python, "-I", "-c", judge_boot(str(JUDGE_DIR.parent))]

    def prepare(self) -> None:
        warnings.warn(
            "the 'process' backend does not isolate solutions from this machine's files or network; "
            "use bubblewrap or apptainer for untrusted code",
            stacklevel=3,
        )
