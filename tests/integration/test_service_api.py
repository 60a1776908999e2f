"""Our own API described: /grade and /health in /openapi.json with the models of
sandbox/service/schema.py, held to what a real server (in this process, process backend) does:
live answers validate against the models and against the published schema, every body the
server refuses the model refuses naming the same field, and the typed client round trips."""

from __future__ import annotations

import json
from typing import Any, get_args

import pytest

from sandbox.judge.verdicts import VERDICTS
from sandbox.problem import Extraction, GradeResult, Granularity, Limits

from ..conftest import missing
from .test_service import COMPLETIONS, PROBLEMS, assert_same

ROUTES = {("/grade", "post"): ("GradeRequest", "GradeResponse"), ("/health", "get"): (None, "HealthResponse")}


@pytest.fixture(scope="module")
def url():
    from sandbox.pool import Pool
    from sandbox.service import BackgroundServer, create_app

    with Pool("process", workers=2) as pool, BackgroundServer(create_app(pool, PROBLEMS, allow_inline_problems=True)) as server:
        yield server.url


@pytest.fixture(scope="module")
def spec(url) -> dict[str, Any]:
    import httpx

    return httpx.get(f"{url}/openapi.json", timeout=30).json()


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    """The demo rows that finish fast, and rows the server answers with an error row each."""
    demo = [json.loads(line) for line in COMPLETIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    fast = [r for r in demo if r["expected_verdict"] != "timeout"]
    return fast + [{"task_id": "no-such-problem", "code": "x = 1\n"}, {"code": "print(1)\n"}]


def conforms(spec: dict[str, Any], name: str, instance: Any) -> None:
    """Validate `instance` against the published schema components/schemas/NAME (JSON Schema 2020-12,
    as OpenAPI 3.1 is), with its $refs resolved inside the document."""
    from jsonschema import Draft202012Validator

    schema = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
    Draft202012Validator(schema).validate(instance)


def refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        return {node["$ref"]} if isinstance(node.get("$ref"), str) else set().union(*map(refs, node.values()))
    if isinstance(node, list):
        return set().union(*map(refs, node))
    return set()


def test_openapi_describes_grade_and_health(url, spec) -> None:
    import httpx

    try:
        from openapi_spec_validator import validate
    except ImportError:
        missing("openapi-spec-validator is not installed (pip install -e .[dev])")
    validate(spec)
    assert spec["openapi"].startswith("3.")
    schemas = spec["components"]["schemas"]
    def ref(name: str) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{name}"}

    for (path, method), (request, response) in ROUTES.items():
        operation = spec["paths"][path][method]
        if request:
            assert operation["requestBody"]["content"]["application/json"]["schema"] == ref(request)
        assert operation["responses"]["200"]["content"]["application/json"]["schema"] == ref(response)
    assert {code: answer["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
            for code, answer in spec["paths"]["/grade"]["post"]["responses"].items()} == {
        "200": "GradeResponse", **{code: "ErrorResponse" for code in ("400", "401", "403", "413", "500", "503", "504")}}
    prefix = "#/components/schemas/"
    unresolved = {r for r in refs(spec) if not r.startswith(prefix) or r.removeprefix(prefix) not in schemas}
    assert not unresolved, unresolved
    # The choice lists are sandbox.problem's, not copies that could drift.
    grade = schemas["GradeRequest"]["properties"]
    assert grade["granularity"]["enum"] == list(get_args(Granularity))
    assert grade["extract"]["enum"] == list(get_args(Extraction))
    assert schemas["TestRow"]["properties"]["verdict"]["enum"] == list(VERDICTS)
    assert set(schemas["LimitsRequest"]["properties"]) == set(schemas["Limits"]["properties"]) == set(Limits.__dataclass_fields__)
    assert schemas["GradeRequest"]["required"] == ["completions"]
    docs = httpx.get(f"{url}/docs", timeout=30)
    assert docs.status_code == 200 and "swagger-ui" in docs.text and "/openapi.json" in docs.text


def test_live_answers_match_models_and_schema(url, spec, rows) -> None:
    """What the server sends validates against the pydantic models and the published schema, with
    no field either leaves out (a field added to GradeResult.to_dict or health() fails here)."""
    import httpx

    from sandbox.service.schema import ErrorResponse, GradeResponse, HealthResponse, ResultRow

    answer = httpx.post(f"{url}/grade", json={"completions": rows}, timeout=120)
    assert answer.status_code == 200
    body = answer.json()
    response = GradeResponse.model_validate(body)
    conforms(spec, "GradeResponse", body)
    assert len(response.results) == len(rows)
    assert all(set(row) == set(ResultRow.model_fields) for row in body["results"])
    verdicts = {row.verdict for row in response.results}
    assert "passed" in verdicts and None in verdicts and len(verdicts) >= 4  # graded rows and error rows
    invalid = response.results[-2:]
    assert [(r.backend, r.verdict, r.total) for r in invalid] == [("", None, 0)] * 2 and "task_id" in invalid[1].error
    assert [r.to_dict() for r in response.to_results()] == body["results"]

    health = httpx.get(f"{url}/health", timeout=30).json()
    assert set(health) == set(HealthResponse.model_fields)
    conforms(spec, "HealthResponse", health)
    assert HealthResponse.model_validate(health).limits == Limits()

    refused = httpx.post(f"{url}/grade", json={"completions": rows[:1], "extract": "middle"}, timeout=30)
    assert refused.status_code == 400
    conforms(spec, "ErrorResponse", refused.json())
    assert "extract" in ErrorResponse.model_validate(refused.json()).error


ROW = {"task_id": "rotate-word-left", "code": "x = 1\n"}
# Malformed bodies: the server answers 400 naming the field, and the model refuses naming it too.
MALFORMED: list[tuple[dict[str, Any], str]] = [
    ({}, "completions"),
    ({"completions": "not a list"}, "completions"),
    ({"completions": [ROW], "row_offset": -1}, "row_offset"),
    ({"completions": [ROW], "row_offset": "3"}, "row_offset"),
    ({"completions": [ROW], "row_offset": True}, "row_offset"),
    ({"completions": [ROW], "granularity": "per_line"}, "granularity"),
    ({"completions": [ROW], "extract": "middle"}, "extract"),
    ({"completions": ["x = 1"], "task_ids": ["a", "b"]}, "task_ids"),
    ({"completions": ["x = 1"], "task_ids": "a"}, "task_ids"),
    ({"completions": [5], "task_ids": ["rotate-word-left"]}, "completions"),
    ({"completions": [ROW], "problems": {"task_id": "x"}}, "problems"),
    ({"completions": [ROW], "problems": [1]}, "problems"),
    ({"completions": [ROW | {"problem": 5}]}, "problem"),
    ({"completions": [ROW], "limits": 5}, "limits"),
    ({"completions": [ROW], "limits": {"cpu_s": 0}}, "cpu_s"),
    ({"completions": [ROW], "limits": {"cpu_s": "1"}}, "cpu_s"),
    ({"completions": [ROW], "limits": {"cpu_s": True}}, "cpu_s"),
    ({"completions": [ROW], "limits": {"cores": 2}}, "cores"),
]
# Well-formed bodies both accept (rows the server cannot grade get an error row, not a 400).
WELL_FORMED: list[dict[str, Any]] = [
    {"completions": [ROW]},
    {"completions": ["x = 1", {"code": "x = 2"}], "task_ids": ["rotate-word-left", 7], "row_offset": 3},
    {"completions": [ROW, {"task_id": "unknown", "completion": "text"}, {"code": "x"}], "granularity": "per_solution",
     "extract": "last", "limits": {"cpu_s": 0.5, "memory_mb": 256}, "problems": None, "comment": "ignored"},
]


@pytest.mark.parametrize(("body", "field"), MALFORMED, ids=[f"{i}-{field}" for i, (_, field) in enumerate(MALFORMED)])
def test_malformed_body_refused_by_server_and_model_naming_the_field(url, body, field) -> None:
    import httpx
    from pydantic import ValidationError

    from sandbox.service.schema import GradeRequest

    answer = httpx.post(f"{url}/grade", json=body, timeout=30)
    assert answer.status_code == 400 and field in answer.json()["error"], answer.text
    with pytest.raises(ValidationError) as refused:
        GradeRequest.model_validate(body)
    assert field in str(refused.value)


@pytest.mark.parametrize("body", WELL_FORMED)
def test_well_formed_body_accepted_by_server_and_model(url, body) -> None:
    import httpx

    from sandbox.service.schema import GradeRequest, GradeResponse

    answer = httpx.post(f"{url}/grade", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    assert len(GradeResponse.model_validate(answer.json()).results) == len(body["completions"])
    GradeRequest.model_validate(body)


def test_bad_row_is_an_error_row_on_the_server_and_refused_by_the_model(url) -> None:
    """The one documented difference: the server answers a row outside CompletionRow with an error row
    (one bad row never sinks a batch); the model, which a client checks before sending, refuses it."""
    import httpx
    from pydantic import ValidationError

    from sandbox.service.schema import GradeRequest, GradeResponse

    body = {"completions": [{"task_id": "rotate-word-left", "code": 5}, ROW]}
    (bad, good) = GradeResponse.model_validate(httpx.post(f"{url}/grade", json=body, timeout=60).json()).results
    assert "'code'" in bad.error and bad.verdict is None and good.error == "" and good.verdict is not None
    with pytest.raises(ValidationError, match="code"):
        GradeRequest.model_validate(body)


def test_what_only_the_server_can_check(url) -> None:
    """A limit above the server's own and problems that do not load are well-formed for the model
    (it cannot know them) and refused by the server, naming what to fix."""
    import httpx

    from sandbox.service.schema import GradeRequest

    for body, named in [({"completions": [ROW], "limits": {"cpu_s": 100}}, "limits.cpu_s"),
                        ({"completions": [ROW], "problems": [{"task_id": "x", "tests": "nope"}]}, "could not be loaded")]:
        GradeRequest.model_validate(body)
        answer = httpx.post(f"{url}/grade", json=body, timeout=30)
        assert answer.status_code == 400 and named in answer.json()["error"], answer.text


def test_typed_client_round_trip(url, rows) -> None:
    from pydantic import ValidationError

    from sandbox.client import SandboxClient
    from sandbox.datasets import load_problems
    from sandbox.service.schema import CompletionRow, GradeRequest, GradeResponse, HealthResponse, LimitsRequest

    with SandboxClient(url, batch_size=4) as client:
        plain = client.grade(None, rows)
        typed = client.grade_request(GradeRequest(completions=[CompletionRow(**row) for row in rows]))
        assert isinstance(typed, GradeResponse) and len(typed.results) == len(rows)
        assert_same(typed.to_results(), plain, exact=True)  # batches of 4: error rows name their row of the whole list
        assert "completions row 22" in typed.results[-1].error
        as_dict = client.grade_request({"completions": rows, "row_offset": 100})
        assert "completions row 122" in as_dict.results[-1].error
        # CompletionRow models in the plain call too; task_ids with the model's answers as strings.
        assert_same(client.grade(None, [CompletionRow(**row) for row in rows]), plain, exact=True)
        answers = [row for row in rows if "completion" in row and "task_id" in row]
        paired = client.grade_request(GradeRequest(task_ids=[r["task_id"] for r in answers],
                                                   completions=[r["completion"] for r in answers]))
        assert_same(paired.to_results(), client.grade([r["task_id"] for r in answers], [r["completion"] for r in answers]))

        # The request's own problems travel with it; its limits are applied.
        problem = load_problems(PROBLEMS).problems["longest-vowel-run"].to_dict() | {"task_id": "own-vowels"}
        row = next(r for r in rows if r["task_id"] == "longest-vowel-run" and r["expected_verdict"] == "passed")
        mine = CompletionRow(**row | {"task_id": "own-vowels"})
        own = client.grade_request(GradeRequest(problems=[problem], completions=[mine]))
        assert own.results[0].task_id == "own-vowels" and own.results[0].pass_rate == 1.0
        sleepy = ("import time\nclass Solution:\n    def longestVowelRun(self, s):\n        time.sleep(2)\n        return 0\n")
        limited = client.grade_request(GradeRequest(completions=[CompletionRow(task_id="longest-vowel-run", code=sleepy)],
                                                    granularity="per_solution", limits=LimitsRequest(wall_s=0.3)))
        assert limited.results[0].verdict == "timeout", limited.results[0]

        # A malformed request is refused before anything is sent, naming the field.
        sent = client.stats["requests"]
        with pytest.raises(ValidationError, match="granularity"):
            client.grade_request({"completions": rows, "granularity": "per_line"})
        assert client.stats["requests"] == sent

        health = client.server_health()
        assert isinstance(health, HealthResponse) and health.ok and health.backend == "process" and health.problems == 14
        assert health.graded >= 2 * len(rows)
    assert isinstance(plain[0], GradeResult)
