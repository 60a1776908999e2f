"""The one error type of the stages: a `StageError` message is one line that says what is wrong and the fix."""

from __future__ import annotations


class StageError(RuntimeError):
    """A stage cannot go on (missing input, stale output, failed job); the message names the fix."""
