"""SandboxFusion-compatible endpoints on `sandbox serve`, on the same warm isolated pool as /grade.

    POST /run_code          {code, language, stdin, run_timeout, memory_limit_MB, files, fetch_files, ...}
                            -> {status: Success|Failed|SandboxError, message, run_result: {...}, files}
    GET  /list_datasets     -> ["sandbox", <source formats of the preloaded problems>...]
    POST /list_ids          {dataset, config}               -> [task_id, ...]
    POST /get_prompts       {dataset, config, offset, limit} -> [{id, prompt, labels}]
    POST /get_prompt_by_id  {dataset, config, id}            -> {id, prompt, labels}
    POST /submit            {dataset, id, completion, config} -> EvalResult {id, accepted, extracted_code, tests}

Why: verl's `sandbox_fusion` reward and SandboxFusion's own client speak this protocol; serving
it makes switching to our (rootless, SLURM-friendly) sandbox a change of URL. The models below
follow SandboxFusion's published schemas (field names, enums, defaults); what differs is listed
in the README ("SandboxFusion compatibility").

/run_code runs a plain Python program with stdin through the judge's stdio path (a problem with
one stdio test). The judge compares a program's stdout instead of returning it, so the program
runs under a small driver (`DRIVER`) that captures its stdout, stderr, exit status and fetched
files and writes them, as one base64 JSON line after a marker, to the judge's stderr, which the
result returns. The driver runs inside the sandbox with the program: the program can only forge
its own result. The job's problem carries no trusted code (no preamble, no test_setup, a stdio test
the judge only compares), so unlike a request's inline problems it needs no private judges; the
user's code is only ever the job's `code`, which runs on the untrusted side. Jobs go through the
pool's fair queue under a ticket per client, as /grade's do.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import itertools
import json
import logging
import math
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from .. import fair
from ..pool import Job
from ..problem import GradeResult, Limits, Problem, Test, Verdict

log = logging.getLogger("sandbox.service")

router = APIRouter(tags=["sandboxfusion"])

SUPPORTED_LANGUAGES = ("python",)
ALL_DATASETS = "sandbox"  # the dataset holding every preloaded problem
MARKER = "<<qrpo-run-code>>"  # printable: the judge escapes control characters in stderr
_ids = itertools.count(1)

# SandboxFusion's language names (its request schema's enum): a name outside it is a 422, a
# name inside it that this server cannot run is a SandboxError response.
Language = Literal[
    "python", "python2", "cpp", "nodejs", "go", "go_test", "java", "php", "csharp", "bash", "typescript", "sql", "rust",
    "cuda", "lua", "R", "perl", "D_ut", "ruby", "scala", "julia", "pytest", "junit", "kotlin_script", "jest", "verilog",
    "python_gpu", "lean", "swift", "racket", "gtest", "react",
]


class CommandRunResult(BaseModel):
    status: Literal["Finished", "Error", "TimeLimitExceeded"]
    execution_time: float | None = None
    cpu_time: float | None = None
    return_code: int | None = None
    stdout: str | None = None
    stderr: str | None = None


class RunCodeRequest(BaseModel):
    compile_timeout: float = Field(10, description="accepted for compatibility; Python is not compiled")
    run_timeout: float = Field(10, description="wall and CPU seconds, lowered to the server's limits")
    memory_limit_MB: int = Field(-1, description="address-space limit in MB (-1: the server's), lowered to the server's")
    code: str = Field(..., examples=['print("hello")'])
    stdin: str | None = Field(None, examples=[""])
    language: Language = Field(..., examples=["python"])
    files: dict[str, str | None] = Field({}, description="path -> base64 content, written before the run")
    fetch_files: list[str] = Field([], description="paths read back (base64) after the run")


class RunCodeResponse(BaseModel):
    status: Literal["Success", "Failed", "SandboxError"]
    message: str
    compile_result: CommandRunResult | None = None
    run_result: CommandRunResult | None = None
    executor_pod_name: str | None = None
    files: dict[str, str] = {}


class TestConfig(BaseModel):
    """Accepted for compatibility; only `run_timeout` is used (a lower per-test wall limit)."""

    dataset_type: str | None = None
    language: str | None = None
    locale: str | None = None
    is_fewshot: bool | None = None
    compile_timeout: float | None = None
    run_timeout: float | None = None
    custom_extract_logic: str | None = None
    provided_data: list[dict[str, Any]] | dict[str, Any] | None = None
    extra: dict[str, Any] = {}


class Prompt(BaseModel):
    id: int | str
    prompt: str
    labels: dict[str, Any] = {}


class GetPromptsRequest(BaseModel):
    dataset: str
    config: TestConfig = TestConfig()
    offset: int = 0
    limit: int = 1000000


class GetPromptByIdRequest(BaseModel):
    dataset: str
    config: TestConfig = TestConfig()
    id: int | str


class SubmitRequest(BaseModel):
    dataset: str
    id: int | str
    completion: str
    config: TestConfig = TestConfig()


class EvalTestCase(BaseModel):
    passed: bool
    exec_info: RunCodeResponse
    test_info: dict[str, Any] | None = None


class EvalResult(BaseModel):
    id: int | str
    accepted: bool
    extracted_code: str
    full_code: str | None = None
    test_code: str | None = None
    tests: list[EvalTestCase]
    extracted_type: Literal["fenced", "incomplete_fenced", "heuristic", "empty"] | None = None
    extra: dict[str, Any] | None = None


# ----------------------------------------------------------------------------------------------
# /run_code

DRIVER = r'''
import base64 as _b, json as _j, linecache as _lc, os as _o, sys as _s, tempfile as _tf, time as _t, traceback as _tb
import types as _ty
def _qrpo_run(src, files, fetch, cap, marker):
    report = _o.dup(2)
    for path, data in files.items():
        if _o.path.dirname(path):
            _o.makedirs(_o.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(_b.b64decode(data or ""))
    # unnamed files in the fresh workdir (memory files are denied to solutions: judge/seccomp.py)
    out_file, err_file = _tf.TemporaryFile(), _tf.TemporaryFile()
    out, err = out_file.fileno(), err_file.fileno()
    _s.stdout.flush()
    _o.dup2(out, 1)
    _o.dup2(err, 2)
    _s.stdout = open(1, "w", encoding="utf-8", errors="surrogateescape", closefd=False)
    _s.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
    _s.argv = ["main.py"]
    _lc.cache["main.py"] = (len(src), None, src.splitlines(True), "main.py")
    module = _ty.ModuleType("__main__")
    _s.modules["__main__"] = module
    code, t0 = 0, _t.perf_counter()
    try:
        exec(compile(src, "main.py", "exec"), module.__dict__)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, (int, type(None))):
            print(e.code, file=_s.stderr)
    except BaseException as e:
        _tb.print_exception(type(e), e, e.__traceback__.tb_next)
        code = 1
    elapsed = _t.perf_counter() - t0
    for stream in (_s.stdout, _s.stderr):
        try:
            stream.flush()
        except BaseException:
            code = code or 1
    got, budget = {}, cap
    for path in fetch:
        try:
            with open(path, "rb") as f:
                data = f.read(budget)
        except OSError:
            continue
        got[path] = _b.b64encode(data).decode()
        budget -= len(data)
    frame = {"code": code, "time": elapsed, "files": got,
             "stdout": _b.b64encode(_o.pread(out, cap, 0)).decode(), "stderr": _b.b64encode(_o.pread(err, cap, 0)).decode()}
    _o.write(report, (marker + _j.dumps(frame) + "\n").encode())
    _o._exit(0)
'''


def driver_source(body: RunCodeRequest, cap: int) -> str:
    """The program the judge runs: the driver, then a call running `body.code` under it."""
    src = base64.b64encode(body.code.encode("utf-8", "surrogatepass")).decode()
    return DRIVER + (
        f"_qrpo_run(_b.b64decode({src!r}).decode('utf-8', 'surrogatepass'), {body.files!r}, {body.fetch_files!r}, "
        f"{cap}, {MARKER!r})\n"
    )


def run_limits(body: RunCodeRequest, server: Limits) -> Limits:
    """The request's timeout and memory, never above the server's limits."""
    seconds = server.wall_s if body.run_timeout <= 0 else min(body.run_timeout, server.wall_s)
    memory = server.memory_mb if body.memory_limit_MB <= 0 else min(body.memory_limit_MB, server.memory_mb)
    return Limits(
        cpu_s=min(float(math.ceil(seconds)), server.cpu_s), wall_s=seconds, memory_mb=memory, processes=server.processes,
        file_size_mb=server.file_size_mb, open_files=server.open_files, output_kb=server.output_kb,
        solution_s=min(server.solution_s, seconds + 5.0),
    )


def parse_frame(stderr: str) -> dict[str, Any] | None:
    start = stderr.rfind(MARKER)
    if start < 0:
        return None
    try:
        frame = json.loads(stderr[start + len(MARKER):].split("\n", 1)[0])
    except json.JSONDecodeError:
        return None
    return frame if isinstance(frame, dict) else None


def _text(data: str) -> str:
    return base64.b64decode(data).decode("utf-8", "replace")


def run_response(result: GradeResult) -> RunCodeResponse:
    """SandboxFusion's response for one /run_code job's GradeResult."""
    test = result.tests[0]
    if test.verdict is Verdict.SANDBOX_ERROR:
        return RunCodeResponse(status="SandboxError", message=test.detail or result.error)
    frame = parse_frame(result.stderr)
    if frame is None and test.verdict is Verdict.PASSED:  # exited 0, yet no readable report: ours to explain
        return RunCodeResponse(status="SandboxError", message="the program's report was lost (output beyond the server's "
                                                               "output_kb excerpt?)")
    if frame is None:  # the program never got back to the driver: killed by a limit or a signal
        timed_out = test.verdict is Verdict.TIMEOUT
        run = CommandRunResult(
            status="TimeLimitExceeded" if timed_out else "Finished", execution_time=test.time_s,
            return_code=None if timed_out else (137 if test.verdict is Verdict.MEMORY else 1), stdout="", stderr=test.detail,
        )
        return RunCodeResponse(status="Failed", message="", run_result=run)
    code = int(frame.get("code", 1))
    run = CommandRunResult(
        status="Finished", execution_time=float(frame.get("time", test.time_s)), return_code=code,
        stdout=_text(frame.get("stdout", "")), stderr=_text(frame.get("stderr", "")),
    )
    return RunCodeResponse(status="Success" if code == 0 else "Failed", message="", run_result=run,
                           files={str(k): str(v) for k, v in (frame.get("files") or {}).items()})


def _state(request: Request) -> Any:
    return request.app.state.sandbox


def _ticket(request: Request) -> fair.Ticket:
    """The request's share of the pool, grouped by client as /grade's are (fair round robin)."""
    from .app import CLIENT_HEADER

    return fair.Ticket(group=request.headers.get(CLIENT_HEADER) or (request.client.host if request.client else ""))


@router.post("/run_code", response_model=RunCodeResponse)
async def run_code(body: RunCodeRequest, request: Request) -> RunCodeResponse:
    """Run a program with stdin on the warm pool (SandboxFusion's /run_code)."""
    if body.language not in SUPPORTED_LANGUAGES:
        return RunCodeResponse(status="SandboxError",
                               message=f"language {body.language!r} is not supported by this server; supported: "
                                       f"{', '.join(SUPPORTED_LANGUAGES)}")
    for path, data in body.files.items():
        try:
            base64.b64decode(data or "", validate=True)
        except (binascii.Error, ValueError):
            raise HTTPException(422, f"files[{path!r}] is not base64") from None
    state = _state(request)
    limits = run_limits(body, state.limits)
    cap = max(1024, limits.output_kb * 1024 // 4)  # stdout + stderr + files, base64, fit the judge's stderr excerpt
    problem = Problem(task_id="run_code", prompt="", tests=(Test("stdio", stdin=body.stdin or ""),), limits=limits)
    job = Job(index=next(_ids), problem=problem, code=driver_source(body, cap), granularity="per_test")
    if not state.pool.alive:
        raise HTTPException(503, "the grading pool is not running", headers={"Retry-After": "1"})
    if not state.admit(1):
        raise HTTPException(503, f"busy: {state.pending} jobs pending (max {state.max_pending}); retry later",
                            headers={"Retry-After": "1"})
    try:
        with _ticket(request).active():
            future = state.pool.submit(job)
        result = await asyncio.wrap_future(future)
    except Exception as exc:  # a bug of ours, reported in the protocol's own way
        log.exception("run_code failed")
        return RunCodeResponse(status="SandboxError", message=f"running the code failed: {exc!r}")
    finally:
        state.release(1, 1)
    return run_response(result)


# ----------------------------------------------------------------------------------------------
# The online-judge endpoints, over the preloaded problems


def datasets(problems: dict[str, Problem]) -> dict[str, dict[str, Problem]]:
    """"sandbox" (every preloaded problem) and one dataset per source format (e.g. "leetcode")."""
    out: dict[str, dict[str, Problem]] = {ALL_DATASETS: dict(problems)}
    for task_id, problem in problems.items():
        name = str(problem.metadata.get("source_format") or "")
        if name and name != ALL_DATASETS:
            out.setdefault(name, {})[task_id] = problem
    return out


def _dataset(request: Request, name: str) -> dict[str, Problem]:
    table = datasets(_state(request).problems).get(name)
    if table is None:
        raise HTTPException(400, f"no eval class found for dataset {name}: this server serves "
                                 f"{sorted(datasets(_state(request).problems))} (load problems with --problems)")
    return table


def _problem(request: Request, name: str, task_id: int | str) -> Problem:
    problem = _dataset(request, name).get(str(task_id))
    if problem is None:
        raise HTTPException(404, f"no problem with id {task_id!r} in dataset {name!r}")
    return problem


def prompt_of(problem: Problem) -> Prompt:
    labels = {"task_id": problem.task_id, "kind": problem.kind, "tests": len(problem.tests),
              "entry_point": problem.entry_point, "source_format": problem.metadata.get("source_format", "")}
    return Prompt(id=problem.task_id, prompt=problem.prompt, labels=labels)


@router.get("/list_datasets")
async def list_datasets(request: Request) -> list[str]:
    return sorted(datasets(_state(request).problems))


@router.post("/list_ids")
async def list_ids(body: GetPromptsRequest, request: Request) -> list[int | str]:
    return list(_dataset(request, body.dataset))


@router.post("/get_prompts")
async def get_prompts(body: GetPromptsRequest, request: Request) -> list[Prompt]:
    table = list(_dataset(request, body.dataset).values())
    return [prompt_of(p) for p in table[max(0, body.offset):max(0, body.offset) + max(0, body.limit)]]


@router.post("/get_prompt_by_id")
async def get_prompt_by_id(body: GetPromptByIdRequest, request: Request) -> Prompt:
    return prompt_of(_problem(request, body.dataset, body.id))


def eval_result(id_: int | str, code: str | None, result: GradeResult, problem: Problem) -> EvalResult:
    """SandboxFusion's EvalResult for one graded completion: one EvalTestCase per test."""
    cases = []
    for test, outcome in zip(problem.tests, result.tests):
        passed = outcome.verdict is Verdict.PASSED
        timed_out = outcome.verdict is Verdict.TIMEOUT
        run = CommandRunResult(status="TimeLimitExceeded" if timed_out else "Finished", execution_time=outcome.time_s,
                               return_code=None if timed_out else (0 if passed else 1), stdout="", stderr=outcome.detail)
        info: dict[str, Any] = {"verdict": outcome.verdict.value, "detail": outcome.detail}
        if test.kind == "stdio":
            info |= {"input": {"stdin": test.stdin}, "output": {"stdout": test.stdout}}
        else:
            info["source"] = test.source
        status: Literal["Success", "Failed", "SandboxError"] = (
            "Success" if passed else "SandboxError" if outcome.verdict is Verdict.SANDBOX_ERROR else "Failed")
        cases.append(EvalTestCase(passed=passed, exec_info=RunCodeResponse(status=status, message=outcome.detail,
                                                                          run_result=run), test_info=info))
    return EvalResult(id=id_, accepted=bool(result.tests) and result.pass_rate == 1.0, extracted_code=code or "",
                      tests=cases, extracted_type="fenced" if code else "empty",
                      extra={"verdict": result.verdict.value if result.verdict else None, "pass_rate": result.pass_rate,
                             "error": result.error})


@router.post("/submit")
async def submit(body: SubmitRequest, request: Request) -> EvalResult:
    """Grade one completion of a preloaded problem, as /grade does (same extraction: auto)."""
    import anyio

    from ..api import grade
    from ..extract import completion_code
    from .requests import capped

    state = _state(request)
    problem = capped(_problem(request, body.dataset, body.id), state.limits)
    if body.config.run_timeout:
        wall_s = min(body.config.run_timeout, problem.limits.wall_s)
        problem = problem.with_limits(dataclasses.replace(problem.limits, wall_s=wall_s))
    row = {"task_id": problem.task_id, "completion": body.completion}
    code = completion_code(dict(row), "auto", problem.prompt, str(problem.metadata.get("source_format", "")))
    if not state.admit(1):
        raise HTTPException(503, "busy; retry later", headers={"Retry-After": "1"})
    ticket = _ticket(request)

    def work() -> list[GradeResult]:
        with ticket.active():
            return grade({problem.task_id: problem}, [row], pool=state.pool, extract="auto")

    try:
        (result,) = await anyio.to_thread.run_sync(work, limiter=state.limiter)
    finally:
        state.release(1, 1)
    return eval_result(body.id, code, result, problem)
