"""Dataset adapters: turn rows of a public dataset into `Problem`s.

This package is the one place a caller imports from: the adapter contract and registry
(`registry.py`) and the loader (`load.py`) are re-exported here, and the built-in adapters are
registered here, in a fixed detection order.

A new format is one small module: subclass `Adapter`, give it a `name`, a `detect(row)` that
recognises the format from the row's fields and a `to_problem(row)`, and `register` an instance.

    from sandbox.datasets import Adapter, FieldError, register

    class MyFormat(Adapter):
        name = "myformat"
        description = "rows with 'uid', 'statement' and 'asserts'"

        def detect(self, row):
            return {"uid", "statement", "asserts"} <= row.keys()

        def to_problem(self, row):
            ...  # raise FieldError(field, message naming the fix) for a bad row

    register(MyFormat())

`load_problems` reads a JSONL (or JSONL.gz) file, or any iterable of dict rows, and never stops
at a bad row: invalid JSON, invalid UTF-8, a missing field, test code that does not parse or a
duplicate task_id each become a `RowError` (row number, task_id if known, field, a message that
names the fix) and the remaining rows still load (`sandbox.datasets.load`).

Format detection is per row, in registration order (native first, then humanevalplus,
mbppplus, leetcode, humaneval, mbpp, mbpp-original, livecodebench, codecontests, stdio); the built-in
detectors are also mutually exclusive on the supported datasets.
A row that no adapter recognises is converted by the file's dominant format, so a LeetCode row
that lost its `test` field is reported as "missing field 'test'" rather than "unknown format";
only when no row of the input is recognised does every row get an "unknown format" error.
"""

from __future__ import annotations

from .load import TEST_SETS, LoadedProblems, RowError, Skipped, TestSet, load_problems, read_jsonl
from .registry import (
    _REGISTRY,
    ENTRY_POINT_GROUP,
    Adapter,
    FieldError,
    UnknownFormatError,
    check_python,
    detect_format,
    function_tests,
    get_adapter,
    known_formats,
    load_adapter,
    load_entry_points,
    register,
    require,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "Adapter",
    "FieldError",
    "LoadedProblems",
    "RowError",
    "TEST_SETS",
    "TestSet",
    "Skipped",
    "UnknownFormatError",
    "check_python",
    "detect_format",
    "function_tests",
    "get_adapter",
    "known_formats",
    "load_adapter",
    "load_entry_points",
    "load_problems",
    "read_jsonl",
    "register",
    "require",
]


# Built-in adapters register themselves on import. Detection order is fixed here, not by the
# order of the imports: native first, so prepared datasets are never mistaken for their source.
from sandbox.datasets import evalplus, humaneval, leetcode, mbpp, native, published, stdio  # noqa: E402, F401

BUILTIN_ORDER = ("native", "humanevalplus", "mbppplus", "leetcode", "humaneval", "mbpp", "mbpp-original", "livecodebench",
                 "codecontests", "stdio")
for _name in BUILTIN_ORDER:
    _REGISTRY[_name] = _REGISTRY.pop(_name)
del _name
