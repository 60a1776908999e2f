"""The judge's small parts that stand between it and hostile bytes: the frame parser, the
exceptions handed to test code, the text it writes, the tree removal, the verdict list."""

from __future__ import annotations

import base64
import json
import os
import stat
import time

import pytest

from sandbox.judge import cleanup, frames
from sandbox.judge.calls import SolutionError, cpu_budget, solution_exception
from sandbox.judge.server import safe_text
from sandbox.judge.verdicts import VERDICTS
from sandbox.problem import Verdict


def test_verdicts_are_defined_once_and_match_the_enum() -> None:
    assert tuple(v.value for v in Verdict) == VERDICTS


GOOD = [
    {"loaded": True},
    {"test": 1, "ok": {"root": 3, "nodes": []}, "time_s": 0.5},
    {"test": 2, "raise": "ValueError", "detail": "x"},
    {"test": 3, "unencodable": "function", "time_s": 0},
    {"test": 4, "passed": False},
    {"test": 5, "exited": {"signal": 9}},
    {"test": 6, "exited": {"code": 0}, "stdout": base64.b64encode(b"3\n").decode()},
]


@pytest.mark.parametrize("message", GOOD[1:], ids=lambda m: next(k for k in m if k != "test"))
def test_answers_parse(message) -> None:
    answer = frames.answer(message)
    assert answer.test == message["test"]


BAD = [
    {},
    {"test": "1", "passed": True},
    {"test": 1.0, "passed": True},
    {"test": 2**40, "passed": True},
    {"test": 1, "passed": 1},
    {"test": 1, "passed": True, "x": 1},
    {"test": 1, "ok": 3},
    {"test": 1, "ok": 3, "time_s": "0"},
    {"test": 1, "raise": 3, "detail": ""},
    {"test": 1, "raise": "E"},
    {"test": 1, "exited": {"signal": "9"}},
    {"test": 1, "exited": {"code": [0]}},
    {"test": 1, "exited": {}},
    {"test": 1, "exited": {"code": 0, "signal": 9}},
    {"test": 1, "exited": [0]},
    {"test": 1, "exited": {"code": 0}, "stdout": 3},
    {"test": 1, "exited": {"code": 0}, "stdout": "@@@"},
    {"test": 1},
    {"test": True, "passed": True},
]


@pytest.mark.parametrize("message", BAD, ids=range(len(BAD)))
def test_malformed_answers_are_frame_errors_and_nothing_else(message) -> None:
    with pytest.raises(frames.FrameError):
        frames.answer(message)


@pytest.mark.parametrize(
    "message", [{"loaded": 1}, {"loaded": True, "x": 1}, {"loaded": False}, {"loaded": False, "verdict": 3, "detail": ""}]
)
def test_malformed_load_frames(message) -> None:
    with pytest.raises(frames.FrameError):
        frames.load(message)


def test_a_load_failure_claims_only_load_verdicts() -> None:
    assert frames.load({"loaded": False, "verdict": "passed", "detail": ""}).verdict == "runtime_error"
    assert frames.load({"loaded": False, "verdict": "syntax_error", "detail": ""}).verdict == "syntax_error"


def test_status_bytes() -> None:
    assert frames.status_bytes(b'{"signal": 9}') == frames.Status(None, 9)
    for data in (b"", b"{", b'{"signal": "x"}', b"\xff", b"[]", b'{"code": 1, "x": 2}'):
        assert frames.status_bytes(data) is None


@pytest.mark.parametrize(
    "name,cls",
    [
        ("ValueError", ValueError),
        ("KeyError", KeyError),
        ("ZeroDivisionError", ZeroDivisionError),
        ("UnicodeDecodeError", UnicodeError),
        ("MemoryError", MemoryError),
    ],
)
def test_solution_exceptions_are_real_builtin_classes(name, cls) -> None:
    exc = solution_exception(frames.Raised(1, name, f"{name}: message " + "x" * 5000))
    assert type(exc) is cls and len(str(exc)) <= 502 and "message" in str(exc)


def test_unknown_and_uncatchable_exceptions() -> None:
    assert type(solution_exception(frames.Raised(1, "MyError", "boom"))) is SolutionError
    assert type(solution_exception(frames.Raised(1, "__import__", "boom"))) is SolutionError
    for name in ("SystemExit", "KeyboardInterrupt", "GeneratorExit", "TooLarge"):
        assert solution_exception(frames.Raised(1, name, "")) is None


@pytest.mark.parametrize("text", ["\ud800", "a\udfffb", "\x00\x1b[2J", "ok\nline\ttab", "é 日本 𝄞"])
def test_safe_text_can_always_be_written(text) -> None:
    out = safe_text(text)
    json.dumps(out, ensure_ascii=False).encode("utf-8")
    if text.isprintable() or set(text) <= set("oklinetab\n\t"):
        assert out == text


def test_remove_tree_survives_what_a_solution_can_leave(tmp_path) -> None:
    root = tmp_path / "w"
    root.mkdir()
    fd = os.open(root, os.O_RDONLY)
    for _ in range(5_000):  # deeper than the recursion limit, longer than PATH_MAX
        os.mkdir("d", dir_fd=fd)
        nfd = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(fd)
    os.mkfifo(root / ".stdout")
    (root / ".stderr").mkdir()
    (root / "link").symlink_to("/etc")
    locked = root / "locked" / "inner"
    locked.mkdir(parents=True)
    (locked / "f").write_text("x")
    os.chmod(locked, 0)
    os.chmod(locked.parent, stat.S_IRUSR)
    assert cleanup.remove_tree(str(root))
    assert not root.exists() and os.path.exists("/etc/passwd")


def test_remove_tree_of_nothing_or_a_file(tmp_path) -> None:
    assert cleanup.remove_tree(str(tmp_path / "missing"))
    (tmp_path / "f").write_text("x")
    assert cleanup.remove_tree(str(tmp_path / "f")) and not (tmp_path / "f").exists()


def test_remove_tree_gives_up_at_once_on_what_it_cannot_remove(tmp_path, monkeypatch) -> None:
    """An entry that resists (here: unlink always fails) ends the removal after one idle pass, not
    after a million entries of budget spent on it; the caller is told the tree is still there."""
    root = tmp_path / "w"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "stuck").write_text("x")

    def refuse(*args, **kwargs):
        raise PermissionError("refused")

    monkeypatch.setattr(cleanup.os, "unlink", refuse)
    calls = []
    real_scandir = os.scandir
    monkeypatch.setattr(cleanup.os, "scandir", lambda fd: calls.append(fd) or real_scandir(fd))
    assert not cleanup.remove_tree(str(root))
    assert (root / ".q1").exists() and len(calls) < 10


def _spin(cpu_s: float) -> None:
    end = time.process_time() + cpu_s
    while time.process_time() < end:
        pass


def test_the_judge_cpu_budget_fires_inside_its_block_and_never_after_it() -> None:
    """The backstop on the judge's own CPU per test: a tick every TICK_S of CPU while a
    solution's tests run, counted by the armed block. It must stop a block that spins (within a
    tick or two of its budget), and ticks after a block ended (in time or by the budget) must
    never raise."""
    budget = cpu_budget()
    assert cpu_budget() is budget  # one handler per process
    with budget.ticking():
        start = time.process_time()
        with pytest.raises(TimeoutError, match="over budget"):
            with budget.armed(0.6, lambda: TimeoutError("over budget")):
                _spin(5.0)
        assert 0.6 <= time.process_time() - start <= 0.6 + 2 * budget.TICK_S + 0.2
        for _ in range(2):
            with budget.armed(0.6, lambda: TimeoutError("fired after its block")):
                _spin(0.1)
            _spin(1.0)  # past the budget, outside the block: nothing fires
    with budget.armed(0.1, lambda: TimeoutError("ticking stopped with its block")):
        _spin(0.5)  # no solution's tests running: no ticks


def test_the_zygote_loads_no_openssl():
    """Every process of a solution is a fork of the zygote, and their resident memory together
    counts against the solution's limit: hashlib's OpenSSL (~4 MB each) once pushed a correct
    fork bomb over 512 MiB. The zygote's imports, as it makes them (its warm modules included),
    must not load it."""
    import subprocess
    import sys

    from sandbox.backends.base import judge_boot

    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(cleanup.__file__)))
    boot = judge_boot(package_parent).replace("from judge.server import main; main()", "import judge.runner as r")
    script = boot + (
        "\nfor m in r.WARM_MODULES:\n    try:\n        __import__(m)\n    except ImportError:\n        pass"
        "\nprint(sorted(sys.modules))"
    )
    modules = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert "'judge.runner'" in modules and "_hashlib" not in modules


def _in_child(body) -> int:
    """Run body() in a forked child; its return value (0-255) is the exit code."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = body()
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_the_runner_filter_denies_memory_no_process_holds_and_nothing_else(tmp_path) -> None:
    """After `seccomp.install`: memfd_create and shmget fail with ENOSYS, in this process and in
    what it forks; files, pipes, shared file mappings, fork still work."""
    import ctypes
    import errno
    import mmap

    from sandbox.judge import seccomp

    def body() -> int:
        if not seccomp.install():
            return 1
        try:
            os.memfd_create("x")
            return 2
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                return 3
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.shmget(0, 4096, 0o1600) != -1 or ctypes.get_errno() != errno.ENOSYS:
            return 4
        path = tmp_path / "shared"
        path.write_bytes(b"\0" * 4096)
        with open(path, "r+b") as f, mmap.mmap(f.fileno(), 4096, flags=mmap.MAP_SHARED) as m:
            m[0] = 7
        read_end, write_end = os.pipe()
        os.write(write_end, b"ok")
        if os.read(read_end, 2) != b"ok" or path.read_bytes()[0] != 7:
            return 5
        child = os.fork()
        if child == 0:
            try:
                os.memfd_create("y")
                os._exit(6)
            except OSError:
                os._exit(0)
        return os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])

    assert _in_child(body) == 0
    os.close(os.memfd_create("here, unfiltered"))  # the filter stayed in the child


def test_the_filter_program_jumps_to_the_denial(monkeypatch) -> None:
    from sandbox.judge import seccomp

    for machine, (arch, x32, calls) in seccomp.DENIED.items():
        program = seccomp.program(machine)
        deny = len(program) - 1
        assert program[deny] == (seccomp.BPF_RET_K, 0, 0, seccomp.SECCOMP_RET_ERRNO | 38)
        assert program[deny - 1] == (seccomp.BPF_RET_K, 0, 0, seccomp.SECCOMP_RET_ALLOW)
        denied = {k for i, (code, jt, jf, k) in enumerate(program) if code != seccomp.BPF_LD_W_ABS
                  and i + 1 + (jt or jf) == deny and (jt or jf)}
        assert denied == {arch} | set(calls.values()) | ({seccomp.X32_SYSCALL_BIT} if x32 else set())
    assert seccomp.compiled("riscv64") is None
    monkeypatch.setattr(seccomp, "_FILTER", None)
    assert seccomp.install() is False  # no filter of ours for this machine: said, not pretended


def test_shared_memory_counts_as_resident() -> None:
    """treewatch.resident counts the MAP_SHARED pages a process filled (RssShmem), which the
    private count (statm's resident - shared) left out."""
    import mmap

    from sandbox.judge import treewatch

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        block = mmap.mmap(-1, 64 << 20, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        for offset in range(0, 64 << 20, 4096):
            block[offset] = 1
        os.write(write_end, b"+")
        time.sleep(30)
        os._exit(0)
    try:
        assert os.read(read_end, 1) == b"+"
        statm = open(f"/proc/{pid}/statm").read().split()
        private = (int(statm[1]) - int(statm[2])) * os.sysconf("SC_PAGE_SIZE")
        assert treewatch.resident(pid) - private >= (60 << 20)  # the shared block, which private left out
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
