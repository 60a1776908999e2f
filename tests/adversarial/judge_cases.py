"""Hostile solutions against the judge itself (issue 11), by class, with the verdicts each test
must get. `tests` gives the verdict of every test in order ("passed" where a correct answer must
still score); `before` is a solution graded first on the same judges (it leaves state behind
for the case to find). Problems are defined in test_judge_hostile.py.

Classes: frames (1: malformed frames from the untrusted side), decode (2: replies cheap to send
and expensive to handle), world (3: state crossing solutions and tests), limits (4: limits for
the whole process tree), scoring (5: correct code under-scored), trust (6: trust decided by the
solution). "Pass only if isolated" cases answer correctly only when they find no trace of
anything earlier: they score 1.0 exactly when the isolation holds.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JudgeCase:
    name: str
    klass: str
    problem: str
    code: str
    tests: tuple[str, ...]  # the verdict each test must get
    before: str = ""
    notes: str = ""


def case(name: str, klass: str, problem: str, code: str, *tests: str, before: str = "", notes: str = "") -> JudgeCase:
    return JudgeCase(name, klass, problem, code, tests, before, notes)


# Writes bytes on the runner's reply pipe (descriptor 4), as any solution can.
FORGE = """
import os, json, struct, sys, time
def frame(body):
    return struct.pack(">I", len(body)) + body
def forge(*bodies):
    data = b"".join(frame(b if isinstance(b, bytes) else json.dumps(b).encode()) for b in bodies)
    try:
        os.write(4, data)
    except OSError:
        pass
"""
# Frames for test ids 1..8, so whichever id the judge waits for, it reads a forged one.
EVERY_ID = "[dict(m, test=i) for i in range(1, 9) for m in [MSG]]"
MODULUS = (1 << 61) - 1
LEAVE = """
import os, ctypes
def leave(tag):
    for d in ("/tmp", "/var/tmp", "/dev/shm", os.getcwd(), os.path.expanduser("~")):
        try:
            with open(os.path.join(d, "qrpo-left-" + tag), "w") as f:
                f.write("3")
        except OSError:
            pass
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmget.restype = ctypes.c_int
    libc.shmget(0x51F0 + len(tag), 4096, 0o1666)  # IPC_CREAT | 0666
    try:
        rt = ctypes.CDLL("librt.so.1", use_errno=True)
        rt.mq_open(b"/qrpo-left-" + tag.encode(), 0o100 | 0o2, 0o666, None)  # O_CREAT | O_RDWR
    except OSError:
        pass
def found(tag):
    hits = [d for d in ("/tmp", "/var/tmp", "/dev/shm", os.getcwd(), os.path.expanduser("~"))
            if os.path.exists(os.path.join(d, "qrpo-left-" + tag))]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.shmget(0x51F0 + len(tag), 0, 0) >= 0:
        hits.append("sysv shm")
    try:
        rt = ctypes.CDLL("librt.so.1", use_errno=True)
        if rt.mq_open(b"/qrpo-left-" + tag.encode(), 0o2) >= 0:
            hits.append("mqueue")
    except OSError:
        pass
    return hits
"""
PASS3 = ("passed", "passed", "passed")


def forged(name: str, message: str, *tests: str, then: str = "return a + b", problem: str = "add") -> JudgeCase:
    code = FORGE + f"MSG = {message}\nclass Solution:\n    def add(self, a, b):\n        forge(*{EVERY_ID})\n        {then}\n"
    return case(name, "frames", problem, code, *tests)


CASES: list[JudgeCase] = [
    # --- 1. frames --------------------------------------------------------------------------
    forged("forge_exited_signal_not_a_number", '{"exited": {"signal": "x"}}', "runtime_error", "runtime_error", "runtime_error"),
    forged("forge_exited_code_is_a_list", '{"exited": {"code": [1]}}', "runtime_error", "runtime_error", "runtime_error"),
    forged(
        "forge_ok_with_extra_key",
        '{"ok": {"root": 3, "nodes": []}, "time_s": 0, "verdict": "passed"}',
        "runtime_error",
        "runtime_error",
        "runtime_error",
    ),
    forged("forge_passed_not_bool", '{"passed": "yes"}', "runtime_error", "runtime_error", "runtime_error"),
    forged("forge_raise_not_str", '{"raise": 7, "detail": None}', "runtime_error", "runtime_error", "runtime_error"),
    forged(
        "forge_time_is_string",
        '{"ok": {"root": 3, "nodes": []}, "time_s": "0"}',
        "runtime_error",
        "runtime_error",
        "runtime_error",
    ),
    case(
        "forge_future_test_id",
        "frames",
        "add",
        FORGE
        + """
class Solution:
    def add(self, a, b):
        forge({"test": 10**6, "ok": {"root": a + b, "nodes": []}, "time_s": 0})
        return a + b
""",
        "runtime_error",
        "runtime_error",
        "runtime_error",
    ),
    case(
        "forge_non_object_and_garbage",
        "frames",
        "add",
        FORGE
        + """
class Solution:
    def add(self, a, b):
        forge(b"[1, 2]", b"\\xff\\xfe", b"{", b"[" * 100000 + b"]" * 100000)
        return a + b
""",
        "runtime_error",
        "runtime_error",
        "runtime_error",
    ),
    case(
        "forge_huge_length_header",
        "frames",
        "add",
        FORGE
        + """
class Solution:
    def add(self, a, b):
        os.write(4, struct.pack(">I", 2**32 - 1) + b"{}")
        return a + b
""",
        "runtime_error",
        "runtime_error",
        "runtime_error",
    ),
    case(
        "forge_torn_header_then_exit",
        "frames",
        "add",
        FORGE
        + """
class Solution:
    def add(self, a, b):
        os.write(4, b"\\x00\\x00")
        os._exit(0)
""",
        "runtime_error",
        "runtime_error",
        "runtime_error",
    ),
    case(
        "forge_load_frame_claims_passed",
        "frames",
        "add",
        FORGE
        + """
forge({"loaded": False, "verdict": "passed", "detail": "all good"})
os._exit(0)
""",
        "runtime_error",
        "runtime_error",
        "runtime_error",
    ),
    case(
        "forge_load_frame_with_extra_key",
        "frames",
        "add",
        FORGE
        + """
forge({"loaded": True, "tests": ["passed"] * 3})
class Solution:
    def add(self, a, b): return a + b
""",
        "runtime_error",
        "runtime_error",
        "runtime_error",
    ),
    case(
        "forge_stale_ids_then_hang",
        "frames",
        "add",
        FORGE
        + """
class Solution:
    def add(self, a, b):
        forge(*[{"test": 0, "exited": {"code": 0}} for _ in range(1000)])
        time.sleep(60)
""",
        "timeout",
        "timeout",
        "timeout",
    ),
    case(
        "forge_stdio_frame_of_wrong_type",
        "frames",
        "echo",
        FORGE
        + """
forge(*[[i, {"exited": {"code": 0}}] for i in range(5)])
print(input())
""",
        "runtime_error",
        "runtime_error",
        "runtime_error",
    ),
    case(
        "forge_stdio_stdout_not_base64",
        "frames",
        "echo",
        FORGE
        + """
forge(*[{"test": i, "exited": {"code": 0}, "stdout": "@@@"} for i in range(1, 10)])
print(input())
""",
        "runtime_error",
        "runtime_error",
        "runtime_error",
    ),
    case(
        "stop_reading_requests",
        "frames",
        "length",
        """
import os
r, w = os.pipe()
os.dup2(r, 3)  # the runner now waits on a pipe nobody writes: the judge's requests pile up
def length(s): return len(s)
""",
        "timeout",
        "timeout",
        notes="requests bigger than a pipe's buffer: the judge's write has a deadline",
    ),
    # --- 2. decode --------------------------------------------------------------------------
    case(
        "return_colliding_set",
        "decode",
        "add",
        f"""
class Solution:
    def add(self, a, b): return {{i * {MODULUS} for i in range(1, 3000)}}
""",
        "runtime_error",
        "runtime_error",
        "runtime_error",
    ),
    case(
        "return_colliding_dict",
        "decode",
        "add",
        f"""
class Solution:
    def add(self, a, b): return {{i * {MODULUS}: i for i in range(1, 3000)}}
""",
        "runtime_error",
        "runtime_error",
        "runtime_error",
    ),
    case(
        "return_shared_reference_dag",
        "decode",
        "add",
        """
class Solution:
    def add(self, a, b):
        x = [1]
        for _ in range(80): x = [x, x]
        return x
""",
        "runtime_error",
        "runtime_error",
        "runtime_error",
    ),
    case(
        "return_deep_tuple",
        "decode",
        "add",
        """
class Solution:
    def add(self, a, b):
        x = ()
        for _ in range(300000): x = (x,)
        return x
""",
        "runtime_error",
        "runtime_error",
        "runtime_error",
    ),
    case(
        "return_cyclic_list",
        "decode",
        "add",
        """
class Solution:
    def add(self, a, b):
        x = []
        x.append(x)
        return x
""",
        "wrong_answer",
        "wrong_answer",
        "wrong_answer",
    ),
    forged(
        "forge_colliding_set_frame",
        f'{{"ok": {{"root": [0], "nodes": [["set", [i * {MODULUS} for i in range(1, 150000)]]]}}, "time_s": 0}}',
        "runtime_error",
        "runtime_error",
        "runtime_error",
    ),
    forged(
        "forge_shared_dag_frame",
        '{"ok": {"root": [0], "nodes": [["list", [[i + 1], [i + 1]]] for i in range(60)] + [["list", [1]]]}, "time_s": 0}',
        "runtime_error",
        "runtime_error",
        "runtime_error",
    ),
    forged(
        "forge_deep_tuple_in_set_frame",
        '{"ok": {"root": [3000], "nodes": [["tuple", [[i + 1]]] for i in range(2999)] + [["tuple", []], ["set", [[0]]]]},'
        ' "time_s": 0}',
        "runtime_error",
        "runtime_error",
        "runtime_error",
    ),
    case(
        "forge_max_frame_of_arrays",
        "decode",
        "add",
        FORGE
        + """
BODY = b'{"test": 1, "ok": {"root": [0], "nodes": [["list", [' + b"[]," * (10 * 2**20) + b'[]]]]}, "time_s": 0}'
class Solution:
    def add(self, a, b):
        forge(*[BODY.replace(b'"test": 1', b'"test": %d' % i) for i in range(1, 3)])
        return a + b
""",
        "runtime_error",
        "runtime_error",
        "runtime_error",
        notes="30 MiB of empty arrays: counted and refused before parsing",
    ),
    # --- 3. world -----------------------------------------------------------------------------
    case(
        "state_from_an_earlier_solution",
        "world",
        "add",
        LEAVE
        + """
class Solution:
    def add(self, a, b):
        return a + b if not found("s") else -1
""",
        *PASS3,
        before=LEAVE
        + """
leave("s")
class Solution:
    def add(self, a, b): return a + b
""",
        notes="pass only if isolated: files in /tmp, /var/tmp, /dev/shm, the workdir, HOME, SysV shm, POSIX mqueue",
    ),
    case(
        "state_from_an_earlier_test",
        "world",
        "add",
        LEAVE
        + """
class Solution:
    def add(self, a, b):
        hits = found("t")
        leave("t")
        return a + b if not hits else -1
""",
        *PASS3,
        notes="per_test promises a clean state per test",
    ),
    *(
        case(
            f"{kind}_from_an_earlier_test",
            "world",
            "add",
            f"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
rt = ctypes.CDLL("librt.so.1", use_errno=True)
class Solution:
    def add(self, a, b):
        hit = {seen}
        {make}
        return a + b if not hit else -1
""",
            *PASS3,
            notes="no file is left, so the next test may share the mount namespace: it must not see this",
        )
        for kind, seen, make in (
            ("sysv_shm", "libc.shmget(0x51F7, 0, 0) >= 0", "libc.shmget(0x51F7, 4096, 0o1666)"),
            ("sysv_semaphore", "libc.semget(0x51F7, 1, 0) >= 0", "libc.semget(0x51F7, 1, 0o1666)"),
            ("sysv_message_queue", "libc.msgget(0x51F7, 0) >= 0", "libc.msgget(0x51F7, 0o1666)"),
            ("posix_mqueue", 'rt.mq_open(b"/qrpo-left-m", 0o2) >= 0', 'rt.mq_open(b"/qrpo-left-m", 0o100 | 0o2, 0o666, None)'),
        )
    ),
    case(
        "state_from_the_load_and_an_earlier_test",
        "world",
        "add",
        LEAVE
        + """
leave("l")
class Solution:
    def add(self, a, b):
        hits = found("l") + found("t2")
        with open("qrpo-left-t2", "w") as f:
            f.write("1")
        return a + b if not hits else -1
""",
        *PASS3,
        notes="what the load leaves is not seen by a test, what a test leaves in the workdir not by the next",
    ),
    case(
        "state_left_at_import_is_not_seen_by_the_next_solution",
        "world",
        "add",
        LEAVE
        + """
class Solution:
    def add(self, a, b):
        return a + b if not found("i") else -1
""",
        *PASS3,
        before=LEAVE
        + """
leave("i")
raise SystemExit(1)
""",
    ),
    case(
        "deep_directory_chain",
        "world",
        "add",
        """
import os
def chain(root):
    fd = os.open(root, os.O_RDONLY)
    for _ in range(30000):
        try:
            os.mkdir("d", dir_fd=fd)
            nfd = os.open("d", os.O_RDONLY, dir_fd=fd)
        except OSError:
            break
        os.close(fd)
        fd = nfd
    os.close(fd)
chain(".")
chain("/tmp")
class Solution:
    def add(self, a, b): return a + b
""",
        *PASS3,
    ),
    case(
        "fifos_and_dirs_in_place_of_capture_files",
        "world",
        "add",
        """
import os
for name in (".stdout", ".stderr", "stdin.txt", "stdout.txt"):
    for d in (".", "/tmp", ".."):
        p = os.path.join(d, name)
        try:
            os.mkfifo(p)
        except OSError:
            try: os.mkdir(p)
            except OSError: pass
class Solution:
    def add(self, a, b): return a + b
""",
        *PASS3,
    ),
    case(
        "links_in_place_of_capture_files",
        "world",
        "add",
        """
import os
for d in (".", ".."):
    for name in (".stdout", ".stderr"):
        try:
            os.unlink(os.path.join(d, name))
        except OSError:
            pass
        try: os.symlink("/etc/passwd", os.path.join(d, name))
        except OSError: pass
print("x" * 1000)
class Solution:
    def add(self, a, b): return a + b
""",
        *PASS3,
    ),
    case(
        "unmount_the_fresh_tmp",
        "world",
        "add",
        LEAVE
        + """
libc = ctypes.CDLL(None, use_errno=True)
for d in (b"/tmp", b"/var/tmp", b"/dev/shm", os.getcwd().encode()):
    libc.umount2(d, 2)  # MNT_DETACH
leave("u")
class Solution:
    def add(self, a, b): return a + b
""",
        *PASS3,
        notes="then the next case must find nothing",
    ),
    case(
        "nothing_left_by_the_unmounter",
        "world",
        "add",
        LEAVE
        + """
class Solution:
    def add(self, a, b): return a + b if not found("u") else -1
""",
        *PASS3,
    ),
    case(
        "unreadable_directories",
        "world",
        "add",
        """
import os
os.makedirs("a/b/c", exist_ok=True)
for p in ("a/b/c", "a/b", "a"):
    os.chmod(p, 0)
class Solution:
    def add(self, a, b): return a + b
""",
        *PASS3,
    ),
    case(
        "stdio_state_between_tests",
        "world",
        "echo",
        """
import os
hits = [p for p in ("left", "/tmp/left", "/dev/shm/left") if os.path.exists(p)]
for p in ("left", "/tmp/left", "/dev/shm/left"):
    open(p, "w").close()
print(input() if not hits else "stale")
""",
        *PASS3,
    ),
    # --- 4. limits ----------------------------------------------------------------------------
    case(
        "three_children_each_under_the_limit",
        "limits",
        "add",
        """
import os, time
class Solution:
    def add(self, a, b):
        kids = []
        for _ in range(3):
            pid = os.fork()
            if pid == 0:
                x = bytearray(300 << 20)
                for i in range(0, len(x), 4096): x[i] = 1
                time.sleep(5)
                os._exit(0)
            kids.append(pid)
        time.sleep(5)
        return a + b
""",
        "memory",
        "memory",
        "memory",
        notes="memory_mb is 512: each child passes RLIMIT_AS, the tree does not",
    ),
    case(
        "raise_soft_cpu_limit_and_spin",
        "limits",
        "add",
        """
import resource
class Solution:
    def add(self, a, b):
        soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
        try: resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))
        except (ValueError, OSError): pass
        while True: pass
""",
        "timeout",
        "timeout",
        "timeout",
    ),
    case(
        "spin_in_children",
        "limits",
        "add",
        """
import os
class Solution:
    def add(self, a, b):
        for _ in range(3):
            if os.fork() == 0:
                while True: pass
        os.wait()
""",
        "timeout",
        "timeout",
        "timeout",
    ),
    # --- 5. scoring ---------------------------------------------------------------------------
    case(
        "one_timeout_then_correct",
        "scoring",
        "add",
        """
import time
class Solution:
    def add(self, a, b):
        if a == 40: time.sleep(60)
        return a + b
""",
        "passed",
        "timeout",
        "passed",
        notes="a respawned runner's stale report must not be the next answer",
    ),
    case(
        "one_crash_then_correct",
        "scoring",
        "add",
        """
import os
class Solution:
    def add(self, a, b):
        if a == 1: os._exit(3)
        return a + b
""",
        "runtime_error",
        "passed",
        "passed",
    ),
    case(
        "large_stdio_answer",
        "scoring",
        "big",
        """
n = int(input())
print("\\n".join(str(i) for i in range(n)))
""",
        "passed",
        notes="about 109 KB of output: read up to the file size limit, not 64 KiB",
    ),
    case(
        "surrogates_and_control_characters",
        "scoring",
        "add",
        """
import sys
sys.stdout.write("\\ud800 \\x00 \\x1b[2J")
sys.stderr.write("\\udfff")
class Solution:
    def add(self, a, b): raise ValueError("\\ud800\\udc00 \\x00\\x1b[31m \\ud83d")
""",
        "runtime_error",
        "runtime_error",
        "runtime_error",
    ),
    # --- 6. trust -----------------------------------------------------------------------------
    case(
        "expected_exception_raised",
        "trust",
        "raises",
        """
def check_positive(x):
    if x < 0: raise ValueError("negative")
    return x
""",
        "passed",
        "passed",
        "passed",
        notes="a correct `raise ValueError` satisfies the test's `except ValueError:`",
    ),
    case(
        "expected_exception_subclass",
        "trust",
        "raises",
        """
def check_positive(x):
    if x < 0: raise UnicodeDecodeError("utf-8", b"x", 0, 1, "negative")
    return x
""",
        "passed",
        "passed",
        "passed",
    ),
    case(
        "wrong_exception_type",
        "trust",
        "raises",
        """
def check_positive(x):
    if x < 0: raise TypeError("negative")
    return x
""",
        "passed",
        "runtime_error",
        "passed",
    ),
    case(
        "hang_under_a_bare_except",
        "trust",
        "raises",
        """
import time
def check_positive(x):
    if x < 0: time.sleep(60)
    return x
""",
        "passed",
        "timeout",
        "timeout",
        notes="a judge-side failure is not caught by the test's `except:`",
    ),
    case(
        "exit_under_a_bare_except",
        "trust",
        "raises",
        """
import os
def check_positive(x):
    if x < 0: os._exit(0)
    return x
""",
        "passed",
        "runtime_error",
        "runtime_error",
    ),
    case(
        "system_exit_under_a_bare_except",
        "trust",
        "raises",
        """
import sys
def check_positive(x):
    if x < 0: sys.exit(0)
    return x
""",
        "passed",
        "runtime_error",
        "runtime_error",
    ),
    case(
        "returned_match_round_trip_correct",
        "trust",
        "match",
        """
import re
def find(x):
    return re.search("a+b", x) if isinstance(x, str) else x.group()
""",
        "passed",
        notes="a returned re.Match passed back to the candidate stays in the trusted path",
    ),
    case(
        "returned_match_round_trip_always_equal",
        "trust",
        "match",
        """
import re
class Any:
    def __eq__(self, other): return True
def find(x):
    return re.search("a+b", x) if isinstance(x, str) else Any()
""",
        "wrong_answer",
    ),
]
