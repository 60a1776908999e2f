"""The templates of the procedural code task: short problems whose solution depends on reading the statement.

Each template has a few slots (a constant, an operator, which element, which condition, a small loop); a
`Variant` is one filling of the slots. A variant gives one problem: its statement, starter code, canonical
solution, plausible wrong solutions (the bugs a model that half-read the statement writes: a neighbouring
operator, a constant off by one, the other element, one loop step too many) and tests. Test inputs are drawn
so that the bugs fail some tests and pass others (values equal to the constant, empty loops, ...), which gives
partly-right programs partial pass rates.

Solutions are one or a few lines, so that a tiny model samples them in tens of tokens on a CPU.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

CMP = {">": "greater than", "<": "less than", ">=": "at least", "<=": "at most", "==": "equal to", "!=": "not equal to"}
NEAR_CMP = {">": [">=", "<"], "<": ["<=", ">"], ">=": [">", "<="], "<=": ["<", ">="], "==": ["!=", ">="], "!=": ["==", "<="]}
WHICH = {"first": "nums[0]", "last": "nums[-1]", "largest": "max(nums)", "smallest": "min(nums)",
         "second": "nums[1]", "second-to-last": "nums[-2]"}
NEAR_WHICH = {"first": ["last", "smallest"], "last": ["first", "largest"], "largest": ["smallest", "last"],
              "smallest": ["largest", "first"], "second": ["first", "second-to-last"],
              "second-to-last": ["last", "second"]}
LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class Variant:
    """One problem of a template: `params` fill its slots; `key` identifies it across splits."""

    template: str
    params: tuple[Any, ...]

    @property
    def key(self) -> str:
        return f"{self.template}-" + "-".join(str(p).replace("-", "m") for p in self.params)


@dataclass(frozen=True)
class Template:
    """A family of problems. `space` lists every filling of the slots; `render` builds one problem's text."""

    name: str
    method: str
    signature: str  # the parameters after self, with types
    returns: str
    difficulty: str
    space: Callable[[], Iterator[tuple[Any, ...]]]
    statement: Callable[[tuple[Any, ...]], str]
    body: Callable[[tuple[Any, ...]], str]  # the canonical body (indented by 8 spaces in the class)
    bugs: Callable[[tuple[Any, ...]], list[str]]  # plausible wrong bodies
    inputs: Callable[[tuple[Any, ...], random.Random], list[dict[str, Any]]]
    arg: str = field(default="nums")


def _nums(rng: random.Random, center: int, n: int | None = None, spread: int = 4) -> list[int]:
    """A short list around `center`, so that comparisons with the constant go both ways and sometimes tie."""
    size = n if n is not None else rng.randint(2, 7)
    return [center + rng.randint(-spread, spread) for _ in range(size)]


def _list_inputs(center: Callable[[tuple[Any, ...]], int], min_len: int = 1) -> Callable[..., list[dict[str, Any]]]:
    def inputs(params: tuple[Any, ...], rng: random.Random) -> list[dict[str, Any]]:
        c = center(params)
        cases = [{"nums": [c]}, {"nums": [c, c + 1, c - 1]}, {"nums": [c - 3, c + 3]}]
        cases += [{"nums": _nums(rng, c, rng.randint(min_len, 7))} for _ in range(7)]
        return [case for case in cases if len(case["nums"]) >= min_len]
    return inputs


def _count_space() -> Iterator[tuple[Any, ...]]:
    for op in CMP:
        for k in range(-5, 16):
            yield (op, k)


def _affine_space() -> Iterator[tuple[Any, ...]]:
    for a in range(2, 13):
        for b in range(-5, 10):
            if b:  # x * a + 0 would make a bug (adding b once) right
                yield (a, b)


def _pick_space() -> Iterator[tuple[Any, ...]]:
    for which in WHICH:
        for k in range(-5, 16):
            if k:
                yield (which, k)


def _loop_space() -> Iterator[tuple[Any, ...]]:
    for start in range(0, 3):
        for k in range(2, 7):
            for c in range(1, 6):  # c = 0 would make the order of the two steps irrelevant
                for order in ("mul-add", "add-mul"):
                    yield (order, start, k, c)


def _filter_space() -> Iterator[tuple[Any, ...]]:
    for k in range(2, 13):
        for keep in ("divisible", "not divisible"):
            for agg in ("sum", "count"):
                yield (agg, keep, k)


def _char_space() -> Iterator[tuple[Any, ...]]:
    for ch in LETTERS:
        for what in ("equal", "other"):
            yield (what, ch)


def _loop_body(order: str, start: int, k: int, c: int, extra: int = 0, swap: bool = False) -> str:
    step = f"x = x * {k} + {c}" if (order == "mul-add") != swap else f"x = (x + {c}) * {k}"
    steps = "range(n)" if not extra else f"range(n + {extra})"
    return f"x = {start}\nfor _ in {steps}:\n    {step}\nreturn x"


def _loop_inputs(params: tuple[Any, ...], rng: random.Random) -> list[dict[str, Any]]:
    return [{"n": n} for n in (0, 1, 2, 3, 4, 5)] + [{"n": n} for n in sorted(rng.sample(range(6, 12), 4))]


def _char_inputs(params: tuple[Any, ...], rng: random.Random) -> list[dict[str, Any]]:
    ch = params[1]
    pool = ch * 3 + "".join(rng.sample(LETTERS, 6))
    cases = [{"s": ch}, {"s": "z" if ch != "z" else "y"}, {"s": ch * 3}]
    cases += [{"s": "".join(rng.choice(pool) for _ in range(rng.randint(1, 9)))} for _ in range(7)]
    return cases


def _filter_cond(keep: str, k: int) -> str:
    return f"x % {k} == 0" if keep == "divisible" else f"x % {k} != 0"


def _filter_body(agg: str, keep: str, k: int) -> str:
    what = "x" if agg == "sum" else "1"
    return f"return sum({what} for x in nums if {_filter_cond(keep, k)})"


def _filter_inputs(params: tuple[Any, ...], rng: random.Random) -> list[dict[str, Any]]:
    k = params[2]
    cases = [{"nums": [k]}, {"nums": [k + 1]}, {"nums": [k, 2 * k, 1]}]
    cases += [{"nums": [rng.randint(1, 4 * k) for _ in range(rng.randint(1, 7))]} for _ in range(7)]
    return cases


TEMPLATES: dict[str, Template] = {t.name: t for t in [
    Template(
        name="count", method="countElements", signature="nums: List[int]", returns="int", difficulty="Easy",
        space=_count_space,
        statement=lambda p: f"Given an integer array nums, return the number of elements of nums that are {CMP[p[0]]} {p[1]}.",
        body=lambda p: f"return sum(1 for x in nums if x {p[0]} {p[1]})",
        bugs=lambda p: [f"return sum(1 for x in nums if x {op} {p[1]})" for op in NEAR_CMP[p[0]]]
        + [f"return sum(1 for x in nums if x {p[0]} {p[1] + 1})", f"return sum(1 for x in nums if x {p[0]} {p[1] - 1})"],
        inputs=_list_inputs(lambda p: p[1]),
    ),
    Template(
        name="affine", method="transformSum", signature="nums: List[int]", returns="int", difficulty="Easy",
        space=_affine_space,
        statement=lambda p: f"Given an integer array nums, return the sum of x * {p[0]} + {p[1]} over every element x of nums."
        if p[1] >= 0 else f"Given an integer array nums, return the sum of x * {p[0]} - {-p[1]} over every element x of nums.",
        body=lambda p: f"return sum(x * {p[0]} + {p[1]} for x in nums)" if p[1] >= 0
        else f"return sum(x * {p[0]} - {-p[1]} for x in nums)",
        bugs=lambda p: [f"return sum(x * {p[0]} for x in nums) + {p[1]}", f"return sum(x + {p[0]} * {p[1]} for x in nums)",
                        f"return sum(x * {p[0] + 1} + {p[1]} for x in nums)", f"return sum(x * {p[1]} + {p[0]} for x in nums)"],
        inputs=lambda p, rng: [{"nums": []}] + [{"nums": [0]}] + [{"nums": _nums(rng, 0, spread=5)} for _ in range(8)],
    ),
    Template(
        name="pick", method="pickElement", signature="nums: List[int]", returns="int", difficulty="Easy",
        space=_pick_space,
        statement=lambda p: f"Given an integer array nums with at least two elements, return the {p[0]} element of nums "
        + (f"plus {p[1]}." if p[1] > 0 else f"minus {-p[1]}."),
        body=lambda p: f"return {WHICH[p[0]]} + {p[1]}" if p[1] > 0 else f"return {WHICH[p[0]]} - {-p[1]}",
        bugs=lambda p: [f"return {WHICH[w]} + {p[1]}" if p[1] > 0 else f"return {WHICH[w]} - {-p[1]}" for w in NEAR_WHICH[p[0]]]
        + [f"return {WHICH[p[0]]}", f"return {WHICH[p[0]]} - {p[1]}" if p[1] > 0 else f"return {WHICH[p[0]]} + {-p[1]}"],
        inputs=_list_inputs(lambda p: 0, min_len=2),
    ),
    Template(
        name="loop", method="iterate", signature="n: int", returns="int", difficulty="Medium", arg="n",
        space=_loop_space,
        statement=lambda p: f"Given an integer n, start with x = {p[1]} and repeat n times: "
        + (f"multiply x by {p[2]}, then add {p[3]}." if p[0] == "mul-add" else f"add {p[3]} to x, then multiply x by {p[2]}.")
        + " Return x.",
        body=lambda p: _loop_body(p[0], p[1], p[2], p[3]),
        bugs=lambda p: [_loop_body(p[0], p[1], p[2], p[3], extra=1), _loop_body(p[0], p[1], p[2], p[3], swap=True),
                        _loop_body(p[0], p[1], p[2] + 1, p[3]),
                        _loop_body(p[0], p[1] + 1, p[2], p[3])],
        inputs=_loop_inputs,
    ),
    Template(
        name="filter", method="filterTotal", signature="nums: List[int]", returns="int", difficulty="Medium",
        space=_filter_space,
        statement=lambda p: f"Given an array nums of positive integers, return the {'sum' if p[0] == 'sum' else 'number'} "
        f"of the elements of nums that are {p[1]} by {p[2]}.",
        body=lambda p: _filter_body(*p),
        bugs=lambda p: [_filter_body(p[0], "not divisible" if p[1] == "divisible" else "divisible", p[2]),
                        _filter_body("count" if p[0] == "sum" else "sum", p[1], p[2]), _filter_body(p[0], p[1], p[2] + 1)],
        inputs=_filter_inputs,
    ),
    Template(
        name="chars", method="countChars", signature="s: str", returns="int", difficulty="Easy", arg="s",
        space=_char_space,
        statement=lambda p: "Given a string s of lowercase letters, return how many characters of s are "
        + (f"equal to '{p[1]}'." if p[0] == "equal" else f"different from '{p[1]}'."),
        body=lambda p: f"return s.count('{p[1]}')" if p[0] == "equal" else f"return len(s) - s.count('{p[1]}')",
        bugs=lambda p: [f"return len(s) - s.count('{p[1]}')" if p[0] == "equal" else f"return s.count('{p[1]}')",
                        f"return s.count('{LETTERS[(LETTERS.index(p[1]) + 1) % 26]}')" if p[0] == "equal"
                        else f"return len(s) - s.count('{LETTERS[(LETTERS.index(p[1]) + 1) % 26]}')", "return len(s)"],
        inputs=_char_inputs,
    ),
]}


def variants() -> list[Variant]:
    """Every problem of the family, template by template, in a fixed order."""
    return [Variant(t.name, params) for t in TEMPLATES.values() for params in t.space()]


def solution_code(template: Template, body: str) -> str:
    """A complete LeetCode-style solution: the starter class with `body` as the method's body."""
    indented = "\n".join("        " + line for line in body.splitlines())
    return f"class Solution:\n    def {template.method}(self, {template.signature}) -> {template.returns}:\n{indented}\n"


def run_solution(template: Template, code: str, kwargs: dict[str, Any]) -> Any:
    """Call a solution in this process: only for the trusted code of this module (canonical answers, bug checks)."""
    scope: dict[str, Any] = {"List": list}
    exec(code, scope)  # noqa: S102 -- our own generated solutions, never a model's
    return getattr(scope["Solution"](), template.method)(**kwargs)
