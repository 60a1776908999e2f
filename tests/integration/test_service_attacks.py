"""Attacks on `sandbox serve` by its clients (issue 12): one client must not change another's
grades, slow or huge requests must not starve the server, one bad row must not fail a request.

Each attack is first shown to work where the defence is absent (a shared judge, the raw
serialiser), so that a test passing means the defence held, not that the attack was a dud."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox.api import grade as local_grade
from sandbox.pool import Pool
from sandbox.problem import GradeResult, Problem, Test, TestResult, Verdict

from ..conftest import REPO, missing

# Trusted code of an inline problem that patches the judge it runs in: afterwards every verdict
# that judge gives is "passed".
PATCH = '''
import sys
for _name, _mod in list(sys.modules.items()):
    if _name.endswith("judge.server") and hasattr(_mod, "_result"):
        _orig = _mod._result
        _mod._result = lambda verdict, detail, time_s=0.0, trusted=True, _o=_orig: _o("passed", "", time_s, trusted)
'''
EVIL = Problem(task_id="evil", prompt="", entry_point="f", tests=(Test("function", "assert candidate() == 1"),), preamble=PATCH)
VICTIM = Problem(task_id="victim", prompt="", entry_point="g", tests=tuple(Test("function", f"assert candidate({i}) == {i + 1}")
                                                                         for i in range(3)))
WRONG = {"task_id": "victim", "code": "def g(x):\n    return x\n"}
RIGHT = {"task_id": "victim", "code": "def g(x):\n    return x + 1\n"}
EVIL_ROW = {"task_id": "evil", "code": "def f():\n    return 1\n"}


@pytest.fixture(scope="module", autouse=True)
def service_dependencies() -> None:
    for module in ("fastapi", "uvicorn", "httpx"):
        try:
            __import__(module)
        except ImportError:
            missing(f"{module} is not installed (pip install fastapi uvicorn httpx)")


@pytest.fixture(scope="module")
def problems_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("problems") / "victim.jsonl"
    path.write_text(json.dumps(VICTIM.to_dict()) + "\n", encoding="utf-8")
    return path


def start_server(tmp_path: Path, problems: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    address = tmp_path / "server.addr"
    env = {k: v for k, v in os.environ.items() if k != "SANDBOX_TOKEN"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 -- kept open for the process
    process = subprocess.Popen(
        [sys.executable, "-W", "ignore", "-m", "sandbox.cli", "serve", "--backend", "process", "--workers", "2",
         "--problems", str(problems), "--address-file", str(address), "--log-level", "warning", *extra],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 90
    while not address.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
        time.sleep(0.1)
    return process, "http://" + address.read_text().split()[0]


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def pass_rates(url: str, body: dict, status: int = 200) -> list[float]:
    import httpx

    response = httpx.post(f"{url}/grade", json=body, timeout=60)
    assert response.status_code == status, response.text
    return [r["pass_rate"] for r in response.json()["results"]] if status == 200 else []


def test_inline_problem_cannot_patch_another_clients_grade(problems_file, tmp_path) -> None:
    # The attack is real: in a shared judge it makes a wrong solution score 1.0.
    with Pool("process", workers=1) as shared:
        table = {"evil": EVIL, "victim": VICTIM}
        assert local_grade(table, [WRONG], pool=shared)[0].pass_rate == 0.0
        local_grade(table, [EVIL_ROW], pool=shared)
        assert local_grade(table, [WRONG], pool=shared)[0].pass_rate == 1.0, "the patch no longer works: update PATCH"

    # Off by default: refused (403) before anything runs.
    process, url = start_server(tmp_path, problems_file)
    try:
        import httpx

        refused = httpx.post(f"{url}/grade", json={"problems": [EVIL.to_dict()], "completions": [EVIL_ROW]}, timeout=30)
        assert refused.status_code == 403 and "--allow-inline-problems" in refused.json()["error"]
        refused = httpx.post(f"{url}/grade", json={"completions": [EVIL_ROW | {"problem": EVIL.to_dict()}]}, timeout=30)
        assert refused.status_code == 403
        assert pass_rates(url, {"completions": [WRONG, RIGHT]}) == [0.0, 1.0]
        assert httpx.get(f"{url}/health", timeout=10).json()["judged"] == 2  # the refused rows never ran
    finally:
        stop(process)

    # Allowed: the inline problem runs in judges of its own; the shared judges stay honest.
    process, url = start_server(tmp_path, problems_file, "--allow-inline-problems")
    try:
        for _ in range(3):
            assert pass_rates(url, {"problems": [EVIL.to_dict()], "completions": [EVIL_ROW, EVIL_ROW]}) == [1.0, 1.0]
            assert pass_rates(url, {"completions": [WRONG, WRONG, RIGHT, WRONG]}) == [0.0, 0.0, 1.0, 0.0]
        # In one request with the attacker's problem, the victim's row is graded in that request's
        # own judges only: the request may grade itself wrongly, nobody else.
        pass_rates(url, {"problems": [EVIL.to_dict()], "completions": [EVIL_ROW, WRONG, WRONG, WRONG]})
        assert pass_rates(url, {"completions": [WRONG, WRONG]}) == [0.0, 0.0]
    finally:
        stop(process)


def test_half_open_connections_do_not_stop_health(problems_file, tmp_path) -> None:
    """1,000 connections that send half a request head and wait: /health still answers within 1 s."""
    import httpx

    from sandbox.service.run import raise_open_files_limit

    if raise_open_files_limit() < 1200:
        missing("this process may not open 1,200 files (ulimit -Hn)")
    process, url = start_server(tmp_path, problems_file)
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sockets: list[socket.socket] = []
    try:
        for _ in range(1000):
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.sendall(b"POST /grade HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")  # no end of head
            sockets.append(sock)
        for _ in range(5):
            start = time.monotonic()
            response = httpx.get(f"{url}/health", timeout=1.0)
            assert response.status_code == 200 and response.json()["ok"] is True
            assert time.monotonic() - start < 1.0
            time.sleep(0.2)
        assert pass_rates(url, {"completions": [RIGHT]}) == [1.0]  # and grading still works
    finally:
        for sock in sockets:
            sock.close()
        stop(process)


def test_oversized_body_is_refused_before_it_is_read(problems_file, tmp_path) -> None:
    """A 256 MiB body announced by Content-Length, and a chunked one without it: 413, and the
    server's memory grows by less than 64 MiB."""
    import httpx

    process, url = start_server(tmp_path, problems_file, "--max-body-mb", "8")
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        assert pass_rates(url, {"completions": [RIGHT]}) == [1.0]
        before = rss_mb(process.pid)
        size = 256 << 20
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            head = f"POST /grade HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
            sock.sendall(head.encode())
            sent = 0
            chunk = b"[" * (1 << 20)
            try:
                while sent < size:
                    sock.sendall(chunk)
                    sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            sock.settimeout(10)
            answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert sent < size, "the server read the whole 256 MiB body"

        def stream():
            for _ in range(256):
                yield b"[" * (1 << 20)

        try:
            response = httpx.post(f"{url}/grade", content=stream(), timeout=60)
            assert response.status_code == 413, response.text
        except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
            pass  # the server answered 413 and closed while the client was still sending
        grown = rss_mb(process.pid) - before
        assert grown < 64, f"the server's RSS grew by {grown:.0f} MiB"
        assert pass_rates(url, {"completions": [RIGHT]}) == [1.0]
        print(f"RSS grew by {grown:.1f} MiB; {sent >> 20} MiB of the announced body were sent before the refusal")
    finally:
        stop(process)


def test_one_poisoned_row_returns_every_other_row(problems_file, tmp_path) -> None:
    """Rows with lone surrogates (in the code, in the output, in an exception), a malformed row
    and a row the judge cannot run, between good rows: 200, every row answered, the good ones pass."""
    import httpx

    from sandbox.service.app import results_body

    # The serialiser: a result holding a lone surrogate (as a solution's output can) is escaped,
    # where plain UTF-8 JSON fails, as the old server did with HTTP 500.
    poisoned = GradeResult(task_id="victim", tests=(TestResult(Verdict.WRONG_ANSWER, detail="got '\udcff'"),), backend="process",
                           stdout="\ud800 out")
    with pytest.raises(UnicodeEncodeError):
        json.dumps(poisoned.to_dict(), ensure_ascii=False).encode("utf-8")
    parsed = json.loads(results_body([poisoned]))["results"][0]
    assert parsed["stdout"] == "\ud800 out" and parsed["tests"][0]["detail"] == "got '\udcff'"

    process, url = start_server(tmp_path, problems_file)
    try:
        rows = [RIGHT,
                {"task_id": "victim", "code": "def g(x):\n    return '\udcff'\n"},
                RIGHT,
                {"task_id": "victim", "code": "import sys\nsys.stdout.buffer.write(b'\\xff\\xfe')\nprint('\udc80')\n"
                                              "def g(x):\n    return x + 1\n"},
                {"task_id": "victim", "code": "def g(x):\n    raise ValueError('\ud800')\n"},
                {"task_id": "victim", "code": {"not": "code"}},
                {"task_id": "victim", "code": "\x00"},
                RIGHT]
        response = httpx.post(f"{url}/grade", content=json.dumps({"completions": rows}).encode(), timeout=60,
                              headers={"Content-Type": "application/json"})
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert len(results) == len(rows)
        assert [results[i]["pass_rate"] for i in (0, 2, 7)] == [1.0, 1.0, 1.0]
        assert [results[i]["pass_rate"] for i in (1, 4, 5, 6)] == [0.0, 0.0, 0.0, 0.0]
        assert "field 'code' must be a string" in results[5]["error"]
    finally:
        stop(process)
