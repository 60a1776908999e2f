"""Pydantic models of our own endpoints, /grade and /health: what /openapi.json describes and what
`SandboxClient.grade_request` and `server_health` take and return.

The server does not parse /grade bodies with these models: it reads the body itself (capped while
streaming, before anything is parsed) and checks it by hand in `requests.py`. The models state the
same contract, and tests/integration/test_service_api.py holds them to it: a body of the wrong shape
(a field of the wrong type, an unknown choice or limit, task_ids not one per completion) is refused
by both, the server with 400 and the model with a ValidationError, each naming the field; every
response row of a live server validates. Where they differ: what only the server knows is checked
only there (problems that do not load, a limit above its own, a row's task_id that differs from its
problem's: 400); an empty `completions` list is answered with no results before anything else is
checked; and a completions row that is not a `CompletionRow` (a number, a `code` that is not a
string, ...) gets an error row of its own from the server, never a 400 (one bad row never sinks a
batch), while the model refuses it before sending. Choice fields import their lists from
`sandbox.problem`, where every choice list of the sandbox is defined (the verdicts from the judge's
`sandbox.judge.verdicts`, which it re-exports).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..judge.verdicts import VerdictName
from ..problem import BackendName, Extraction, GradeResult, Granularity, Limits

_Positive = Annotated[float, Field(gt=0, strict=True)]  # strict: a JSON number, never a bool or a string


class LimitsRequest(BaseModel):
    """Lower limits for one request; each at most the server's own (its /health `limits`), which
    only the server knows: above them it answers 400. Field names are `sandbox.problem.Limits`'."""

    model_config = ConfigDict(extra="forbid")

    cpu_s: _Positive | None = None
    wall_s: _Positive | None = None
    memory_mb: _Positive | None = None
    processes: _Positive | None = None
    file_size_mb: _Positive | None = None
    open_files: _Positive | None = None
    output_kb: _Positive | None = None
    solution_s: _Positive | None = None


class CompletionRow(BaseModel):
    """One completion to grade. `code` (or evalplus's `solution`) is graded as is; otherwise the code
    is extracted from `completion` (the model's raw answer) by the request's `extract` policy. A
    row's own `problem` (needs --allow-inline-problems) names the task_id itself. Other fields are
    kept and ignored. A row the server cannot grade (no task_id, unknown task_id, no code field)
    gets a result row with `error`, not a refused request."""

    model_config = ConfigDict(extra="allow")

    task_id: str | int | None = Field(None, examples=["two-sum"])
    code: str | None = Field(None, description="solution source, graded as is")
    solution: str | None = Field(None, description="evalplus's name for `code`")
    completion: str | None = Field(None, description="the model's raw answer; code is extracted from it")
    problem: dict[str, Any] | None = Field(
        None, description="a problem of the row's own: a Problem dict or a dataset row (needs --allow-inline-problems)"
    )


class GradeRequest(BaseModel):
    """The body of POST /grade. Without `task_ids`, `completions` are rows; with `task_ids` (one per
    completion), each completion is the model's answer as a string, or a row without its task_id."""

    model_config = ConfigDict(extra="allow")  # the server ignores other fields

    completions: list[CompletionRow | str]
    task_ids: list[str | int] | None = Field(None, description="one task_id per completion")
    problems: list[dict[str, Any]] | None = Field(
        None, description="problems of the request's own (needs --allow-inline-problems): Problem dicts or dataset "
                          "rows in any registered format; they win over the server's preloaded ones"
    )
    granularity: Granularity = "per_test"
    extract: Extraction = "auto"
    row_offset: Annotated[int, Field(ge=0, strict=True)] = Field(
        0, description="the row number of this batch's first completion in a larger list, for error messages"
    )
    limits: LimitsRequest | None = None

    @model_validator(mode="after")
    def _task_ids_pair_completions(self) -> GradeRequest:
        if self.task_ids is not None and len(self.task_ids) != len(self.completions):
            raise ValueError(f"'task_ids' must be a list as long as 'completions' ({len(self.completions)})")
        return self

    def body(self) -> dict[str, Any]:
        """The JSON body to send (fields left at None are left out: the server reads them as absent)."""
        return self.model_dump(mode="json", exclude_none=True)


class TestRow(BaseModel):
    """One test's outcome (`sandbox.problem.TestResult.to_dict`)."""

    __test__ = False  # not a pytest test class

    verdict: VerdictName
    time_s: float
    detail: str
    trusted: bool = Field(description="False when the assertion ran opaquely in the untrusted process")


class ResultRow(BaseModel):
    """How one completion fared (`sandbox.problem.GradeResult.to_dict`): `pass_rate` is the reward.
    `verdict` is the first non-passing verdict (or passed); None for a row that could not be graded,
    whose `error` says why (and whose `tests` are empty)."""

    task_id: str
    pass_rate: float
    passed: int
    total: int
    verdict: VerdictName | None
    verdicts: list[VerdictName]
    tests: list[TestRow]
    backend: BackendName | Literal[""] = Field(description="empty for a row no judge ran")
    stdout: str
    stderr: str
    time_s: float
    error: str
    attempts: int
    info: dict[str, Any]

    def to_result(self) -> GradeResult:
        return GradeResult.from_dict(self.model_dump(mode="json"))


class GradeResponse(BaseModel):
    """The answer to POST /grade: one row per completion, in input order."""

    results: list[ResultRow]

    def to_results(self) -> list[GradeResult]:
        return [row.to_result() for row in self.results]


class HealthResponse(BaseModel):
    """GET /health (503 with the same body when the pool is down)."""

    ok: bool = Field(description="the grading pool is running")
    backend: BackendName
    workers: int
    workers_alive: int
    pending: int = Field(description="completions admitted and not yet answered")
    max_pending: int
    graded: int = Field(description="completions answered")
    judged: int = Field(description="solutions run by judges (rows answered without one are not)")
    requests: int
    rejected: int = Field(description="requests refused as busy (503)")
    cancelled: int = Field(description="requests whose client went away, or that ran past the request timeout")
    running: int
    queued: int
    inline_problems: bool = Field(description="whether requests may carry problems of their own")
    max_body_bytes: int
    restarts: int
    problems: int = Field(description="preloaded problems")
    limits: Limits = Field(description="the limits every request is graded with, and the most it may ask for")
    auth: bool = Field(description="whether requests need a token")
    pid: int
    uptime_s: float


class ErrorResponse(BaseModel):
    """Any refusal: `error` says what is wrong and how to fix it."""

    model_config = ConfigDict(extra="allow")

    error: str
    max_body_bytes: int | None = Field(None, description="with 413 for a body too large")
    max_pending: int | None = Field(None, description="with 413 (too many completions) and 503 (busy)")
    pending: int | None = Field(None, description="with 503 (busy)")


ERRORS = {
    400: "a malformed body (the message names the field)", 401: "missing or wrong token",
    403: "problems in a request, refused by this server", 413: "the body or the batch is too large: send smaller batches",
    500: "grading failed", 503: "busy (retry after Retry-After) or the pool is down",
    504: "the request ran past the server's request timeout",
}


def describe_routes(schema: dict[str, Any]) -> dict[str, Any]:
    """Add /grade and /health, described by the models above, to the OpenAPI document FastAPI
    generated. Their handlers are plain Starlette routes that read the request themselves (the
    body cap holds while streaming, before anything is parsed), so FastAPI knows nothing of them."""
    from pydantic.json_schema import models_json_schema

    Key = tuple[type[BaseModel], Literal["validation", "serialization"]]
    request: Key = (GradeRequest, "validation")
    grade: Key = (GradeResponse, "serialization")
    health: Key = (HealthResponse, "serialization")
    error: Key = (ErrorResponse, "serialization")
    refs, top = models_json_schema([request, grade, health, error], ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, model_schema in top.get("$defs", {}).items():
        if components.setdefault(name, model_schema) != model_schema:
            raise RuntimeError(f"two different schemas named {name!r} in /openapi.json")

    def answer(description: str, model: Key) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": refs[model]}}}

    def errors(*codes: int) -> dict[str, Any]:
        return {str(code): answer(ERRORS[code], error) for code in codes}

    ours = {
        "/grade": {"post": {
            "tags": ["sandbox"], "summary": "Grade completions", "operationId": "grade",
            "description": "Rows with a task_id each, or strings with `task_ids`; see GradeRequest. A row the server "
                           "cannot grade gets a result row with `error`; only a malformed body is refused (400).",
            "requestBody": {"required": True, "content": {"application/json": {"schema": refs[request]}}},
            "responses": {"200": answer("one result row per completion, in input order", grade),
                          **errors(400, 401, 403, 413, 500, 503, 504)},
        }},
        "/health": {"get": {
            "tags": ["sandbox"], "summary": "The server's state and counters", "operationId": "health",
            "responses": {"200": answer("the pool is running", health), "503": answer("the pool is down", health),
                          **errors(401)},
        }},
    }
    schema["paths"] = {**ours, **schema.get("paths", {})}
    return schema


__all__ = [
    "CompletionRow",
    "ErrorResponse",
    "GradeRequest",
    "GradeResponse",
    "HealthResponse",
    "LimitsRequest",
    "ResultRow",
    "TestRow",
    "describe_routes",
]
