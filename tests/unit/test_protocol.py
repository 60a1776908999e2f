"""Length-prefixed JSON framing between host, judge and runner (sandbox.judge.protocol).

A hostile peer can at worst produce a ProtocolError: never another exception, never a hang
past the deadline, never an unbounded allocation.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.judge import codec, server
from sandbox.judge.protocol import (
    PIPE_BYTES,
    QUOTA_KEPT,
    TEST_DATA_BYTES,
    TEST_DATA_SHA256,
    Malformed,
    ProtocolError,
    Timeout,
    dumps,
    dumps_spliced,
    read_message,
    read_request,
    widen,
    write_message,
    write_request,
)


@pytest.fixture
def pipe():
    r, w = os.pipe()
    fds = {"r": r, "w": w}
    yield fds
    for fd in fds.values():
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


def close_writer(pipe) -> None:
    os.close(pipe["w"])
    pipe["w"] = None


def header(n: int) -> bytes:
    return struct.pack(">I", n)


def soon(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


MESSAGES = [
    {},
    {"op": "call", "args": [1, 2.5, None, True, "x"], "kwargs": {"a": {"b": [[]]}}},
    {"text": "héllo ✓ 𝄞 日本", "lone": "\ud800 and \udfff", "nul": "\x00"},
    {"big": 2**200, "neg": -(2**70), "floats": [0.0, -0.0, 1e308, 5e-324]},
]


@pytest.mark.parametrize("message", MESSAGES, ids=range(len(MESSAGES)))
def test_round_trip(pipe, message):
    write_message(pipe["w"], message)
    assert read_message(pipe["r"], soon()) == message


def test_several_messages_in_order_without_deadline(pipe):
    for i in range(50):
        write_message(pipe["w"], {"i": i})
    assert [read_message(pipe["r"])["i"] for _ in range(50)] == list(range(50))


def test_large_message_larger_than_the_pipe_buffer(pipe):
    message = {"blob": "x" * (3 * 1024 * 1024), "list": list(range(10_000))}
    writer = threading.Thread(target=write_message, args=(pipe["w"], message))
    writer.start()
    try:
        assert read_message(pipe["r"], soon(30)) == message
    finally:
        writer.join(30)


def test_message_arriving_in_pieces(pipe):
    data = dumps({"slow": "y" * 1000})

    def trickle():
        for i in range(0, len(data), 97):
            os.write(pipe["w"], data[i : i + 97])
            time.sleep(0.002)

    writer = threading.Thread(target=trickle)
    writer.start()
    try:
        assert read_message(pipe["r"], soon()) == {"slow": "y" * 1000}
    finally:
        writer.join(10)


def test_nan_and_infinity_survive(pipe):
    write_message(pipe["w"], {"v": [float("inf"), float("-inf"), float("nan")]})
    v = read_message(pipe["r"], soon())["v"]
    assert v[0] == float("inf") and v[1] == float("-inf") and v[2] != v[2]


def test_dumps_frames_with_a_big_endian_length():
    data = dumps({"a": 1})
    (n,) = struct.unpack(">I", data[:4])
    assert n == len(data) - 4


def test_deadline_with_nothing_sent_raises_timeout(pipe):
    started = time.monotonic()
    with pytest.raises(Timeout):
        read_message(pipe["r"], time.monotonic() + 0.2)
    assert 0.15 <= time.monotonic() - started < 3


def test_deadline_with_half_a_message_raises_timeout(pipe):
    os.write(pipe["w"], header(100) + b'{"a": ')
    started = time.monotonic()
    with pytest.raises(Timeout):
        read_message(pipe["r"], time.monotonic() + 0.2)
    assert time.monotonic() - started < 3


def test_deadline_with_half_a_header_raises_timeout(pipe):
    os.write(pipe["w"], b"\x00\x00")
    with pytest.raises(Timeout):
        read_message(pipe["r"], time.monotonic() + 0.2)


def test_deadline_already_passed(pipe):
    with pytest.raises(Timeout):
        read_message(pipe["r"], time.monotonic() - 1)


def test_timeout_is_a_protocol_error():
    assert issubclass(Timeout, ProtocolError)


@pytest.mark.parametrize("size", [2**32 - 1, 256 * 1024 * 1024 + 1])
def test_oversize_header_is_rejected_without_reading_the_body(pipe, size):
    os.write(pipe["w"], header(size))
    started = time.monotonic()
    with pytest.raises(ProtocolError) as info:
        read_message(pipe["r"], soon())
    assert not isinstance(info.value, Timeout)
    assert time.monotonic() - started < 3


def test_max_size_is_honoured(pipe):
    write_message(pipe["w"], {"x": "a" * 100})
    with pytest.raises(ProtocolError) as info:
        read_message(pipe["r"], soon(), max_size=50)
    assert not isinstance(info.value, Timeout)


def test_message_of_exactly_max_size_is_accepted(pipe):
    data = dumps({"x": "a" * 100})
    os.write(pipe["w"], data)
    assert read_message(pipe["r"], soon(), max_size=len(data) - 4) == {"x": "a" * 100}


@pytest.mark.parametrize(
    "sent",
    [b"", b"\x00", b"\x00\x00\x00", header(100), header(100) + b'{"a": 1', header(2) + b"{"],
    ids=["nothing", "1 header byte", "3 header bytes", "header only", "half a body", "1 of 2 bytes"],
)
@pytest.mark.parametrize("deadline", [True, False], ids=["deadline", "no deadline"])
def test_truncated_message_is_a_protocol_error(pipe, sent, deadline):
    if sent:
        os.write(pipe["w"], sent)
    close_writer(pipe)
    with pytest.raises(ProtocolError) as info:
        read_message(pipe["r"], soon() if deadline else None)
    assert not isinstance(info.value, Timeout)


@pytest.mark.parametrize(
    "body",
    [b"[]", b"[1, 2]", b"1", b'"text"', b"null", b"true", b"3.5"],
)
def test_non_object_json_is_a_protocol_error(pipe, body):
    os.write(pipe["w"], header(len(body)) + body)
    with pytest.raises(ProtocolError):
        read_message(pipe["r"], soon())


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"{'a': 1}", b'{"a": 1} trailing', b"{\"a\": undefined}", b"\x00\x00", b" "],
)
def test_malformed_json_is_a_protocol_error(pipe, body):
    os.write(pipe["w"], header(len(body)) + body)
    with pytest.raises(ProtocolError):
        read_message(pipe["r"], soon())


@pytest.mark.parametrize(
    "body",
    [b'{"a": "\xff"}', b'{"a": "\xc3"}', b'{"\xfe\xff": 1}', b"\x80{}", b'{"a": "\xed\xa0"}'],
)
def test_invalid_utf8_is_a_protocol_error(pipe, body):
    os.write(pipe["w"], header(len(body)) + body)
    with pytest.raises(ProtocolError):
        read_message(pipe["r"], soon())


@pytest.mark.parametrize("depth", [100_000, 1_000_000])
@pytest.mark.parametrize("opener,closer", [(b"[", b"]"), (b'{"a":', b"}")], ids=["lists", "objects"])
def test_deeply_nested_json_is_a_protocol_error(pipe, depth, opener, closer):
    body = b'{"v":' + opener * depth + b"1" + closer * depth + b"}"

    def send():
        try:
            os.write(pipe["w"], header(len(body)))
            write_all = memoryview(body)
            while write_all:
                n = os.write(pipe["w"], write_all)
                write_all = write_all[n:]
        except OSError:
            pass

    writer = threading.Thread(target=send)
    writer.start()
    try:
        with pytest.raises(ProtocolError):
            read_message(pipe["r"], soon(30))
    finally:
        writer.join(30)


def test_reader_recovers_framing_after_a_bad_message(pipe):
    # A bad body is consumed whole, so the next message is still read correctly.
    body = b"[1, 2, 3]"
    os.write(pipe["w"], header(len(body)) + body)
    write_message(pipe["w"], {"next": True})
    with pytest.raises(ProtocolError):
        read_message(pipe["r"], soon())
    assert read_message(pipe["r"], soon()) == {"next": True}


def test_write_to_a_reader_that_stopped_reading_times_out(pipe):
    os.set_blocking(pipe["w"], False)
    message = {"blob": "x" * (1 << 20)}  # far more than a pipe's buffer
    started = time.monotonic()
    with pytest.raises(Timeout):
        write_message(pipe["w"], message, time.monotonic() + 0.3)
    assert time.monotonic() - started < 3


def test_write_with_a_deadline_completes_when_the_reader_reads(pipe):
    os.set_blocking(pipe["w"], False)
    message = {"blob": "y" * (1 << 20)}
    got = []
    reader = threading.Thread(target=lambda: got.append(read_message(pipe["r"], soon(30))))
    reader.start()
    write_message(pipe["w"], message, soon(30))
    reader.join(30)
    assert got == [message]


def test_reader_ticks_while_waiting_and_a_tick_can_stop_it(pipe):
    from sandbox.judge.protocol import Reader

    class Stop(Exception):
        pass

    ticks = []

    def tick():
        ticks.append(time.monotonic())
        if len(ticks) > 3:
            raise Stop

    with pytest.raises(Stop):
        Reader(pipe["r"], tick=tick, tick_s=0.02).read(soon())
    assert len(ticks) == 4


def test_reader_counts_arrays_and_values_before_parsing(pipe):
    from sandbox.judge.protocol import Malformed, Reader

    os.write(pipe["w"], dumps({"a": [[]] * 50}))
    with pytest.raises(Malformed):
        Reader(pipe["r"]).read(soon(), max_containers=10)
    os.write(pipe["w"], dumps({"a": [1] * 50}))
    with pytest.raises(Malformed):
        Reader(pipe["r"]).read(soon(), max_commas=10)
    os.write(pipe["w"], dumps({"a": [1] * 5}))
    assert Reader(pipe["r"]).read(soon(), max_containers=10, max_commas=10) == {"a": [1] * 5}


REQUESTS = [
    {"id": 1, "op": "ping"},
    {"id": 2, "code": "x", "problem": {"tests": [], "test_data": ""}},
    {"id": 3, "code": "x", "problem": {"tests": [], "test_setup": "s", "test_data": '[["h\\u00e9", "日本 𝄞"], "\ud800"]'}},
    {"id": 4, "code": "x", "problem": {"tests": [], "test_data": '"' + "q\\\"" * 2_000_000 + '"'}},
]


@pytest.mark.parametrize("request_", REQUESTS, ids=range(len(REQUESTS)))
def test_a_request_round_trips_with_its_test_data_as_raw_bytes(pipe, request_):
    writer = threading.Thread(target=write_request, args=(pipe["w"], request_))
    writer.start()
    try:
        got = read_request(pipe["r"])
        write_message(pipe["w"], {"next": True})  # the stream is still in step after the raw bytes
        assert read_message(pipe["r"], soon()) == {"next": True}
    finally:
        writer.join()
    problem = got.get("problem", {})
    digest = problem.pop(TEST_DATA_SHA256, None)
    assert got == request_
    if problem.get("test_data"):  # hashed as it came, for the judge's cache key
        assert digest == hashlib.sha256(problem["test_data"].encode("utf-8", "surrogatepass")).hexdigest()
        assert server.problem_key({**problem, TEST_DATA_SHA256: digest}) == server.problem_key(problem)
    else:
        assert digest is None


@pytest.mark.parametrize("data", ["", "[1, 2]"])
def test_a_test_data_hash_that_came_in_the_json_is_dropped(pipe, data):
    """Only read_request's own hash of the bytes names the data in the judge's cache: a request
    cannot bring one that would point at another problem's prepared namespace."""
    forged = "0" * 64
    request = {"id": 1, "problem": {"test_data": data, TEST_DATA_SHA256: forged}}
    writer = threading.Thread(target=write_request, args=(pipe["w"], request))
    writer.start()
    try:
        got = read_request(pipe["r"])
    finally:
        writer.join()
    assert got["problem"].get(TEST_DATA_SHA256) != forged
    assert server.problem_key(got["problem"]) == server.problem_key({"test_data": data})


def test_the_raw_test_data_is_not_escaped_into_the_json(pipe):
    data = '"' + 'q\\"' * 1000 + '"'
    request = {"id": 1, "problem": {"test_data": data}}
    write_request(pipe["w"], request)
    (size,) = struct.unpack(">I", os.read(pipe["r"], 4))
    head = os.read(pipe["r"], size)
    assert b"q\\" not in head and f'"{TEST_DATA_BYTES}":{len(data)}'.encode() in head
    assert os.read(pipe["r"], 1 << 16) == data.encode()


@pytest.mark.parametrize("size", [-1, "12", 2**40, None])
def test_a_request_with_a_bad_test_data_size_is_malformed(pipe, size):
    message = {"id": 1, "problem": {"test_data": ""}, TEST_DATA_BYTES: size}
    if size is None:
        message = {"id": 1, TEST_DATA_BYTES: 3}  # a size without a problem to put it in
    write_message(pipe["w"], message)
    with pytest.raises(Malformed):
        read_request(pipe["r"])


def test_test_data_that_is_not_utf8_is_malformed(pipe):
    os.write(pipe["w"], dumps({"id": 1, "problem": {"test_data": ""}, TEST_DATA_BYTES: 2}) + b"\xff\xfe")
    with pytest.raises(Malformed, match="UTF-8"):
        read_request(pipe["r"])


def test_widen_gives_a_pipe_a_larger_buffer_and_leaves_other_descriptors_alone(pipe, tmp_path):
    assert fcntl.fcntl(pipe["w"], fcntl.F_GETPIPE_SZ) < PIPE_BYTES
    widen(pipe["w"])
    assert fcntl.fcntl(pipe["r"], fcntl.F_GETPIPE_SZ) == PIPE_BYTES  # one buffer, both ends
    with open(tmp_path / "f", "wb") as f:
        widen(f.fileno())  # not a pipe: refused quietly


def test_widen_stops_before_the_users_pipe_quota_runs_low():
    """Past the soft quota every new pipe of the user gets 8 KiB, so widen must leave QUOTA_KEPT
    wide pipes' worth free. Run as an unprivileged user (root's pipes are never capped)."""
    soft_pages = int(open("/proc/sys/fs/pipe-user-pages-soft").read())
    errors_r, errors_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports a failed assertion through the pipe, then exits
        code = 0
        try:
            os.close(errors_r)
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            check_widen_against_the_quota(soft_pages)
        except BaseException as exc:  # noqa: BLE001 - a forked child must report anything, then exit
            os.write(errors_w, repr(exc).encode()[:4000])
            code = 1
        os._exit(code)
    os.close(errors_w)
    with os.fdopen(errors_r, "rb") as errors:
        report = errors.read().decode()
    assert os.waitpid(pid, 0)[1] == 0, report


def check_widen_against_the_quota(soft_pages: int) -> None:
    def size(fd: int) -> int:
        return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)

    ours = os.pipe()
    widen(ours[1])
    assert size(ours[1]) == PIPE_BYTES, "widen refused with the quota nearly empty"
    if not soft_pages:
        return  # no quota on this machine: nothing else to keep free
    hogs: list[tuple[int, int]] = []
    while True:  # take the quota until not one more wide pipe fits
        r, w = os.pipe()
        hogs.append((r, w))
        try:
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except PermissionError:
            break
    for r, w in hogs[-QUOTA_KEPT // 2:]:  # give back about half of what widen keeps free
        os.close(r)
        os.close(w)
    late = os.pipe()
    widen(late[1])
    assert size(late[1]) == 65536, "widened with less than QUOTA_KEPT wide pipes of quota left"
    assert size(os.pipe()[1]) == 65536, "a new pipe was capped: the quota ran out"
    for r, w in hogs[: -QUOTA_KEPT // 2]:
        os.close(r)
        os.close(w)
    widen(late[1])
    assert size(late[1]) == PIPE_BYTES, "widen refused after the quota was given back"


NUMBERS = st.one_of(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=codec.PACK_MIN, max_size=300),
                    st.lists(st.floats(allow_nan=False), min_size=codec.PACK_MIN, max_size=300))
USER_TEXT = st.one_of(st.text(), st.just("\x00spliced\x00"), st.just("\ud800"), st.just("\U0001f600"))


@settings(max_examples=200, deadline=None)
@given(st.lists(NUMBERS, min_size=1, max_size=3), st.lists(USER_TEXT, max_size=3))
def test_a_spliced_message_parses_like_the_one_dumps_makes(numbers, texts):
    """The runner's spliced answers against `dumps`: same message, whatever else the value holds
    (the mark itself, lone surrogates, astral characters)."""
    value = codec.encode([*numbers, *texts])
    message = {"test": 7, "ok": value, "time_s": 0.25}
    spliced = [(node, 1) for node in value["nodes"] if type(node[1]) is str]
    assert len(spliced) == len(numbers)  # each list of numbers is PACKED
    before = repr(message)
    r, w = os.pipe()
    try:
        os.write(w, dumps_spliced(message, spliced) + dumps(message))
        assert read_message(r) == read_message(r) == message
    finally:
        os.close(r)
        os.close(w)
    assert repr(message) == before  # the texts are put back
