"""What this machine offers for sandboxing, for `sandbox doctor`. Each probe runs the real
thing (a namespace, a mount) rather than reading a configuration file."""

from __future__ import annotations

import shutil
import subprocess

from .backends.apptainer import cgroups_usable, find_apptainer, find_image, fuse_usable, spython_client


def _runs(argv: list[str]) -> tuple[bool, str]:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    return result.returncode == 0, (result.stdout or result.stderr).strip()[:200]


def apptainer_version() -> tuple[bool, str]:
    """Asked through spython (which runs `singularity`; the installer links it)."""
    binary = find_apptainer()
    if not binary:
        return False, "not installed (containers/install-apptainer.sh)"
    with spython_client(binary) as client:
        version = client.version() or ""
    return bool(version), f"{version} at {binary}" if version else f"{binary} did not report a version"


def probes() -> list[tuple[str, bool, str]]:
    out = [("apptainer", *apptainer_version())]
    image = find_image()
    out.append(("apptainer image", image is not None, image or "none (sandbox image build, or QRPO_SANDBOX_IMAGE)"))
    userns = _runs(["unshare", "--user", "--map-root-user", "true"])
    out.append(("user namespaces", userns[0], "unprivileged user namespaces work" if userns[0] else userns[1]))
    pidns = _runs(["unshare", "--user", "--pid", "--fork", "true"])
    out.append(("pid namespaces", pidns[0], "the runner can get its own PID namespace" if pidns[0] else pidns[1]))
    netns = _runs(["unshare", "--user", "--map-root-user", "--net", "true"])
    out.append(("network namespaces", netns[0], "no-network sandboxes possible" if netns[0] else netns[1]))
    cg, reason = cgroups_usable()
    out.append(("cgroups for limits", cg, reason))
    out.append(
        (
            "fuse",
            fuse_usable(),
            "squashfuse and /dev/fuse: SIFs mount directly"
            if fuse_usable()
            else "no squashfuse or /dev/fuse: SIFs are unpacked to a directory once",
        )
    )
    bwrap = shutil.which("bwrap")
    out.append(("bubblewrap", bwrap is not None, bwrap or "not installed (apt-get install bubblewrap)"))
    return out
