"""Shared fixtures. Integration tests start real judges under real backends.

With QRPO_REQUIRE_ALL_TESTS=1 (set by `./run test`, hence CI) a backend or data file that is
missing fails the test instead of skipping it, and any skip at all fails the run: a test that
is skipped in CI counts as not written.
"""

from __future__ import annotations

import os
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
