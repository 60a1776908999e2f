"""APPS-style problems: standard-input programs and call-based functions.

Two row shapes are read:

- **APPS** (codeparrot/apps): `problem_id, question, solutions, input_output, difficulty, url,
  starter_code`. `input_output` is a JSON string (or dict) `{"inputs": [...], "outputs": [...]}`
  plus `"fn_name"` for call-based problems. Standard-input problems have a string (or a list of
  lines) per input and output. Call-based problems have a *list of arguments* per input and,
  per output, the return value wrapped in a one-element list (`[[2, 5]]` for `[2, 5]`); APPS's
  own checker accepts `result == output` or `result == output[0]`, we use `output[0]` when the
  output is a one-element list and `output` otherwise.
- **Case lists** such as MapCoder's APPS sample: `id, name, description, difficulty,
  starter_code, sample_io, test_list` where `test_list` (or `input_output`) is a list of
  `{"input": str, "output": [value]}`. `sample_io` is the first two tests and is not added again.

Standard-input cases become `Test(kind="stdio", stdin, stdout)`; a list of output lines is
joined with newlines. Output comparison (whitespace) is the judge's business.

Call-based cases (APPS `fn_name`, or a non-empty `starter_code` that defines a function) become
function tests `assert candidate(<args>) == <expected>` written with `repr` of the decoded values;
`entry_point` is the function's name (`Solution().name` when the starter code is a class).

**What MapCoder's `input` strings mean for call-based rows.** MapCoder built `test_list` from
APPS with `"\\n".join(str(x) for x in args)`: one line per argument, each the Python `str()` of
the value. That is lossy: a string argument is written without quotes (`Apple Banana`), so
`'12'` may be the string "12" or the int 12, and a string argument that contains newlines
spreads over several lines. We decode as follows (see `decode_call_cases`):

1. Lines to arguments, using the signature from `starter_code`: one parameter takes the whole
   input; more lines than parameters means a multi-line string, which is given to the *first*
   parameter (the remaining lines map one to one onto the last parameters); fewer lines than
   parameters fill the leading ones (defaults cover the rest); fewer than the required count
   makes the test undecodable (dropped, counted in `metadata["undecodable_tests"]`).
2. Each line is a Python literal if `ast.literal_eval` reads it and `str()` of the value gives
   back exactly the line (the round trip `str()` would have produced); otherwise it is raw text.
3. Per parameter, across all tests of the problem: if any line can only have been a string
   (a literal that does not round-trip, such as `0000` or `098765`, a quoted literal, or a
   multi-line value), or if raw text is the majority, every value of that parameter is a
   string. Otherwise literals are decoded and raw text stays a string (APPS has tests such as
   `factors('a')` next to `factors(54)`).

On the 79 distinct call-based problems of `mapcoder_apps_selected150.jsonl` this reproduces
the original argument types wherever we checked them by hand (`validate_pin('0000')`,
`is_lucky('123321')`, `to_alternating_case('12345')`, `getAllPrimeFactors('a')` beside
`getAllPrimeFactors(10)`, `solution('a #b\\nc\\nd $e f g', ['#', '$'])`); the decision per
parameter is kept in `metadata["argument_decoding"]`. Rows in the original APPS format carry
typed argument lists and need no guessing.

`StdioAdapter(call_based="stdio")` grades call-based rows the way MapCoder does instead: as
programs that read the input lines and print `str()` of the result.
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from sandbox.datasets import Adapter, FieldError, register, require
from sandbox.problem import Problem, Test

_DEF = re.compile(r"^([ \t]*)def[ \t]+([A-Za-z_]\w*)[ \t]*\(", re.MULTILINE)
_CLASS = re.compile(r"^class[ \t]+([A-Za-z_]\w*)", re.MULTILINE)


def py_literal(value: Any) -> str:
    """Python source for a JSON-like value that evaluates back to it (non-finite floats included)."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"float('{value}')"
    if isinstance(value, list):
        return "[" + ", ".join(py_literal(v) for v in value) + "]"
    if isinstance(value, tuple):
        inner = ", ".join(py_literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{py_literal(k)}: {py_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


@dataclass(frozen=True)
class Signature:
    name: str
    params: tuple[str, ...]
    required: int
    vararg: bool
    class_name: str | None

    @property
    def entry_point(self) -> str:
        return f"{self.class_name}().{self.name}" if self.class_name else self.name


def parse_signature(starter_code: str, fn_name: str | None = None) -> Signature | None:
    """The function the starter code asks for (the one named `fn_name` when given), or None."""
    for match in _DEF.finditer(starter_code):
        name = match.group(2)
        if fn_name and name != fn_name:
            continue
        depth, i = 1, match.end()
        while i < len(starter_code) and depth:
            depth += {"(": 1, ")": -1}.get(starter_code[i], 0)
            i += 1
        if depth:
            return None
        params_src = starter_code[match.end() : i - 1]
        try:
            fn = ast.parse(f"def _f({params_src}): pass").body[0]
        except SyntaxError:
            return None
        assert isinstance(fn, ast.FunctionDef)
        args = [a.arg for a in [*fn.args.posonlyargs, *fn.args.args]]
        class_name = None
        indented = bool(match.group(1))
        if indented:
            classes = [c for c in _CLASS.finditer(starter_code) if c.start() < match.start()]
            if classes:
                class_name = classes[-1].group(1)
                args = args[1:]  # self
        required = len(args) - len(fn.args.defaults)
        return Signature(name, tuple(args), max(required, 0), fn.args.vararg is not None, class_name)
    return None


# --- decoding MapCoder's str()-joined call-based inputs ---------------------------------------

_RAW, _LITERAL, _STRING = "raw", "literal", "string"


def _split_lines(text: str, sig: Signature) -> list[tuple[str, bool]] | None:
    """Input text -> one (line, multi_line) per argument, or None when it cannot be split."""
    n = len(sig.params)
    if sig.vararg:
        return [(line, False) for line in text.split("\n")] if text else []
    if n == 0:
        return [] if not text.strip() else None
    if n == 1:
        return [(text, "\n" in text)]
    lines = text.split("\n")
    if len(lines) > n:
        extra = len(lines) - n
        return [("\n".join(lines[: extra + 1]), True)] + [(line, False) for line in lines[extra + 1 :]]
    if len(lines) < sig.required:
        return None
    return [(line, False) for line in lines]


def _classify(line: str, multi_line: bool) -> tuple[str, Any]:
    if multi_line:
        return _STRING, line
    try:
        value = ast.literal_eval(line)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return _RAW, line
    if isinstance(value, str) or str(value) != line:
        return _STRING, line  # str() never quotes a string, and never writes 007 or 1e3
    return _LITERAL, value


def decode_call_cases(inputs: list[str], sig: Signature) -> tuple[list[list[Any] | None], dict[str, str]]:
    """Decode MapCoder-style call-based inputs. Returns the argument lists (None for an
    undecodable input) and, per parameter, how it was decoded: 'string', 'literal' or 'mixed'."""
    split = [_split_lines(text, sig) for text in inputs]
    width = max((len(s) for s in split if s is not None), default=0)
    classified = [[_classify(line, multi) for line, multi in s] if s is not None else None for s in split]
    decision: dict[int, str] = {}
    for col in range(width):
        kinds = [c[col][0] for c in classified if c is not None and col < len(c)]
        if _STRING in kinds or 2 * kinds.count(_RAW) > len(kinds):
            decision[col] = "string"
        elif _RAW in kinds:
            decision[col] = "mixed"
        else:
            decision[col] = "literal"
    args: list[list[Any] | None] = []
    for s, c in zip(split, classified):
        if s is None or c is None:
            args.append(None)
            continue
        args.append([line if decision[i] == "string" else value for i, ((line, _), (_, value)) in enumerate(zip(s, c))])
    names = list(sig.params) if not sig.vararg else [f"*{i}" for i in range(width)]
    report = {names[i] if i < len(names) else f"arg{i}": decision[i] for i in range(width)}
    return args, report


# --- the adapter ------------------------------------------------------------------------------


def _is_case_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(c, dict) and "input" in c and "output" in c for c in value)


def _text(value: Any, field_name: str) -> str:
    """APPS stdin/stdout: a string, or a list of lines joined with newlines."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    raise FieldError(
        field_name,
        f"expected a string or a list of strings for standard input/output, got {type(value).__name__}; fix the test case",
    )


def _expected(output: Any) -> Any:
    return output[0] if isinstance(output, list) and len(output) == 1 else output


class StdioAdapter(Adapter):
    name = "stdio"
    description = (
        "APPS-style: 'input_output' ({'inputs', 'outputs', 'fn_name'?} as JSON or dict), or 'test_list' of "
        "{'input', 'output'} (MapCoder), with 'question'/'description' and 'starter_code'"
    )

    def __init__(self, call_based: Literal["function", "stdio"] = "function"):
        if call_based not in ("function", "stdio"):
            raise ValueError(f"call_based must be 'function' or 'stdio', got {call_based!r}")
        self.call_based = call_based

    def detect(self, row: dict[str, Any]) -> bool:
        if "entry_point" in row or "test" in row or isinstance(row.get("tests"), list):
            return False
        if _is_case_list(row.get("test_list")):
            return True
        io = row.get("input_output")
        return ("question" in row or "description" in row or "problem_id" in row) and (
            isinstance(io, (str, dict)) or _is_case_list(io)
        )

    def task_id(self, row: dict[str, Any]) -> str | None:
        if row.get("task_id") is not None:
            return str(row["task_id"])
        for key in ("problem_id", "id"):
            if row.get(key) is not None:
                return f"APPS/{row[key]}"
        return None if row.get("name") is None else str(row["name"])

    def to_problem(self, row: dict[str, Any]) -> Problem:
        task_id = self.task_id(row)
        if not task_id:
            raise FieldError("task_id", "no task_id, problem_id, id or name; give the row an identifier")
        description_field = "question" if "question" in row else "description"
        description = require(row, description_field)
        starter_code = row.get("starter_code") or ""
        if not isinstance(starter_code, str):
            raise FieldError("starter_code", "starter_code must be a string; fix the row")
        metadata: dict[str, Any] = {}
        for key in ("difficulty", "url"):
            if row.get(key) not in (None, ""):
                metadata[key] = row[key]
        if starter_code.strip():
            metadata["starter_code"] = starter_code
        solutions = row.get("solutions")
        if isinstance(solutions, str) and solutions.strip():
            try:
                solutions = json.loads(solutions)
            except json.JSONDecodeError:
                solutions = None
        if isinstance(solutions, list) and solutions and isinstance(solutions[0], str):
            metadata["canonical_solution"] = solutions[0]

        if _is_case_list(row.get("test_list")) or _is_case_list(row.get("input_output")):
            field_name = "test_list" if _is_case_list(row.get("test_list")) else "input_output"
            tests, entry_point, extra = self._case_list(row[field_name], field_name, starter_code)
        else:
            tests, entry_point, extra = self._apps(row.get("input_output"), starter_code)
        metadata.update(extra)
        metadata["call_based"] = bool(entry_point) or "call_based_as_stdio" in metadata
        mode = "function" if entry_point else ("function_stdio" if "call_based_as_stdio" in metadata else "stdio")
        prompt = self._prompt(description, starter_code, mode)
        return Problem(task_id=task_id, prompt=prompt, tests=tuple(tests), entry_point=entry_point, metadata=metadata)

    # APPS original: {"inputs", "outputs", "fn_name"?}
    def _apps(self, io: Any, starter_code: str) -> tuple[list[Test], str, dict[str, Any]]:
        if io is None or (isinstance(io, str) and not io.strip()):
            raise FieldError("input_output", "no test cases (empty 'input_output'); drop the row")
        if isinstance(io, str):
            try:
                io = json.loads(io)
            except json.JSONDecodeError as exc:
                raise FieldError("input_output", f"'input_output' is not valid JSON ({exc.msg}); fix or drop the row") from None
        if not isinstance(io, dict) or not isinstance(io.get("inputs"), list) or not isinstance(io.get("outputs"), list):
            raise FieldError("input_output", "'input_output' must hold lists 'inputs' and 'outputs'; fix the row")
        inputs, outputs = io["inputs"], io["outputs"]
        if len(inputs) != len(outputs):
            raise FieldError("input_output", f"{len(inputs)} inputs but {len(outputs)} outputs; make them pair up")
        fn_name = io.get("fn_name")
        if not fn_name:
            tests = [
                Test("stdio", stdin=_text(i, "input_output"), stdout=_text(o, "input_output")) for i, o in zip(inputs, outputs)
            ]
            return tests, "", {}
        sig = parse_signature(starter_code, fn_name)
        entry_point = (
            sig.entry_point
            if sig
            else (f"Solution().{fn_name}" if re.search(r"^class\s+Solution\b", starter_code, re.MULTILINE) else fn_name)
        )
        args_list = [i if isinstance(i, list) else [i] for i in inputs]
        expected = [_expected(o) for o in outputs]
        if self.call_based == "stdio":
            tests = [
                Test("stdio", stdin="\n".join(str(a) for a in args), stdout=e if isinstance(e, str) else str(e))
                for args, e in zip(args_list, expected)
            ]
            return tests, "", {"call_based_as_stdio": True, "fn_name": fn_name}
        return self._function_tests(args_list, expected), entry_point, {}

    # MapCoder-style: [{"input": str, "output": [value]}]
    def _case_list(
        self, cases: list[dict[str, Any]], field_name: str, starter_code: str
    ) -> tuple[list[Test], str, dict[str, Any]]:
        sig = parse_signature(starter_code) if starter_code.strip() else None
        if starter_code.strip() and sig is None and re.search(r"\bdef\b", starter_code):
            raise FieldError(
                "starter_code", "starter_code defines a function whose signature does not parse; fix the starter code"
            )
        if sig is None:
            return (
                [Test("stdio", stdin=_text(c["input"], field_name), stdout=_output_text(c["output"], field_name)) for c in cases],
                "",
                {},
            )
        if self.call_based == "stdio":
            tests = [
                Test("stdio", stdin=_text(c["input"], field_name), stdout=_output_text(c["output"], field_name)) for c in cases
            ]
            return tests, "", {"call_based_as_stdio": True, "fn_name": sig.name}
        inputs = [c["input"] for c in cases]
        if not all(isinstance(i, str) for i in inputs):
            raise FieldError(
                field_name, "call-based inputs must be strings (one str() per argument and line); fix the test cases"
            )
        args_list, report = decode_call_cases(inputs, sig)
        kept = [(a, _expected(c["output"])) for a, c in zip(args_list, cases) if a is not None]
        if not kept:
            raise FieldError(
                field_name,
                f"no test input could be split into the arguments of {sig.name}{tuple(sig.params)}; check 'starter_code' "
                "against the inputs",
            )
        extra: dict[str, Any] = {"argument_decoding": report}
        if len(kept) < len(cases):
            extra["undecodable_tests"] = len(cases) - len(kept)
        return self._function_tests([a for a, _ in kept], [e for _, e in kept]), sig.entry_point, extra

    @staticmethod
    def _function_tests(args_list: list[list[Any]], expected: list[Any]) -> list[Test]:
        tests = []
        for args, exp in zip(args_list, expected):
            source = f"assert candidate({', '.join(py_literal(a) for a in args)}) == {py_literal(exp)}"
            try:
                ast.parse(source)
            except SyntaxError:
                raise FieldError(
                    "input_output", f"a test case does not make valid Python ({source[:80]!r}); fix the case"
                ) from None
            tests.append(Test("function", source=source))
        return tests

    @staticmethod
    def _prompt(description: str, starter_code: str, mode: str) -> str:
        text = description.rstrip() + "\n\n"
        if mode == "function":
            text += (
                "Complete the following Python function. It is called with the arguments and its return value is "
                f"checked; do not read input or print.\n```python\n{starter_code.strip()}\n```\n"
            )
        elif mode == "function_stdio":
            text += (
                f"Complete the following Python function:\n```python\n{starter_code.strip()}\n```\n"
                "Then read its arguments from standard input, one per line, call it and print the result.\n"
            )
        else:
            text += "Write a Python program that reads the input from standard input and writes the answer to standard output.\n"
        return text + "Enclose your code in a single ```python block.\n"


def _output_text(output: Any, field_name: str) -> str:
    if isinstance(output, list) and all(isinstance(o, str) for o in output):
        return "\n".join(output)
    if isinstance(output, list) and len(output) == 1:
        return str(output[0])  # a call-based value graded as printed output (MapCoder's way)
    if isinstance(output, str):
        return output
    raise FieldError(
        field_name, f"expected output must be a string or a list of strings, got {type(output).__name__}; fix the case"
    )


register(StdioAdapter())
