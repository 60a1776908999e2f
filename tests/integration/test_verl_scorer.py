"""verl's own SandboxFusion scorer (`verl.utils.reward_score.sandbox_fusion` from the `verl` wheel on
PyPI, its files unmodified) against our `sandbox serve`, on right and wrong solutions of APPS
problems (stdin and call-based): its per-test verdicts must be our grader's.

`import verl...` runs verl/__init__.py, which imports ray and the training stack (verl/protocol.py
imports ray); the scorer itself needs only `requests`. So the test registers `verl`, `verl.utils`
and `verl.utils.reward_score` as bare packages pointing at the installed directories and imports
the scorer's own two files (__init__.py and utils.py) through them."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import sys
import threading
import types
from pathlib import Path

import pytest

from sandbox.api import grade
from sandbox.datasets import load_problems
from sandbox.problem import Problem, Verdict
from sandbox.service import read_address_file

from ..conftest import backend_or_fail, missing
from .test_service import start_server

APPS = "apps/mapcoder_apps_selected150.jsonl"

QAQ_RIGHT = """```python
s = input().strip()
print(sum(1 for i in range(len(s)) for j in range(i + 1, len(s)) for k in range(j + 1, len(s))
          if s[i] + s[j] + s[k] == "QAQ"))
```"""
QAQ_WRONG = "```python\nprint(input().count('QAQ'))\n```"
DROP_CAP_RIGHT = (
    "```python\ndef drop_cap(s):\n    return ' '.join(w.capitalize() if len(w) > 2 else w for w in s.split(' '))\n```"
)
DROP_CAP_WRONG = "```python\ndef drop_cap(s):\n    return s.title()\n```"
SOLUTIONS = {"APPS/1607": [QAQ_RIGHT, QAQ_WRONG], "APPS/4724": [DROP_CAP_RIGHT, DROP_CAP_WRONG]}


def verl_scorer() -> types.ModuleType:
    spec = importlib.util.find_spec("verl")
    if spec is None or not spec.submodule_search_locations:
        missing("verl is not installed (pip install verl --no-deps)")
    root = Path(next(iter(spec.submodule_search_locations)))
    packages = {"verl": root, "verl.utils": root / "utils", "verl.utils.reward_score": root / "utils" / "reward_score"}
    for name, path in packages.items():
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(path)]
            sys.modules[name] = package
    return importlib.import_module("verl.utils.reward_score.sandbox_fusion")


def verl_cases(problem: Problem) -> dict:
    """The problem's tests as verl's `test_cases`: stdin/stdout, or for call-based problems `fn_name`
    with one JSON argument per input line and the output as verl's wrapper prints it."""
    if problem.kind == "stdio":
        return {"inputs": [t.stdin for t in problem.tests], "outputs": [t.stdout for t in problem.tests]}
    inputs, outputs = [], []
    for test in problem.tests:
        node = ast.parse(test.source).body[0]
        assert isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare)
        call, expected = node.test.left, ast.literal_eval(node.test.comparators[0])
        assert isinstance(call, ast.Call)
        inputs.append("\n".join(json.dumps(ast.literal_eval(a)) for a in call.args))
        outputs.append(str(expected) if isinstance(expected, (int, float, str)) and not isinstance(expected, bool)
                       else json.dumps(expected))
    return {"inputs": inputs, "outputs": outputs, "fn_name": problem.entry_point}


def test_verl_scores_apps_like_our_grader(tmp_path, shared_data) -> None:
    backend = backend_or_fail("bubblewrap")
    scorer = verl_scorer()
    problems = load_problems(shared_data / APPS).problems
    rows = [{"task_id": t, "completion": c} for t, cs in SOLUTIONS.items() for c in cs]
    ours = grade(problems, rows, backend=backend, workers=1)
    process, address = start_server(tmp_path, "verl", "--problems", str(shared_data / APPS), backend=backend)
    try:
        url = f"http://{read_address_file(address)[0]}/run_code"
        semaphore = threading.Semaphore(16)
        for row, mine in zip(rows, ours):
            problem = problems[row["task_id"]]
            score, metadata = scorer.compute_score(url, semaphore, 1024, row["completion"], verl_cases(problem), timeout=3)
            theirs = [m["status"] == "success" for m in metadata]
            assert theirs == [t.verdict is Verdict.PASSED for t in mine.tests], (row["task_id"], metadata[:2])
            assert score == pytest.approx(mine.pass_rate)
            assert all(m["api_status"] in ("Success", "Failed") for m in metadata)
        assert [r.pass_rate == 1.0 for r in ours] == [True, False, True, False]
    finally:
        process.terminate()
        process.wait(15)
