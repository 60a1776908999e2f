"""The console entry points, run as a user runs them (`python -m sandbox.cli ...`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from ..conftest import REPO, backend_or_fail

DEMO = REPO / "sandbox" / "demo"
PROBLEMS = DEMO / "problems.jsonl"
COMPLETIONS = DEMO / "completions.jsonl"


def run_cli(*args: str, module: str = "sandbox.cli", timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )


# Bad rows inserted among the demo completions: (line bytes, field the error must name or None).
BAD_ROWS: list[tuple[bytes, str | None]] = [
    (b'{"task_id": "no-such-problem", "code": "class Solution: pass\\n"}', "task_id"),
    (b'{"code": "class Solution: pass\\n", "note": "no task_id"}', "task_id"),
    (b'{"task_id": "longest-vowel-run", "note": "neither code nor completion"}', "completion"),
    (b'{"task_id": "longest-vowel-run", "code": ', None),  # invalid JSON
    (b'{"task_id": "longest-vowel-run", "code": "x = \'\xff\xfe\'"}', None),  # invalid UTF-8
    (b'{"task_id": "longest-vowel-run", "code": 42}', "code"),
    (b'["longest-vowel-run", "class Solution: pass"]', None),  # not an object
]
BAD_AFTER = [0, 2, 5, 9, 14, 20, 21]  # insert BAD_ROWS[k] after this many demo rows


@pytest.fixture(scope="module")
def demo_rows() -> list[dict]:
    return [json.loads(line) for line in COMPLETIONS.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def graded(tmp_path_factory, demo_rows):
    """Grade the demo completions with bad rows mixed in, once for the module."""
    backend_or_fail("bubblewrap")
    tmp = tmp_path_factory.mktemp("grade")
    good_lines = [line.encode("utf-8") for line in COMPLETIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    lines: list[bytes] = []
    expected: list[tuple[str, object]] = []  # ("good", demo row) or ("bad", field)
    bad = sorted(zip(BAD_AFTER, range(len(BAD_ROWS))))
    for i in range(len(good_lines) + 1):
        for after, k in bad:
            if after == i:
                lines.append(BAD_ROWS[k][0])
                expected.append(("bad", BAD_ROWS[k][1]))
        if i < len(good_lines):
            lines.append(good_lines[i])
            expected.append(("good", demo_rows[i]))
    completions = tmp / "completions.jsonl"
    completions.write_bytes(b"\n".join(lines) + b"\n")
    out_dir = tmp / "results" / "nested"
    output = out_dir / "graded.jsonl"
    proc = run_cli("grade", "-p", str(PROBLEMS), "-c", str(completions), "-o", str(output),
                   "--backend", "bubblewrap", "--workers", "2", timeout=300)
    return proc, output, expected


def test_grade_exits_zero(graded):
    proc, output, _ = graded
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert output.is_file()


def test_grade_one_row_per_input_row_in_order(graded):
    proc, output, expected = graded
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len(expected) == 21 + len(BAD_ROWS)
    for lineno, (row, (kind, info)) in enumerate(zip(rows, expected), start=1):
        if kind == "good":
            assert row["task_id"] == info["task_id"], f"line {lineno}"
        else:
            assert row["error"], f"line {lineno}: a bad row must carry an error: {row}"


def test_grade_bad_rows_name_row_and_field(graded):
    proc, output, expected = graded
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    checked = 0
    for lineno, (row, (kind, field)) in enumerate(zip(rows, expected), start=1):
        if kind != "bad":
            continue
        checked += 1
        error = row["error"]
        assert re.search(rf"\brow {lineno}\b", error), f"line {lineno}: {error!r}"
        if field is not None:
            assert field in error, f"line {lineno}: {error!r} does not name {field!r}"
        assert row["total"] == 0 and row["pass_rate"] == 0 and row["verdict"] is None, row
    assert checked == len(BAD_ROWS)


def test_grade_good_rows_match_the_demo_expectations(graded):
    proc, output, expected = graded
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    mismatches = []
    for row, (kind, demo) in zip(rows, expected):
        if kind != "good":
            continue
        if row["verdict"] != demo["expected_verdict"] or abs(row["pass_rate"] - demo["expected_pass_rate"]) > 1e-5:
            mismatches.append((demo["task_id"], demo["note"], row["verdict"], row["pass_rate"],
                               demo["expected_verdict"], demo["expected_pass_rate"]))
        if row["verdict"] != "no_code":  # no code: nothing ran, so no backend graded it
            assert row["backend"] == "bubblewrap", row
        assert row["total"] >= 20
    assert mismatches == []


def test_grade_summary_has_the_mean_pass_rate(graded):
    proc, output, expected = graded
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    rated = [r["pass_rate"] for r in rows if r["total"]]
    assert len(rated) == 21
    match = re.search(r"mean pass rate:\s*([0-9.]+)", proc.stdout)
    assert match, proc.stdout
    assert float(match.group(1)) == pytest.approx(sum(rated) / len(rated), abs=0.0006)
    demo_mean = sum(d["expected_pass_rate"] for k, d in expected if k == "good") / 21
    assert float(match.group(1)) == pytest.approx(demo_mean, abs=0.0006)


def test_grade_writes_atomically(graded):
    proc, output, _ = graded
    assert sorted(os.listdir(output.parent)) == [output.name]
    assert output.read_bytes().endswith(b"\n")


def test_grade_without_usable_problems_fails_naming_the_file(tmp_path):
    problems = tmp_path / "broken-problems.jsonl"
    problems.write_bytes(b'{"task_id": "x"\nnot json at all\n{"unknown": "format"}\n\xff\xfe\n')
    completions = tmp_path / "completions.jsonl"
    completions.write_text('{"task_id": "x", "code": "pass"}\n')
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = run_cli("grade", "-p", str(problems), "-c", str(completions), "-o", str(out_dir / "graded.jsonl"),
                   "--backend", "process", "--workers", "1")
    assert proc.returncode != 0
    assert "broken-problems.jsonl" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert os.listdir(out_dir) == []


def test_grade_with_an_empty_problems_file_fails(tmp_path):
    problems = tmp_path / "empty.jsonl"
    problems.write_text("")
    completions = tmp_path / "completions.jsonl"
    completions.write_text('{"task_id": "x", "code": "pass"}\n')
    proc = run_cli("grade", "-p", str(problems), "-c", str(completions), "-o", str(tmp_path / "graded.jsonl"),
                   "--backend", "process", "--workers", "1")
    assert proc.returncode != 0
    assert "empty.jsonl" in proc.stderr
    assert not (tmp_path / "graded.jsonl").exists()


@pytest.mark.parametrize("command", ["grade", "demo", "doctor"])
def test_help_shows_an_example(command):
    proc = run_cli(command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Example" in proc.stdout
    assert f"sandbox {command}" in proc.stdout


def test_doctor_lists_backends_and_what_auto_picks():
    from sandbox.backends import BACKENDS, get_backend

    proc = run_cli("doctor")
    assert proc.returncode == 0, proc.stderr
    for name in ("bubblewrap", "process"):
        ok, _ = BACKENDS[name]().available()
        assert re.search(rf"\b{name}\s+{'yes' if ok else 'no'}\b", proc.stdout), proc.stdout
    picked = get_backend("auto")
    name = next(n for n, cls in BACKENDS.items() if type(picked) is cls)
    match = re.search(r"auto picks:\s*(\w+)", proc.stdout)
    assert match, proc.stdout
    assert match.group(1) == name


def test_qrpo_version():
    from qrpo import __version__

    proc = run_cli("--version", module="qrpo.cli")
    assert proc.returncode == 0, proc.stderr
    assert __version__ in proc.stdout
    assert "qrpo" in proc.stdout
