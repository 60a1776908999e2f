"""The grading service end to end: real servers on 127.0.0.1 (in this process or started as
`python -m sandbox.cli serve`), real pools, real clients; `--slurm` on the local cluster.

Every result that crosses the service is compared with local grading (`sandbox.api.grade`,
same backend) of the same rows, in the same order."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sandbox.api import grade as local_grade
from sandbox.datasets import load_problems
from sandbox.pool import Pool
from sandbox.problem import GradeResult, Limits, Problem, Test

from ..conftest import REPO, backend_or_fail, missing

DEMO = REPO / "sandbox" / "demo"
PROBLEMS = DEMO / "problems.jsonl"
COMPLETIONS = DEMO / "completions.jsonl"

# A solution that takes a while (sleeping, not computing) and then passes: it keeps a batch in
# flight long enough to kill its server, or to fill a server's queue.
SLOW = Problem(
    task_id="slow-double",
    prompt="",
    entry_point="double",
    tests=tuple(Test("function", f"assert candidate({i}) == {2 * i}") for i in range(3)),
    limits=Limits(solution_s=20),
)


def slow_row(delay: float, wrong: bool = False) -> dict:
    return {
        "task_id": SLOW.task_id,
        "code": f"import time\ntime.sleep({delay})\ndef double(x):\n    return 2 * x + {int(wrong)}\n",
    }


@pytest.fixture(scope="module", autouse=True)
def service_dependencies() -> None:
    for module in ("fastapi", "uvicorn", "httpx"):
        try:
            __import__(module)
        except ImportError:
            missing(f"{module} is not installed (pip install fastapi uvicorn httpx)")


@pytest.fixture(scope="module")
def problems():
    loaded = load_problems(PROBLEMS)
    assert len(loaded) == 14 and not loaded.errors
    return loaded


@pytest.fixture(scope="module")
def demo_rows() -> list[dict]:
    return [json.loads(line) for line in COMPLETIONS.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def fast_rows(demo_rows) -> list[dict]:
    """The demo rows without the one that runs into its 11 s of timeouts, plus bad rows."""
    rows = [r for r in demo_rows if r["expected_verdict"] != "timeout"]
    assert len(rows) == 20
    return rows + [{"task_id": "no-such-problem", "code": "x = 1\n"}, {"code": "print(1)\n"}]


@pytest.fixture(scope="module")
def pool():
    with Pool("process", workers=2) as warm:
        yield warm


@pytest.fixture(scope="module")
def expected(problems, fast_rows) -> list[GradeResult]:
    """Local grading of fast_rows + slow rows with the process backend: the reference."""
    table = {**problems.problems, SLOW.task_id: SLOW}
    return local_grade(table, fast_rows + [slow_row(0.0), slow_row(0.0, wrong=True)], backend="process", workers=2)


def same(result: GradeResult, exact: bool) -> tuple:
    """What must be identical between the service and local grading (times excluded). Rows
    graded in another order than the reference name other row numbers in their errors."""
    error = result.error if exact else re.sub(r"^completions row \d+", "completions row N", result.error)
    return (result.task_id, result.backend, error, result.pass_rate,
            tuple((t.verdict, t.detail, t.trusted) for t in result.tests))


def assert_same(got: list[GradeResult], want: list[GradeResult], exact: bool = False) -> None:
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert same(g, exact) == same(w, exact), f"result {i} differs: {same(g, exact)} != {same(w, exact)}"


def background(app):
    from sandbox.service import BackgroundServer

    return BackgroundServer(app).start()


# --------------------------------------------------------------------------------------------


def test_health_endpoint(pool, problems, fast_rows) -> None:
    import httpx

    from sandbox.client import SandboxClient
    from sandbox.service import create_app

    server = background(create_app(pool, problems, max_pending=77, allow_inline_problems=True))
    try:
        health = httpx.get(f"{server.url}/health", timeout=10).json()
        assert health["ok"] is True
        assert health["backend"] == "process" and health["workers"] == 2 and health["workers_alive"] == 2
        assert health["pending"] == 0 and health["max_pending"] == 77
        assert health["graded"] == 0 and health["problems"] == 14 and health["auth"] is False
        client = SandboxClient(server.url)
        rows = fast_rows[:5] + [{"task_id": "rotate-word-left", "completion": "no code here"}]
        client.grade(None, rows)
        health = client.health()[0]
        assert health["graded"] == 6 and health["judged"] == 5 and health["requests"] == 1 and health["pending"] == 0
        slow = threading.Thread(target=lambda: client.grade({SLOW.task_id: SLOW}, [slow_row(1.0)] * 3))
        slow.start()
        deadline = time.monotonic() + 20
        while (health := client.health()[0])["pending"] != 3:
            assert time.monotonic() < deadline, f"3 pending completions never showed: {health}"
            time.sleep(0.02)
        slow.join(30)
        health = client.health()[0]
        assert health["pending"] == 0 and health["graded"] == 9 and health["judged"] == 8 and health["requests"] == 2
        assert httpx.post(f"{server.url}/grade", content=b"{not json", timeout=10).status_code == 400
        bad_problem = httpx.post(
            f"{server.url}/grade",
            timeout=10,
            json={"problems": [{"task_id": "x", "tests": "nope"}], "completions": [{"task_id": "x", "code": "1"}]},
        )
        assert bad_problem.status_code == 400 and "could not be loaded" in bad_problem.json()["error"]
        assert client.health()[0]["pending"] == 0
        assert httpx.get(f"{server.url}/nothing-here", timeout=10).status_code == 404
    finally:
        server.stop()


def test_eight_concurrent_clients_match_local_grading(pool, problems, fast_rows, expected) -> None:
    """8 threads, each with its own client, grade rotated copies of the rows at once: preloaded
    problems, inline problems, task_ids + strings; every answer equals local grading, in order."""
    from sandbox.client import SandboxClient
    from sandbox.service import create_app

    rows = fast_rows + [slow_row(0.0), slow_row(0.0, wrong=True)]
    assert len(expected) == len(rows)
    server = background(create_app(pool, problems, allow_inline_problems=True))
    outcomes: dict[int, object] = {}

    def work(k: int) -> None:
        order = list(range(len(rows)))[k * 3:] + list(range(len(rows)))[:k * 3]
        mine = [rows[i] for i in order]
        try:
            with SandboxClient(server.url, batch_size=2 + k, concurrency=1 + k % 3, retries=2) as client:
                if k % 4 == 3:  # task_ids + answer strings (code rows become fenced answers), preloaded problems
                    order = [i for i in order if rows[i].get("task_id") not in (None, SLOW.task_id)]
                    texts = [rows[i].get("completion") or f"```python\n{rows[i]['code']}```" for i in order]
                    got = client.grade([rows[i]["task_id"] for i in order], texts)
                elif k % 2:
                    got = client.grade({SLOW.task_id: SLOW}, mine)  # SLOW inline, the rest preloaded
                else:
                    got = client.grade({**problems.problems, SLOW.task_id: SLOW}, mine)  # everything inline
            outcomes[k] = (order, got)
        except BaseException as exc:  # noqa: BLE001 -- reported below
            outcomes[k] = exc

    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        health = SandboxClient(server.url).health()[0]
    finally:
        server.stop()
    assert sorted(outcomes) == list(range(8))
    for k, outcome in outcomes.items():
        assert not isinstance(outcome, BaseException), f"client {k}: {outcome!r}"
        order, got = outcome
        assert_same(got, [expected[i] for i in order])
    assert health["pending"] == 0 and health["graded"] >= 8 * (len(rows) - 1)


def test_backpressure_503_then_retries_complete(pool, problems, fast_rows, expected) -> None:
    import httpx

    from sandbox.client import SandboxClient
    from sandbox.service import create_app

    server = background(create_app(pool, problems, max_pending=2, allow_inline_problems=True))
    try:
        slow = {"problems": [SLOW.to_dict()], "completions": [slow_row(1.5), slow_row(1.5)]}
        holder = threading.Thread(target=lambda: httpx.post(f"{server.url}/grade", json=slow, timeout=60))
        holder.start()
        deadline = time.monotonic() + 20
        while httpx.get(f"{server.url}/health", timeout=10).json()["pending"] < 2:
            assert time.monotonic() < deadline, "the slow batch never became pending"
            time.sleep(0.02)
        busy = httpx.post(f"{server.url}/grade", json={"completions": fast_rows[:1]}, timeout=10)
        assert busy.status_code == 503 and int(busy.headers["retry-after"]) >= 1
        too_big = httpx.post(f"{server.url}/grade", json={"completions": fast_rows[:3]}, timeout=10)
        assert too_big.status_code == 413
        holder.join(30)

        # 8 clients against 2 pending slots: many 503s, and retries still finish everything.
        every = fast_rows + [slow_row(0.0), slow_row(0.0, wrong=True)]
        picked = list(range(0, len(every), 2)) + [len(every) - 1]  # every other row (one bad), both slow ones
        rows = [every[i] for i in picked]
        clients = [SandboxClient(server.url, batch_size=4, retries=200, backoff=0.02, max_backoff=0.3) for _ in range(8)]
        outcomes: dict[int, object] = {}

        def work(k: int) -> None:
            try:
                outcomes[k] = clients[k].grade({SLOW.task_id: SLOW}, rows)  # 4 > 2: the client splits on 413
            except BaseException as exc:  # noqa: BLE001 -- reported below
                outcomes[k] = exc

        threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(150)
        health = httpx.get(f"{server.url}/health", timeout=10).json()
    finally:
        server.stop()
    for k in range(8):
        assert not isinstance(outcomes.get(k), BaseException) and k in outcomes, f"client {k}: {outcomes.get(k)!r}"
        assert_same(outcomes[k], [expected[i] for i in picked])
    assert sum(c.stats["busy"] for c in clients) > 0 and health["rejected"] > 1
    assert sum(c.stats["splits"] for c in clients) > 0
    assert health["pending"] == 0


def test_token_required_off_loopback_and_checked(pool, problems, fast_rows, expected, tmp_path, monkeypatch) -> None:
    import httpx

    from sandbox.client import SandboxAuthError, SandboxClient
    from sandbox.service import check_binding, create_app, is_loopback, serve

    # Nothing here can listen on a non-loopback interface even if the refusal were broken: the
    # CLI gets addresses this machine cannot bind (TEST-NET-1, an unresolvable name), and the
    # in-process wildcard binds would hit a bind_socket that fails the test.
    env = {k: v for k, v in os.environ.items() if k != "SANDBOX_TOKEN"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    for host in ("192.0.2.1", "no-such-host.invalid"):
        run = subprocess.run([sys.executable, "-m", "sandbox.cli", "serve", "--host", host, "--backend", "process"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False)
        assert run.returncode != 0 and "without a token" in run.stderr, (host, run.returncode, run.stderr[-500:])

    def no_bind(host: str, port: int) -> None:
        raise AssertionError(f"the server tried to bind {host}:{port} without a token")

    monkeypatch.setattr("sandbox.service.run.bind_socket", no_bind)
    for host in ("0.0.0.0", "::", "192.0.2.1", "example.org", "10.0.0.1"):
        with pytest.raises(ValueError, match="without a token"):
            check_binding(host, None)
        with pytest.raises(ValueError, match="without a token"):
            serve(host=host, backend="process")
    monkeypatch.undo()
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.5.5.5")
    check_binding("0.0.0.0", "a-token")  # allowed with a token

    server = background(create_app(pool, problems, token="s3cret-token"))
    try:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "s3cret-token"},
            {"Authorization": "Bearer s3cret-token2"},
        ):
            assert httpx.get(f"{server.url}/health", headers=headers, timeout=10).status_code == 401
            response = httpx.post(f"{server.url}/grade", json={"completions": fast_rows[:1]}, headers=headers, timeout=10)
            assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        ok = httpx.get(f"{server.url}/health", headers={"Authorization": "Bearer s3cret-token"}, timeout=10)
        assert ok.status_code == 200 and ok.json()["auth"] is True
        with pytest.raises(SandboxAuthError):
            SandboxClient(server.url, token="wrong").grade(None, fast_rows[:2])
        monkeypatch.delenv("SANDBOX_TOKEN", raising=False)
        with pytest.raises(SandboxAuthError):
            SandboxClient(server.url).grade(None, fast_rows[:2])
        address = tmp_path / "token.addr"
        from sandbox.service import write_address_file

        write_address_file(address, server.address, "s3cret-token")
        assert stat.S_IMODE(address.stat().st_mode) == 0o600
        got = SandboxClient(address, batch_size=3).grade(None, fast_rows)  # the token comes from the address file
        assert_same(got, expected[:len(fast_rows)], exact=True)  # row numbers in errors count over all batches
        assert any(r.error.startswith("completions row 21,") for r in got)
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------
# Servers as processes


def start_server(
    tmp_path: Path, name: str, *extra: str, token: str | None = None, backend: str = "process"
) -> tuple[subprocess.Popen, Path]:
    address = tmp_path / f"{name}.addr"
    env = {k: v for k, v in os.environ.items() if k != "SANDBOX_TOKEN"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if token:
        env["SANDBOX_TOKEN"] = token
    log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 -- kept open for the process
    process = subprocess.Popen(
        [sys.executable, "-W", "ignore", "-m", "sandbox.cli", "serve", "--backend", backend, "--workers", "1",
         "--problems", str(PROBLEMS), "--address-file", str(address), "--log-level", "warning",
         "--allow-inline-problems", *extra],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 90
    while not address.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"server {name} did not start (exit {process.poll()}): {(tmp_path / f'{name}.log').read_text()[-2000:]}")
        time.sleep(0.1)
    return process, address


def judge_pids_of(pid: int) -> set[int]:
    """Processes whose parent is `pid` (the judges a server spawned)."""
    children = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.add(int(entry.name))
    return children


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_killed_server_fails_over_to_another(problems, fast_rows, expected, tmp_path) -> None:
    """Two `sandbox serve` processes (token in the address file); one is SIGKILLed while a
    client batch is in flight on it; the client finishes on the other, results unchanged."""
    import httpx

    from sandbox.client import SandboxClient
    from sandbox.service import read_address_file

    token = "failover-token"
    servers = [start_server(tmp_path, name, token=token) for name in ("a", "b")]
    try:
        for _, address in servers:
            assert stat.S_IMODE(address.stat().st_mode) == 0o600
            assert read_address_file(address)[1] == token
        (victim, victim_address), (_, _) = servers
        victim_url = "http://" + read_address_file(victim_address)[0]
        headers = {"Authorization": f"Bearer {token}"}
        judges = judge_pids_of(victim.pid)
        assert judges, "the server has no judge processes"

        slow_rows = [slow_row(0.6), slow_row(0.6, wrong=True)] * 3
        rows = slow_rows + fast_rows  # the slow rows come first: the first batches take a while
        want = [expected[-2], expected[-1]] * 3 + expected[:len(fast_rows)]
        client = SandboxClient([victim_address, servers[1][1]], batch_size=2, concurrency=2, retries=6, backoff=0.1, timeout=60)
        outcome: dict[str, object] = {}

        def work() -> None:
            try:
                outcome["results"] = client.grade({SLOW.task_id: SLOW}, rows)
            except BaseException as exc:  # noqa: BLE001 -- reported below
                outcome["error"] = exc

        worker = threading.Thread(target=work)
        worker.start()
        deadline = time.monotonic() + 30
        while httpx.get(f"{victim_url}/health", headers=headers, timeout=10).json()["pending"] == 0:
            assert time.monotonic() < deadline and worker.is_alive(), "no batch ever reached the first server"
            time.sleep(0.01)
        victim.send_signal(signal.SIGKILL)  # mid-batch: a slow row is being graded there
        victim.wait(10)
        worker.join(120)
        assert not worker.is_alive()
        assert "error" not in outcome, f"the client failed: {outcome.get('error')!r}"
        assert_same(outcome["results"], want)
        assert client.stats["failovers"] >= 1 and client.stats["retries"] >= 1
        survivor_health = client.health()
        assert survivor_health[0]["ok"] is False and survivor_health[1]["ok"] is True
        deadline = time.monotonic() + 10  # the dead server's judges die with it (PDEATHSIG)
        while any(running(pid) for pid in judges):
            assert time.monotonic() < deadline, f"judges of the killed server survive: {judges}"
            time.sleep(0.1)
    finally:
        for process, _ in servers:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    # A clean stop (SIGTERM) removes the address file; the SIGKILLed server's stays behind.
    assert servers[0][1].exists() and not servers[1][1].exists()


def test_bubblewrap_server_matches_local_bubblewrap(problems, demo_rows, tmp_path) -> None:
    backend_or_fail("bubblewrap")
    from sandbox.client import SandboxClient

    rows = [r for r in demo_rows if r["expected_verdict"] != "timeout"][::2]
    want = local_grade(problems, rows, backend="bubblewrap", workers=1)
    process, address = start_server(tmp_path, "bwrap", backend="bubblewrap")
    try:
        got = SandboxClient(address, batch_size=3).grade(None, rows)
    finally:
        process.terminate()
        process.wait(15)
    assert {r.backend for r in got if r.backend} == {"bubblewrap"}
    assert_same(got, want)
    assert [round(r.pass_rate, 6) for r in got] == [round(r["expected_pass_rate"], 6) for r in rows]


# --------------------------------------------------------------------------------------------
# SLURM


def slurm_environment() -> dict[str, str]:
    env = dict(os.environ)
    if not env.get("SLURM_CONF"):
        state = Path(env.get("QRPO_SLURM_DIR") or "/var/tmp/qrpo-slurm")
        if (state / "etc" / "slurm.conf").is_file():
            env["SLURM_CONF"] = str(state / "etc" / "slurm.conf")
        else:
            missing("SLURM_CONF is not set and no local cluster at /var/tmp/qrpo-slurm (slurm/local-cluster/up)")
    if not shutil.which("sbatch") or not shutil.which("squeue"):
        missing("the SLURM client commands (sbatch, squeue) are not installed")
    try:
        import submitit  # noqa: F401
    except ImportError:
        missing("submitit is not installed")
    probe = subprocess.run(["sinfo", "-h", "-o", "%a %t"], env=env, capture_output=True, text=True, timeout=30, check=False)
    if probe.returncode != 0 or "up" not in probe.stdout:
        missing(f"the SLURM cluster does not answer (sinfo: {probe.stderr.strip()[-300:]})")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("SANDBOX_TOKEN", None)
    return env


def test_serve_as_slurm_job(problems, fast_rows, expected, tmp_path) -> None:
    from sandbox.client import SandboxClient

    env = slurm_environment()
    address = tmp_path / "slurm.addr"
    address.write_text("127.0.0.1:1\n")  # stale: must be replaced, never trusted
    command = [sys.executable, "-W", "ignore", "-m", "sandbox.cli", "serve", "--slurm", "--backend", "process", "--cpus", "1",
               "--problems", str(PROBLEMS), "--address-file", str(address), "--log-dir", str(tmp_path / "logs"),
               "--time", "10", "--job-name", "sandbox-serve-test", "--wait", "150"]
    job_id = None
    try:
        run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=200, check=False)
        for line in run.stdout.splitlines():
            if line.startswith("job_id:"):
                job_id = line.split(":", 1)[1].strip()
        assert run.returncode == 0, f"exit {run.returncode}: {run.stdout[-1000:]} {run.stderr[-2000:]}"
        assert job_id and job_id.isdigit()
        advertised = [line.split(":", 1)[1].strip() for line in run.stdout.splitlines() if line.startswith("address:")]
        assert advertised and advertised[0] != "127.0.0.1:1" and address.read_text().splitlines()[0] == advertised[0]
        assert stat.S_IMODE(address.stat().st_mode) == 0o600
        squeue = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%T"], env=env, capture_output=True, text=True, timeout=30, check=False
        )
        assert squeue.stdout.strip() == "RUNNING", squeue.stdout + squeue.stderr
        got = SandboxClient(address, batch_size=8, timeout=120).grade(None, fast_rows)
        assert_same(got, expected[:len(fast_rows)], exact=True)
    finally:
        if job_id:
            subprocess.run(["scancel", job_id], env=env, capture_output=True, timeout=30, check=False)
    deadline = time.monotonic() + 60
    while address.exists():  # a clean stop removes the address file
        assert time.monotonic() < deadline, "the address file survived scancel"
        time.sleep(0.1)
    while True:
        squeue = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%T"], env=env, capture_output=True, text=True, timeout=30, check=False
        )
        if not squeue.stdout.strip():
            break
        assert time.monotonic() < deadline, f"job {job_id} still listed after scancel: {squeue.stdout}"
        time.sleep(0.5)


def test_serve_sbatch_template(problems, fast_rows, expected, tmp_path) -> None:
    """slurm/templates/serve.sbatch by hand: it listens (on loopback here), serves a client,
    and a scancel stops it cleanly (its address file goes away)."""
    from sandbox.client import SandboxClient

    env = slurm_environment()
    env.update({"SANDBOX_HOST": "127.0.0.1", "QRPO_PYTHON": sys.executable, "SANDBOX_TOKEN": "template-token"})
    address = tmp_path / "template.addr"
    run = subprocess.run(["sbatch", "--parsable", "--cpus-per-task=1", "--time=10", f"--output={tmp_path}/serve-%j.out",
                          str(REPO / "slurm" / "templates" / "serve.sbatch"), str(address), str(PROBLEMS), "process"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    job_id = run.stdout.strip().split(";")[0]
    try:
        deadline = time.monotonic() + 150
        while not address.exists():
            log = next(tmp_path.glob("serve-*.out"), None)
            assert time.monotonic() < deadline, f"no address file; job log: {log.read_text()[-2000:] if log else '-'}"
            time.sleep(0.25)
        assert stat.S_IMODE(address.stat().st_mode) == 0o600 and address.read_text().splitlines()[1] == "template-token"
        client = SandboxClient(address, batch_size=10)
        assert client.health()[0]["auth"] is True
        assert_same(client.grade(None, fast_rows), expected[:len(fast_rows)], exact=True)
    finally:
        subprocess.run(["scancel", job_id], env=env, capture_output=True, timeout=30, check=False)
    deadline = time.monotonic() + 30
    while address.exists():  # SIGTERM: uvicorn stops, the judges stop, the file is removed
        assert time.monotonic() < deadline, "the address file survived scancel"
        time.sleep(0.1)


# --------------------------------------------------------------------------------------------
# TRL reward function


def trl_columns(rows: list[dict]) -> tuple[list[str], dict[str, list]]:
    texts = [r.get("completion") or f"```python\n{r['code']}```" for r in rows]
    return texts, {"task_id": [r["task_id"] for r in rows], "note": [r.get("note") for r in rows]}


def chat(texts: list[str]) -> list[list[dict]]:
    return [[{"role": "assistant", "content": t}] for t in texts]


def test_reward_with_local_pool(problems, demo_rows) -> None:
    from sandbox.rewards import SandboxReward

    texts, columns = trl_columns(demo_rows)  # all demo rows, the timeout one included
    wanted = [r["expected_pass_rate"] for r in demo_rows]
    reward = SandboxReward(PROBLEMS, backend="process", workers=2)
    try:
        assert reward.__name__ == "sandbox_pass_rate"
        got = reward(
            prompts=[[{"role": "user", "content": "..."}]] * len(texts),
            completions=texts,
            completion_ids=[[1]] * len(texts),
            trainer_state=object(),
            **columns,
        )
        assert got == pytest.approx(wanted, abs=1e-5)
        pool = reward._pool
        fast = [i for i, r in enumerate(demo_rows) if r["expected_verdict"] != "timeout"]
        sub = {k: [v[i] for i in fast] for k, v in columns.items()}
        got_chat = reward(prompts=None, completions=chat([texts[i] for i in fast]), **sub)
        assert got_chat == pytest.approx([wanted[i] for i in fast], abs=1e-5)
        assert reward._pool is pool  # the same warm pool across calls
        # Problems inline as a column (Problem dicts), no constructor problems.
        inline = SandboxReward(backend="process", workers=1)
        try:
            got_inline = inline(prompts=None, completions=[texts[i] for i in fast[:6]],
                                problem=[problems[demo_rows[i]["task_id"]].to_dict() for i in fast[:6]])
        finally:
            inline.close()
        assert got_inline == pytest.approx([wanted[i] for i in fast[:6]], abs=1e-5)
        with pytest.raises(ValueError, match="no problem"):
            reward(prompts=None, completions=["x"], task_id=["no-such-task"])
    finally:
        reward.close()


def test_reward_through_a_client(pool, problems, demo_rows) -> None:
    from sandbox.client import SandboxClient
    from sandbox.rewards import SandboxReward
    from sandbox.service import create_app

    rows = [r for r in demo_rows if r["expected_verdict"] != "timeout"]
    texts, columns = trl_columns(rows)
    wanted = [r["expected_pass_rate"] for r in rows]
    server = background(create_app(pool, problems, allow_inline_problems=True))
    try:
        client = SandboxClient(server.url, batch_size=5)
        preloaded = SandboxReward(client=client)  # task_ids resolved by the server
        assert preloaded(prompts=None, completions=texts, **columns) == pytest.approx(wanted, abs=1e-5)
        assert preloaded(prompts=None, completions=chat(texts), **columns) == pytest.approx(wanted, abs=1e-5)
        # Problems held by the reward and sent inline; an empty server table.
        bare = background(create_app(pool, allow_inline_problems=True))
        try:
            inline = SandboxReward(PROBLEMS, client=SandboxClient(bare.url, batch_size=7))
            assert inline(prompts=None, completions=chat(texts), **columns) == pytest.approx(wanted, abs=1e-5)
            assert SandboxClient(bare.url).health()[0]["graded"] == len(rows)
        finally:
            bare.stop()
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------
# Fairness and cancellation (issue 12)

# One test that takes as long as its code sleeps (up to 60 s): a stand-in for a looping solution.
SLEEPY = Problem(
    task_id="sleepy",
    prompt="",
    entry_point="f",
    tests=(Test("function", "assert candidate() == 1"),),
    limits=Limits(cpu_s=60, wall_s=60, solution_s=90),
)


def sleepy_row(delay: float) -> dict:
    return {"task_id": SLEEPY.task_id, "code": f"import time\ntime.sleep({delay})\ndef f():\n    return 1\n"}


def timed_grade(url: str, rows: list[dict], **headers: str) -> tuple[float, list[GradeResult]]:
    import httpx

    start = time.monotonic()
    response = httpx.post(f"{url}/grade", json={"completions": rows}, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    return time.monotonic() - start, [GradeResult.from_dict(r) for r in response.json()["results"]]


def test_disconnected_client_work_stops_and_next_request_is_prompt(pool, problems, fast_rows, expected) -> None:
    """A client whose request loops gives up after 2 s (its timeout closes the connection): the
    server cancels its queued and running work, the judges go idle within 1 s, and the next
    request is graded at the latency it had before."""
    import httpx

    from sandbox.service import create_app

    server = background(create_app(pool, {**problems.problems, SLEEPY.task_id: SLEEPY}))
    try:
        baseline, got = timed_grade(server.url, fast_rows[:4])
        assert_same(got, expected[:4], exact=True)
        restarts = pool.restarts
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.url}/grade", json={"completions": [sleepy_row(50)] * 6}, timeout=httpx.Timeout(2.0, connect=10))
        gone = time.monotonic()
        assert pool.running == 2, "both judges should have been grading the looping rows"
        while pool.pending:
            assert time.monotonic() - gone < 1.0, f"work of a disconnected client still there: {pool.pending} items"
            time.sleep(0.01)
        idle = time.monotonic() - gone
        latency, got = timed_grade(server.url, fast_rows[:4])
        assert_same(got, expected[:4], exact=True)
        assert latency < baseline * 3 + 1.0, f"next request took {latency:.2f} s (before: {baseline:.2f} s)"
        health = httpx.get(f"{server.url}/health", timeout=10).json()
        assert health["pending"] == 0 and health["cancelled"] == 1 and health["running"] == 0
        assert pool.restarts == restarts  # cancelled judges are replaced, not counted as failures
        print(f"judges idle {idle:.3f} s after the disconnect; next request {latency:.2f} s (before {baseline:.2f} s)")
    finally:
        server.stop()


def test_flood_from_one_client_does_not_starve_another(pool, problems, fast_rows, expected) -> None:
    """One client floods the server with 3 requests of 8 rows that each take 2 s; another's small
    request, sent after the flood, waits at most about one item per worker (2 s), not for the
    flood (first in, first out it would wait ~24 s for the 24 items submitted ahead of it)."""
    from sandbox.service import create_app

    server = background(create_app(pool, {**problems.problems, SLEEPY.task_id: SLEEPY}))
    flood: list[threading.Thread] = []
    try:
        baseline, _ = timed_grade(server.url, fast_rows[:2])
        for _ in range(3):
            t = threading.Thread(target=timed_grade, args=(server.url, [sleepy_row(2.0)] * 8), kwargs={"x-sandbox-client": "flood"})
            t.start()
            flood.append(t)
        deadline = time.monotonic() + 20
        while pool.pending < 16:
            assert time.monotonic() < deadline, f"the flood never queued up: {pool.pending}"
            time.sleep(0.02)
        latency, got = timed_grade(server.url, fast_rows[:2], **{"x-sandbox-client": "honest"})
        assert_same(got, expected[:2], exact=True)
        queued = pool.pending
        assert latency < baseline + 3.5, f"the honest request took {latency:.2f} s behind the flood (alone: {baseline:.2f} s)"
        assert queued >= 8, f"the flood should still be queued when the honest request is done ({queued})"
        print(f"honest request: {latency:.2f} s (alone {baseline:.2f} s) with {queued} flood items still pending")
    finally:
        for t in flood:
            t.join(60)
        server.stop()
