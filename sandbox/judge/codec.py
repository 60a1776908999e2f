"""Plain-data encoding of the values that cross the trust boundary.

The untrusted process sends back only the value its call returned; the judge decodes it into
builtins (and instances of the dataset's own helper classes, such as ListNode, created without
running any of their code) and compares with `==` in its own process. Nothing the untrusted side
sends can execute code in the judge: no pickle, no eval, exact type checks, hard limits.

Wire form: a JSON document `{"root": VALUE, "nodes": [NODE, ...]}`. A VALUE is a JSON scalar
(None, bool, int, float, str) or `[i]`, a reference to node i. Nodes are containers, so shared
and cyclic structures (and 100k-long linked lists) encode without recursion:
`["list", [V...]]`, `["tuple", ...]`, `["set", ...]`, `["frozenset", ...]`, `["dict", [[K, V]...]]`,
`["obj", class_name, [[attr, V]...]]`, `["int", hex]` (beyond 64 bits), `["bytes", hex]`,
`["complex", re, im]`.
"""

from __future__ import annotations

import re
from typing import Any

MAX_NODES = 2_000_000
MAX_INT_HEX_DIGITS = 20_000
SMALL_INT = 1 << 63
_HEX = re.compile(r"-?[0-9a-f]+")


class DecodeError(ValueError):
    """The untrusted side sent something that is not a well-formed, bounded value."""


class EncodeError(TypeError):
    """A value holds a type that is not plain data (a function, a generator, a custom class)."""


_SEQUENCES: dict[type, str] = {list: "list", tuple: "tuple", set: "set", frozenset: "frozenset"}


def encode(value: Any, helper_types: dict[str, type] | None = None, max_nodes: int = MAX_NODES) -> dict:
    """Encode `value` as plain data. Exact type checks: a subclass of int with a rigged `__eq__`
    is not an int here. `helper_types` maps class names to the classes allowed as objects."""
    helpers = {cls: name for name, cls in (helper_types or {}).items()}
    nodes: list[Any] = []
    index: dict[int, int] = {}
    keep_alive: list[Any] = []
    work: list[tuple[Any, list[Any] | None, int]] = []

    def ref(obj: Any) -> Any:
        t = type(obj)
        if obj is None or t is bool or t is str or t is float:
            return obj
        if t is int:
            if -SMALL_INT < obj < SMALL_INT:
                return obj
            if len(nodes) >= max_nodes:
                raise EncodeError(f"value has more than {max_nodes} parts")
            nodes.append(["int", format(obj, "x")])
            return [len(nodes) - 1]
        key = id(obj)
        if key in index:
            return [index[key]]
        if len(nodes) >= max_nodes:
            raise EncodeError(f"value has more than {max_nodes} parts")
        i = len(nodes)
        index[key] = i
        keep_alive.append(obj)
        if t in _SEQUENCES:
            nodes.append([_SEQUENCES[t], None])
            work.append((obj, nodes[i], 1))
        elif t is dict:
            nodes.append(["dict", None])
            work.append((obj, nodes[i], 1))
        elif t in helpers:
            nodes.append(["obj", helpers[t], None])
            work.append((obj, nodes[i], 2))
        elif t is bytes:
            nodes.append(["bytes", obj.hex()])
        elif t is complex:
            nodes.append(["complex", obj.real, obj.imag])
        else:
            raise EncodeError(f"cannot send a value of type {t.__name__!r}")
        return [i]

    root = ref(value)
    while work:
        obj, node, slot = work.pop()
        if node[0] == "dict":
            node[slot] = [[ref(k), ref(v)] for k, v in obj.items()]
        elif node[0] == "obj":
            attrs = getattr(obj, "__dict__", {})
            node[slot] = [[str(k), ref(v)] for k, v in attrs.items() if type(k) is str]
        else:
            node[slot] = [ref(v) for v in obj]
    return {"root": root, "nodes": nodes}


def decode(doc: Any, helper_types: dict[str, type] | None = None, max_nodes: int = MAX_NODES) -> Any:
    """Decode untrusted plain data. Helper objects are created with `object.__new__`, so no code
    of the class runs; attribute names must be public identifiers. Any malformed input raises
    DecodeError and nothing else (a helper's own `__hash__` failing on a half-built object
    included)."""
    try:
        return _decode(doc, helper_types, max_nodes)
    except DecodeError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError, OverflowError, RecursionError, MemoryError) as exc:
        raise DecodeError(f"malformed value ({type(exc).__name__})") from None


def _decode(doc: Any, helper_types: dict[str, type] | None, max_nodes: int) -> Any:
    if type(doc) is not dict or set(doc) != {"root", "nodes"} or type(doc["nodes"]) is not list:
        raise DecodeError("malformed value document")
    helpers = helper_types or {}
    raw = doc["nodes"]
    if len(raw) > max_nodes:
        raise DecodeError(f"value has more than {max_nodes} parts")
    made: list[Any] = [None] * len(raw)
    # Pass 1: create every container empty (immutable ones are filled in pass 2 in an order
    # that respects their children). Pass 2 fills mutable containers.
    for i, node in enumerate(raw):
        if type(node) is not list or not node or type(node[0]) is not str:
            raise DecodeError(f"malformed node {i}")
        tag = node[0]
        if tag == "list":
            made[i] = []
        elif tag == "dict":
            made[i] = {}
        elif tag == "obj":
            if len(node) != 3 or type(node[1]) is not str or node[1] not in helpers:
                raise DecodeError(f"node {i}: unknown object type")
            made[i] = object.__new__(helpers[node[1]])
        elif tag == "int":
            digits = node[1] if len(node) == 2 else None
            if type(digits) is not str or len(digits) > MAX_INT_HEX_DIGITS or not _HEX.fullmatch(digits):
                raise DecodeError(f"node {i}: bad integer")
            try:
                made[i] = int(digits, 16)
            except ValueError:
                raise DecodeError(f"node {i}: bad integer") from None
        elif tag == "bytes":
            if len(node) != 2 or type(node[1]) is not str or not _HEX.fullmatch(node[1] or "0"):
                raise DecodeError(f"node {i}: bad bytes")
            try:
                made[i] = bytes.fromhex(node[1])
            except ValueError:
                raise DecodeError(f"node {i}: bad bytes") from None
        elif tag == "complex":
            if len(node) != 3 or not all(type(x) in (int, float) for x in node[1:]):
                raise DecodeError(f"node {i}: bad complex")
            try:
                made[i] = complex(float(node[1]), float(node[2]))
            except OverflowError:
                raise DecodeError(f"node {i}: bad complex") from None
        elif tag not in ("tuple", "set", "frozenset"):
            raise DecodeError(f"node {i}: unknown tag {tag!r}")
    resolving: set[int] = set()

    def value(v: Any) -> Any:
        t = type(v)
        if v is None or t is bool or t is int or t is float or t is str:
            return v
        if t is list and len(v) == 1 and type(v[0]) is int and 0 <= v[0] < len(raw):
            j = v[0]
            if made[j] is None and raw[j][0] in ("tuple", "set", "frozenset"):
                build_immutable(j)
            return made[j]
        raise DecodeError("malformed value")

    def items(i: int) -> list:
        body = raw[i][1] if len(raw[i]) == 2 else None
        if type(body) is not list:
            raise DecodeError(f"node {i}: malformed body")
        return body

    def build_immutable(i: int) -> None:
        # Immutable containers cannot be cyclic through themselves; resolve children first,
        # iteratively, so a deep tuple chain does not exhaust the stack.
        stack = [i]
        while stack:
            j = stack[-1]
            if made[j] is not None:
                stack.pop()
                continue
            if j in resolving and all(made[c] is not None for c in _children(j)):
                pass
            elif j in resolving:
                raise DecodeError(f"node {j}: cyclic immutable value")
            pending = [c for c in _children(j) if made[c] is None and raw[c][0] in ("tuple", "set", "frozenset")]
            if pending and j not in resolving:
                resolving.add(j)
                stack.extend(pending)
                continue
            elems = [value(v) for v in items(j)]
            tag = raw[j][0]
            try:
                made[j] = tuple(elems) if tag == "tuple" else set(elems) if tag == "set" else frozenset(elems)
            except TypeError:
                raise DecodeError(f"node {j}: unhashable set element") from None
            resolving.discard(j)
            stack.pop()

    def _children(j: int) -> list[int]:
        out = []
        for v in items(j):
            if type(v) is list and len(v) == 1 and type(v[0]) is int and 0 <= v[0] < len(raw):
                out.append(v[0])
        return out

    # Objects first, so a helper's hash sees its attributes when it lands in a set or dict key.
    for i, node in enumerate(raw):
        if node[0] == "obj":
            if type(node[2]) is not list:
                raise DecodeError(f"node {i}: malformed object")
            attrs = made[i].__dict__
            for pair in node[2]:
                if type(pair) is not list or len(pair) != 2 or type(pair[0]) is not str:
                    raise DecodeError(f"node {i}: malformed attribute")
                name = pair[0]
                if not name.isidentifier() or name.startswith("__"):
                    raise DecodeError(f"node {i}: attribute name {name[:40]!r} not allowed")
                attrs[name] = value(pair[1])
    for i, node in enumerate(raw):
        tag = node[0]
        if tag == "list":
            made[i].extend(value(v) for v in items(i))
        elif tag == "dict":
            d = made[i]
            for pair in items(i):
                if type(pair) is not list or len(pair) != 2:
                    raise DecodeError(f"node {i}: malformed dict item")
                try:
                    d[value(pair[0])] = value(pair[1])
                except TypeError:
                    raise DecodeError(f"node {i}: unhashable dict key") from None
        elif tag in ("tuple", "set", "frozenset") and made[i] is None:
            build_immutable(i)
    return value(doc["root"])


def helper_classes(namespace: dict[str, Any]) -> dict[str, type]:
    """Classes defined by dataset code (the preamble), by name: the only objects allowed across."""
    out = {}
    for name, obj in namespace.items():
        if (
            type(obj) is type
            and obj.__module__ == namespace.get("__name__")
            and obj.__bases__ == (object,)  # object.__new__ must be able to make one
            and "__slots__" not in vars(obj)  # attributes live in __dict__
        ):
            out[name] = obj
    return out
