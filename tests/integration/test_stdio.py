"""stdin -> stdout problems (APPS style): the program runs as __main__ per test, its stdout is
compared in the judge (lines, trailing whitespace ignored)."""

from __future__ import annotations

import pytest

from sandbox.api import grade
from sandbox.problem import Limits, Problem, Test

SUM = Problem(
    task_id="sum",
    prompt="Read two integers per line until EOF; print each sum.",
    tests=(
        Test("stdio", stdin="1 2\n", stdout="3\n"),
        Test("stdio", stdin="10 -4\n5 5\n", stdout="6\n10"),
        Test("stdio", stdin="", stdout=""),
    ),
    limits=Limits(cpu_s=1, wall_s=2, solution_s=20),
)
PROGRAMS = {
    "correct": ("import sys\nfor line in sys.stdin:\n    a, b = map(int, line.split())\n    print(a + b)\n", [1.0, "passed"]),
    "trailing spaces": ("import sys\nfor line in sys.stdin:\n    print(sum(map(int, line.split())), '  ')\n", [1.0, "passed"]),
    "exit after printing": (
        "import sys\nfor line in sys.stdin:\n    print(sum(map(int, line.split())))\nsys.exit(0)\n",
        [1.0, "passed"],
    ),
    "wrong": (
        "import sys\nfor line in sys.stdin:\n    a, b = map(int, line.split())\n    print(a - b)\n",
        [1 / 3, "wrong_answer"],
    ),
    "crash": ("raise ValueError('no')\n", [0.0, "runtime_error"]),
    "memory files are denied": (  # the runner's seccomp filter holds in a stdio program's fork too
        "import os, sys\ntry:\n    os.memfd_create('hoard')\n    sign = -1\nexcept OSError:\n    sign = 1\n"
        "for line in sys.stdin:\n    a, b = map(int, line.split())\n    print(a + sign * b)\n",
        [1.0, "passed"],
    ),
    "spin": ("while True:\n    pass\n", [0.0, "timeout"]),
    "syntax": ("print(1\n", [0.0, "syntax_error"]),
}


@pytest.mark.parametrize("name", PROGRAMS)
def test_stdio_programs(backend: str, name: str) -> None:
    code, (rate, verdict) = PROGRAMS[name]
    [result] = grade([SUM], [{"task_id": "sum", "code": code}], backend=backend, workers=1)
    assert result.pass_rate == pytest.approx(rate), [t.detail for t in result.tests]
    assert result.verdict.value == verdict
