"""Datasets in their published schemas: original MBPP, LiveCodeBench, CodeContests.

None of these files is in ../shared/data; the adapters follow the published schemas (field names
and encodings below) and are tested on rows built from them.

- **MBPP** (google-research/mbpp), full release: `task_id, text, code, test_list,
  test_setup_code, challenge_test_list`; sanitized release: `source_file, task_id, prompt, code,
  test_imports, test_list`. The harness runs `code`, then `test_setup_code` / `test_imports`,
  then the asserts of `test_list`, which call the function by its own name. The model-facing
  prompt is the paper's: the task text, then "Your code should pass these tests:" and the
  asserts. `challenge_test_list` is not part of the graded tests (kept in metadata).
- **LiveCodeBench** code generation (livecodebench/code_generation_lite): `question_title,
  question_content, platform, question_id, contest_id, contest_date, starter_code, difficulty,
  public_test_cases, private_test_cases, metadata`. Test cases are JSON lists of `{input, output,
  testtype}`; the private ones are published compressed (base64 of zlib of a pickled JSON
  string), which we read with an unpickler that accepts nothing but plain strings. `stdin`
  cases compare line by line as LiveCodeBench's `grade_stdio` does (`lines` mode);
  `functional` cases call `Solution().<metadata.func_name>` with one JSON value per input line
  and compare the JSON-decoded output with `==`.
- **CodeContests** (deepmind/code_contests): `name, description, public_tests, private_tests,
  generated_tests` (each `{"input": [...], "output": [...]}`), `solutions` (`{"language": [...],
  "solution": [...]}`, language 3 = Python 3). All three test sets are graded (the paper's
  "all tests"); outputs compare token by token, the judge's default.
- **TACO** needs no adapter of its own: its rows are APPS-shaped (`question, solutions,
  input_output, starter_code`) and load with the `stdio` format.
"""

from __future__ import annotations

import ast
import base64
import io
import json
import pickle
import zlib
from typing import Any

from sandbox.datasets import Adapter, FieldError, check_python, function_tests, register, require
from sandbox.problem import Problem, Test

# ------------------------------------------------------------------------------------------------
# MBPP (original)


def _called_function(code: str, tests: list[str]) -> str:
    """The function the asserts call that `code` defines (the entry point)."""
    defined = {n.name for n in ast.walk(ast.parse(code)) if isinstance(n, ast.FunctionDef)}
    for test in tests:
        for node in ast.walk(ast.parse(test)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in defined:
                return node.func.id
    raise FieldError("test_list", "no assert calls a function that 'code' defines; fix test_list or code")


class MbppAdapter(Adapter):
    name = "mbpp-original"
    description = "MBPP (google-research): 'task_id', 'text' or 'prompt', 'code', 'test_list' (full or sanitized release)"

    def detect(self, row: dict[str, Any]) -> bool:
        return {"code", "test_list"} <= row.keys() and ("text" in row or "test_imports" in row) and "entry_point" not in row

    def to_problem(self, row: dict[str, Any]) -> Problem:
        task_id = str(require(row, "task_id", (str, int)))
        text = require(row, "text" if "text" in row else "prompt")
        code = require(row, "code")
        check_python(code, "code")
        tests = require(row, "test_list", list)
        if not tests or not all(isinstance(t, str) for t in tests):
            raise FieldError("test_list", "test_list must be a non-empty list of assert strings; fix the row")
        setup = row.get("test_setup_code") or "\n".join(row.get("test_imports") or [])
        if not isinstance(setup, str):
            raise FieldError("test_setup_code", "test setup must be a string (or test_imports a list of strings)")
        entry_point = _called_function(code, tests)
        split_setup, split_tests, candidate = function_tests(setup + "\n" + "\n".join(tests), "test_list", candidate=entry_point)
        prompt = f"{text}\nYour code should pass these tests:\n\n" + "\n".join(tests) + "\n"
        metadata: dict[str, Any] = {"canonical_solution": code}
        if row.get("challenge_test_list"):
            metadata["challenge_test_list"] = row["challenge_test_list"]
        return Problem(task_id=task_id, prompt=prompt, tests=split_tests, entry_point=entry_point, test_setup=split_setup,
                       candidate=candidate, metadata=metadata)


# ------------------------------------------------------------------------------------------------
# LiveCodeBench


class _StringsOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain strings are expected")


def decode_test_cases(value: Any, field_name: str) -> list[dict[str, Any]]:
    """LiveCodeBench's test cases: a JSON string, or base64(zlib(pickle(JSON string)))."""
    if isinstance(value, list):
        return value
    if not isinstance(value, str):
        raise FieldError(field_name, f"{field_name!r} must be a JSON string or list of test cases")
    if not value.strip():
        return []
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        pass
    try:
        text = _StringsOnly(io.BytesIO(zlib.decompress(base64.b64decode(value)))).load()
        return json.loads(text)
    except Exception as exc:  # noqa: BLE001 -- any failure here is a bad row, named below
        raise FieldError(field_name, f"{field_name!r} is neither JSON nor LiveCodeBench's compressed form ({exc})") from None


class LiveCodeBenchAdapter(Adapter):
    name = "livecodebench"
    description = "LiveCodeBench: 'question_id', 'question_content', 'public_test_cases', 'private_test_cases', 'metadata'"

    def detect(self, row: dict[str, Any]) -> bool:
        return {"question_content", "public_test_cases"} <= row.keys()

    def task_id(self, row: dict[str, Any]) -> str | None:
        value = row.get("question_id")
        return None if value is None else str(value)

    def to_problem(self, row: dict[str, Any]) -> Problem:
        task_id = str(require(row, "question_id", (str, int)))
        content = require(row, "question_content")
        starter = row.get("starter_code") or ""
        cases = decode_test_cases(row.get("public_test_cases", "[]"), "public_test_cases")
        cases += decode_test_cases(row.get("private_test_cases", "[]") or "[]", "private_test_cases")
        if not cases:
            raise FieldError("public_test_cases", "no test cases; drop the row")
        meta = row.get("metadata") or {}
        if isinstance(meta, str):
            meta = json.loads(meta) if meta.strip() else {}
        kinds = {c.get("testtype") for c in cases}
        info: dict[str, Any] = {k: row[k] for k in ("platform", "contest_date", "difficulty", "question_title") if row.get(k)}
        if kinds == {"functional"}:
            func = meta.get("func_name")
            if not func:
                raise FieldError("metadata", "functional test cases need metadata.func_name")
            calls = [([json.loads(line) for line in c["input"].splitlines()], json.loads(c["output"])) for c in cases]
            tests = tuple(Test("function", f"assert candidate(*{args!r}) == {expected!r}") for args, expected in calls)
            return Problem(task_id=task_id, prompt=content, tests=tests, entry_point=f"Solution().{func}",
                           metadata={**info, "starter_code": starter})
        if kinds != {"stdin"}:
            raise FieldError("public_test_cases", f"mixed or unknown testtype values {sorted(map(str, kinds))}")
        tests = tuple(Test("stdio", stdin=c["input"], stdout=c["output"]) for c in cases)
        return Problem(task_id=task_id, prompt=content, tests=tests, metadata={**info, "stdio": {"mode": "lines"}})


# ------------------------------------------------------------------------------------------------
# CodeContests

PYTHON3 = 3


class CodeContestsAdapter(Adapter):
    name = "codecontests"
    description = "CodeContests: 'name', 'description', 'public_tests', 'private_tests', 'generated_tests'"

    def detect(self, row: dict[str, Any]) -> bool:
        return {"name", "description", "public_tests"} <= row.keys() and isinstance(row.get("public_tests"), dict)

    def task_id(self, row: dict[str, Any]) -> str | None:
        value = row.get("name")
        return None if value is None else str(value)

    def to_problem(self, row: dict[str, Any]) -> Problem:
        task_id = str(require(row, "name"))
        tests: list[Test] = []
        for field_name in ("public_tests", "private_tests", "generated_tests"):
            group = row.get(field_name) or {}
            inputs, outputs = group.get("input", []), group.get("output", [])
            if len(inputs) != len(outputs):
                raise FieldError(field_name, f"{len(inputs)} inputs but {len(outputs)} outputs; fix the row")
            tests += [Test("stdio", stdin=i, stdout=o) for i, o in zip(inputs, outputs)]
        if not tests:
            raise FieldError("public_tests", "no tests in public_tests, private_tests or generated_tests")
        metadata: dict[str, Any] = {"tests_by_set": {f: len((row.get(f) or {}).get("input", [])) for f in
                                                     ("public_tests", "private_tests", "generated_tests")}}
        solutions = row.get("solutions") or {}
        for language, source in zip(solutions.get("language", []), solutions.get("solution", [])):
            if language == PYTHON3:
                metadata["canonical_solution"] = source
                break
        return Problem(task_id=task_id, prompt=require(row, "description"), tests=tuple(tests), metadata=metadata)


register(MbppAdapter())
register(LiveCodeBenchAdapter())
register(CodeContestsAdapter())
