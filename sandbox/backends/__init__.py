"""Isolation backends: each knows how to start a judge that speaks the protocol on stdin/stdout.

`auto` picks the strongest available: apptainer (when installed and an image is configured),
then bubblewrap, then process. Every GradeResult records the backend that graded it.
"""

from __future__ import annotations

from .apptainer import ApptainerBackend
from .base import Backend, BackendUnavailable
from .bubblewrap import BubblewrapBackend
from .process import ProcessBackend

BACKENDS: dict[str, type[Backend]] = {
    "apptainer": ApptainerBackend,
    "bubblewrap": BubblewrapBackend,
    "process": ProcessBackend,
}
AUTO_ORDER = ["apptainer", "bubblewrap", "process"]


def get_backend(name: str = "auto", **options: object) -> Backend:
    """Instantiate a backend by name; `auto` returns the first available in AUTO_ORDER."""
    if name == "auto":
        reasons = []
        for candidate in AUTO_ORDER:
            if candidate not in BACKENDS:
                continue
            backend = BACKENDS[candidate](**options)
            ok, reason = backend.available()
            if ok:
                return backend
            reasons.append(f"{candidate}: {reason}")
        raise BackendUnavailable("no backend is available: " + "; ".join(reasons))
    if name not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {name!r}; choose one of: auto, {', '.join(BACKENDS)}")
    backend = BACKENDS[name](**options)
    ok, reason = backend.available()
    if not ok:
        raise BackendUnavailable(f"backend {name!r} is not available here: {reason}")
    return backend


def describe_auto() -> list[tuple[str, bool, str]]:
    """(backend, available, reason) in `auto` order, for `sandbox doctor`."""
    out = []
    for candidate in AUTO_ORDER:
        if candidate in BACKENDS:
            ok, reason = BACKENDS[candidate]().available()
            out.append((candidate, ok, reason))
    return out


__all__ = ["ApptainerBackend", "Backend", "BackendUnavailable", "BubblewrapBackend", "ProcessBackend", "get_backend",
           "describe_auto", "BACKENDS"]
