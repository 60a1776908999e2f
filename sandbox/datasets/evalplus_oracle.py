"""evalplus's output oracle, run by the judge: compare a returned value with the canonical's.

This file is stdlib-only and self-contained because its *source* is placed in the test setup
of every HumanEval+ / MBPP+ problem (trusted dataset code, run only in the judge), so the judge
needs no new module and the runner never sees it nor the expected values it holds.

It reproduces `evalplus.eval.unsafe_execute` (evalplus 0.3.1) for one input:
- `out == exp`; then the per-task special oracles (MBPP: set equality for the `*_SET_EQ`
  tasks, "not None" for tasks whose outputs are not serialisable, the custom oracles of
  Mbpp/164, /295, /558, /581; HumanEval/32 `find_zero`: |poly(xs, out)| <= atol);
- when not equal and the tolerance is non-zero: same type, same length, and numpy's
  `allclose(out, exp, rtol=1e-7, atol)` on numbers (here in pure Python: numbers only, equal
  shapes, inf equal to itself, nan never close). A zero `atol` becomes 1e-6 once an expected
  value is a float or a list of floats, and stays so for the later inputs of the same group
  (evalplus's loop variable); the host precomputes that per input (`atol` below).
Values cross as tagged JSON (`qrpo_decode`): tuples, sets, dicts with any keys, complex,
bytes, non-finite floats, and lists of numbers packed 8 bytes each (`qrpo_unpack`).
"""

import base64
import math
import re
from array import array

QRPO_SET_EQ = frozenset({
    "similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly",
    "larg_nnum", "intersection_array", "find_dissimilar", "Diff",
})
QRPO_NOT_NONE = frozenset({"check_str", "text_match_three", "text_starta_endb"})


class QrpoUnrepresentable:
    """An expected value the canonical returned that is not plain data: equal to nothing."""

    def __eq__(self, other):
        return False

    def __ne__(self, other):
        return True

    __hash__ = None  # type: ignore[assignment]  # unhashable, as equal to nothing


def qrpo_decode(value):
    """Tagged JSON -> Python value (the inverse of the reference driver's encoder)."""
    if isinstance(value, list):
        return [qrpo_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    (tag, body), = value.items()
    if tag in ("t", "s", "fs", "d"):
        body = qrpo_decode(body)
    return qrpo_untag({tag: body})


def qrpo_untag(value):
    """One tagged object whose body is already decoded -> its Python value: `json.loads`'s
    object_hook, called innermost first (every JSON object of tagged JSON is a tag)."""
    (tag, body), = value.items()
    if tag == "t":
        return tuple(body)
    if tag == "s":
        return set(body)
    if tag == "fs":
        return frozenset(body)
    if tag == "d":
        return {k: v for k, v in body}
    if tag == "i":
        return int(body, 16)
    if tag == "f":
        return float(body)
    if tag == "c":
        return complex(body[0], body[1])
    if tag == "b":
        return bytes.fromhex(body)
    if tag == "pk":
        return qrpo_unpack(body)
    return QrpoUnrepresentable()


def qrpo_unpack(body):
    """A list of numbers the host packed (sandbox.judge.codec's PACKED text: runs, then the
    base64 of each number's 8 bytes). The host made it, so it is trusted as is."""
    head, _, text = body.partition(":")
    data = base64.b64decode(text)
    out, start = [], 0
    for count, code in re.findall(r"([0-9]+)([qd])", head):
        numbers = array(code)
        numbers.frombytes(data[start:start + 8 * int(count)])
        out += numbers.tolist()
        start += 8 * int(count)
    return out


def _qrpo_number(x):
    return isinstance(x, (int, float, complex))


def _qrpo_close(a, b, atol, rtol):
    if _qrpo_number(a) and _qrpo_number(b):
        try:
            if a == b:
                return True
            a, b = complex(a), complex(b)
        except (OverflowError, TypeError):
            return False
        if any(math.isnan(v) or math.isinf(v) for v in (a.real, a.imag, b.real, b.imag)):
            return False
        return abs(a - b) <= atol + rtol * abs(b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return all(_qrpo_close(x, y, atol, rtol) for x, y in zip(a, b))
    return False


def _qrpo_poly(xs, x):
    return sum(coeff * math.pow(x, i) for i, coeff in enumerate(xs))


def qrpo_evalplus_match(dataset, entry_point, inp, out, exp, atol):
    """True when `out` is accepted for input `inp` whose canonical output is `exp`."""
    exact = out == exp
    if dataset == "mbpp":
        if entry_point == "are_equivalent":  # Mbpp/164: every answer is accepted
            return True
        if entry_point == "sum_div":  # Mbpp/295
            exact = exact or out == 0
        elif entry_point == "surface_Area":  # Mbpp/581
            exact = exact or abs(out - _qrpo_surface_area(*inp)) <= atol
        elif entry_point == "digit_distance_nums":  # Mbpp/558
            exact = exact or out == _qrpo_digit_distance(*inp)
        elif entry_point in QRPO_SET_EQ:
            exact = set(out) == set(exp)
        elif entry_point in QRPO_NOT_NONE:  # exp is whether the canonical's output was not None
            exact = out == exp if isinstance(out, bool) else exp == (out is not None)
    if dataset == "humaneval" and entry_point == "find_zero":
        return abs(_qrpo_poly(inp[0], out)) <= atol  # find_zero(xs): the polynomial xs at the returned root
    if not exact and atol != 0:
        if type(out) is not type(exp):
            return False
        if isinstance(exp, (list, tuple)) and len(out) != len(exp):
            return False
        return _qrpo_close(out, exp, atol, 1e-07)
    return bool(exact)


def _qrpo_surface_area(base_edge, height):
    slant_height = math.sqrt((base_edge / 2) ** 2 + height**2)
    return round(base_edge**2 + 4 * (base_edge * slant_height) / 2)


def _qrpo_digit_distance(num1, num2):
    a, b = str(num1), str(num2)
    width = max(len(a), len(b))
    return sum(abs(int(x) - int(y)) for x, y in zip(a.zfill(width), b.zfill(width)))
