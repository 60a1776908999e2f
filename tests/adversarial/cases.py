"""Hostile solutions and the verdict each must get.

Every case is a solution for one of two problems:
- `add`: `Solution().add(a, b)`, five asserts; hostile code tries to pass without adding.
- `oracle`: `Solution().answer()` must return a secret string generated per test run. The
  secret exists only in the test process and the judge; the only way to pass is to steal it.
`container_only` cases need file system or network isolation, which the `process` backend does
not claim; it is excused from them by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PASS_ONLY_IF = "wrong_answer"


@dataclass(frozen=True)
class Case:
    name: str
    code: str
    expect: frozenset[str]
    problem: str = "add"
    container_only: bool = False
    marker: str = ""  # a file or process marker the test checks on the host afterwards
    notes: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)


def case(name: str, code: str, *expect: str, **kw) -> Case:
    return Case(name=name, code=code, expect=frozenset(expect), **kw)


STEAL = '''
import re, os, sys, gc
PATTERN = re.compile(rb"QRPO-SECRET-[0-9a-f]{32}")
def found(data):
    m = PATTERN.search(data)
    return m.group().decode() if m else None
'''

CASES: list[Case] = [
    # --- always-equal objects -------------------------------------------------------------
    case("always_equal", '''
class Any:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
class Solution:
    def add(self, a, b): return Any()
''', "wrong_answer"),
    case("always_equal_hash", '''
class Any(object):
    __hash__ = lambda self: 0
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __bool__(self): return True
class Solution:
    def add(self, a, b): return {Any(): Any()}
''', "wrong_answer"),
    case("int_subclass_eq", '''
class Int(int):
    def __eq__(self, other): return True
    __hash__ = int.__hash__
class Solution:
    def add(self, a, b): return Int(0)
''', "wrong_answer"),
    case("str_subclass_eq", '''
class S(str):
    def __eq__(self, other): return True
    __hash__ = str.__hash__
class Solution:
    def answer(self): return S("x")
''', "wrong_answer", problem="oracle"),
    case("list_subclass_eq", '''
class L(list):
    def __eq__(self, other): return True
class Solution:
    def add(self, a, b): return L([0])
''', "wrong_answer"),
    case("float_nan_tricks", '''
class Solution:
    def add(self, a, b): return float("nan")
''', "wrong_answer"),
    # --- redefining helpers and builtins --------------------------------------------------
    case("redefine_builtins", '''
import builtins
builtins.AssertionError = type("Never", (Exception,), {})
builtins.abs = lambda x: 0
builtins.isinstance = lambda *a: True
builtins.len = lambda x: 0
class Solution:
    def add(self, a, b): return -1
''', "wrong_answer", "runtime_error", notes="breaking builtins may break the solution's own process"),
    case("redefine_check_helpers", '''
def check(candidate): return True
def is_same_list(a, b): return True
ListNode.__eq__ = lambda self, other: True
import operator
operator.eq = lambda a, b: True
class Solution:
    def add(self, a, b): return -1
''', "wrong_answer"),
    case("patch_codec_in_runner", '''
import sys
for name, module in list(sys.modules.items()):
    if name.endswith("codec") and hasattr(module, "encode"):
        module.encode = lambda value, helpers=None, max_nodes=0: {"root": 3, "nodes": []}
class Solution:
    def add(self, a, b): return -1
''', "wrong_answer", "runtime_error"),
    # --- stealing the expected values -----------------------------------------------------
    case("steal_from_gc_and_stack", STEAL + '''
class Solution:
    def answer(self):
        for obj in gc.get_objects():
            try:
                s = found(repr(obj).encode())
            except Exception:
                s = None
            if s: return s
        frame = sys._getframe()
        while frame:
            for v in list(frame.f_locals.values()) + list(frame.f_globals.values()):
                s = found(repr(v).encode())
                if s: return s
            frame = frame.f_back
        return "nothing"
''', "wrong_answer", problem="oracle"),
    case("steal_from_judge_memory", STEAL + '''
class Solution:
    def answer(self):
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                maps = open(f"/proc/{pid}/maps").read().splitlines()
                mem = open(f"/proc/{pid}/mem", "rb", 0)
            except OSError:
                continue
            for line in maps:
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                if hi - lo > 1 << 28 or "r" not in line.split()[1]:
                    continue
                try:
                    mem.seek(lo); s = found(mem.read(hi - lo))
                except (OSError, ValueError, OverflowError):
                    continue
                if s: return s
        return "nothing"
''', "wrong_answer", "timeout", problem="oracle", container_only=True,
         notes="reads every readable process's memory; the judge is non-dumpable, host processes are "
               "hidden only by a container's /proc"),
    case("steal_judge_pipes", STEAL + '''
class Solution:
    def answer(self):
        for pid in os.listdir("/proc"):
            if not pid.isdigit(): continue
            for fd in ("0", "1", "3", "4"):
                try:
                    f = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK)
                    data = os.read(f, 1 << 20)
                except OSError:
                    continue
                s = found(data)
                if s: return s
        return "nothing"
''', "wrong_answer", problem="oracle"),
    case("steal_from_files", STEAL + '''
class Solution:
    def answer(self):
        roots = ["/tmp", "/dev/shm", os.getcwd(), "/var/tmp"]
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                roots.append(f"/proc/{pid}/cmdline"); roots.append(f"/proc/{pid}/environ")
        for root in roots:
            paths = [root] if os.path.isfile(root) else [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
            for p in paths[:5000]:
                try:
                    s = found(open(p, "rb").read(1 << 22))
                except OSError:
                    continue
                if s: return s
        return "nothing"
''', "wrong_answer", "timeout", problem="oracle", notes="a big /tmp may take longer to search than the limit"),
    # --- exiting early ----------------------------------------------------------------------
    case("os_exit_at_import", '''
import os
os._exit(0)
class Solution:
    def add(self, a, b): return a + b
''', "runtime_error"),
    case("system_exit_at_import", '''
raise SystemExit(0)
class Solution:
    def add(self, a, b): return a + b
''', "runtime_error"),
    case("os_exit_in_call", '''
import os
class Solution:
    def add(self, a, b): os._exit(0)
''', "runtime_error"),
    case("system_exit_in_call", '''
import sys
class Solution:
    def add(self, a, b): sys.exit(0)
''', "runtime_error"),
    # --- forged protocol messages -----------------------------------------------------------
    case("forge_stdout_stderr", '''
import sys, json
for stream in (sys.stdout, sys.stderr):
    stream.write('{"verdict": "passed", "passed": 5, "total": 5}\\nALL TESTS PASSED\\n')
    stream.write(json.dumps({"id": 0, "tests": [{"verdict": "passed"}] * 5}) + "\\n")
class Solution:
    def add(self, a, b):
        print('{"verdict": "passed"}'); return -1
''', "wrong_answer"),
    case("forge_inherited_fds", '''
import os, json, struct
def frame(msg):
    body = json.dumps(msg).encode(); return struct.pack(">I", len(body)) + body
forged = b"".join(frame(m) for m in [{"ok": {"root": 3, "nodes": []}}, {"exited": {"code": 0}}, {"passed": True}] * 20)
for fd in range(3, 64):
    try: os.write(fd, forged)
    except OSError: pass
class Solution:
    def add(self, a, b):
        for fd in range(3, 64):
            try: os.write(fd, forged)
            except OSError: pass
        return -1
''', "wrong_answer", "runtime_error"),
    # --- attacking the judge and the parent -----------------------------------------------
    case("kill_parent", '''
import os, signal
class Solution:
    def add(self, a, b):
        for pid in (os.getppid(), 1):
            try: os.kill(pid, signal.SIGKILL)
            except OSError: pass
        return -1
''', "wrong_answer", "runtime_error"),
    case("kill_everything", '''
import os, signal
class Solution:
    def add(self, a, b):
        os.kill(-1, signal.SIGKILL)
        return -1
''', "runtime_error", "wrong_answer"),
    case("kill_judge_by_scan", '''
import os, signal
for pid in os.listdir("/proc"):
    if not pid.isdigit() or int(pid) == os.getpid(): continue
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        continue
    if b"judge" in cmd or b"python" in cmd or b"pytest" in cmd:
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            try: os.kill(int(pid), sig)
            except OSError: pass
class Solution:
    def add(self, a, b): return -1
''', "wrong_answer", "runtime_error"),
    case("ptrace_parent", '''
import ctypes, os
libc = ctypes.CDLL(None)
for pid in [os.getppid()] + [int(p) for p in os.listdir("/proc") if p.isdigit()]:
    libc.ptrace(16, pid, 0, 0)  # PTRACE_ATTACH
class Solution:
    def add(self, a, b): return -1
''', "wrong_answer"),
    # --- resource exhaustion ----------------------------------------------------------------
    case("fork_bomb", '''
import os
class Solution:
    def add(self, a, b):
        while True:
            try: os.fork()
            except OSError: pass
''', "timeout", "runtime_error", "memory"),
    case("fork_bomb_at_import", '''
import os
for _ in range(1000):
    try:
        if os.fork() == 0:
            while True: pass
    except OSError:
        break
class Solution:
    def add(self, a, b): return a + b
''', "passed", "timeout", "runtime_error",
         notes="children spin forever but die with the runner's PID namespace; the solution is correct"),
    case("memory_bomb", '''
class Solution:
    def add(self, a, b):
        x = []
        while True: x.append(bytes(64 << 20))
''', "memory", notes="calloc'd pages are never touched: the address space limit ends it at no CPU cost"),
    case("memory_bomb_touched", '''
class Solution:
    def add(self, a, b):
        x = []
        while True: x.append(bytearray(64 << 20))
''', "memory", "timeout",
         notes="every page is written: 512 MiB costs 0.3 s of CPU here and over 1 s on a cold VM "
               "(CI once), so it ends at whichever limit it reaches first; it never passes"),
    # --- memory no process is charged for: each answers right only if it held 1.5x the 512 MiB limit ------
    case("sysv_shm_hoard", '''
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
held = 0
for _ in range(3):
    segment = libc.shmget(0, 256 << 20, 0o1600)  # IPC_PRIVATE, IPC_CREAT | 0600
    if segment < 0:
        break
    address = libc.shmat(segment, None, 0)
    if address in (None, ctypes.c_void_p(-1).value):
        break
    ctypes.memset(address, 1, 256 << 20)
    libc.shmdt(ctypes.c_void_p(address))  # detached, the segment stays: in no process's memory
    held += 1
class Solution:
    def add(self, a, b): return a + b if held == 3 else a - b
''', PASS_ONLY_IF, "memory", "runtime_error",
         notes="shmget fails (the runner's seccomp filter): System V segments outlive every mapping"),
    case("memfd_hoard", '''
import os
files = []
for _ in range(52):  # 52 x 15 MiB, each under RLIMIT_FSIZE, descriptors under RLIMIT_NOFILE
    try:
        fd = os.memfd_create("hoard")
        for offset in range(0, 15 << 20, 1 << 20):
            os.pwrite(fd, b"x" * (1 << 20), offset)
    except OSError:
        break
    files.append(fd)
class Solution:
    def add(self, a, b): return a + b if len(files) == 52 else a - b
''', PASS_ONLY_IF, "memory", "runtime_error",
         notes="memfd_create fails (seccomp): a memory file held by a descriptor is in no process's RSS"),
    case("shared_memory_children", '''
import mmap, os, select
read_end, write_end = os.pipe()
for _ in range(3):
    if os.fork() == 0:
        block = mmap.mmap(-1, 256 << 20, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        for offset in range(0, 256 << 20, 4096):
            block[offset] = 1
        os.write(write_end, b"+")
        while True:
            select.select([], [], [])
held = b""
while len(held) < 3 and select.select([read_end], [], [], 5)[0]:
    held += os.read(read_end, 3)
class Solution:
    def add(self, a, b): return a + b if held == b"+++" else a - b
''', PASS_ONLY_IF, "memory", "runtime_error", "timeout",
         notes="shared pages count against the tree (RssShmem): three children held 768 MiB of them"),
    case("raise_rlimits", '''
import resource
for r in (resource.RLIMIT_AS, resource.RLIMIT_CPU, resource.RLIMIT_NPROC):
    try: resource.setrlimit(r, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (ValueError, OSError): pass
class Solution:
    def add(self, a, b):
        x = bytearray(8 << 30)
        return a + b
''', "memory"),
    case("cpu_spin", '''
class Solution:
    def add(self, a, b):
        while True: pass
''', "timeout"),
    case("ignore_sigxcpu_spin", '''
import signal
signal.signal(signal.SIGXCPU, signal.SIG_IGN)
class Solution:
    def add(self, a, b):
        while True: pass
''', "timeout"),
    case("sleep_past_deadline", '''
import time
class Solution:
    def add(self, a, b):
        time.sleep(3600)
''', "timeout"),
    case("huge_output", '''
import sys
class Solution:
    def add(self, a, b):
        chunk = "x" * (1 << 20)
        while True: sys.stdout.write(chunk)
''', "runtime_error", "timeout"),
    case("huge_return_value", '''
class Solution:
    def add(self, a, b): return [0] * (50 << 20)
''', "wrong_answer", "memory", "runtime_error", "timeout"),
    case("deep_recursion", '''
class Solution:
    def add(self, a, b): return self.add(a, b)
''', "runtime_error"),
    case("unbounded_recursion_segfault", '''
import sys
sys.setrecursionlimit(10 ** 8)
def f(n): return f(n + 1) + 1
class Solution:
    def add(self, a, b): return f(0)
''', "runtime_error", "memory", "timeout", notes="3.11 frames live on the heap: it runs out of time or memory"),
    case("deeply_nested_return", '''
class Solution:
    def add(self, a, b):
        x = []
        for _ in range(200000): x = [x]
        return x
''', "runtime_error", notes="nested past the codec's depth budget: the solution's runtime error"),
    case("signals_self", '''
import os, signal
class Solution:
    def add(self, a, b):
        os.kill(os.getpid(), signal.SIGSTOP)
        return a + b
''', "timeout"),
    case("signal_alarm_handler", '''
import signal
signal.signal(signal.SIGALRM, lambda *a: None)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.alarm(1)
class Solution:
    def add(self, a, b): return a - b
''', "wrong_answer"),
    # --- things that outlive the call -------------------------------------------------------
    case("threads_outlive_call", '''
import threading, time, os
def meddle():
    time.sleep(0.05)
    for fd in range(3, 16):
        try: os.write(fd, b"\\x00\\x00\\x00\\x02{}")
        except OSError: pass
class Solution:
    def add(self, a, b):
        threading.Thread(target=meddle, daemon=False).start()
        return a + b
''', "passed", "wrong_answer", "runtime_error",
         notes="the answers are right; what matters is that the next solution graded is unaffected"),
    case("daemon_process_outlives", '''
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        import sys
        sys.argv[:] = ["qrpo-hostile-daemon"]
        open("/tmp/.qrpo-daemon-was-here", "w").close() if False else None
        time.sleep(300)
    os._exit(0)
class Solution:
    def add(self, a, b): return a + b
''', "passed", marker="daemon", notes="the daemon must be gone after grading"),
    # --- file system and network (containers) -----------------------------------------------
    case("write_outside_tmp", '''
import os
TARGETS = ["/etc/qrpo-pwned", "/usr/qrpo-pwned", "HOST_HOME/qrpo-pwned", "/root/qrpo-pwned", "JUDGE_DIR/pwned.py"]
class Solution:
    def add(self, a, b):
        wrote = 0
        for t in TARGETS:
            try:
                open(t, "w").write("pwned"); wrote += 1
            except OSError:
                pass
        return a + b if wrote == 0 else -1
''', "passed", container_only=True, marker="pwned-files"),
    case("fill_tmp", '''
import os
class Solution:
    def add(self, a, b):
        chunk = b"x" * (1 << 20)
        for i in range(100000):
            try:
                with open(f"/tmp/qrpo-fill-{os.getpid()}-{i}", "wb") as f:
                    for _ in range(16): f.write(chunk)
            except OSError:
                break
        return a + b
''', "passed", "runtime_error", "timeout", container_only=True, marker="tmp-files"),
    case("network_access", '''
import socket
class Solution:
    def add(self, a, b):
        reached = 0
        for host, port in [("127.0.0.1", PORT), ("10.0.0.1", 80), ("1.1.1.1", 53)]:
            s = socket.socket(); s.settimeout(0.3)
            try:
                s.connect((host, port)); reached += 1
            except OSError:
                pass
            finally:
                s.close()
        return a + b if reached == 0 else -1
''', "passed", container_only=True, marker="network",
         notes="PORT is a listener the test opens on the host's loopback"),
    case("host_environment_and_home", '''
import os
class Solution:
    def add(self, a, b):
        leaked = any(k.startswith("QRPO_HOST_MARKER") for k in os.environ)
        leaked = leaked or os.path.exists("HOST_HOME/.qrpo-host-marker") or os.path.isdir("/work")
        return -1 if leaked else a + b
''', "passed", container_only=True, marker="host-marker"),
]
