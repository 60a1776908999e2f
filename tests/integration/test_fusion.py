"""SandboxFusion's own client (the unmodified `sandbox-fusion` package from PyPI) against a real
`sandbox serve` on bubblewrap and on apptainer: /run_code with correct, wrong, looping, crashing
and printing programs, /submit, /get_prompts and their async variants."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from ..conftest import REPO, backend_or_fail, missing
from .test_service import COMPLETIONS, PROBLEMS, start_server

APPS = "apps/mapcoder_apps_selected150.jsonl"


@pytest.fixture(scope="module")
def sf():
    try:
        import sandbox_fusion
    except ImportError:
        missing("sandbox-fusion is not installed (pip install -e .[dev])")
    return sandbox_fusion


@pytest.fixture(scope="module", params=["bubblewrap", "apptainer"])
def endpoint(request, tmp_path_factory, shared_data):
    backend = backend_or_fail(request.param)
    from sandbox.service import read_address_file

    tmp = tmp_path_factory.mktemp(backend)
    process, address = start_server(tmp, backend, "--problems", str(shared_data / APPS), backend=backend)
    try:
        yield f"http://{read_address_file(address)[0]}"
    finally:
        process.terminate()
        process.wait(15)


def run(sf, endpoint, code, stdin="", timeout=2.0, **kw):
    request = sf.RunCodeRequest(code=code, stdin=stdin, language="python", run_timeout=timeout, **kw)
    return sf.run_code(request, endpoint=endpoint, max_attempts=1)


def test_run_code_correct_wrong_looping_crashing_printing(sf, endpoint) -> None:
    reverse = "s = input()\nprint(s[::-1])\n"
    ok = run(sf, endpoint, reverse, "stressed\n")
    assert ok.status == "Success" and ok.run_result.status == "Finished" and ok.run_result.return_code == 0
    assert ok.run_result.stdout == "desserts\n" and ok.run_result.stderr == ""
    assert 0 <= ok.run_result.execution_time < 2

    wrong = run(sf, endpoint, "s = input()\nprint(s)\n", "stressed\n")  # runs fine, prints the wrong thing
    assert wrong.status == "Success" and wrong.run_result.stdout == "stressed\n"

    loop = run(sf, endpoint, "while True:\n    pass\n", timeout=1.0)
    assert loop.status == "Failed" and loop.run_result.status == "TimeLimitExceeded"
    assert sf.summary_run_code_result(loop, sf.SummaryMapping(RunTimeout="tle")) == "tle"

    crash = run(sf, endpoint, "print('before')\nx = [1][3]\n")
    assert crash.status == "Failed" and crash.run_result.status == "Finished" and crash.run_result.return_code == 1
    assert crash.run_result.stdout == "before\n"
    assert "IndexError" in crash.run_result.stderr and 'File "main.py", line 2' in crash.run_result.stderr

    syntax = run(sf, endpoint, "def f(:\n")
    assert syntax.status == "Failed" and syntax.run_result.return_code == 1 and "SyntaxError" in syntax.run_result.stderr

    printing = run(sf, endpoint, "import sys\nfor i in range(3000):\n    print(i)\nprint('oops', file=sys.stderr)\nsys.exit(3)\n")
    assert printing.status == "Failed" and printing.run_result.return_code == 3
    assert printing.run_result.stdout == "".join(f"{i}\n" for i in range(3000))
    assert printing.run_result.stderr == "oops\n"


def test_run_code_files_memory_and_languages(sf, endpoint) -> None:
    files = {"data/in.txt": base64.b64encode(b"41").decode()}
    code = "n = int(open('data/in.txt').read())\nopen('out.txt', 'w').write(str(n + 1))\n"
    done = run(sf, endpoint, code, files=files, fetch_files=["out.txt", "missing.txt"])
    assert done.status == "Success" and base64.b64decode(done.files["out.txt"]) == b"42" and "missing.txt" not in done.files

    big = sf.run_code(sf.RunCodeRequest(code="x = bytearray(400 * 2**20)\nprint(len(x))\n", language="python"),
                      endpoint=endpoint, max_attempts=1)
    assert big.status == "Success"  # the server's default memory limit (1 GiB)
    import requests

    small = requests.post(f"{endpoint}/run_code", json={"code": "x = bytearray(400 * 2**20)\n", "language": "python",
                                                        "memory_limit_MB": 128}, timeout=30).json()
    assert small["status"] == "Failed" and "MemoryError" in small["run_result"]["stderr"]

    with pytest.raises(Exception, match="not supported"):  # in the schema's enum, not served here: SandboxError
        sf.run_code(sf.RunCodeRequest(code="int main(){}", language="cpp"), endpoint=endpoint, max_attempts=1)
    unknown = requests.post(f"{endpoint}/run_code", json={"code": "1", "language": "cobol"}, timeout=30)
    assert unknown.status_code == 422 and "language" in unknown.text  # outside the enum: a validation error


def test_run_code_async_concurrent(sf, endpoint) -> None:
    from sandbox_fusion import async_client

    async def main():
        requests = [sf.RunCodeRequest(code=f"print({i} * int(input()))", stdin="3\n", language="python") for i in range(8)]
        return await asyncio.gather(*(async_client.run_code(r, endpoint=endpoint, max_attempts=1) for r in requests))

    results = asyncio.run(main())
    assert [r.run_result.stdout for r in results] == [f"{3 * i}\n" for i in range(8)]


def test_datasets_prompts_and_submit(sf, endpoint, shared_data) -> None:
    from sandbox_fusion import async_client

    from sandbox.datasets import load_problems

    datasets = __import__("requests").get(f"{endpoint}/list_datasets", timeout=30).json()
    assert "sandbox" in datasets and "leetcode" in datasets and "stdio" in datasets
    config = sf.TestConfig()
    prompts = sf.get_prompts(sf.GetPromptsRequest(dataset="leetcode", config=config), endpoint=endpoint)
    demo = load_problems(PROBLEMS).problems
    assert [p.id for p in prompts] == list(demo) and prompts[0].prompt == demo[prompts[0].id].prompt
    some = asyncio.run(async_client.get_prompts(sf.GetPromptsRequest(dataset="stdio", config=config, offset=2, limit=3),
                                                endpoint=endpoint))
    apps = list(load_problems(shared_data / APPS).problems)
    assert [p.id for p in some] == apps[2:5]
    one = sf.get_prompt_by_id(sf.GetPromptByIdRequest(dataset="sandbox", config=config, id=apps[0]), endpoint=endpoint)
    assert one.id == apps[0] and one.labels["tests"] > 0

    rows = [json.loads(line) for line in COMPLETIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if r["expected_verdict"] != "timeout" and "completion" in r]
    for row in rows:
        result = sf.submit(sf.SubmitRequest(dataset="leetcode", id=row["task_id"], completion=row["completion"],
                                            config=config), endpoint=endpoint, max_attempts=1)
        passed = sum(t.passed for t in result.tests)
        assert result.accepted == (row["expected_verdict"] == "passed"), row["note"]
        assert round(passed / len(result.tests), 5) == round(row["expected_pass_rate"], 5), row["note"]
        assert (result.extracted_code == "") == (row["expected_verdict"] == "no_code")
        assert result.extra["verdict"] == row["expected_verdict"]
    wrong = rows[[r["expected_verdict"] for r in rows].index("wrong_answer")]
    again = asyncio.run(async_client.submit(sf.SubmitRequest(dataset="leetcode", id=wrong["task_id"],
                                                             completion=wrong["completion"], config=config),
                                            endpoint=endpoint, max_attempts=1))
    assert not again.accepted and any(not t.passed and t.test_info["verdict"] == "wrong_answer" for t in again.tests)


def test_openapi_validates_and_docs_render() -> None:
    """In process (process backend): the schema validates as OpenAPI 3 and /docs serves Swagger UI for it."""
    import httpx

    from sandbox.pool import Pool
    from sandbox.service import BackgroundServer, create_app

    try:
        from openapi_spec_validator import validate
    except ImportError:
        missing("openapi-spec-validator is not installed (pip install -e .[dev])")
    with Pool("process", workers=1) as pool, BackgroundServer(create_app(pool)) as server:
        schema = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
        docs = httpx.get(f"{server.url}/docs", timeout=30)
    validate(schema)
    assert schema["openapi"].startswith("3.")
    assert {"/run_code", "/submit", "/get_prompts", "/get_prompt_by_id", "/list_ids", "/list_datasets"} <= set(schema["paths"])
    assert "RunCodeRequest" in schema["components"]["schemas"] and "EvalResult" in schema["components"]["schemas"]
    assert docs.status_code == 200 and "swagger-ui" in docs.text and "/openapi.json" in docs.text


def test_run_code_is_isolated(sf, endpoint) -> None:
    """A /run_code program cannot reach the server that runs it (no network) nor this machine's files."""
    host, port = endpoint.removeprefix("http://").rsplit(":", 1)
    probe = (
        "import os, socket\n"
        f"s = socket.socket()\ns.settimeout(1)\ntry:\n    s.connect(({host!r}, {port}))\n    print('connected')\n"
        "except OSError as e:\n    print('no network', type(e).__name__)\n"
        f"print('repo visible' if os.path.exists({str(REPO / 'pyproject.toml')!r}) else 'no repo')\n"
    )
    result = run(sf, endpoint, probe)
    assert result.status == "Success", result
    assert result.run_result.stdout.splitlines()[0].startswith("no network")
    assert result.run_result.stdout.splitlines()[1] == "no repo"


def test_run_code_large_output_is_capped(sf, endpoint) -> None:
    """Output beyond the server's excerpt comes back truncated, never as a broken report."""
    import requests

    code = "import sys\nsys.stdout.write('x' * 200000)\nopen('big', 'w').write('y' * 200000)\n"
    reply = requests.post(f"{endpoint}/run_code", json={"code": code, "language": "python", "fetch_files": ["big"]},
                          timeout=60).json()
    assert reply["status"] == "Success", reply
    out = reply["run_result"]["stdout"]
    assert 1000 < len(out) < 200000 and set(out) == {"x"}
    assert 0 < len(base64.b64decode(reply["files"]["big"])) < 200000
