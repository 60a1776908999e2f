"""Length-prefixed JSON messages over pipes: a 4-byte big-endian length, then UTF-8 JSON.

Used between the host and the judge (stdin/stdout) and between the judge and the untrusted
runner (dedicated pipes). Readers bound the size and reject anything that is not a JSON object,
so a hostile peer can at worst produce a `ProtocolError`.
"""

from __future__ import annotations

import json
import os
import select
import struct
import time
from typing import Any

MAX_MESSAGE = 256 * 1024 * 1024
_HEADER = struct.Struct(">I")


class ProtocolError(Exception):
    """The peer closed the channel or sent a malformed message."""


class Timeout(ProtocolError):
    """No complete message arrived before the deadline."""


def dumps(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
    return _HEADER.pack(len(body)) + body


def write_message(fd: int, message: dict[str, Any]) -> None:
    data = memoryview(dumps(message))
    while data:
        n = os.write(fd, data)
        data = data[n:]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks: list[bytes] = []
    while n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise Timeout("deadline passed")
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise ProtocolError("channel closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_message(fd: int, deadline: float | None = None, max_size: int = MAX_MESSAGE) -> dict[str, Any]:
    """Read one message; `deadline` is a time.monotonic() value, None waits forever."""
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
    if size > max_size:
        raise ProtocolError(f"message of {size} bytes exceeds the limit of {max_size}")
    body = _read_exact(fd, size, deadline)
    try:
        message = json.loads(body.decode("utf-8", "surrogatepass"))
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"malformed message: {str(exc)[:100]}") from None
    if type(message) is not dict:
        raise ProtocolError("message is not an object")
    return message
