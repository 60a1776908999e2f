"""What a dataset adapter is, and where the loader finds one by name or by the fields of a row.

An adapter is written against this module alone: subclass `Adapter`, raise `FieldError` for a bad
row (the helpers `require`, `check_python` and `function_tests` raise it with a message that names
the fix), and `register` an instance. The registry is one ordered table: detection tries the
adapters in registration order, and a name given by a user (`--format`, `--adapter module:Name`,
an installed package's "qrpo.datasets" entry point) is looked up in it. Reading files and turning
rows into Problems is `sandbox.datasets.load`'s job; both are re-exported by `sandbox.datasets`.
"""

from __future__ import annotations

from typing import Any

from sandbox.problem import Problem, Test


class FieldError(ValueError):
    """Raised by an adapter for a bad row: `field` is the offending field, the message names the fix."""

    def __init__(self, field: str | None, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


class UnknownFormatError(ValueError):
    """No registered adapter has this name, or none recognises a row."""


class Adapter:
    """Converts the rows of one dataset format into Problems.

    Subclasses set `name` (what users pass as `format=`) and `description` (shown when detection
    fails), and implement `detect` and `to_problem`. `to_problem` raises `FieldError` for a bad
    row; KeyError (a missing field), SyntaxError (code that does not parse) and other ValueErrors
    are turned into RowErrors by the loader as well.
    """

    name: str = ""
    description: str = ""

    def detect(self, row: dict[str, Any]) -> bool:
        raise NotImplementedError

    def to_problem(self, row: dict[str, Any]) -> Problem:
        raise NotImplementedError

    def task_id(self, row: dict[str, Any]) -> str | None:
        """The row's task_id, if it can be told without converting the row (for error messages)."""
        value = row.get("task_id")
        return None if value is None else str(value)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


_REGISTRY: dict[str, Adapter] = {}


def register(adapter: Adapter | type[Adapter], *, first: bool = False, replace: bool = False) -> Adapter | type[Adapter]:
    """Add an adapter (an instance, or a class that is instantiated without arguments).

    Detection tries adapters in registration order; `first=True` puts this one ahead of the
    built-ins. Returns its argument, so it also works as a class decorator."""
    instance = adapter() if isinstance(adapter, type) else adapter
    if not instance.name:
        raise ValueError(f"{instance!r} has no name; set the class attribute `name`")
    if instance.name in _REGISTRY and not replace:
        raise ValueError(f"a dataset format named {instance.name!r} is already registered; pass replace=True to override it")
    _REGISTRY.pop(instance.name, None)
    if first:
        items = list(_REGISTRY.items())
        _REGISTRY.clear()
        _REGISTRY[instance.name] = instance
        _REGISTRY.update(items)
    else:
        _REGISTRY[instance.name] = instance
    return adapter


ENTRY_POINT_GROUP = "qrpo.datasets"
_entry_points_loaded = False


def load_adapter(spec: str) -> Adapter:
    """Import and register a user's adapter given as "module:Name" (a class or an instance).

    The module is imported by name (it must be on sys.path, e.g. an installed package or the
    working directory); its adapter replaces a registered one of the same name."""
    import importlib

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UnknownFormatError(f"--adapter {spec!r}: give it as module:Name, e.g. my_datasets:MyFormat")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UnknownFormatError(f"--adapter {spec!r}: cannot load it ({type(exc).__name__}: {exc}); "
                                 "check the module is importable (installed, or on PYTHONPATH) and defines that name") from None
    instance = obj() if isinstance(obj, type) else obj
    if not isinstance(instance, Adapter):
        raise UnknownFormatError(f"--adapter {spec!r} is a {type(instance).__name__}, not a sandbox.datasets.Adapter subclass")
    register(instance, replace=True)
    return instance


def load_entry_points() -> list[str]:
    """Register the adapters that installed packages declare in the "qrpo.datasets" entry-point
    group (`[project.entry-points."qrpo.datasets"] myformat = "my_pkg.formats:MyFormat"`);
    once per process. Returns the names registered."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return []
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    names = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = point.load()
            instance = obj() if isinstance(obj, type) else obj
            if isinstance(instance, Adapter) and instance.name not in _REGISTRY:
                register(instance)
                names.append(instance.name)
        except Exception:  # noqa: BLE001, S112 -- a broken third-party plugin must not break loading
            continue
    return names


def known_formats() -> list[str]:
    load_entry_points()
    return list(_REGISTRY)


def format_list() -> str:
    """Every registered format with its description, for an error that lists what would have matched."""
    return "; ".join(f"{a.name} ({a.description})" if a.description else a.name for a in _REGISTRY.values())


def get_adapter(name: str | Adapter) -> Adapter:
    """The adapter registered under `name` (an Adapter instance is returned as is)."""
    if isinstance(name, Adapter):
        return name
    if name not in _REGISTRY:
        load_entry_points()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownFormatError(f"unknown dataset format {name!r}; known formats: {', '.join(_REGISTRY)} (or 'auto')") from None


def detect_adapter(row: dict[str, Any]) -> Adapter | None:
    """The first registered adapter that recognises `row`, or None."""
    for adapter in _REGISTRY.values():
        try:
            if adapter.detect(row):
                return adapter
        except Exception:  # noqa: BLE001, S112 -- a detector must never sink a load; a crash means "not mine"
            continue
    return None


def detect_format(row: dict[str, Any]) -> str:
    """The name of the first registered format that recognises `row` from its fields.

    Raises UnknownFormatError listing the known formats and the row's fields when none does."""
    if not isinstance(row, dict):
        raise UnknownFormatError(f"a dataset row must be a JSON object, got {type(row).__name__}")
    adapter = detect_adapter(row)
    if adapter is None:
        raise UnknownFormatError(
            f"no known dataset format matches a row with fields {sorted(row)}; known formats: {format_list()}. "
            "Pass format=<name> to force one, or register an adapter for this format (see sandbox.datasets)"
        )
    return adapter.name


# --------------------------------------------------------------------------------------------
# Helpers for writing an adapter


def require(row: dict[str, Any], name: str, kind: type | tuple[type, ...] = str, *, nonempty: bool = True) -> Any:
    """row[name], checked: present, of type `kind`, and (for strings) not blank."""
    if name not in row or row[name] is None:
        raise FieldError(name, f"missing field {name!r}; add it to the row or drop the row")
    value = row[name]
    if not isinstance(value, kind):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise FieldError(name, f"field {name!r} must be a {want}, got {type(value).__name__}; fix the row")
    if nonempty and isinstance(value, str) and not value.strip():
        raise FieldError(name, f"field {name!r} is empty; fill it in or drop the row")
    return value


def check_python(source: str, field_name: str, mode: str = "exec") -> None:
    """Raise FieldError when `source` (dataset code in `field_name`) does not parse."""
    import ast

    try:
        ast.parse(source, mode=mode)
    except SyntaxError as exc:
        raise FieldError(
            field_name, f"{field_name!r} does not parse as Python ({exc.msg}, line {exc.lineno}); fix the code"
        ) from None


def function_tests(source: str, field_name: str, candidate: str = "candidate") -> tuple[str, tuple[Test, ...], str]:
    """split_check(source) as (test_setup, tests, candidate), with errors as FieldErrors."""
    from sandbox.judge.checks import split_check

    try:
        split = split_check(source, candidate=candidate)
    except SyntaxError as exc:
        raise FieldError(
            field_name, f"test code in {field_name!r} does not parse ({exc.msg}, line {exc.lineno}); fix the test code"
        ) from None
    except ValueError as exc:
        raise FieldError(
            field_name, f"{exc}; the {field_name!r} field needs at least one assert that calls {candidate!r}"
        ) from None
    return split.setup, tuple(Test(kind="function", source=t) for t in split.tests), split.candidate
