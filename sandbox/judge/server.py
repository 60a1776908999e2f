"""The trusted judge: holds the tests, asks the untrusted runner for values, decides verdicts.

Run as a long-lived process inside each worker; it reads grading requests as length-prefixed
JSON on stdin and writes one response per request on stdout:

  request:  {"id", "problem": Problem.to_dict(), "code": str, "granularity": "per_test"|"per_solution"}
  response: {"id", "tests": [TestResult...], "stdout", "stderr", "info": {...}}

Function tests run here, in the judge, with the candidate bound to `calls.FunctionTests`: each call
sends only the arguments to the runner and gets back only the returned value, decoded into
plain data, so `==` and every other comparison happen in this process with the expected values
the runner never saw. A test whose candidate is used other than by direct calls (or whose
arguments are not plain data) runs opaquely in the runner and is reported as untrusted.
"""

from __future__ import annotations

import ast
import builtins
import functools
import gc
import hashlib
import importlib
import json
import os
import resource
import sys
import tempfile
import time
from collections import OrderedDict
from typing import Any

from . import checks, cleanup, codec, compare, frames, protocol
from .calls import TEST_DATA, Captured, FunctionTests, PreparedProblem, PreparedTest, cpu_budget
from .runner import new_module
from .session import Session, SolutionFailure, Zygote, exit_verdict
from .verdicts import MEMORY, PASSED, RUNTIME_ERROR, SANDBOX_ERROR, TIMEOUT, WRONG_ANSWER
from .world import die_with_parent, set_dumpable

BATCH = 256  # calls sent to a runner in one message
# While the runner answers a batch, the next one is sent ahead once at most this many of its calls
# are left, so the runner never waits for the judge. Only a message that fits in a pipe's default
# buffer (64 KiB) is sent ahead: the runner took the batch before off the pipe, so the write cannot
# block while the runner is busy (one that shrinks its pipe only times out itself).
AHEAD_AT = BATCH // 2
AHEAD_BYTES = 60_000
CACHED_PROBLEMS = 64
# Collect the young generation every 10,000 allocations, not 700: a decoded value of a million
# numbers is young while it is compared, and each collection walks it (0.55 s -> 0.29 s of the
# judge's time over the HumanEval+ release, with the cache frozen).
GC_THRESHOLD = (10_000, 10, 10)
JUDGE_MEMORY_MB = 3072  # the judge's own address space (soft RLIMIT_AS, set once its zygote runs)


def problem_key(problem: dict[str, Any]) -> str:
    """What names a prepared problem in the judge's cache: a hash of everything it is made from.
    The long texts are hashed as they are (a JSON dump of 147 MB of test data would cost a second)."""
    sha = hashlib.sha256(json.dumps([problem.get(k) for k in ("candidate", "entry_point", "tests")]).encode())
    for name in ("preamble", "test_setup"):
        text = str(problem.get(name) or "").encode("utf-8", "surrogatepass")
        sha.update(b"%d:" % len(text))
        sha.update(text)
    data = problem.get(protocol.TEST_DATA_SHA256)  # protocol.read_request hashed it as it came
    if data is None:
        data = hashlib.sha256(str(problem.get("test_data") or "").encode("utf-8", "surrogatepass")).hexdigest()
    sha.update(data.encode())
    return sha.hexdigest()


def prepare_namespace(problem: dict[str, Any]) -> PreparedProblem:
    """Run the dataset's preamble and test setup here (trusted code): the namespace the tests
    run in, and the helper classes allowed across. The tests are compiled by `prepare_tests`,
    which the judge runs while the runner loads the solution."""
    namespace = new_module("__judge_problem__")
    error = ""
    try:
        exec(compile(problem.get("preamble", ""), "<preamble>", "exec"), namespace)
        namespace[TEST_DATA] = problem.get("test_data", "")
        exec(compile(problem.get("test_setup", ""), "<test_setup>", "exec"), namespace)
    except BaseException as exc:  # noqa: BLE001  dataset code is trusted but may still be broken
        error = f"the problem's preamble or test setup failed in the judge: {type(exc).__name__}: {exc}"[:500]
    namespace.pop(TEST_DATA, None)  # parsed by now: the text is not kept with the cached problem
    return PreparedProblem(namespace, codec.helper_classes(namespace), [], error)


SHORT_TEST = 1000  # characters: short test sources are cached compiled (`_compiled`)


def _compiled(source: str, candidate: str) -> tuple[checks.TestForm | None, Any]:
    """A function test's form and code, from one parse. Short sources come from a cache: datasets
    repeat them across problems (every evalplus problem's i-th test is the same line), and neither
    result is ever mutated. Long ones (literal data) rarely repeat and would hold their trees."""
    return _compiled_short(source, candidate) if len(source) <= SHORT_TEST else _compile(source, candidate)


def _compile(source: str, candidate: str) -> tuple[checks.TestForm | None, Any]:
    try:
        return checks.classify(ast.parse(source), candidate), compile(source, "<test>", "exec")  # faster than from the tree
    except (SyntaxError, ValueError):
        return None, None


_compiled_short = functools.lru_cache(maxsize=8192)(_compile)


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
            form, code = _compiled(source, candidate)
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


def _stdout_matches(actual: str, expected: str) -> bool:
    """Competitive-programming comparison: same lines after stripping trailing whitespace,
    ignoring trailing blank lines."""
    def lines(text: str) -> list[str]:
        out = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
        while out and not out[-1]:
            out.pop()
        return out

    return lines(actual) == lines(expected)


def safe_text(text: str, limit: int = 2000) -> str:
    """Text a solution produced, made safe for every writer: lone surrogates and control
    characters (other than newline and tab) are written as escapes; bounded length."""
    text = text[:limit]
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable() or ch in "\n\t":
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape", "backslashreplace").decode("ascii")
                       if not 0xD800 <= ord(ch) <= 0xDFFF else f"\\u{ord(ch):04x}")
    return "".join(out)


def _result(verdict: str, detail: str, time_s: float = 0.0, trusted: bool = True) -> dict[str, Any]:
    return {"verdict": verdict, "time_s": time_s, "detail": safe_text(detail), "trusted": trusted}


class Judge:
    def __init__(self, python: str | None = None, tmp: str | None = None, hangup_fd: int | None = None,
                 fresh_world: bool = True) -> None:
        self.python = python or sys.executable
        self.hangup_fd = hangup_fd  # our client's pipe: if it hangs up mid-grading, stop at once
        self.tmp = tmp or tempfile.gettempdir()
        self.zygote = Zygote(self.python, fresh_world)
        self.cache: OrderedDict[str, PreparedProblem] = OrderedDict()
        self.evicted = 0

    def keep(self, key: str, prepared: PreparedProblem) -> None:
        """Cache a prepared problem, out of the cyclic collector's way. The cache holds the
        problems' expected values (HumanEval+/130: lists of 10 million floats), and every full
        collection walked all of them: 0.65 s of the judge's 8 s over the HumanEval+ release
        (gc callbacks). Frozen, they are never walked. An evicted problem's namespace is
        cleared (its functions hold it: a cycle), which frees its data at once; what small
        cycles remain (its classes) are collected once per CACHED_PROBLEMS evictions, when the
        cache is unfrozen for one full collection (each one walks the whole cache)."""
        self.cache[key] = prepared
        if len(self.cache) > CACHED_PROBLEMS:
            self.cache.popitem(last=False)[1].namespace.clear()
            self.evicted += 1
            if self.evicted % CACHED_PROBLEMS == 0:
                gc.unfreeze()
                gc.collect()
        gc.freeze()

    def new_workdir(self) -> str:
        return tempfile.mkdtemp(prefix="qrpo-run-", dir=self.tmp)

    def remove_workdir(self, path: str) -> None:
        cleanup.remove_tree(path)

    def grade(self, request: dict[str, Any]) -> dict[str, Any]:
        started = time.monotonic()
        problem = request["problem"]
        key = problem_key(problem)
        prepared = self.cache.get(key)
        if prepared is not None:
            self.cache.move_to_end(key)
        else:
            prepared = prepare_namespace(problem)
        n = len(problem["tests"])
        if prepared.error:
            return self._uniform(request, n, SANDBOX_ERROR, prepared.error, started)
        session = Session(self, request, prepared)
        results: list[dict[str, Any]] = []
        try:
            session.spawn()  # the runner loads the solution while we compile the tests
            if not prepared.tests and n:
                prepared.tests = prepare_tests(problem, prepared.namespace)
                self.keep(key, prepared)
            load = session.loaded()
            if not load.ok:
                return self._uniform(request, n, load.verdict, load.detail, started, session)
            deadline = started + float(problem["limits"]["solution_s"])
            slice_s = request.get("slice_s")
            yield_at = started + float(slice_s) if isinstance(slice_s, (int, float)) and slice_s > 0 else None
            if problem["tests"] and problem["tests"][0]["kind"] == "stdio":
                results = self._stdio(session, deadline, yield_at)
            else:
                with cpu_budget().ticking():
                    results = self._function(session, prepared, deadline, yield_at)
        finally:
            stdout, stderr = session.close()
        return {
            "id": request.get("id"),
            "tests": results,
            "yielded": len(results) < n,  # the time slice ended first: the host grades the rest later
            "stdout": safe_text(stdout, len(stdout)),
            "stderr": safe_text(stderr, len(stderr)),
            "time_s": time.monotonic() - started,
            "info": {"containment": session.containment, "runners": session.spawns},
        }

    def _uniform(self, request: dict[str, Any], n: int, verdict: str, detail: str, started: float,
                 session: Session | None = None) -> dict[str, Any]:
        stdout, stderr = session.close() if session else ("", "")
        return {
            "id": request.get("id"),
            "tests": [_result(verdict, detail) for _ in range(n)],
            "stdout": safe_text(stdout, len(stdout)),
            "stderr": safe_text(stderr, len(stderr)),
            "time_s": time.monotonic() - started,
            "info": {"containment": session.containment if session else ""},
        }

    @staticmethod
    def _blocked(session: Session, deadline: float) -> dict[str, Any] | None:
        """The result of a test that cannot run: the solution's overall deadline passed, or the
        runner (killed after a timeout or crash) cannot be loaded again. Else a runner is ready."""
        if time.monotonic() > deadline:
            return _result(TIMEOUT, "the solution's overall deadline passed")
        if session.alive:
            return None
        load = session.start()
        if load.ok:
            return None
        return _result(load.verdict, load.detail)

    @staticmethod
    def _slice_over(results: list[dict[str, Any]], yield_at: float | None) -> bool:
        """The request's time slice is over (after at least one test: every slice progresses)."""
        return yield_at is not None and bool(results) and time.monotonic() > yield_at

    def _function(self, session: Session, prepared: PreparedProblem, deadline: float,
                  yield_at: float | None = None) -> list[dict[str, Any]]:
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
        results: list[dict[str, Any]] = []
        batched: list[int] = []  # test ids of sent calls whose answers are still to read
        newest = 0  # the first test id of the newest batch: once it is answered, the runner holds that batch
        ahead = True  # send batches ahead (off for this solution once one is over AHEAD_BYTES)
        for index, test in enumerate(prepared.tests):
            if self._slice_over(results, yield_at):
                break  # calls sent ahead die with the runner when the session closes
            t0 = time.monotonic()
            blocked = self._blocked(session, deadline)
            if blocked:
                batched = []
                results.append(blocked)
                continue
            if not batched and test.prefetchable:
                try:
                    batched = self._send_batch(session, prepared.tests[index:], namespace, tests)
                except SolutionFailure as failure:
                    results.append(_result(failure.verdict, failure.detail, time.monotonic() - t0))
                    continue
                newest = batched[0] if batched else newest
            if batched:
                test_id = batched.pop(0)
                try:
                    answer = session.receive(test_id)
                    if isinstance(answer, frames.Exited):  # its fork died without answering
                        raise SolutionFailure(*exit_verdict(answer.status))
                    tests.prefetched = answer
                except SolutionFailure as failure:
                    if not session.alive:
                        batched = []
                    results.append(_result(failure.verdict, failure.detail, time.monotonic() - t0))
                    continue
            verdict, detail, trusted = tests.run_test(test, namespace)
            tests.prefetched = None
            results.append(_result(verdict, detail, time.monotonic() - t0, trusted))
            following = index + 1 + len(batched)
            if (ahead and batched and len(batched) <= AHEAD_AT and session.alive and session.answered(newest)
                    and following < len(prepared.tests) and prepared.tests[following].prefetchable):
                try:
                    more = self._send_batch(session, prepared.tests[following:], namespace, tests, AHEAD_BYTES)
                except SolutionFailure:
                    continue  # it stopped reading: the next receive reports how it ended
                ahead = bool(more)
                if more:
                    batched += more
                    newest = more[0]
        return results

    @staticmethod
    def _send_batch(session: Session, tests: list[PreparedTest], namespace: dict[str, Any],
                    runner: FunctionTests, max_bytes: int | None = None) -> list[int]:
        """Send the calls of the next run of tests whose arguments are known ahead, in one
        message; the runner streams the answers back, one per call, each under its own wall
        limit. The arguments are captured by running the test with a recorder in place of the
        candidate, which stops it at the call. Returns the test ids of the calls sent: none when
        the message would be over `max_bytes`."""
        calls: list[dict[str, Any]] = []
        ids: list[int] = []
        helpers = session.prepared.helpers
        for test in tests[:BATCH]:
            if not test.prefetchable:
                break
            runner.recording = True
            try:
                exec(test.code, namespace)
                break  # the test did not reach its call: run it on its own
            except Captured as captured:
                kwargs = codec.encode(captured.kwargs, helpers) if captured.kwargs else codec.NO_KWARGS
                call = {"args": codec.encode(list(captured.call_args), helpers), "kwargs": kwargs}
                ids.append(session.new_test())
                calls.append({"test": ids[-1], **call})
            except Exception:  # noqa: BLE001  not plain data, or the arguments fail: that test runs on its own
                break
            finally:
                runner.recording = False
        if calls:
            data = protocol.dumps({"op": "batch", "calls": calls})
            if max_bytes is not None and len(data) > max_bytes:
                return []
            session.send_data(data)  # SolutionFailure: it stopped reading
        return ids

    def _stdio(self, session: Session, deadline: float, yield_at: float | None = None) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        for test in session.problem["tests"]:
            if self._slice_over(results, yield_at):
                break
            t0 = time.monotonic()
            blocked = self._blocked(session, deadline)
            if blocked:
                results.append(blocked)
                continue
            test_id = session.new_test()
            try:
                session.send({"op": "stdio", "stdin": test.get("stdin", ""), "test": test_id})
                answer = session.receive(test_id)
                if not isinstance(answer, frames.StdioDone):
                    session.kill()
                    raise SolutionFailure(RUNTIME_ERROR, "the solution's process broke the protocol: not a program's output")
                status = answer.status
                if status.code == 0:
                    try:  # h15: the comparison mode is the problem's (sandbox/judge/compare.py)
                        ok, why = compare.compare(answer.stdout, test.get("stdout", ""), test.get("stdin", ""),
                                                  (session.problem.get("metadata") or {}).get("stdio"))
                        shown = why if session.request.get("details") else "output differs"  # why holds expected text
                        verdict, detail = (PASSED, "") if ok else (WRONG_ANSWER, shown)
                    except compare.CheckerError as exc:
                        verdict, detail = SANDBOX_ERROR, str(exc)
                elif status.code == 137:
                    verdict, detail = MEMORY, "MemoryError"
                else:
                    verdict, detail = exit_verdict(status)
            except SolutionFailure as failure:
                verdict, detail = failure.verdict, failure.detail
            results.append(_result(verdict, detail, time.monotonic() - t0))
        return results

    def close(self) -> None:
        self.zygote.close()


def limit_own_memory(megabytes: int = JUDGE_MEMORY_MB) -> None:
    """Bound the judge's own address space (soft limit, so the zygote, started before, is not
    affected): whatever a reply makes it allocate ends in MemoryError, which is the solution's."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    want = megabytes * 1024 * 1024
    if hard == resource.RLIM_INFINITY or want < hard:
        resource.setrlimit(resource.RLIMIT_AS, (want, hard))


def main() -> None:
    """Serve requests on stdin/stdout until stdin closes. Our stdout is kept for the protocol
    alone: anything else printing (dataset code) goes to stderr."""
    set_dumpable(False)
    die_with_parent()
    out = os.dup(1)
    os.dup2(2, 1)
    judge = Judge(hangup_fd=0)
    gc.set_threshold(*GC_THRESHOLD)
    limit_own_memory()
    try:
        while True:
            try:
                request = protocol.read_request(0)
            except protocol.ProtocolError:
                return
            if request.get("op") == "ping":
                protocol.write_message(out, {"id": request.get("id"), "pong": True, "pid": os.getpid()})
                continue
            try:
                response = judge.grade(request)
            except protocol.HostGone:
                return
            except Exception as exc:  # noqa: BLE001  a bug of ours must not take the worker down silently
                response = {"id": request.get("id"), "error": safe_text(f"{type(exc).__name__}: {exc}", 1000)}
            protocol.write_message(out, response)
    finally:
        judge.close()


if __name__ == "__main__":
    main()
