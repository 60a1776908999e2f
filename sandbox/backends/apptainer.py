"""`apptainer`: the product backend. Each worker is one long-lived judge inside a rootless
Apptainer container, started once and kept warm:

    apptainer -s exec --containall --cleanenv --no-home --no-mount bind-paths --net --network none
        [--userns when root] --bind JUDGE:/opt/qrpo/judge:ro --pwd / IMAGE python3 -I -c <judge>

No network, read-only root, no host home or environment, a private /tmp bounded by the
installation's `sessiondir max size`, a PID namespace of its own. The judge is bound read-only
at run time, so changing it never needs a rebuild. Where FUSE cannot mount a SIF (as here), the
SIF is converted once to a sandbox directory on local disk and workers start from that (~70 ms
instead of ~1-2 s). `spython` manages the image (version, conversion, inspection); the judge's
pipes, timeouts and kills are ours, because spython has neither stdin nor timeouts.

Limits: cgroup limits (`--memory`, `--pids-limit`, `--cpus`) when the host lets this user use
them, the judge's rlimits otherwise; `limits_via` records which.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .base import JUDGE_DIR, Backend, BackendUnavailable, judge_boot

IN_CONTAINER_JUDGE_PARENT = "/opt/qrpo"
DEFAULT_PREFIX = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "qrpo" / "apptainer"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qrpo"


@contextlib.contextmanager
def spython_client(apptainer: str) -> Iterator[Any]:
    """spython's Client, pointed at our apptainer: spython runs `singularity` from PATH (the
    installer links it next to `apptainer`), so PATH is extended for the duration."""
    from spython.main import Client

    old = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{Path(apptainer).parent}:{old}"
    try:
        yield Client
    finally:
        os.environ["PATH"] = old


def containers_dir() -> Path:
    """The repository's containers/ directory (recipes and scripts)."""
    path = Path(__file__).resolve().parents[2] / "containers"
    if not path.is_dir():
        raise BackendUnavailable(f"{path} is missing: image recipes ship with the source tree (git clone the repository)")
    return path


def find_apptainer() -> str | None:
    """$QRPO_APPTAINER, then `apptainer` on PATH, then the installer's default prefix."""
    for candidate in (os.environ.get("QRPO_APPTAINER"), shutil.which("apptainer"), str(DEFAULT_PREFIX / "bin" / "apptainer")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def find_image() -> str | None:
    """$QRPO_SANDBOX_IMAGE, then the image `sandbox image build` writes by default."""
    for candidate in (os.environ.get("QRPO_SANDBOX_IMAGE"), str(DEFAULT_CACHE / "sandbox-debian.sif")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def fuse_usable() -> bool:
    """A SIF can be mounted directly only with squashfuse and a /dev/fuse this user can open;
    otherwise Apptainer extracts it to a temporary directory on every start (~1-2 s)."""
    if not (shutil.which("squashfuse_ll") or shutil.which("squashfuse")):
        return False
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
        return True
    except OSError:
        return False


def cgroups_usable() -> tuple[bool, str]:
    """Apptainer's --memory/--pids-limit need root (cgroup v1 or v2) or, for other users, a
    cgroup v2 unified hierarchy with the controllers delegated to them."""
    unified = Path("/sys/fs/cgroup/cgroup.controllers")
    if os.geteuid() == 0:
        if Path("/sys/fs/cgroup/memory").exists() or unified.exists():
            return True, "root can use cgroups"
        return False, "no cgroup hierarchy"
    if not unified.exists():
        return False, "cgroup v1 host: limits for unprivileged users come from rlimits"
    try:
        own = Path("/proc/self/cgroup").read_text().strip().split("::")[-1]
        delegated = (Path("/sys/fs/cgroup") / own.lstrip("/") / "cgroup.controllers").read_text().split()
    except OSError:
        return False, "cannot read this process's cgroup"
    if {"memory", "pids"} <= set(delegated) and os.access(Path("/sys/fs/cgroup") / own.lstrip("/"), os.W_OK):
        return True, "cgroup v2 controllers are delegated to this user"
    return False, "cgroup v2 controllers are not delegated to this user"


class ApptainerBackend(Backend):
    name = "apptainer"
    isolates = "rootless container: user/PID/IPC/network namespaces, read-only image, no host home or env, bounded /tmp"

    def __init__(self, image: str | None = None, apptainer: str | None = None, unpack_dir: str | None = None,
                 memory_mb: int = 4096, pids: int = 1024, cpus: float = 1.0, **_: object) -> None:
        self.apptainer = apptainer or find_apptainer()
        self.image = image or find_image()
        self.unpack_root = Path(unpack_dir or os.environ.get("QRPO_IMAGE_CACHE") or DEFAULT_CACHE / "images")
        self.memory_mb, self.pids, self.cpus = memory_mb, pids, cpus
        self.rootfs: str | None = None  # what workers start from: the SIF or its sandbox directory
        self.limits_via = "rlimits"

    def available(self) -> tuple[bool, str]:
        if not self.apptainer:
            return False, "apptainer is not installed (containers/install-apptainer.sh, or set QRPO_APPTAINER)"
        if not self.image:
            return False, "no image is configured (sandbox image build, or set QRPO_SANDBOX_IMAGE)"
        try:
            version = subprocess.run([self.apptainer, "--version"], capture_output=True, text=True, timeout=30, env=self._env())
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, f"{self.apptainer} does not run: {exc}"
        if version.returncode != 0:
            return False, f"{self.apptainer} does not run: {version.stderr.strip()[:200]}"
        return True, f"{version.stdout.strip()} with image {self.image}"

    def _env(self) -> dict[str, str]:
        """A clean environment: APPTAINER_BIND and APPTAINERENV_* would otherwise reach in."""
        path = f"{Path(self.apptainer).parent}:/usr/sbin:/usr/bin:/sbin:/bin" if self.apptainer else "/usr/bin:/bin"
        return {"PATH": path, "LANG": "C.UTF-8", "HOME": str(Path.home())}

    def prepare(self) -> None:
        """Resolve what workers start from: a sandbox directory when the image is a SIF and FUSE
        cannot mount it (converted once, cached by the SIF's identity)."""
        ok, reason = self.available()
        if not ok:
            raise BackendUnavailable(f"apptainer backend: {reason}")
        assert self.image and self.apptainer
        cgroups, _ = cgroups_usable()
        self.limits_via = "cgroups" if cgroups else "rlimits"
        if os.path.isdir(self.image) or fuse_usable():
            self.rootfs = self.image
            return
        self.rootfs = str(self.unpacked(self.image))

    def unpacked(self, sif: str) -> Path:
        stat = os.stat(sif)
        key = hashlib.sha256(f"{os.path.realpath(sif)}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        target = self.unpack_root / key
        if (target / "usr" / "bin" / "python3").exists():
            return target
        self.unpack_root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=self.unpack_root))
        assert self.apptainer, "prepare() checked availability"
        try:
            with spython_client(self.apptainer) as client:
                client.build(recipe=sif, image=str(staging / "rootfs"), sandbox=True, sudo=False, force=True, quiet=True)
            if not (staging / "rootfs" / "usr" / "bin" / "python3").exists():
                raise BackendUnavailable(f"could not unpack {sif} into a sandbox directory (apptainer build --sandbox failed)")
            try:
                os.rename(staging / "rootfs", target)
            except OSError:
                if not (target / "usr" / "bin" / "python3").exists():  # another process won the race
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def container_flags(self) -> list[str]:
        flags = ["--containall", "--cleanenv", "--no-home", "--no-mount", "bind-paths", "--net", "--network", "none",
                 "--scratch", "/dev/shm", "--pwd", "/"]
        if os.geteuid() == 0:
            flags.append("--userns")  # root must not run containers with real capabilities
        if self.limits_via == "cgroups":
            flags += ["--memory", f"{self.memory_mb}M", "--pids-limit", str(self.pids), "--cpus", str(self.cpus)]
        return flags

    def judge_command(self) -> list[str]:
        if self.rootfs is None:
            self.prepare()
        assert self.apptainer and self.rootfs
        return [
            "setpriv", "--pdeathsig", "KILL", "--",
            self.apptainer, "-s", "exec", *self.container_flags(),
            "--bind", f"{JUDGE_DIR}:{IN_CONTAINER_JUDGE_PARENT}/judge:ro",
            self.rootfs, "python3", "-I", "-c", judge_boot(IN_CONTAINER_JUDGE_PARENT),
        ]

    def judge_env(self) -> dict[str, str]:
        return self._env()

    def run_in_container(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run one command in a fresh container with the workers' flags (for `sandbox image check`)."""
        if self.rootfs is None:
            self.prepare()
        assert self.apptainer and self.rootfs
        return subprocess.run([self.apptainer, "-s", "exec", *self.container_flags(), self.rootfs, *argv],
                              capture_output=True, text=True, env=self._env(), timeout=timeout)
