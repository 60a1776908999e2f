"""HumanEval+ and MBPP+ (evalplus releases): base and plus inputs, graded as evalplus does.

Rows: `task_id, prompt, entry_point, canonical_solution, base_input, plus_input, atol,
contract` (+ `test` for HumanEval+, `assertion` for MBPP+). The inputs carry no expected
outputs: like evalplus, we run the canonical solution (`prompt + canonical_solution`) on every
input, once per problem, inside the sandbox (`sandbox.datasets.reference`), cache the outputs
on disk, and put them in the problem's `test_setup`, which only the judge runs. Each input is
one test, `assert qrpo_check(candidate(*qrpo_inputs[i]), i)`: the runner receives only the
arguments; the comparison (`evalplus_oracle.qrpo_evalplus_match`) runs in the judge.

Tests are the base inputs followed by the plus inputs; `metadata["evalplus"]["base"]` is how
many are base, so `load_problems(..., tests="base")` keeps evalplus's base-only score and the
default ("plus") gives its headline base + plus score. MBPP+ inputs are deserialised as
evalplus's `mbpp_deserialize_inputs` does (lists back to tuples, sets, complex numbers).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sandbox.datasets import Adapter, FieldError, check_python, register, require
from sandbox.judge import codec
from sandbox.problem import Problem, Test

ORACLE_SOURCE = (Path(__file__).parent / "evalplus_oracle.py").read_text(encoding="utf-8")
MISSING = (
    "raise RuntimeError('the expected outputs of this evalplus problem were not computed; grade it through "
    "sandbox.grade / sandbox grade, or call sandbox.datasets.reference.attach_expected first')\n"
)
TEST_SOURCE = "assert qrpo_check(candidate(*qrpo_inputs[{i}]), {i})"


def encode(value: Any) -> Any:
    """Python value -> tagged JSON (the inverse of `evalplus_oracle.qrpo_decode`)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 1 << 1000:
        return {"i": hex(value)}  # JSON texts of huge decimal ints hit Python's 4300-digit limit
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, list):
        numbers = codec.packed(value)  # HumanEval+/130 expects 10 million floats: 8 bytes each, not JSON
        return {"pk": numbers} if numbers is not None else [encode(v) for v in value]
    if isinstance(value, tuple):
        return {"t": [encode(v) for v in value]}
    if isinstance(value, frozenset):
        return {"fs": [encode(v) for v in value]}
    if isinstance(value, set):
        return {"s": [encode(v) for v in value]}
    if isinstance(value, dict):
        return {"d": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, complex):
        return {"c": [value.real, value.imag]}
    if isinstance(value, bytes):
        return {"b": value.hex()}
    return {"u": repr(value)[:200]}


def mbpp_deserialize_inputs(task_id: str, inputs: list) -> list:
    """evalplus.data.mbpp.mbpp_deserialize_inputs (evalplus 0.3.1, Apache-2.0): the JSON
    release stores tuples, sets and complex numbers as lists and strings."""
    number = int(task_id.split("/")[-1])

    def tuples(xs: list) -> list:
        return [tuple(x) for x in xs]

    if number in (2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596, 616, 630, 726, 740, 744, 809):
        return [tuples(inp) for inp in inputs]
    if number in (63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780):
        return [[tuples(lst) for lst in inp] for inp in inputs]
    if number in (75, 413, 444, 753):
        return [[tuples(inp[0])] + [inp[1]] for inp in inputs]
    if number in (106, 750):
        return [[inp[0]] + [tuple(inp[1])] for inp in inputs]
    if number == 115:
        return [[[set(item) if isinstance(item, list) and len(item) else {} for item in inp[0]]] for inp in inputs]
    if number == 124:
        return [(float(inp[0]), complex(inp[1])) for inp in inputs]
    if number in (250, 405, 446, 617, 720, 763, 808):
        return [[tuple(inp[0])] + [inp[1]] for inp in inputs]
    if number in (259, 401, 445):
        return [tuples([tuples(lst) for lst in inp]) for inp in inputs]
    if number == 278:
        return [tuples([[tuple(item) if isinstance(item, list) else item for item in inp[0]]]) for inp in inputs]
    if number == 307:
        return [[tuple(inp[0])] + [inp[1], inp[2]] for inp in inputs]
    if number == 722:
        return [[{key: tuple(value) for key, value in inp[0].items()}] + inp[1:] for inp in inputs]
    if number == 252:
        return [[complex(inp[0])] for inp in inputs]
    if number in (580, 615, 791):
        def deep(x: Any) -> Any:
            return tuple(deep(i) for i in x) if isinstance(x, list) else x

        return [deep(inp) for inp in inputs]
    return inputs


def _floats(x: Any) -> bool:
    """evalplus.eval.is_floats."""
    if isinstance(x, float):
        return True
    return isinstance(x, (list, tuple)) and bool(x) and all(isinstance(i, float) for i in x)


def effective_atol(atol: float, expected: list[Any]) -> list[float]:
    """The tolerance evalplus applies to each input of one group (base or plus): its loop turns
    a zero `atol` into 1e-6 at the first float-valued expected output, for the rest of the group."""
    out = []
    for exp in expected:
        if atol == 0 and _floats(exp):
            atol = 1e-6
        out.append(atol)
    return out


def test_setup(dataset: str, entry_point: str, inputs: list, expected: list, atol: list[float]) -> tuple[str, str]:
    """The judge-side setup of a problem whose expected outputs are known: (code, data). The data
    (inputs, expected outputs: tagged JSON) is the problem's `test_data`, parsed by the code with
    the tags undone as each object is read (`qrpo_untag`), so no Python walks the plain values."""
    code = (
        ORACLE_SOURCE
        + "\nimport json as _qrpo_json\n"
        + "qrpo_inputs, qrpo_expected = _qrpo_json.loads(qrpo_test_data, object_hook=qrpo_untag)\n"
        + f"qrpo_atol = {atol!r}\n"
        + "def qrpo_check(out, i):\n"
        + f"    return qrpo_evalplus_match({dataset!r}, {entry_point!r}, qrpo_inputs[i], out, qrpo_expected[i], qrpo_atol[i])\n"
    )
    return code, json.dumps([encode(inputs), encode(expected)])


class _EvalPlusAdapter(Adapter):
    dataset = ""  # evalplus's dataset name: "humaneval" or "mbpp"

    def detect(self, row: dict[str, Any]) -> bool:
        return {"base_input", "plus_input", "canonical_solution", "entry_point"} <= row.keys() and self._marker(row)

    def _marker(self, row: dict[str, Any]) -> bool:
        raise NotImplementedError

    def inputs(self, task_id: str, row: dict[str, Any], name: str) -> list:
        value = row.get(name)
        if value == {}:  # Mbpp/793's plus_input: evalplus iterates it as no inputs
            return []
        value = require(row, name, list, nonempty=False)
        if not all(isinstance(inp, list) for inp in value):
            raise FieldError(name, f"{name!r} must be a list of argument lists; fix the row")
        return value

    def to_problem(self, row: dict[str, Any]) -> Problem:
        task_id = str(require(row, "task_id", (str, int)))
        prompt = require(row, "prompt")
        entry_point = require(row, "entry_point").strip()
        if not entry_point.isidentifier():
            raise FieldError("entry_point", f"entry_point {entry_point!r} must be the function's name; fix it")
        canonical = require(row, "canonical_solution")
        check_python(prompt + canonical, "canonical_solution")
        base = self.inputs(task_id, row, "base_input")
        plus = self.inputs(task_id, row, "plus_input")
        atol = row.get("atol") or 0
        if not isinstance(atol, (int, float)) or atol < 0:
            raise FieldError("atol", f"'atol' must be a non-negative number, got {atol!r}; fix the row")
        if not base and not plus:
            raise FieldError("base_input", "no inputs in 'base_input' or 'plus_input'; add inputs or drop the row")
        tests = tuple(Test(kind="function", source=TEST_SOURCE.format(i=i)) for i in range(len(base) + len(plus)))
        return Problem(
            task_id=task_id,
            prompt=prompt,
            tests=tests,
            preamble=self.preamble(prompt),
            entry_point=entry_point,
            test_setup=MISSING,
            candidate="candidate",
            metadata={
                "canonical_solution": self.canonical(prompt, canonical),
                "evalplus": {
                    "dataset": self.dataset,
                    "base": len(base),
                    "plus": len(plus),
                    "atol": atol,
                    "program": prompt + canonical,
                    "inputs": json.dumps(encode(self.deserialize(task_id, base) + self.deserialize(task_id, plus))),
                },
            },
        )

    def preamble(self, prompt: str) -> str:
        return ""

    def canonical(self, prompt: str, canonical: str) -> str:
        return prompt + canonical

    def deserialize(self, task_id: str, inputs: list) -> list:
        return inputs


class HumanEvalPlusAdapter(_EvalPlusAdapter):
    """The prompt (signature, docstring, helpers such as `poly`) is the preamble, as in the
    `humaneval` format; completions that continue the prompt use `--extract continuation`."""

    name = "humanevalplus"
    description = "HumanEval+ (evalplus): 'task_id', 'prompt', 'entry_point', 'canonical_solution', 'base_input', 'plus_input'"
    dataset = "humaneval"

    def _marker(self, row: dict[str, Any]) -> bool:
        return "assertion" not in row

    def preamble(self, prompt: str) -> str:
        return prompt


class MbppPlusEvalAdapter(_EvalPlusAdapter):
    name = "mbppplus"
    description = "MBPP+ (evalplus): 'prompt', 'entry_point', 'canonical_solution', 'base_input', 'plus_input', 'assertion'"
    dataset = "mbpp"

    def _marker(self, row: dict[str, Any]) -> bool:
        return "assertion" in row

    def canonical(self, prompt: str, canonical: str) -> str:
        return canonical

    def deserialize(self, task_id: str, inputs: list) -> list:
        return mbpp_deserialize_inputs(task_id, inputs)


register(HumanEvalPlusAdapter())
register(MbppPlusEvalAdapter())
