"""`bubblewrap`: the judge runs under Debian's `bwrap --unshare-all` as an unprivileged user:
no network, a read-only view of the system directories only (no home, no /root, no /work), a
private /tmp and /proc, and a clean environment."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .base import JUDGE_DIR, Backend, judge_boot

IN_SANDBOX_JUDGE_PARENT = "/opt/qrpo"
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc/alternatives")
SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/localtime", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf")


class BubblewrapBackend(Backend):
    name = "bubblewrap"
    isolates = "user, PID, IPC, UTS, cgroup and network namespaces; read-only system dirs only; private /tmp"

    def __init__(self, python: str = "/usr/bin/python3", bwrap: str | None = None, tmp_size_mb: int = 256, **_: object) -> None:
        self.python = python
        self.bwrap = bwrap or shutil.which("bwrap") or "/usr/bin/bwrap"
        self.tmp_size_mb = tmp_size_mb

    def available(self) -> tuple[bool, str]:
        if not Path(self.bwrap).exists():
            return False, "bwrap is not installed (apt-get install bubblewrap)"
        if not Path(self.python).exists():
            return False, f"{self.python} is missing (apt-get install python3)"
        probe = subprocess.run([*self._argv(), "/bin/true"], capture_output=True, text=True, timeout=30)
        if probe.returncode != 0:
            return False, f"bwrap cannot create namespaces here: {probe.stderr.strip()[:200]}"
        return True, f"{self.bwrap} works without privileges"

    def _argv(self) -> list[str]:
        argv = [self.bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--clearenv"]
        for d in SYSTEM_DIRS:
            if os.path.exists(d):
                argv += ["--ro-bind", d, d]
        for f in SYSTEM_FILES:
            if os.path.exists(f):
                argv += ["--ro-bind", f, f]
        argv += [
            "--proc", "/proc",
            "--dev", "/dev",
            "--size", str(self.tmp_size_mb * 1024 * 1024), "--tmpfs", "/tmp",
            "--ro-bind", str(JUDGE_DIR), f"{IN_SANDBOX_JUDGE_PARENT}/judge",
            "--chdir", "/tmp",
            "--setenv", "PATH", "/usr/bin:/bin",
            "--setenv", "LANG", "C.UTF-8",
            "--setenv", "TMPDIR", "/tmp",
            "--setenv", "HOME", "/tmp",
            "--remount-ro", "/",
        ]
        return argv

    def judge_command(self) -> list[str]:
        return [*self._argv(), self.python, "-I", "-c", judge_boot(IN_SANDBOX_JUDGE_PARENT)]
