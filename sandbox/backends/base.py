"""The backend interface: a command that starts one judge, and what it isolates."""

from __future__ import annotations

import abc
import os
from pathlib import Path

JUDGE_DIR = Path(__file__).resolve().parent.parent / "judge"


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run on this machine; the message says why and what to do."""


def judge_boot(package_parent: str) -> str:
    """Python source that starts the judge from the directory holding the `judge` package."""
    return f"import sys; sys.path.insert(0, {package_parent!r}); from judge.server import main; main()"


class Backend(abc.ABC):
    """Starts judges. Workers of the pool run `judge_command()` and talk to it over pipes."""

    name: str = ""
    isolates: str = ""  # one sentence for the docs and `sandbox doctor`

    @abc.abstractmethod
    def available(self) -> tuple[bool, str]:
        """(usable here?, why or why not)."""

    @abc.abstractmethod
    def judge_command(self) -> list[str]:
        """argv of a process that runs the judge on stdin/stdout."""

    def judge_env(self) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "TMPDIR": os.environ.get("TMPDIR", "/tmp")}

    def prepare(self) -> None:  # noqa: B027  optional hook: most backends need no preparation
        """One-time work before starting workers (e.g. unpacking an image)."""

    def cleanup(self) -> None:  # noqa: B027  optional hook
        """Undo `prepare`."""
