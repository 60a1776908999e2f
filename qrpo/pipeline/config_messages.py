"""pydantic's first validation error of a config as the one line a user reads: the key, what it must be, and
the fix (the choices, the valid keys, or the range with a valid example), never a traceback.
"""

from __future__ import annotations

from inspect import isclass
from typing import Any, get_args

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from .ranges import SCIENTIFIC, range_of, strip_optional

TYPE_NAMES = {"int": "an integer", "float": "a number", "string": "a string", "bool": "true or false",
              "list": "a list", "dict": "a mapping"}


def one_line(error: ValidationError, root: type[BaseModel]) -> str:
    """pydantic's first error as one line that names the key and what it must be (`root`: the model
    that was validated)."""
    first = error.errors()[0]
    loc, kind, value = first["loc"], first["type"], first.get("input")
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    if kind == "extra_forbidden":
        parent, where = _model_at(loc[:-1], root), key.rpartition(".")[0]
        fields = ", ".join(parent.model_fields) if parent is not None else "?"
        return f"unknown config key '{key}'; valid keys{' under ' + where if where else ''}: {fields}"
    if kind == "literal_error":
        choices = ", ".join(str(c) for c in get_args(strip_optional(_annotation_at(loc, root))))
        return f"config key '{key}' is {value!r}; choose one of: {choices}"
    if kind in ("model_type", "model_attributes_type"):
        model = _model_at(loc, root)
        fields = ", ".join(model.model_fields) if model is not None else "..."
        return f"{key} must be a mapping of keys ({fields}), got {_kind(value)}"
    if kind == "value_error":  # our validators: the message says what is wrong and the choices
        return f"config key '{key}' {str(first['ctx']['error'])}"
    bounds = range_of(_field_at(loc, root))
    example = f"; for example --set {key}={bounds.example}" if bounds is not None else ""
    if kind in ("greater_than", "less_than", "greater_than_equal", "less_than_equal") and bounds is not None:
        written = value if isinstance(value, str) and SCIENTIFIC.match(value) else repr(value)  # 1e9, not '1e9'
        return f"config key '{key}' is {written}, not in the range {bounds.text()}{example}"
    base = kind.split("_")[0]
    if base in TYPE_NAMES:
        return f"config key '{key}' must be {TYPE_NAMES[base]}, got {_kind(value)}{example}"
    return f"config key '{key}': {first['msg']}"


def _kind(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r}"[:80]


def _annotation_at(loc: tuple[int | str, ...], root: type[BaseModel]) -> Any:
    """The type of the config key at `loc` (a field, or an item of a list field)."""
    annotation: Any = root
    for part in loc:
        annotation = strip_optional(annotation)
        if isinstance(part, int):
            annotation = get_args(annotation)[0] if get_args(annotation) else Any
        elif isclass(annotation) and issubclass(annotation, BaseModel) and part in annotation.model_fields:
            annotation = annotation.model_fields[part].annotation
        else:
            return Any
    return annotation


def _field_at(loc: tuple[int | str, ...], root: type[BaseModel]) -> FieldInfo | None:
    """The field of the config key at `loc` (None: an item of a list, or no such key)."""
    model = _model_at(loc[:-1], root) if loc and isinstance(loc[-1], str) else None
    return model.model_fields.get(str(loc[-1])) if model is not None else None


def _model_at(loc: tuple[int | str, ...], root: type[BaseModel]) -> type[BaseModel] | None:
    annotation = strip_optional(_annotation_at(loc, root))
    return annotation if isclass(annotation) and issubclass(annotation, BaseModel) else None
