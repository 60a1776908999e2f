"""The address file through which a server (often a SLURM job) tells its clients where it listens:
`host:port` on the first line, the token (if any) on the second; written atomically with mode 0600."""

from __future__ import annotations

import os
from pathlib import Path

from ..rundir import write_atomic


def write_address_file(path: str | os.PathLike[str], address: str, token: str | None) -> None:
    """Atomically write `host:port` (and the token on a second line) with mode 0600."""
    write_atomic(path, address + "\n" + (token + "\n" if token else ""), mode=0o600)


def read_address_file(path: str | os.PathLike[str]) -> tuple[str, str | None]:
    """(`host:port`, token or None) from an address file."""
    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"the address file {path} is empty")
    return lines[0], (lines[1] if len(lines) > 1 else None)
