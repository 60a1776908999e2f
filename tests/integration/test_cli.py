"""The console entry points, run as a user runs them (`python -m sandbox.cli ...`)."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request

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


def test_grade_with_invalid_rows_exits_one_and_lists_every_one(graded):
    proc, output, expected = graded
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert output.is_file()
    assert f"not graded (invalid or sandbox_error): {len(BAD_ROWS)}" in proc.stdout
    listed = re.findall(r"^not graded: output row (\d+): ", proc.stdout, flags=re.M)
    assert [int(i) for i in listed] == [i for i, (kind, _) in enumerate(expected, start=1) if kind == "bad"]
    assert "Traceback" not in proc.stdout + proc.stderr


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
    assert proc.returncode == 2
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
    assert proc.returncode == 2
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


def write_problem(path, task_id: str, entry_point: str, tests: list[str]) -> None:
    row = {"task_id": task_id, "prompt": "", "entry_point": entry_point,
           "tests": [{"kind": "function", "source": t} for t in tests]}
    path.write_text(json.dumps(row) + "\n")


def test_more_rows_than_the_summary_lists_say_how_many_more(tmp_path):
    write_problem(tmp_path / "p.jsonl", "double", "double", ["assert candidate(2) == 4"])
    rows = [{"task_id": f"unknown-{i}", "code": "def double(x):\n    return 2 * x\n"} for i in range(25)]
    rows.append({"task_id": "double", "code": "def double(x):\n    return 2 * x\n"})
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = run_cli("grade", "-p", str(tmp_path / "p.jsonl"), "-c", str(tmp_path / "c.jsonl"), "-o", str(tmp_path / "o.jsonl"),
                   "--backend", "process", "--workers", "1", "--no-progress")
    assert proc.returncode == 1, proc.stderr
    assert len(re.findall(r"^not graded: output row \d+: completions row \d+, field 'task_id'", proc.stdout, flags=re.M)) == 20
    assert "\n... and 5 more\n" in proc.stdout
    results = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [r["pass_rate"] for r in results] == [0.0] * 25 + [1.0]


# Solutions whose output cannot be encoded as is: lone surrogates (from bytes that are not UTF-8, or
# written as text), NUL and escape sequences, a lone surrogate in an exception message.
HOSTILE_OUTPUT = [
    "import sys\nsys.stdout.buffer.write(b'\\xed\\xa0\\x80 \\xff\\xfe'); sys.stdout.flush()\ndef echo(x):\n    return x\n",
    "import sys\nsys.stderr.write('\\ud800 lone')\n"
    "def echo(x):\n    print('\\x00\\x1b[31m\\x07\\u2028', flush=True)\n    return x\n",
    "def echo(x):\n    return '\\ud800'\n",
    "def echo(x):\n    raise ValueError('\\udcff\\x00')\n",
    "def echo(x):\n    return x\n",
]


@pytest.mark.parametrize("backend", ["process", "bubblewrap"])
def test_unencodable_output_gives_its_row_a_result_and_never_ends_the_batch(tmp_path, backend):
    backend_or_fail(backend)
    write_problem(tmp_path / "p.jsonl", "echo", "echo", ["assert candidate('a') == 'a'"])
    rows = [{"task_id": "echo", "code": c} for c in HOSTILE_OUTPUT]
    rows.insert(2, {"task_id": "\ud800-echo", "code": HOSTILE_OUTPUT[-1]})  # valid JSON (escaped), a lone surrogate once read
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    output = tmp_path / "o.jsonl"
    proc = run_cli("grade", "-p", str(tmp_path / "p.jsonl"), "-c", str(tmp_path / "c.jsonl"), "-o", str(output),
                   "--backend", backend, "--workers", "1", "--no-progress")
    assert proc.returncode == 1, proc.stderr[-3000:]  # the unknown task_id is an invalid row
    assert "Traceback" not in proc.stdout + proc.stderr
    results = [json.loads(line) for line in output.read_text(encoding="utf-8").split("\n") if line]  # not splitlines: U+2028
    assert [r["verdict"] for r in results] == ["passed", "passed", None, "wrong_answer", "runtime_error", "passed"]
    assert results[2]["task_id"] == "\ud800-echo" and "is not in the problems" in results[2]["error"]
    assert "[31m" in results[1]["stdout"]  # kept, raw or escaped as the judge chooses
    assert "ValueError" in results[4]["tests"][0]["detail"]


def start_server(tmp_path, *args: str) -> tuple[subprocess.Popen, str]:
    address_file = tmp_path / "addr"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("SANDBOX_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "sandbox.cli", "serve", "--address-file", str(address_file), *args],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not address_file.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return proc, "http://" + address_file.read_text().split()[0]


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url + "/grade", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_serve_merges_problem_files_and_grades_with_its_limits_as_defaults_and_maxima(tmp_path):
    write_problem(tmp_path / "a.jsonl", "double", "double", ["assert candidate(2) == 4"])
    write_problem(tmp_path / "b.jsonl", "nap", "nap", ["assert candidate(0.6) == 0.6", "assert candidate(0.3) == 0.3"])
    proc, url = start_server(tmp_path, "-p", str(tmp_path / "a.jsonl"), "-p", str(tmp_path / "b.jsonl"),
                             "--backend", "process", "--workers", "1", "--cpu", "1", "--memory", "512", "--wall", "1")
    try:
        with urllib.request.urlopen(url + "/health", timeout=30) as response:
            health = json.loads(response.read())
        assert health["problems"] == 2
        limits = {k: health["limits"][k] for k in ("cpu_s", "memory_mb", "wall_s")}
        assert limits == {"cpu_s": 1.0, "memory_mb": 512, "wall_s": 1.0}
        nap = "import time\ndef nap(s):\n    time.sleep(s)\n    return s\n"
        rows = [{"task_id": "double", "code": "def double(x):\n    return 2 * x\n"}, {"task_id": "nap", "code": nap}]
        status, body = post(url, {"completions": rows})
        assert status == 200, body
        assert [r["verdicts"] for r in body["results"]] == [["passed"], ["passed", "passed"]]
        # a request may lower a limit: 0.5 s of wall time is too little for the 0.6 s nap
        status, body = post(url, {"completions": rows, "limits": {"wall_s": 0.5}})
        assert status == 200, body
        assert [r["verdicts"] for r in body["results"]] == [["passed"], ["timeout", "passed"]]
        # ... never raise one, nor name one that does not exist
        for limits, named in (({"wall_s": 5}, "limits.wall_s"), ({"memory_mb": 4096}, "limits.memory_mb"),
                              ({"cpu_s": -1}, "limits.cpu_s"), ({"gpu": 1}, "limits.gpu")):
            status, body = post(url, {"completions": rows, "limits": limits})
            assert status == 400 and named in body["error"], (limits, body)
        # an inline problem cannot raise them either: its own wall limit of 100 s is capped to 1 s
        inline = {"task_id": "long-nap", "prompt": "", "entry_point": "nap", "tests": [{"kind": "function", "source":
                  "assert candidate(1.5) == 1.5"}], "limits": {"wall_s": 100, "cpu_s": 100, "solution_s": 100}}
        status, body = post(url, {"problems": [inline], "completions": [{"task_id": "long-nap", "code": nap}]})
        assert status == 200, body
        assert body["results"][0]["verdicts"] == ["timeout"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)


def test_executor_output_honours_the_umask_and_takes_any_text(submitit_installed, tmp_path):
    write_problem(tmp_path / "p.jsonl", "double", "double", ["assert candidate(2) == 4"])
    rows = [{"task_id": "double", "code": f"def double(x):\n    return 2 * x + {i % 2}\n"} for i in range(6)]
    rows.append({"task_id": "\udc80-double", "code": "def double(x):\n    return 2 * x\n"})  # a lone surrogate once read
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    output = tmp_path / "graded.jsonl"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    argv = [sys.executable, "-m", "sandbox.cli", "grade", "-p", str(tmp_path / "p.jsonl"), "-c", str(tmp_path / "c.jsonl"),
            "-o", str(output), "--backend", "process", "--executor", "local", "--jobs", "2", "--no-progress"]
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
                          preexec_fn=lambda: os.umask(0o027))
    assert proc.returncode == 1, proc.stderr[-3000:]  # one invalid row
    results = [json.loads(line) for line in output.read_text().split("\n")[:-1]]
    assert [r["pass_rate"] for r in results] == [1.0, 0.0] * 3 + [0.0]
    assert results[-1]["task_id"] == "\udc80-double" and "is not in the problems" in results[-1]["error"]
    assert stat.S_IMODE(output.stat().st_mode) == 0o640
