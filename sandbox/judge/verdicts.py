"""The verdicts, defined once. Standard library only: the judge runs inside the container and
imports nothing of ours; `sandbox.problem` re-exports these names for the host side."""

from __future__ import annotations

from typing import Final, Literal

VerdictName = Literal[
    "passed", "wrong_answer", "timeout", "memory", "runtime_error", "syntax_error", "no_code", "sandbox_error"
]

PASSED: Final = "passed"
WRONG_ANSWER: Final = "wrong_answer"
TIMEOUT: Final = "timeout"
MEMORY: Final = "memory"
RUNTIME_ERROR: Final = "runtime_error"
SYNTAX_ERROR: Final = "syntax_error"
NO_CODE: Final = "no_code"
SANDBOX_ERROR: Final = "sandbox_error"  # ours (infrastructure), never the solution's

VERDICTS: Final[tuple[VerdictName, ...]] = (
    PASSED, WRONG_ANSWER, TIMEOUT, MEMORY, RUNTIME_ERROR, SYNTAX_ERROR, NO_CODE, SANDBOX_ERROR
)
# What a runner may claim about a solution that failed to load; anything else it says is read
# as runtime_error.
LOAD_FAILURES: Final[frozenset[str]] = frozenset({SYNTAX_ERROR, RUNTIME_ERROR, MEMORY, TIMEOUT})
