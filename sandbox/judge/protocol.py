"""Length-prefixed JSON messages over pipes: a 4-byte big-endian length, then UTF-8 JSON.

Used between the host and the judge (stdin/stdout) and between the judge and the untrusted
runner (dedicated pipes). Readers bound the size and reject anything that is not a JSON object,
so a hostile peer can at worst produce a `ProtocolError`. One exception, between the two trusted
ends only: a host's request may be followed by its problem's test_data as raw bytes
(`write_request` / `read_request`).
"""

from __future__ import annotations

import fcntl
import gc
import json
import os
import select
import struct
import time
from collections.abc import Callable
from typing import Any

MAX_MESSAGE = 256 * 1024 * 1024
_HEADER = struct.Struct(">I")


class ProtocolError(Exception):
    """The peer closed the channel or sent a malformed message."""


class Malformed(ProtocolError):
    """The bytes arrived but are not a message: not JSON, not an object, or too large."""


class Timeout(ProtocolError):
    """No complete message arrived before the deadline."""


class HostGone(BaseException):
    """The watched descriptor hung up: whoever we serve is gone, so stop everything now. A
    BaseException so that no `except Exception` on the way can mistake it for a verdict."""


PIPE_BYTES = 1 << 20  # Linux's default pipe-max-size
QUOTA_KEPT = 16  # pipes of PIPE_BYTES that must still fit in the user's pipe quota


def widen(*fds: int) -> None:
    """Best effort: a pipe buffer of PIPE_BYTES instead of 64 KiB, for the host's pipes to a judge
    (test data, ~300 MB per HumanEval+ pass: 1-3% faster at two workers). Linux charges a pipe's
    whole capacity to its user and, once the user's soft quota (fs.pipe-user-pages-soft, 64 MiB
    by default) is spent, gives every new pipe of that user 8 KiB, ours and everyone else's. So a
    pipe is widened only while QUOTA_KEPT more could be: many workers or processes stop widening
    long before they would shrink anybody's pipes."""
    if not _quota_room(QUOTA_KEPT + len(fds)):
        return
    for fd in fds:
        try:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:  # not a pipe, or the quota filled meanwhile
            pass


def _quota_room(pipes: int) -> bool:
    """Whether `pipes` pipes of PIPE_BYTES fit in the user's pipe quota now. The kernel does not
    show a user's use of it, so this asks: make them, then close them (~2.5 us a pipe)."""
    fds: list[int] = []
    try:
        for _ in range(pipes):
            r, w = os.pipe()
            fds += (r, w)
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        return True
    except OSError:  # EPERM past the quota (or out of descriptors)
        return False
    finally:
        for fd in fds:
            os.close(fd)


# Made once: json.dumps with any option builds a new encoder per call (a third of a small frame's cost).
_ASCII = json.JSONEncoder(separators=(",", ":"))
_UTF8 = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(message: dict[str, Any]) -> bytes:
    # CPython escapes a str for JSON ~7x faster into ASCII than into UTF-8 (HumanEval+ returns
    # ~150 MB of text). As ASCII a surrogate pair is ambiguous (two lone surrogates or one astral
    # character), so a body with a surrogate escape in it is made again the UTF-8 way.
    body = _ASCII.encode(message).encode("ascii")
    if b"\\ud" in body:
        body = _UTF8.encode(message).encode("utf-8", "surrogatepass")
    return _HEADER.pack(len(body)) + body


_MARK = "\x00spliced\x00"  # stands in for a spliced text while the rest is made
_MARK_JSON = b'"\\u0000spliced\\u0000"'


def dumps_spliced(message: dict[str, Any], texts: list[tuple[list[Any], int]]) -> bytes:
    """`dumps`, with the long strings `holder[slot]` put in as they are: texts that JSON need
    not escape (a PACKED body: digits, letters, `+/=:`), which json would scan at ~2 ns a byte
    (~25 ms for a HumanEval+ answer of a million numbers). Anything unexpected (the mark
    itself inside the message, a surrogate) falls back to `dumps`."""
    saved = [holder[slot] for holder, slot in texts]
    for holder, slot in texts:
        holder[slot] = _MARK
    try:
        rest = _ASCII.encode(message).encode("ascii")
    finally:
        for (holder, slot), text in zip(texts, saved):
            holder[slot] = text
    parts = rest.split(_MARK_JSON)
    if len(parts) != len(texts) + 1 or b"\\ud" in rest:
        return dumps(message)
    pieces = [b"", parts[0]]
    for text, part in zip(saved, parts[1:]):
        pieces += (b'"', text.encode("ascii"), b'"', part)
    pieces[0] = _HEADER.pack(sum(map(len, pieces)))
    return b"".join(pieces)


def write_message(fd: int, message: dict[str, Any], deadline: float | None = None) -> None:
    """Write one message. With a `deadline` (a time.monotonic() value) `fd` must be
    non-blocking: a peer that stops reading then costs at most the time left (`Timeout`)."""
    write_data(fd, dumps(message), deadline)


def write_data(fd: int, message: bytes, deadline: float | None = None) -> None:
    """`write_message` of a message already made by `dumps`."""
    data = memoryview(message)
    poller = None
    while data:
        if deadline is not None:
            if poller is None:
                poller = select.poll()
                poller.register(fd, select.POLLOUT)
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(int(left * 1000) + 1):
                raise Timeout("the peer stopped reading")
        try:
            n = os.write(fd, data)
        except BlockingIOError:
            continue
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
    """Read exactly one message (safe where several processes share `fd`); `deadline` is a
    time.monotonic() value, None waits forever. The judge's own channels use `Reader`."""
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
    if size > max_size:
        raise Malformed(f"message of {size} bytes exceeds the limit of {max_size}")
    return _parse(_read_exact(fd, size, deadline))


# Host -> judge only (both trusted): a problem's test_data, bulk JSON text (300 MB over the
# HumanEval+ release), travels as raw UTF-8 after the request instead of a string inside it.
# Escaping it into the request on the host and unescaping it in the judge cost ~2.5 s of CPU per
# pass over HumanEval+ (py-spy), a tenth of the grading itself.
TEST_DATA_BYTES = "test_data_bytes"
TEST_DATA_SHA256 = "test_data_sha256"  # set by read_request only: the judge's cache key uses it


def write_request(fd: int, request: dict[str, Any]) -> None:
    """Send the host's request; its problem's test_data (if any) follows as raw bytes."""
    problem = request.get("problem")
    if not isinstance(problem, dict) or not problem.get("test_data"):
        write_message(fd, request)
        return
    data = problem["test_data"]
    raw = data.encode("utf-8", "surrogatepass")
    write_data(fd, dumps({**request, "problem": {**problem, "test_data": ""}, TEST_DATA_BYTES: len(raw)}))
    write_data(fd, raw)


def read_request(fd: int, max_size: int = MAX_MESSAGE) -> dict[str, Any]:
    """The judge's side of `write_request`: the request with its test_data back in place."""
    request = read_message(fd, max_size=max_size)
    size = request.pop(TEST_DATA_BYTES, None)
    problem = request.get("problem")
    if type(problem) is dict:
        problem.pop(TEST_DATA_SHA256, None)  # only ever the hash of the bytes that came
    if size is None:
        return request
    if type(size) is not int or not 0 <= size <= max_size or type(problem) is not dict:
        raise Malformed(f"a request's {TEST_DATA_BYTES} is not a size up to {max_size}, or it has no problem")
    raw = _read_exact(fd, size, None)
    try:
        problem["test_data"] = raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        raise Malformed("a problem's test_data is not UTF-8") from None
    # Hashed here, as bytes: encoding the text again for the key costs ~0.7 s a GB (a fresh copy).
    # Imported here: the runner imports this module, and hashlib's OpenSSL adds ~4 MB to the
    # resident memory of every process of a solution, which counts against its memory limit.
    import hashlib

    problem[TEST_DATA_SHA256] = hashlib.sha256(raw).hexdigest()
    return request


class paused_gc:  # lower case: used as a function, `with paused_gc():`
    """No cyclic collection while a peer's message is turned into objects. Parsing and decoding
    make up to a million fresh containers, and each batch of them starts a collection that walks
    the ones made so far: 60% of the judge's time on the costliest reply (bench/decode.py).
    What they build is bounded by the budgets, so the pause is too. A class, not a generator:
    it runs twice per answer, and this costs a third as much."""

    def __enter__(self) -> None:
        self.was = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self.was:
            gc.enable()


def _parse(body: bytes) -> dict[str, Any]:
    try:
        with paused_gc():
            message = json.loads(body.decode("utf-8", "surrogatepass"))
    except (ValueError, RecursionError) as exc:
        raise Malformed(f"malformed message: {str(exc)[:100]}") from None
    except MemoryError:
        raise Malformed("the message does not fit the judge's memory budget") from None
    if type(message) is not dict:
        raise Malformed("message is not an object")
    return message


class Reader:
    """Buffered reading of one descriptor that nobody else reads (the judge's side of a
    channel): a whole message usually arrives in one `read`, so this halves the system calls
    of `read_message`. Never use it where several processes share the descriptor."""

    def __init__(self, fd: int, hangup_fd: int | None = None, tick: Callable[[], None] | None = None,
                 tick_s: float = 0.05) -> None:
        self.fd = fd
        self.hangup_fd = hangup_fd
        self.tick = tick  # called at least every `tick_s` while waiting (the judge's tree watch)
        self.tick_ms = int(tick_s * 1000)
        self.buffer = bytearray()
        self.poller = select.poll()
        self.poller.register(fd, select.POLLIN)
        if hangup_fd is not None:
            self.poller.register(hangup_fd, 0)

    def _fill(self, deadline: float | None) -> None:
        timeout_ms = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
        if self.tick is not None:
            self.tick()
            timeout_ms = self.tick_ms if timeout_ms is None else min(timeout_ms, self.tick_ms)
        events = dict(self.poller.poll(timeout_ms))
        if self.hangup_fd is not None and events.get(self.hangup_fd, 0) & (select.POLLHUP | select.POLLERR):
            raise HostGone("the other end of the judge's input closed")
        if not events.get(self.fd):
            if deadline is not None and time.monotonic() >= deadline:
                raise Timeout("deadline passed")
            return
        try:
            chunk = os.read(self.fd, 1 << 20)
        except OSError as exc:
            raise ProtocolError(f"channel failed: {exc}") from None
        if not chunk:
            raise ProtocolError("channel closed")
        self.buffer += chunk

    def read(self, deadline: float | None = None, max_size: int = MAX_MESSAGE, max_containers: int | None = None,
             max_commas: int | None = None) -> dict[str, Any]:
        """One message. `max_containers` bounds the JSON arrays and objects a body may hold,
        counted (bytes.count: ~1 ms per MiB) before parsing, since parsing is what costs: a
        body of `[],[],...` makes ~25 bytes of memory per byte. Brackets inside strings count
        too; that only ever refuses more. `max_commas` bounds the values the same way."""
        while len(self.buffer) < _HEADER.size:
            self._fill(deadline)
        (size,) = _HEADER.unpack_from(self.buffer)
        if size > max_size:
            raise Malformed(f"message of {size} bytes exceeds the limit of {max_size}")
        while len(self.buffer) < _HEADER.size + size:
            self._fill(deadline)
        body = bytes(self.buffer[_HEADER.size:_HEADER.size + size])
        del self.buffer[:_HEADER.size + size]
        # A body holds at most one bracket or comma per byte: a short one needs no counting.
        if max_containers is not None and size > max_containers and body.count(b"[") + body.count(b"{") > max_containers:
            raise Malformed(f"message holds more than {max_containers} arrays and objects")
        if max_commas is not None and size > max_commas and body.count(b",") > max_commas:
            raise Malformed(f"message holds more than {max_commas} values")
        return _parse(body)
