"""The trusted judge: holds the tests, asks the untrusted runner for values, decides verdicts.

Run as a long-lived process inside each worker; it reads grading requests as length-prefixed
JSON on stdin and writes one response per request on stdout:

  request:  {"id", "problem": Problem.to_dict(), "code": str, "granularity": "per_test"|"per_solution"}
  response: {"id", "tests": [TestResult...], "stdout", "stderr", "info": {...}}

Function tests run here, in the judge, with the candidate bound to `RemoteFunction`: each call
sends only the arguments to the runner and gets back only the returned value, decoded into
plain data, so `==` and every other comparison happen in this process with the expected values
the runner never saw. A test whose candidate is used other than by direct calls (or whose
arguments are not plain data) runs opaquely in the runner and is reported as untrusted.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import importlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from . import checks, codec, compare, protocol
from .runner import die_with_parent, new_module, set_dumpable

# The zygote always imports this package as the top-level `judge`, never through `sandbox`.
JUDGE_DIR = os.path.dirname(os.path.abspath(__file__))
PACKAGE = os.path.basename(JUDGE_DIR)
PACKAGE_PARENT = os.path.dirname(JUDGE_DIR)
SIGNAL_TIMEOUT = {signal.SIGXCPU, signal.SIGKILL}
REPLY_LIMIT = 64 * 1024 * 1024  # bytes of one encoded value from the runner
BATCH = 256  # calls sent to a per_solution runner in one message


class SolutionFailure(BaseException):
    """Raised through the test code when the solution failed a call. A BaseException, so that a
    dataset's `except Exception` in test code cannot turn it into a pass."""

    def __init__(self, verdict: str, detail: str) -> None:
        super().__init__(detail)
        self.verdict = verdict
        self.detail = detail


class Captured(BaseException):
    """Carries a call's arguments out of a test run with the recorder in place."""

    def __init__(self, call_args: tuple, kwargs: dict) -> None:
        super().__init__()
        self.call_args, self.kwargs = call_args, kwargs


class NeedsOpaque(Exception):
    """The test passes something to the candidate that cannot cross as plain data."""


@dataclass
class PreparedTest:
    source: str
    code: Any  # compiled, or None when the source does not compile
    trusted: bool  # judged here (calls proxied) rather than opaquely in the runner
    single_call: bool  # exactly one call, not in a loop: the runner may exit right after it
    prefetchable: bool = False  # its call's arguments can be computed before the test runs


@dataclass
class PreparedProblem:
    namespace: dict[str, Any]
    helpers: dict[str, type]
    tests: list[PreparedTest]
    error: str


def prepare_namespace(problem: dict[str, Any]) -> PreparedProblem:
    """Run the dataset's preamble and test setup here (trusted code): the namespace the tests
    run in, and the helper classes allowed across. The tests are compiled by `prepare_tests`,
    which the judge runs while the runner loads the solution."""
    namespace = new_module("__judge_problem__")
    error = ""
    try:
        exec(compile(problem.get("preamble", ""), "<preamble>", "exec"), namespace)
        exec(compile(problem.get("test_setup", ""), "<test_setup>", "exec"), namespace)
    except BaseException as exc:  # dataset code is trusted but may still be broken
        error = f"the problem's preamble or test setup failed in the judge: {type(exc).__name__}: {exc}"[:500]
    return PreparedProblem(namespace, codec.helper_classes(namespace), [], error)


def prepare_tests(problem: dict[str, Any], namespace: dict[str, Any]) -> list[PreparedTest]:
    """Compile each test from one parse and decide how it runs. Standard-library modules the
    tests name but nobody imported are imported: in the reference harnesses tests share the
    solution's module, so MBPP's asserts use the `math` that the solution imported."""
    candidate = problem.get("candidate", "candidate")
    entry_point = problem.get("entry_point", "")
    tests: list[PreparedTest] = []
    forms: list[checks.TestForm | None] = []
    names: set[str] = set()
    for test in problem["tests"]:
        source = test.get("source", "")
        form = None
        code = None
        if test["kind"] == "function":
            try:
                form = checks.classify(ast.parse(source), candidate)
                code = compile(source, "<test>", "exec")  # from source: faster than from the tree
            except (SyntaxError, ValueError):
                form = code = None
        if form is None:
            tests.append(PreparedTest(source, code, True, False))
        else:
            names |= form.names
            single = form.single_call and entry_point not in form.names  # a test naming the function calls it again
            tests.append(PreparedTest(source, code, form.trusted, single))
        forms.append(form)
    for name in sorted(names - namespace.keys()):
        if name in sys.stdlib_module_names and not hasattr(builtins, name):
            namespace[name] = importlib.import_module(name)
    # A single call's arguments can be computed ahead (and the calls sent as one batch) when
    # they only read names the preamble defined and no test reassigns.
    assigned = set().union(*(f.stores for f in forms if f is not None))
    for test, form in zip(tests, forms):
        if form is not None and form.call is not None and test.single_call:
            test.prefetchable = all(
                (n in namespace or hasattr(builtins, n)) and n not in assigned and n != candidate for n in form.call_names
            )
    return tests


class Zygote:
    """The fresh interpreter that forks runners. It never holds test data."""

    def __init__(self, python: str) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        boot = f"import sys; sys.path.insert(0, {PACKAGE_PARENT!r}); from {PACKAGE}.runner import zygote_main; zygote_main({child.fileno()})"
        self.process = subprocess.Popen(
            [python, "-I", "-c", boot],
            pass_fds=[child.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        )
        child.close()
        self.sock = parent

    def spawn(self, fds: list[int]) -> tuple[int, int, str]:
        socket.send_fds(self.sock, [b"spawn"], fds)
        answer = b""
        while len(answer) < 64:
            chunk = self.sock.recv(64 - len(answer))
            if not chunk:
                raise RuntimeError("the zygote exited")
            answer += chunk
        pid, pgid, containment = answer.decode().split()
        return int(pid), int(pgid), containment

    def close(self) -> None:
        self.sock.close()
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Session:
    """One runner for one solution: load it, then serve tests until closed or killed."""

    def __init__(self, judge: Judge, request: dict[str, Any], prepared: PreparedProblem) -> None:
        self.judge = judge
        self.problem = request["problem"]
        self.limits = self.problem["limits"]
        self.request = request
        self.prepared = prepared
        self.workdir = tempfile.mkdtemp(prefix="qrpo-run-", dir=judge.tmp)
        self.out_fd = -1
        self.in_fd = -1
        self.pid = 0
        self.pgid = 0
        self.containment = ""
        self.alive = False
        self.spawns = 0
        self.status_fd = -1
        self.per_solution = request.get("granularity") == "per_solution"

    # -- runner lifecycle ------------------------------------------------------------------

    def start(self) -> dict[str, Any]:
        """Spawn and load a runner; returns its load answer ({"loaded": bool, ...})."""
        self.spawn()
        return self.loaded()

    def spawn(self) -> None:
        """Start a runner and send it the solution; it loads while we do other work."""
        to_runner_r, to_runner_w = os.pipe()
        from_runner_r, from_runner_w = os.pipe()
        stdout_fd = os.open(os.path.join(self.workdir, ".stdout"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        stderr_fd = os.open(os.path.join(self.workdir, ".stderr"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        status_r, status_w = os.pipe()
        try:
            self.pid, self.pgid, self.containment = self.judge.zygote.spawn([to_runner_r, from_runner_w, stdout_fd, stderr_fd, status_w])
        finally:
            for fd in (to_runner_r, from_runner_w, stdout_fd, stderr_fd, status_w):
                os.close(fd)
        if self.status_fd >= 0:
            os.close(self.status_fd)
        self.status_fd = status_r
        self.in_fd, self.out_fd = from_runner_r, to_runner_w
        self.reader = protocol.Reader(from_runner_r, self.judge.hangup_fd)
        self.alive = True
        self.spawns += 1
        problem = self.problem
        protocol.write_message(
            self.out_fd,
            {
                "limits": self.limits,
                "workdir": self.workdir,
                "mode": problem["tests"][0]["kind"] if problem["tests"] else "function",
                "preamble": problem.get("preamble", ""),
                "code": self.request["code"],
                "entry_point": problem.get("entry_point", ""),
                "helpers": sorted(self.prepared.helpers),
                "granularity": self.request.get("granularity", "per_test"),
            },
        )

    def loaded(self) -> dict[str, Any]:
        """Wait for the runner's load answer."""
        deadline = time.monotonic() + max(10.0, float(self.limits["wall_s"]) * 3)
        try:
            answer = self.reader.read(deadline, REPLY_LIMIT)
        except protocol.Timeout:
            self.kill()
            return {"loaded": False, "verdict": "timeout", "detail": "loading the solution took too long"}
        except protocol.ProtocolError as exc:
            self.kill()
            return {"loaded": False, "verdict": "runtime_error", "detail": f"the solution ended the process while loading ({exc})"}
        if answer.get("loaded") is not True:
            self.kill()
            verdict = answer.get("verdict")
            if verdict not in ("syntax_error", "runtime_error", "memory", "timeout"):
                verdict = "runtime_error"
            return {"loaded": False, "verdict": verdict, "detail": str(answer.get("detail", ""))[:500]}
        return answer

    def kill(self) -> None:
        """Kill the runner and everything it started: in a PID namespace, killing its init does
        that; otherwise we kill its process group (which a solution could have left)."""
        if not self.alive:
            return
        self.alive = False
        for target in (self.pid, -self.pgid):
            try:
                os.kill(target, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for fd in (self.in_fd, self.out_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.wait_gone()

    def wait_gone(self, timeout: float = 20.0) -> None:
        """Block until the runner's parent reports it reaped: in a PID namespace that happens only
        after every process in it is dead, so nothing a solution started outlives its grading."""
        if self.status_fd < 0:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not select.select([self.status_fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                break
            try:
                if not os.read(self.status_fd, 256):
                    break
            except OSError:
                break
        os.close(self.status_fd)
        self.status_fd = -1

    def close(self) -> tuple[str, str]:
        if self.alive:
            try:
                protocol.write_message(self.out_fd, {"op": "close"})
            except OSError:
                pass
            self.kill()
        limit = int(self.limits["output_kb"]) * 1024
        outputs = []
        for name in (".stdout", ".stderr"):
            try:
                with open(os.path.join(self.workdir, name), "rb") as f:
                    outputs.append(f.read(limit).decode("utf-8", "replace"))
            except OSError:
                outputs.append("")
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self.status_fd >= 0:
            os.close(self.status_fd)
            self.status_fd = -1
        return outputs[0], outputs[1]

    # -- talking to the runner -------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        try:
            protocol.write_message(self.out_fd, message)
        except OSError:
            pass  # the runner is gone; the read that follows reports it

    def receive(self, timeout: float) -> dict[str, Any]:
        try:
            return self.reader.read(time.monotonic() + timeout, REPLY_LIMIT)
        except protocol.Timeout:
            self.kill()
            raise SolutionFailure("timeout", f"no answer within {timeout:g} s") from None
        except protocol.ProtocolError:
            status = self.exit_status()
            self.kill()
            verdict, detail = _exit_verdict(status) if status else ("runtime_error", "the solution's process ended")
            raise SolutionFailure(verdict, detail) from None

    def exit_status(self) -> dict[str, Any]:
        """How the runner ended, as its parent (our code, outside its namespace) saw it."""
        if self.status_fd < 0 or not select.select([self.status_fd], [], [], 1.0)[0]:
            return {}
        try:
            status = json.loads(os.read(self.status_fd, 256) or b"{}")
        except (OSError, ValueError):
            return {}
        return status if isinstance(status, dict) else {}


def _exit_verdict(status: dict[str, Any]) -> tuple[str, str]:
    if "signal" in status:
        sig = int(status["signal"])
        if sig in SIGNAL_TIMEOUT:
            return "timeout", f"killed by signal {sig} (CPU time limit)"
        if sig == signal.SIGXFSZ:
            return "runtime_error", "output or file size limit exceeded"
        return "runtime_error", f"killed by signal {sig}"
    return "runtime_error", f"the process exited with code {status.get('code')} before answering"


def _raise_verdict(answer: dict[str, Any]) -> tuple[str, str]:
    name = str(answer.get("raise"))
    detail = str(answer.get("detail", name))[:500]
    if name == "MemoryError":
        return "memory", detail
    return "runtime_error", detail


class FunctionTests:
    """Runs the function tests of one solution in the judge, calls proxied to a Session.

    per_test: each test is served by its own fork of the loaded solution, which exits after the
    test; the runner then reports an `exited` message. We read that report lazily, just before
    the next answer, so the child's teardown overlaps with our comparison. per_solution: the
    runner itself answers every call and never reports exits."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.open_test = False  # a call of the current test was sent
        self.pending_exit = False  # per_test: the `exited` report of a finished test is unread
        self.generation = session.spawns
        self.single_call = False
        self.prefetched: dict[str, Any] | None = None  # the answer to this test's call, sent in a batch
        self.recording = False  # capture a call's arguments instead of making it
        self.last_call: tuple[tuple[Any, ...], dict[str, Any], Any] | None = None  # the test's last call and decoded value

    def _sync(self) -> None:
        if self.generation != self.session.spawns or not self.session.alive:
            self.open_test = self.pending_exit = False
            self.generation = self.session.spawns

    def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        session = self.session
        self._sync()
        if not session.alive:
            raise SolutionFailure("runtime_error", "the solution's process ended earlier in this test")
        message["new_test"] = not self.open_test
        self.open_test = True
        session.send(message)
        self.settle()
        answer = session.receive(float(session.limits["wall_s"]))
        if "exited" in answer:  # the fork serving this test died before answering
            self.open_test = False
            raise SolutionFailure(*_exit_verdict(answer["exited"]))
        if message.get("last"):
            self.open_test = False
            self.pending_exit = not session.per_solution
        return answer

    def settle(self) -> None:
        """Read the `exited` report of the previous per_test fork, if still unread."""
        if self.pending_exit and self.session.alive:
            self.pending_exit = False
            if "exited" not in self.session.receive(float(self.session.limits["wall_s"])):
                self.session.kill()
                raise SolutionFailure("runtime_error", "the solution's process broke the protocol")

    def call(self, args: tuple, kwargs: dict) -> Any:
        if self.recording:
            raise Captured(args, kwargs)
        helpers = self.session.prepared.helpers
        try:
            message = {"op": "call", "args": codec.encode(list(args), helpers), "kwargs": codec.encode(dict(kwargs), helpers),
                       "last": self.single_call}
        except codec.EncodeError as exc:
            raise NeedsOpaque(str(exc)) from None
        if self.prefetched is not None:
            answer, self.prefetched = self.prefetched, None
        else:
            answer = self._request(message)
        if "raise" in answer:
            raise SolutionFailure(*_raise_verdict(answer))
        if "unencodable" in answer:
            raise SolutionFailure("wrong_answer", f"returned a value that is not plain data: {str(answer['unencodable'])[:200]}")
        try:
            value = codec.decode(answer.get("ok"), helpers)
            self.last_call = (args, kwargs, value)  # h15: for --details descriptions
            return value
        except (codec.DecodeError, RecursionError, MemoryError) as exc:
            raise SolutionFailure("wrong_answer", f"returned a malformed value: {exc}") from None

    def finish_test(self) -> None:
        """End the current test: its fork exits (per_test)."""
        self._sync()
        if self.open_test and self.session.alive:
            self.session.send({"op": "done"})
            self.pending_exit = not self.session.per_solution
        self.open_test = False

    def run_test(self, test: PreparedTest, namespace: dict[str, Any]) -> tuple[str, str, bool]:
        """Returns (verdict, detail, trusted)."""
        if test.code is None:
            return "sandbox_error", "the test code does not compile", True
        if not test.trusted:
            return self.run_opaque(test)
        self.single_call = test.single_call
        self.last_call = None
        try:
            exec(test.code, namespace)
            return "passed", "", True
        except SolutionFailure as failure:
            return failure.verdict, failure.detail, True
        except NeedsOpaque:
            self.finish_test()
            return self.run_opaque(test)
        except AssertionError as exc:
            if self.session.request.get("details"):  # h15: bounded description, expected value included
                last = self.last_call
                return "wrong_answer", compare.describe_failure(test.source, namespace, last[:2] if last else None,
                                                                last[2] if last else None), True
            return "wrong_answer", f"assertion failed{': ' + str(exc)[:200] if str(exc) else ''}", True
        except RecursionError:
            return "wrong_answer", "comparing the returned value exceeded the recursion limit", True
        except Exception as exc:
            return "wrong_answer", f"the test failed on the returned value: {type(exc).__name__}: {str(exc)[:200]}", True
        finally:
            self.finish_test()

    def run_opaque(self, test: PreparedTest) -> tuple[str, str, bool]:
        """The assert runs in the untrusted process, which says pass or fail: reported as such."""
        problem = self.session.problem
        message = {"op": "opaque", "source": problem.get("test_setup", "") + "\n" + test.source,
                   "candidate": problem.get("candidate", "candidate"), "last": True}
        try:
            answer = self._request(message)
        except SolutionFailure as failure:
            return failure.verdict, failure.detail, False
        if "raise" in answer:
            verdict, detail = _raise_verdict(answer)
            return verdict, detail, False
        return ("passed", "", False) if answer.get("passed") is True else ("wrong_answer", "assertion failed (opaque)", False)


def _stdout_matches(actual: str, expected: str) -> bool:
    """Competitive-programming comparison: same lines after stripping trailing whitespace,
    ignoring trailing blank lines."""
    def lines(text: str) -> list[str]:
        out = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
        while out and not out[-1]:
            out.pop()
        return out

    return lines(actual) == lines(expected)


class Judge:
    def __init__(self, python: str | None = None, tmp: str | None = None, hangup_fd: int | None = None) -> None:
        self.python = python or sys.executable
        self.hangup_fd = hangup_fd  # our client's pipe: if it hangs up mid-grading, stop at once
        self.tmp = tmp or tempfile.gettempdir()
        self.zygote = Zygote(self.python)
        self.cache: OrderedDict[str, PreparedProblem] = OrderedDict()

    def grade(self, request: dict[str, Any]) -> dict[str, Any]:
        started = time.monotonic()
        problem = request["problem"]
        key = hashlib.sha256(json.dumps(
            [problem.get(k) for k in ("preamble", "test_setup", "candidate", "entry_point", "tests")], sort_keys=True
        ).encode("utf-8", "surrogatepass")).hexdigest()
        prepared = self.cache.get(key)
        if prepared is not None:
            self.cache.move_to_end(key)
        else:
            prepared = prepare_namespace(problem)
        n = len(problem["tests"])
        if prepared.error:
            return self._uniform(request, n, "sandbox_error", prepared.error, started)
        session = Session(self, request, prepared)
        results: list[dict[str, Any]] = []
        try:
            session.spawn()  # the runner loads the solution while we compile the tests
            if not prepared.tests and n:
                prepared.tests = prepare_tests(problem, prepared.namespace)
                self.cache[key] = prepared
                if len(self.cache) > 64:
                    self.cache.popitem(last=False)
            load = session.loaded()
            if not load.get("loaded"):
                return self._uniform(request, n, load["verdict"], load.get("detail", ""), started, session)
            deadline = started + float(problem["limits"]["solution_s"])
            if problem["tests"] and problem["tests"][0]["kind"] == "stdio":
                results = self._stdio(session, deadline)
            else:
                results = self._function(session, prepared, deadline)
        finally:
            stdout, stderr = session.close()
        return {
            "id": request.get("id"),
            "tests": results,
            "stdout": stdout,
            "stderr": stderr,
            "time_s": time.monotonic() - started,
            "info": {"containment": session.containment, "runners": session.spawns},
        }

    def _uniform(self, request: dict[str, Any], n: int, verdict: str, detail: str, started: float, session: Session | None = None) -> dict[str, Any]:
        stdout, stderr = session.close() if session else ("", "")
        return {
            "id": request.get("id"),
            "tests": [{"verdict": verdict, "time_s": 0.0, "detail": detail, "trusted": True} for _ in range(n)],
            "stdout": stdout,
            "stderr": stderr,
            "time_s": time.monotonic() - started,
            "info": {"containment": session.containment if session else ""},
        }

    @staticmethod
    def _blocked(session: Session, deadline: float) -> dict[str, Any] | None:
        """The result of a test that cannot run: the solution's overall deadline passed, or the
        runner (killed after a timeout or crash) cannot be loaded again. Else a runner is ready."""
        if time.monotonic() > deadline:
            return {"verdict": "timeout", "time_s": 0.0, "detail": "the solution's overall deadline passed", "trusted": True}
        if session.alive:
            return None
        load = session.start()
        if load.get("loaded"):
            return None
        return {"verdict": load["verdict"], "time_s": 0.0, "detail": load.get("detail", ""), "trusted": True}

    def _function(self, session: Session, prepared: PreparedProblem, deadline: float) -> list[dict[str, Any]]:
        problem = session.problem
        namespace = dict(prepared.namespace)
        tests = FunctionTests(session)
        proxy = lambda *a, **k: tests.call(a, k)  # noqa: E731
        namespace[problem.get("candidate", "candidate")] = proxy
        entry_point = problem.get("entry_point", "")
        if entry_point.isidentifier():
            # Tests may name the function itself (HumanEval/33 compares with `sort_third(...)`):
            # in the reference harness that is the solution's function, never the prompt's stub.
            namespace[entry_point] = proxy
        results = []
        batched = 0  # answers of a sent batch still to read (per_solution)
        for index, test in enumerate(prepared.tests):
            t0 = time.monotonic()
            blocked = self._blocked(session, deadline)
            if blocked:
                batched = 0
                results.append(blocked)
                continue
            if not batched and test.prefetchable:
                batched = self._send_batch(session, prepared.tests[index:], namespace, tests)
            if batched:
                batched -= 1
                try:
                    tests.settle()
                    answer = session.receive(float(session.limits["wall_s"]))
                    if "exited" in answer:  # its fork died without answering
                        raise SolutionFailure(*_exit_verdict(answer["exited"]))
                    if not session.per_solution:
                        tests.pending_exit = True
                    tests.prefetched = answer
                except SolutionFailure as failure:
                    if not session.alive:
                        batched = 0
                    results.append({"verdict": failure.verdict, "time_s": time.monotonic() - t0, "detail": failure.detail, "trusted": True})
                    continue
            verdict, detail, trusted = tests.run_test(test, namespace)
            tests.prefetched = None
            results.append({"verdict": verdict, "time_s": time.monotonic() - t0, "detail": detail, "trusted": trusted})
        return results

    @staticmethod
    def _send_batch(session: Session, tests: list[PreparedTest], namespace: dict[str, Any], runner: FunctionTests) -> int:
        """Send the calls of the next run of tests whose arguments are known ahead, in one
        message; the runner streams the answers back, one per call, each under its own wall
        limit. The arguments are captured by running the test with a recorder in place of the
        candidate, which stops it at the call. Returns how many calls were sent."""
        calls = []
        helpers = session.prepared.helpers
        for test in tests[:BATCH]:
            if not test.prefetchable:
                break
            runner.recording = True
            try:
                exec(test.code, namespace)
                break  # the test did not reach its call: run it on its own
            except Captured as captured:
                calls.append({"args": codec.encode(list(captured.call_args), helpers), "kwargs": codec.encode(captured.kwargs, helpers)})
            except Exception:  # not plain data, or the arguments fail: that test runs on its own
                break
            finally:
                runner.recording = False
        if calls:
            session.send({"op": "batch", "calls": calls})
        return len(calls)

    def _stdio(self, session: Session, deadline: float) -> list[dict[str, Any]]:
        results = []
        for test in session.problem["tests"]:
            t0 = time.monotonic()
            blocked = self._blocked(session, deadline)
            if blocked:
                results.append(blocked)
                continue
            session.send({"op": "stdio", "stdin": test.get("stdin", "")})
            try:
                answer = session.receive(float(session.limits["wall_s"]))
                status = answer.get("exited") or {}
                if status.get("code") == 0 and "signal" not in status:
                    try:  # h15: the comparison mode is the problem's (sandbox/judge/compare.py)
                        ok, why = compare.compare(str(answer.get("stdout", "")), test.get("stdout", ""), test.get("stdin", ""),
                                                  (session.problem.get("metadata") or {}).get("stdio"))
                        shown = why if session.request.get("details") else "output differs"  # why holds expected text
                        verdict, detail = ("passed", "") if ok else ("wrong_answer", shown)
                    except compare.CheckerError as exc:
                        verdict, detail = "sandbox_error", str(exc)
                elif status.get("code") == 137:
                    verdict, detail = "memory", "MemoryError"
                else:
                    verdict, detail = _exit_verdict(status)
            except SolutionFailure as failure:
                verdict, detail = failure.verdict, failure.detail
            results.append({"verdict": verdict, "time_s": time.monotonic() - t0, "detail": detail, "trusted": True})
        return results

    def close(self) -> None:
        self.zygote.close()


def main() -> None:
    """Serve requests on stdin/stdout until stdin closes. Our stdout is kept for the protocol
    alone: anything else printing (dataset code) goes to stderr."""
    set_dumpable(False)
    die_with_parent()
    out = os.dup(1)
    os.dup2(2, 1)
    judge = Judge(hangup_fd=0)
    try:
        while True:
            try:
                request = protocol.read_message(0)
            except protocol.ProtocolError:
                return
            if request.get("op") == "ping":
                protocol.write_message(out, {"id": request.get("id"), "pong": True, "pid": os.getpid()})
                continue
            try:
                response = judge.grade(request)
            except protocol.HostGone:
                return
            except Exception as exc:  # a bug of ours must not take the worker down silently
                response = {"id": request.get("id"), "error": f"{type(exc).__name__}: {exc}"[:1000]}
            protocol.write_message(out, response)
    finally:
        judge.close()


if __name__ == "__main__":
    main()
