"""How a stdin/stdout program's output is compared with the expected output, in the judge.

Standard library only: this module runs inside the container as part of the judge. A problem
chooses its mode in `metadata["stdio"]` (a dict; missing means the default `tokens`):

- `tokens` (default): the outputs are equal as sequences of whitespace-separated tokens, so
  spacing, blank lines and line ends do not matter ('   home  ' equals 'home'). This is what APPS's
  `testing_util` accepts once its exact and line-stripped attempts fail, and CodeContests's
  default token comparison.
- `lines`: equal line by line after stripping trailing whitespace, trailing blank lines ignored
  (LiveCodeBench's `grade_stdio` without its numeric fallback; our previous default).
- `exact`: byte-for-byte equal after normalising line ends (CRLF -> LF).
- float tolerance, with any mode but `exact`: `abs_tol` and/or `rel_tol` (numbers) make tokens
  that both parse as floats equal when `math.isclose(a, b, rel_tol, abs_tol)`; others must be
  equal (APPS compares with a tolerance when every token is a number; CodeContests problems
  often state 1e-6).
- `checker`: Python source (dataset code, trusted) defining `check(input, expected, output)`
  that returns True/False (or (bool, message)); it runs here in the judge, on the texts as data.
  A checker that raises is a sandbox error of the dataset, never the solution's failure.

`compare(output, expected, stdin, spec)` returns (passed, detail); the detail names the first
differing token or line, bounded, and is only shown with --details (it holds expected text).
"""

from __future__ import annotations

import math
from typing import Any

MODES = ("tokens", "lines", "exact")
DETAIL_CHARS = 80


class CheckerError(Exception):
    """The dataset's checker program failed: the dataset's fault, reported as sandbox_error."""


def _short(text: str) -> str:
    return repr(text if len(text) <= DETAIL_CHARS else text[:DETAIL_CHARS] + "...")


def _float(token: str) -> float | None:
    try:
        return float(token)
    except ValueError:
        return None


def _token_equal(a: str, b: str, abs_tol: float, rel_tol: float) -> bool:
    if a == b:
        return True
    if not (abs_tol or rel_tol):
        return False
    x, y = _float(a), _float(b)
    if x is None or y is None or math.isnan(x) or math.isnan(y):
        return False
    return math.isclose(x, y, rel_tol=rel_tol, abs_tol=abs_tol)


def _lines(text: str) -> list[str]:
    out = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while out and not out[-1]:
        out.pop()
    return out


def compare(output: str, expected: str, stdin: str = "", spec: dict[str, Any] | None = None) -> tuple[bool, str]:
    """(passed, detail) for one stdio test; see the module docstring for `spec`."""
    spec = spec or {}
    checker = spec.get("checker")
    if checker:
        return run_checker(str(checker), stdin, expected, output)
    mode = spec.get("mode", "tokens")
    if mode not in MODES:
        raise CheckerError(f"unknown stdio comparison mode {mode!r}; use one of {list(MODES)} or a checker")
    abs_tol = float(spec.get("abs_tol") or 0.0)
    rel_tol = float(spec.get("rel_tol") or 0.0)
    if mode == "exact":
        a, b = output.replace("\r\n", "\n"), expected.replace("\r\n", "\n")
        if a == b:
            return True, ""
        at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        return False, f"output differs at character {at}: got {_short(a[at:])}, expected {_short(b[at:])}"
    if mode == "lines":
        got, want = _lines(output), _lines(expected)
        for i in range(max(len(got), len(want))):
            g = got[i] if i < len(got) else None
            w = want[i] if i < len(want) else None
            if g is None or w is None:
                g_text = "end of output" if g is None else _short(g)
                return False, f"line {i + 1}: got {g_text}, expected {'end of output' if w is None else _short(w)}"
            if g != w:
                gt, wt = g.split(), w.split()
                close = len(gt) == len(wt) and all(_token_equal(x, y, abs_tol, rel_tol) for x, y in zip(gt, wt))
                if not (abs_tol or rel_tol) or not close:
                    return False, f"line {i + 1}: got {_short(g)}, expected {_short(w)}"
        return True, ""
    got_t, want_t = output.split(), expected.split()
    for i in range(max(len(got_t), len(want_t))):
        if i >= len(got_t) or i >= len(want_t):
            g = _short(got_t[i]) if i < len(got_t) else "end of output"
            w = _short(want_t[i]) if i < len(want_t) else "end of output"
            return False, f"token {i + 1}: got {g}, expected {w}"
        if not _token_equal(got_t[i], want_t[i], abs_tol, rel_tol):
            return False, f"token {i + 1}: got {_short(got_t[i])}, expected {_short(want_t[i])}"
    return True, ""


_CHECKERS: dict[str, Any] = {}


def run_checker(source: str, stdin: str, expected: str, output: str) -> tuple[bool, str]:
    """Run a dataset's `check(input, expected, output)` (trusted code) on the texts."""
    check = _CHECKERS.get(source)
    if check is None:
        namespace: dict[str, Any] = {"__name__": "__checker__"}
        try:
            exec(compile(source, "<checker>", "exec"), namespace)
        except BaseException as exc:  # noqa: BLE001 -- dataset code: its failure is ours to report, not the solution's
            raise CheckerError(f"the checker program does not load: {type(exc).__name__}: {exc}"[:300]) from None
        check = namespace.get("check")
        if not callable(check):
            raise CheckerError("the checker program defines no check(input, expected, output) function")
        if len(_CHECKERS) > 64:
            _CHECKERS.clear()
        _CHECKERS[source] = check
    try:
        verdict = check(stdin, expected, output)
    except BaseException as exc:  # noqa: BLE001 -- as above: a broken checker is a sandbox error
        raise CheckerError(f"the checker raised {type(exc).__name__}: {exc}"[:300]) from None
    if isinstance(verdict, tuple):
        ok, message = bool(verdict[0]), str(verdict[1] if len(verdict) > 1 else "")
    else:
        ok, message = bool(verdict), ""
    return ok, "" if ok else ("checker: " + message[:DETAIL_CHARS * 2] if message else "checker rejected the output")


# ------------------------------------------------------------------------------------------------
# Failure descriptions of function tests (--details)

DESCRIBE_CHARS = 160  # per part: the call, the value returned, the value expected


def safe_repr(value: Any, limit: int = DESCRIBE_CHARS) -> str:
    """repr of decoded plain data, bounded in size and depth; never raises. Strings come out
    quoted and escaped, so a returned value cannot pass itself off as the judge's own words."""
    import reprlib

    short = reprlib.Repr()
    short.maxstring = short.maxother = limit
    short.maxlist = short.maxtuple = short.maxset = short.maxfrozenset = short.maxdict = 12
    short.maxlevel = 4
    try:
        text = short.repr(value)
    except Exception as exc:  # noqa: BLE001 -- a helper type's __repr__ (dataset code) may fail
        text = f"<{type(value).__name__}: repr failed ({type(exc).__name__})>"
    return text if len(text) <= limit else text[:limit] + "..."


def describe_failure(source: str, namespace: dict[str, Any], call: tuple[tuple[Any, ...], dict[str, Any]] | None,
                     returned: Any) -> str:
    """"wrong answer: call candidate(...) returned X, expected Y" for a failed function test.

    The call and the value are the last ones this test made; the expected value is the other
    side of `assert candidate(...) == EXPR` (evaluated here, in the judge: test code is trusted)
    or, for evalplus tests, the canonical's output for that input. Parts that cannot be told are
    left out."""
    import ast as _ast

    parts = ["wrong answer:"]
    if call is not None:
        args = [safe_repr(a, 60) for a in call[0]] + [f"{k}={safe_repr(v, 60)}" for k, v in call[1].items()]
        text = ", ".join(args)
        parts.append(f"call candidate({text if len(text) <= DESCRIBE_CHARS else text[:DESCRIBE_CHARS] + '...'})")
        parts.append(f"returned {safe_repr(returned)}")
    expected = _NOTHING
    try:
        tree = _ast.parse(source)
        node = tree.body[-1] if tree.body else None
        if isinstance(node, _ast.Assert):
            test = node.test
            if (isinstance(test, _ast.Call) and isinstance(test.func, _ast.Name) and test.func.id == "qrpo_check"
                    and len(test.args) == 2 and isinstance(test.args[1], _ast.Constant) and "qrpo_expected" in namespace):
                expected = namespace["qrpo_expected"][test.args[1].value]
            elif isinstance(test, _ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], _ast.Eq):
                sides = [test.left, test.comparators[0]]
                other = [s for s in sides if not (isinstance(s, _ast.Call) and isinstance(s.func, _ast.Name))]
                if len(other) == 1:
                    expected = eval(compile(_ast.Expression(other[0]), "<expected>", "eval"), dict(namespace))
    except Exception:  # noqa: BLE001, S110 -- the description is best effort; the verdict stands
        pass
    if expected is not _NOTHING:
        parts.append(f"expected {safe_repr(expected)}")
    return " ".join(parts)


_NOTHING = object()
