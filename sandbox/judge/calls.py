"""The proxy through which trusted test code calls the untrusted solution, one function test at a time.

The dataset's test code runs here, in the judge, with the candidate bound to `FunctionTests.call`:
each call sends only the arguments to the runner (over a `Session`) and gets back only the returned
value, decoded into plain data, so every comparison happens in this process. A failure of the
solution is recorded as well as raised, so no `except:` in test code can hide it; a test whose
calls cannot be proxied runs opaquely in the runner and says so.
"""

from __future__ import annotations

import builtins
import contextlib
import math
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from . import codec, compare, frames, protocol
from .session import MESSAGE_LIMIT, Session, SolutionFailure, exit_verdict, raise_verdict
from .verdicts import MEMORY, PASSED, RUNTIME_ERROR, SANDBOX_ERROR, TIMEOUT, WRONG_ANSWER

TEST_DATA = "qrpo_test_data"  # the name a problem's test setup reads its test_data by (here and in the runner)

# What a solution's `raise` becomes when test code must not catch it: it tried to leave, or its
# value was over the codec's budgets (the runner reports that as "TooLarge").
UNCATCHABLE = frozenset({"SystemExit", "KeyboardInterrupt", "GeneratorExit", "TooLarge"})


def judge_cpu_budget(limits: dict[str, Any]) -> float:
    """CPU seconds the judge itself may spend on one test (decoding, comparing, the test code):
    a backstop behind the codec's budgets, far above what any real test needs."""
    return max(5.0, 2 * float(limits["wall_s"]))


class CpuBudget:
    """`with budget.armed(seconds, expired):` raises `expired()` in this (the judge's main)
    thread once the process has used `seconds` of CPU inside the block (to within one tick),
    never after it is left. While a solution's tests run (`ticking`) a SIGPROF comes every
    TICK_S of the judge's CPU and an armed block counts the ones that land in it: arming is two
    attribute stores. A timer armed and a handler swapped per test cost ~5 us each of a
    HumanEval+ test's ~100 us of judge time (py-spy over the release)."""

    TICK_S = 0.25

    def __init__(self) -> None:
        self.expired: Callable[[], BaseException] | None = None
        self.ticks_left = 0
        signal.signal(signal.SIGPROF, self._tick)

    def _tick(self, _signum: int, _frame: object) -> None:
        if self.expired is None:
            return
        self.ticks_left -= 1
        if self.ticks_left <= 0:
            expired, self.expired = self.expired, None
            raise expired()

    @contextlib.contextmanager
    def ticking(self) -> Iterator[None]:
        signal.setitimer(signal.ITIMER_PROF, self.TICK_S, self.TICK_S)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
            self.expired = None

    def armed(self, seconds: float, expired: Callable[[], BaseException]) -> CpuBudget:
        # The first tick may land at once: one more than the whole ticks in `seconds`.
        self.ticks_left = math.ceil(seconds / self.TICK_S) + 1
        self.expired = expired
        return self

    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc: object) -> None:
        self.expired = None


_budget: list[CpuBudget] = []


def cpu_budget() -> CpuBudget:
    """The process's one budget (one SIGPROF handler), made on first use, in the main thread."""
    if not _budget:
        _budget.append(CpuBudget())
    return _budget[0]


class SolutionError(Exception):
    """What test code sees when the solution raised an exception that is not a builtin one."""


class Captured(BaseException):
    """Carries a call's arguments out of a test run with the recorder in place."""

    def __init__(self, call_args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super().__init__()
        self.call_args, self.kwargs = call_args, kwargs


class NeedsOpaque(Exception):
    """The test passes something to the candidate that is not plain data (decided by the test
    code alone: every value a solution can return crosses back as plain data)."""


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


def solution_exception(answer: frames.Raised) -> BaseException | None:
    """The exception test code sees for a solution's `raise`: the real builtin class (or its
    nearest builtin base that takes a message), else SolutionError. None for what test code must
    never catch (SystemExit, KeyboardInterrupt, GeneratorExit: the solution tried to leave)."""
    message = answer.detail
    prefix = answer.name + ": "
    message = (message[len(prefix):] if message.startswith(prefix) else message)[:MESSAGE_LIMIT]
    if answer.name in UNCATCHABLE:
        return None
    cls = getattr(builtins, answer.name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        return SolutionError(f"{answer.name}: {message}"[:MESSAGE_LIMIT])
    if not issubclass(cls, Exception):
        return None
    for base in cls.__mro__:
        if isinstance(base, type) and issubclass(base, Exception):
            try:
                return base(message)
            except TypeError:  # UnicodeDecodeError and friends need more arguments
                continue
    return SolutionError(message)


class FunctionTests:
    """Runs the function tests of one solution in the judge, calls proxied to a Session.

    per_test: each test is served by its own fork of the loaded solution, which exits after the
    test; the runner then reports `exited` for that test, which later reads skip. per_solution:
    the runner itself answers every call."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.test = 0  # id of the open test
        self.open_test = False  # a call of the current test was sent and its fork may still wait
        self.single_call = False
        self.prefetched: frames.Answer | None = None  # the answer to this test's call, sent in a batch
        self.recording = False  # capture a call's arguments instead of making it
        self.failure: SolutionFailure | None = None  # wins over whatever the test code did
        self.raised: BaseException | None = None  # the solution's last exception, as handed to the test
        self.needs_opaque = False  # a call's arguments were not plain data (test code decides this)
        self.last_call: tuple[tuple[Any, ...], dict[str, Any], Any] | None = None  # h15: for --details

    def fail(self, verdict: str, detail: str) -> SolutionFailure:
        if self.failure is None:
            self.failure = SolutionFailure(verdict, detail)
        return self.failure

    def _request(self, message: dict[str, Any]) -> frames.Answer:
        session = self.session
        if not session.alive:
            self.open_test = False
            raise self.fail(RUNTIME_ERROR, "the solution's process ended earlier in this test")
        message["new_test"] = not self.open_test
        if not self.open_test:
            self.test = session.new_test()
        message["test"] = self.test
        self.open_test = True
        try:
            session.send(message)
            answer = session.receive(self.test)
        except SolutionFailure as failure:
            self.open_test = False
            raise self.fail(failure.verdict, failure.detail) from None
        if isinstance(answer, frames.Exited):  # the fork serving this test died before answering
            self.open_test = False
            raise self.fail(*exit_verdict(answer.status))
        if message.get("last"):
            self.open_test = False
        return answer

    def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.recording:
            raise Captured(args, kwargs)
        if self.failure is not None:
            raise self.failure
        helpers = self.session.prepared.helpers
        if self.prefetched is not None:  # the answer to this call, sent in a batch: its arguments were encoded then
            answer, self.prefetched = self.prefetched, None
        else:
            try:
                message = {"op": "call", "args": codec.encode(list(args), helpers),
                           "kwargs": codec.encode(dict(kwargs), helpers), "last": self.single_call}
            except codec.TooLarge as exc:
                raise self.fail(RUNTIME_ERROR, f"the arguments of a call are too large to send: {exc}") from None
            except codec.EncodeError as exc:
                self.needs_opaque = True
                raise NeedsOpaque(str(exc)) from None
            answer = self._request(message)
        if isinstance(answer, frames.Raised):
            raised = solution_exception(answer)
            if raised is None:
                raise self.fail(*raise_verdict(answer))
            self.raised = raised
            raise raised
        if isinstance(answer, frames.Unencodable):
            raise self.fail(WRONG_ANSWER, f"returned a value that is not plain data: {answer.detail[:200]}")
        if not isinstance(answer, frames.Value):
            self.session.kill()
            raise self.fail(RUNTIME_ERROR, "the solution's process broke the protocol: not a call's answer")
        try:
            value = codec.decode(answer.doc, helpers)
            self.last_call = (args, kwargs, value)  # h15: described with --details
            return value
        except codec.TooLarge as exc:
            raise self.fail(RUNTIME_ERROR, f"returned a value over the judge's budget: {exc}") from None
        except codec.DecodeError as exc:
            raise self.fail(WRONG_ANSWER, f"returned a malformed value: {exc}") from None
        except MemoryError:
            raise self.fail(RUNTIME_ERROR, "returned a value over the judge's memory budget") from None

    def finish_test(self) -> None:
        """End the current test: its fork exits (per_test)."""
        if self.open_test and self.session.alive:
            self.session.send({"op": "done"}, quiet=True)
        self.open_test = False

    def run_test(self, test: PreparedTest, namespace: dict[str, Any]) -> tuple[str, str, bool]:
        """Run one trusted test here; returns (verdict, detail, trusted). A failure of the
        solution recorded during the test decides its verdict, whatever the test code caught."""
        if test.code is None:
            return SANDBOX_ERROR, "the test code does not compile", True
        if not test.trusted:
            return self.run_opaque(test)
        self.single_call = test.single_call
        self.failure = None
        self.raised = None
        self.needs_opaque = False
        self.last_call = None
        verdict, detail = PASSED, ""
        seconds = judge_cpu_budget(self.session.limits)
        over: list[bool] = []

        def expired() -> SolutionFailure:
            over.append(True)
            return self.fail(TIMEOUT, f"the judge spent over {seconds:g} s of CPU on this test's replies")

        try:
            with cpu_budget().armed(seconds, expired):
                try:
                    exec(test.code, namespace)
                except BaseException as exc:  # noqa: BLE001  every outcome of test code is a verdict
                    verdict, detail = self._outcome(exc)
                    if isinstance(exc, AssertionError) and self.session.request.get("details") and exc is not self.raised:
                        last = self.last_call  # h15: a bounded description with the expected value
                        detail = compare.describe_failure(test.source, namespace, last[:2] if last else None,
                                                          last[2] if last else None)
        except SolutionFailure as failure:  # the budget ran out just outside the inner block
            verdict, detail = failure.verdict, failure.detail
        finally:
            self.finish_test()
        if self.failure is not None:
            if over:
                self.session.kill()  # it may have stopped anywhere, mid-request included
            return self.failure.verdict, self.failure.detail, True
        if self.needs_opaque:
            return self.run_opaque(test)
        return verdict, detail, True

    def _outcome(self, exc: BaseException) -> tuple[str, str]:
        if isinstance(exc, (protocol.HostGone, KeyboardInterrupt)):
            raise exc
        if isinstance(exc, SolutionFailure):
            return exc.verdict, exc.detail
        if exc is self.raised:  # the solution's exception, not caught by the test
            return (MEMORY if isinstance(exc, MemoryError) else RUNTIME_ERROR), f"{type(exc).__name__}: {exc}"[:MESSAGE_LIMIT]
        if isinstance(exc, AssertionError):
            return WRONG_ANSWER, f"assertion failed{': ' + str(exc)[:200] if str(exc) else ''}"
        if isinstance(exc, RecursionError):
            return WRONG_ANSWER, "comparing the returned value exceeded the recursion limit"
        return WRONG_ANSWER, f"the test failed on the returned value: {type(exc).__name__}: {str(exc)[:200]}"

    def run_opaque(self, test: PreparedTest) -> tuple[str, str, bool]:
        """The assert runs in the untrusted process, which says pass or fail: reported as such."""
        problem = self.session.problem
        data = problem.get("test_data") or ""
        message = {"op": "opaque", "source": (f"{TEST_DATA} = {data!r}\n" if data else "")
                   + problem.get("test_setup", "") + "\n" + test.source,
                   "candidate": problem.get("candidate", "candidate"), "last": True}
        self.failure = None
        try:
            answer = self._request(message)
        except SolutionFailure as failure:
            return failure.verdict, failure.detail, False
        if isinstance(answer, frames.Raised):
            verdict, detail = raise_verdict(answer)
            return verdict, detail, False
        if not isinstance(answer, frames.OpaqueDone):
            self.session.kill()
            return RUNTIME_ERROR, "the solution's process broke the protocol: not an opaque test's answer", False
        return ("passed", "", False) if answer.passed else (WRONG_ANSWER, "assertion failed (opaque)", False)
