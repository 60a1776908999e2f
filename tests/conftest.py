"""Shared fixtures. Integration tests start real judges under real backends.

With QRPO_REQUIRE_ALL_TESTS=1 (set by `./run test`, hence CI) a backend or data file that is
missing fails the test instead of skipping it, and any skip at all fails the run: a test that
is skipped in CI counts as not written.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REQUIRE_ALL = os.environ.get("QRPO_REQUIRE_ALL_TESTS") == "1"
REPO = Path(__file__).resolve().parents[1]
BACKENDS = ["process", "bubblewrap", "apptainer"]


def shared_data_dir() -> Path:
    return Path(os.environ.get("QRPO_SHARED_DATA") or REPO.parent / "shared" / "data")


def missing(reason: str) -> None:
    """Skip locally, fail where every test must run."""
    if REQUIRE_ALL:
        pytest.fail(f"required but unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        missing(f"shared datasets not found at {path} (set QRPO_SHARED_DATA)")
    return path


def backend_or_fail(name: str) -> str:
    from sandbox.backends import BACKENDS as KNOWN

    if name not in KNOWN:
        missing(f"backend {name} is not implemented")
    ok, reason = KNOWN[name]().available()
    if not ok:
        missing(f"backend {name}: {reason}")
    return name


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return backend_or_fail(request.param)


@pytest.fixture(scope="session")
def submitit_installed() -> None:
    try:
        import submitit  # noqa: F401
    except ImportError:
        missing("submitit is not installed (pip install submitit)")


@pytest.fixture(scope="session")
def slurm(submitit_installed) -> str:
    """The local cluster: SLURM_CONF set and sinfo answering with a usable node."""
    conf = os.environ.get("SLURM_CONF")
    if not conf:
        missing("SLURM_CONF is not set: start the local cluster (sudo slurm/local-cluster/up --state-dir /var/tmp/qrpo-slurm) "
                "and source /var/tmp/qrpo-slurm/env.sh")
    if not shutil.which("sinfo"):
        missing("sinfo is not on PATH (slurm-client is not installed)")
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        missing(f"sinfo does not respond within 30 s (SLURM_CONF={conf})")
    states = proc.stdout.split()
    if proc.returncode != 0 or not any(s.rstrip("*~#") in ("idle", "mixed", "allocated", "completing") for s in states):
        missing(
            f"the SLURM cluster of {conf} is not usable: sinfo exit {proc.returncode}, node states {states}, "
            f"{proc.stderr.strip()[:300]}"
        )
    return conf


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not REQUIRE_ALL:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        names = ", ".join(getattr(r, "nodeid", "?") for r in skipped[:20])
        if reporter:
            reporter.write_line(f"FAILED: {len(skipped)} test(s) were skipped but every test must run here: {names}", red=True)
        session.exitstatus = 1
