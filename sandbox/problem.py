"""The data model shared by every part of the sandbox.

A `Problem` is what a dataset adapter produces and what the judge consumes; a `GradeResult` is
what grading returns. Both are plain dataclasses that round-trip through JSON (`to_dict` /
`from_dict`) because they cross process and container boundaries.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, Literal

from .judge.verdicts import VERDICTS, VerdictName  # noqa: F401  defined once, in the judge

# Every choice list of the sandbox, defined once here and imported by the CLI (click.Choice(get_args(...))),
# the service's request models, the cluster driver and qrpo's config loader.
TestKind = Literal["function", "stdio"]
Granularity = Literal["per_test", "per_solution"]  # a fresh process per test (as the paper) or one per solution
Extraction = Literal[
    "auto", "first", "last", "longest", "continuation", "full"
]  # what of a completion is graded (sandbox.extract)
BackendName = Literal["apptainer", "bubblewrap", "process"]  # the isolation backends (sandbox.backends.BACKENDS)
BackendChoice = Literal["auto", "apptainer", "bubblewrap", "process"]  # what a user may ask for: a backend or auto
ExecutorKind = Literal["local", "slurm"]  # where sharded work runs: submitit's LocalExecutor or SLURM


class Verdict(str, enum.Enum):
    """Outcome of one test. `sandbox_error` is ours (infrastructure), never the solution's."""

    PASSED = "passed"
    WRONG_ANSWER = "wrong_answer"
    TIMEOUT = "timeout"
    MEMORY = "memory"
    RUNTIME_ERROR = "runtime_error"
    SYNTAX_ERROR = "syntax_error"
    NO_CODE = "no_code"
    SANDBOX_ERROR = "sandbox_error"


@dataclass(frozen=True)
class Range:
    """The values a numeric option accepts, with a valid example for error messages. One table of these
    (below) is read by `sandbox`'s options (cli_common.IntIn/FloatIn) and by qrpo's pipeline config, so a
    limit has one range wherever it is set. Bounds are inclusive unless open."""

    low: float
    high: float
    example: float
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def text(self) -> str:
        """As click writes a range: `0.1<=x<=3600`."""
        return f"{self.low}{'<' if self.low_open else '<='}x{'<' if self.high_open else '<='}{self.high}"


# The range of each limit and grading option: `sandbox grade/serve` options, qrpo's `sandbox` and `data`
# config keys. A lower bound is what still works (a Python process cannot start in less than ~64 MiB of
# address space), an upper bound what is surely a typo (more than an hour per test, 256 GiB, a year of SLURM
# time). `sandbox.api` callers building `Limits` themselves are not checked against it.
CPU_S = Range(0.1, 3600, 2)  # CPU seconds per test (Limits.cpu_s; --cpu, sandbox.cpu_s)
WALL_S = Range(0.5, 3600, 5)  # wall seconds per test (Limits.wall_s; --wall, sandbox.wall_s)
MEMORY_MB = Range(64, 262_144, 2048)  # MiB of address space per test (Limits.memory_mb; --memory, sandbox.memory_mb)
SOLUTION_S = Range(1, 86_400, 60)  # seconds for all tests of one solution (Limits.solution_s; sandbox.solution_s)
WORKERS = Range(1, 1024, 4)  # warm judges of a local pool (--workers, sandbox.workers)
JOBS = Range(1, 100_000, 16)  # shards, one SLURM array task each (--jobs, sandbox.jobs, generate.jobs)
# CPUs of one job or process (--cpus-per-job, serve --cpus, sandbox.cpus_per_job, slurm.*.cpus_per_task, cpu_threads)
CPUS_PER_JOB = Range(1, 1024, 8)
SLURM_MINUTES = Range(0, 525_600, 60, low_open=True)  # a job's time limit: up to a year (--time, *.time_min)
MAX_TESTS = Range(1, 1_000_000, 100)  # the first N tests of each problem (--max-tests, data.max_tests)
MIN_TESTS = Range(0, 1_000_000, 20)  # problems with fewer tests are dropped (--min-tests, data.min_tests)
TOLERANCE = Range(0, 1e9, 1e-6)  # stdio numbers within this absolute or relative tolerance are equal (--abs-tol, --rel-tol)


@dataclass(frozen=True)
class Limits:
    """Per-test resource limits. Defaults are the paper's (1 s, 1 GiB)."""

    cpu_s: float = 1.0  # RLIMIT_CPU per test (rounded up to whole seconds by the kernel)
    wall_s: float = 3.0  # wall clock per test, enforced by the judge
    memory_mb: int = 1024  # RLIMIT_AS of the untrusted process
    processes: int = 64  # RLIMIT_NPROC inside the runner's user namespace
    file_size_mb: int = 16  # RLIMIT_FSIZE: bounds every file written, stdout included
    open_files: int = 64  # RLIMIT_NOFILE
    output_kb: int = 64  # stdout/stderr excerpt kept in the result
    solution_s: float = 60.0  # overall deadline for all tests of one solution

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Limits:
        data = dict(data or {})
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown limit(s) {sorted(unknown)}; known: {[f.name for f in dataclasses.fields(cls)]}")
        return cls(**data)


@dataclass(frozen=True)
class Test:
    """One unit test.

    `function`: `source` is trusted Python run by the judge with `candidate` bound to a proxy of
    the solution's entry point (for example `assert candidate(x=1) == 2`). Statements that set up
    later tests belong to the first test that follows them.
    `stdio`: the solution runs as a program; `stdin` is its input, `stdout` the expected output.
    """

    __test__ = False  # not a pytest test class

    kind: TestKind
    source: str = ""
    stdin: str = ""
    stdout: str = ""

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "function":
            return {"kind": "function", "source": self.source}
        return {"kind": "stdio", "stdin": self.stdin, "stdout": self.stdout}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Test:
        return cls(
            kind=data["kind"],
            source=data.get("source", ""),
            stdin=data.get("stdin", ""),
            stdout=data.get("stdout", ""),
        )


@dataclass(frozen=True)
class Problem:
    """A programming problem with its tests.

    `preamble` runs before the solution on the untrusted side (imports, helper types such as
    ListNode) and, because it is dataset code, also in the judge, so helper types exist on both
    sides. `test_setup` is trusted code that only the judge runs before the tests (imports and
    helpers of the dataset's test file); `test_data` is JSON text it reads as `qrpo_test_data`
    (HumanEval+ holds up to 147 MB of inputs and expected outputs: parsed as data, not compiled
    as a literal in the setup's code). `entry_point` is an expression evaluated in the
    solution's namespace (`Solution().twoSum`, `find_zero`); stdio problems have none.
    `candidate` is the name the tests use for the function under test.
    """

    task_id: str
    prompt: str
    tests: tuple[Test, ...]
    preamble: str = ""
    entry_point: str = ""
    test_setup: str = ""
    test_data: str = ""
    candidate: str = "candidate"
    limits: Limits = field(default_factory=Limits)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> TestKind:
        return self.tests[0].kind if self.tests else "function"

    @property
    def expected_s(self) -> float:
        """Seconds the dataset's reference solution took on these tests (metadata `reference_s`,
        recorded where we ran it for the expected outputs; 0.0 when unknown). The pool starts a
        batch's long jobs first, so that none of them ends the batch alone on one judge."""
        try:
            return max(0.0, float(self.metadata.get("reference_s") or 0.0))
        except (TypeError, ValueError):
            return 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "prompt": self.prompt,
            "tests": [t.to_dict() for t in self.tests],
            "preamble": self.preamble,
            "entry_point": self.entry_point,
            "test_setup": self.test_setup,
            "test_data": self.test_data,
            "candidate": self.candidate,
            "limits": dataclasses.asdict(self.limits),
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Problem:
        return cls(
            task_id=str(data["task_id"]),
            prompt=data.get("prompt", ""),
            tests=tuple(Test.from_dict(t) for t in data["tests"]),
            preamble=data.get("preamble", ""),
            entry_point=data.get("entry_point", ""),
            test_setup=data.get("test_setup", ""),
            test_data=data.get("test_data", ""),
            candidate=data.get("candidate", "candidate"),
            limits=Limits.from_dict(data.get("limits")),
            metadata=dict(data.get("metadata") or {}),
        )

    def with_limits(self, limits: Limits) -> Problem:
        return dataclasses.replace(self, limits=limits)


@dataclass(frozen=True)
class TestResult:
    """Verdict of one test, with the time it took and a short human-readable detail."""

    verdict: Verdict
    time_s: float = 0.0
    detail: str = ""
    trusted: bool = True  # False when the assert ran opaquely in the untrusted process

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict.value, "time_s": round(self.time_s, 6), "detail": self.detail, "trusted": self.trusted}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TestResult:
        return cls(
            Verdict(data["verdict"]), float(data.get("time_s", 0.0)), data.get("detail", ""), bool(data.get("trusted", True))
        )


@dataclass(frozen=True)
class GradeResult:
    """How one completion fared on one problem. `pass_rate` is the reward: passed / total."""

    task_id: str
    tests: tuple[TestResult, ...]
    backend: str
    stdout: str = ""
    stderr: str = ""
    time_s: float = 0.0
    error: str = ""  # a row-level problem (unknown task_id, missing field, no code, ...)
    attempts: int = 1
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return len(self.tests)

    @property
    def passed(self) -> int:
        return sum(t.verdict is Verdict.PASSED for t in self.tests)

    @property
    def pass_rate(self) -> float:
        return self.passed / self.total if self.total else 0.0

    @property
    def verdict(self) -> Verdict | None:
        """The first non-passing verdict, or passed; None for a row that could not be graded
        at all (see `error`). Summarises a solution in one word."""
        for t in self.tests:
            if t.verdict is not Verdict.PASSED:
                return t.verdict
        return Verdict.PASSED if self.tests else None

    @property
    def trusted_fraction(self) -> float:
        return sum(t.trusted for t in self.tests) / self.total if self.total else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "pass_rate": self.pass_rate,
            "passed": self.passed,
            "total": self.total,
            "verdict": self.verdict.value if self.verdict else None,
            "verdicts": [t.verdict.value for t in self.tests],
            "tests": [t.to_dict() for t in self.tests],
            "backend": self.backend,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "time_s": round(self.time_s, 6),
            "error": self.error,
            "attempts": self.attempts,
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GradeResult:
        return cls(
            task_id=data["task_id"],
            tests=tuple(TestResult.from_dict(t) for t in data["tests"]),
            backend=data["backend"],
            stdout=data.get("stdout", ""),
            stderr=data.get("stderr", ""),
            time_s=float(data.get("time_s", 0.0)),
            error=data.get("error", ""),
            attempts=int(data.get("attempts", 1)),
            info=dict(data.get("info") or {}),
        )

    @classmethod
    def uniform(cls, task_id: str, total: int, verdict: Verdict, backend: str, error: str, **kw: Any) -> GradeResult:
        """Every test gets the same verdict: no code, an infrastructure failure."""
        tests = tuple(TestResult(verdict, detail=error) for _ in range(total))
        return cls(task_id=task_id, tests=tests, backend=backend, error=error, **kw)

    @classmethod
    def invalid(cls, task_id: str, error: str) -> GradeResult:
        """A completions row that names no known problem or has no usable fields: no tests."""
        return cls(task_id=task_id, tests=(), backend="", error=error)
