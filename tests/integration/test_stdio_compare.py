"""stdio comparison in the real judge: the default (tokens) agrees with APPS's testing_util on
hand-written right and wrong solutions of the APPS sample; other modes and checker programs
are chosen per problem."""

from __future__ import annotations

from sandbox.api import grade
from sandbox.datasets import load_problems
from sandbox.problem import Problem, Test

from ..conftest import backend_or_fail

APPS = "apps/mapcoder_apps_selected150.jsonl"
LUCKY = """
n = int(input())
if n % 4 in (2, 3):
    print(-1)
else:
    p = [0] * n
    for i in range(0, n // 2, 2):
        p[i], p[i + 1], p[n - i - 1], p[n - i - 2] = i + 2, n - i, n - i - 1, i + 1
    if n % 4 == 1:
        p[n // 2] = n // 2 + 1
    print({sep}.join(map(str, p)){end})
"""


def test_apps_sample_agrees_with_testing_util(shared_data) -> None:
    backend = backend_or_fail("bubblewrap")
    problems = load_problems(shared_data / APPS)
    lucky = problems["APPS/2012"]  # expected outputs end with a space: "2 4 1 3 \n"
    minus_one = sum(t.stdout.strip() == "-1" for t in lucky.tests)
    rows = [
        {"task_id": "APPS/2012", "code": LUCKY.format(sep="' '", end="")},  # no trailing space: APPS strips, passes
        {"task_id": "APPS/2012", "code": LUCKY.format(sep="'  '", end=" + '\\n\\n'")},  # APPS splits tokens: passes
        {"task_id": "APPS/2012", "code": "input()\nprint(-1)\n"},  # right only where the answer is -1
        {"task_id": "APPS/3836", "code": "def factors(x):\n    if type(x) is not int or x < 1:\n        return -1\n"
                                          "    return [d for d in range(x, 0, -1) if x % d == 0]\n"},
        {"task_id": "APPS/3836", "code": "def factors(x):\n    if type(x) is not int or x < 1:\n        return -1\n"
                                          "    return [d for d in range(1, x + 1) if x % d == 0]\n"},  # ascending: wrong
    ]
    results = grade(problems, rows, backend=backend, workers=2)
    assert results[0].pass_rate == 1.0 and results[1].pass_rate == 1.0
    assert results[2].passed == minus_one and 0 < minus_one < results[2].total
    assert results[3].pass_rate == 1.0
    assert results[4].passed == 7 and results[4].total == 9  # the six -1 cases and factors(1)


def _problem(task_id: str, stdio: dict) -> Problem:
    tests = (Test("stdio", stdin="3\n", stdout="1 2 3\n"), Test("stdio", stdin="2\n", stdout="0.5\n"))
    return Problem(task_id=task_id, prompt="", tests=tests, metadata={"stdio": stdio})


def test_modes_and_checker_per_problem() -> None:
    backend = backend_or_fail("bubblewrap")
    checker = ("def check(input, expected, output):\n"
               "    n = int(input)\n"
               "    if n == 2:\n"
               "        return abs(float(output) - 0.5) < 1e-3\n"
               "    return sorted(map(int, output.split())) == list(range(1, n + 1))\n")
    problems = [_problem("exact", {"mode": "exact"}), _problem("tol", {"abs_tol": 1e-3}),
                _problem("checker", {"checker": checker}),
                _problem("broken", {"checker": "def check(:"})]
    code = "n = int(input())\nprint(*([3, 1, 2] if n == 3 else [0.5001]), sep='  ')\n"
    results = grade(problems, [{"task_id": p.task_id, "code": code} for p in problems], backend=backend, workers=1)
    verdicts = {r.task_id: [t.verdict.value for t in r.tests] for r in results}
    assert verdicts["exact"] == ["wrong_answer", "wrong_answer"]
    assert verdicts["tol"] == ["wrong_answer", "passed"]  # tokens 3 1 2 differ; 0.5001 within 1e-3
    assert verdicts["checker"] == ["passed", "passed"]  # any permutation is accepted
    assert verdicts["broken"] == ["sandbox_error", "sandbox_error"]
    assert all("1 2 3" not in t.detail for r in results for t in r.tests)  # no expected text without details


def test_run_wide_comparison_from_the_command_line(shared_data, tmp_path) -> None:
    import json
    import subprocess
    import sys

    backend = backend_or_fail("bubblewrap")
    problems = tmp_path / "p.jsonl"
    problems.write_text(json.dumps(_problem("p", {}).to_dict()) + "\n")
    completions = tmp_path / "c.jsonl"
    code = "n = int(input())\nprint(*([1, 2, 3] if n == 3 else [0.5001]))\n"
    completions.write_text(json.dumps({"task_id": "p", "code": code}) + "\n")
    out = tmp_path / "out.jsonl"

    results = []
    for extra in ([], ["--abs-tol", "1e-3"], ["--stdio-mode", "exact", "--abs-tol", "1e-3"]):
        command = [sys.executable, "-m", "sandbox.cli", "grade", "-p", str(problems), "-c", str(completions), "-o", str(out),
                   "--backend", backend, "--workers", "1", "--no-progress", *extra]
        subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        results.append(json.loads(out.read_text())["verdicts"])
        out.unlink()
    assert results == [["passed", "wrong_answer"], ["passed", "passed"], ["passed", "wrong_answer"]]
