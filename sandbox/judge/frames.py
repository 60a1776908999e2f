"""The one parser for every frame the untrusted side can send the judge.

A runner (and anything the solution writes on the runner's descriptors) is an adversary at the
byte level. Every frame goes through `parse` here: exact keys, exact types, bounded strings. A
frame that is not exactly one of the shapes below raises `FrameError`, which the judge turns
into a verdict for the current solution; nothing else can come out of this module.

Frames from a runner (`test` is the judge's id of the test the frame answers):

  {"loaded": true}                               the solution loaded
  {"loaded": false, "verdict": str, "detail": str}
  {"test": int, "ok": VALUE, "time_s": float}     a call returned VALUE (codec document)
  {"test": int, "raise": str, "detail": str}      a call raised
  {"test": int, "unencodable": str, "time_s": float}
  {"test": int, "passed": bool}                   an opaque test ran
  {"test": int, "exited": STATUS}                 a per_test fork ended
  {"test": int, "exited": STATUS, "stdout": str}  a stdio program ended (stdout in base64)

STATUS is {"code": int} or {"signal": int}; the status pipe carries a bare STATUS.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from . import protocol
from .verdicts import LOAD_FAILURES, RUNTIME_ERROR

DETAIL_LIMIT = 2000  # characters of a runner's detail string kept


class FrameError(protocol.ProtocolError):
    """A frame that is not one of the shapes the runner may send."""


@dataclass(frozen=True)
class Status:
    code: int | None
    signal: int | None


@dataclass(frozen=True)
class Loaded:
    ok: bool
    verdict: str
    detail: str


@dataclass(frozen=True)
class Value:
    test: int
    doc: Any  # a codec document, decoded (with its own budgets) by the caller


@dataclass(frozen=True)
class Raised:
    test: int
    name: str
    detail: str


@dataclass(frozen=True)
class Unencodable:
    test: int
    detail: str


@dataclass(frozen=True)
class OpaqueDone:
    test: int
    passed: bool


@dataclass(frozen=True)
class Exited:
    test: int
    status: Status


@dataclass(frozen=True)
class StdioDone:
    test: int
    status: Status
    stdout: str


Answer = Value | Raised | Unencodable | OpaqueDone | Exited | StdioDone


def _int(value: Any, what: str) -> int:
    if type(value) is not int or not -(1 << 31) <= value < (1 << 31):
        raise FrameError(f"{what} is not a 32-bit integer")
    return value


def _str(value: Any, what: str, limit: int = DETAIL_LIMIT) -> str:
    if type(value) is not str:
        raise FrameError(f"{what} is not a string")
    return value[:limit]


def _time(value: Any) -> float:
    if type(value) not in (int, float):
        raise FrameError("time_s is not a number")
    return float(value)


def _keys(message: dict[str, Any], required: set[str], optional: frozenset[str] = frozenset()) -> None:
    keys = set(message)
    if not required <= keys or not keys <= required | optional:
        raise FrameError(f"unexpected frame with keys {sorted(map(str, keys))[:8]}")


def status(value: Any) -> Status:
    """STATUS: exactly {"code": int} or {"signal": int}."""
    if type(value) is not dict or len(value) != 1:
        raise FrameError("exit status is not a one-key object")
    if "code" in value:
        return Status(_int(value["code"], "exit code"), None)
    if "signal" in value:
        return Status(None, _int(value["signal"], "signal"))
    raise FrameError("exit status has neither code nor signal")


def status_bytes(data: bytes) -> Status | None:
    """The status pipe's report (written by our intermediate, parsed as strictly anyway)."""
    try:
        return status(json.loads(data.decode("ascii")))
    except (ValueError, FrameError, RecursionError):
        return None


def load(message: dict[str, Any]) -> Loaded:
    """The runner's first frame. A failure names one of the load verdicts, else runtime_error."""
    ok = message.get("loaded")
    if ok is True:
        _keys(message, {"loaded"})
        return Loaded(True, "", "")
    if ok is not False:
        raise FrameError("load frame without a boolean `loaded`")
    _keys(message, {"loaded", "verdict", "detail"})
    verdict = _str(message["verdict"], "verdict", 40)
    return Loaded(False, verdict if verdict in LOAD_FAILURES else RUNTIME_ERROR, _str(message["detail"], "detail"))


def answer(message: dict[str, Any]) -> Answer:
    """Any frame that answers a test."""
    if "test" not in message:
        raise FrameError("frame without a test id")
    test = _int(message["test"], "test id")
    if "ok" in message:
        _keys(message, {"test", "ok", "time_s"})
        _time(message["time_s"])
        return Value(test, message["ok"])
    if "raise" in message:
        _keys(message, {"test", "raise", "detail"})
        return Raised(test, _str(message["raise"], "exception name", 200), _str(message["detail"], "detail"))
    if "unencodable" in message:
        _keys(message, {"test", "unencodable", "time_s"})
        _time(message["time_s"])
        return Unencodable(test, _str(message["unencodable"], "detail"))
    if "passed" in message:
        _keys(message, {"test", "passed"})
        if type(message["passed"]) is not bool:
            raise FrameError("`passed` is not a boolean")
        return OpaqueDone(test, message["passed"])
    if "exited" in message:
        if "stdout" in message:
            _keys(message, {"test", "exited", "stdout"})
            stdout = message["stdout"]
            if type(stdout) is not str:
                raise FrameError("stdout is not a string")
            try:
                text = base64.b64decode(stdout, validate=True).decode("utf-8", "replace")
            except ValueError:  # binascii.Error included
                raise FrameError("stdout is not base64") from None
            return StdioDone(test, status(message["exited"]), text)
        _keys(message, {"test", "exited"})
        return Exited(test, status(message["exited"]))
    raise FrameError("unknown frame")
