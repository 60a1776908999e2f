"""qrpo's rootless code sandbox: grade untrusted programs against unit tests.

    import sandbox
    results = sandbox.grade("problems.jsonl", "completions.jsonl", backend="bubblewrap")
    print(results[0].pass_rate, results[0].verdicts)

Names are imported lazily so that the judge (which only needs `sandbox.judge`) stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["grade", "iter_grade", "Pool", "Problem", "Test", "Limits", "Verdict", "GradeResult", "load_problems", "extract_code"]

_EXPORTS = {
    "grade": "sandbox.api",
    "iter_grade": "sandbox.api",
    "Pool": "sandbox.pool",
    "Problem": "sandbox.problem",
    "Test": "sandbox.problem",
    "Limits": "sandbox.problem",
    "Verdict": "sandbox.problem",
    "GradeResult": "sandbox.problem",
    "load_problems": "sandbox.datasets",
    "extract_code": "sandbox.extract",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
