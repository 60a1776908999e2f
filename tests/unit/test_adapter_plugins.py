"""Users' own dataset adapters, loaded from outside the package: `--adapter module:Name` and the
"qrpo.datasets" entry-point group."""

from __future__ import annotations

import textwrap

import pytest

from sandbox import datasets
from sandbox.datasets import UnknownFormatError, load_adapter, load_problems, registry

MODULE = textwrap.dedent('''
    from sandbox.datasets import Adapter, require
    from sandbox.problem import Problem, Test


    class {cls}(Adapter):
        name = "{name}"
        description = "rows with 'id', 'func', 'cases'"

        def detect(self, row):
            return {{"id", "func", "cases"}} <= row.keys()

        def to_problem(self, row):
            tests = tuple(Test("function", f"assert candidate(*{{a!r}}) == {{e!r}}") for a, e in require(row, "cases", list))
            return Problem(task_id=str(row["id"]), prompt="add", tests=tests, entry_point=require(row, "func"))
''')
ROW = {"id": "sum", "func": "add", "cases": [[[1, 2], 3], [[2, 2], 4]]}


@pytest.fixture
def restore_registry():
    saved = dict(datasets._REGISTRY)
    yield
    datasets._REGISTRY.clear()
    datasets._REGISTRY.update(saved)


def test_adapter_from_a_module_outside_the_package(tmp_path, monkeypatch, restore_registry):
    (tmp_path / "my_formats.py").write_text(MODULE.format(cls="MyCases", name="mycases"))
    monkeypatch.syspath_prepend(str(tmp_path))
    adapter = load_adapter("my_formats:MyCases")
    assert adapter.name == "mycases"
    loaded = load_problems([ROW], format="mycases")
    assert loaded.formats == {"mycases": 1} and len(loaded["sum"].tests) == 2


def test_bad_adapter_specs_are_clear_errors(tmp_path, monkeypatch, restore_registry):
    (tmp_path / "not_adapters.py").write_text("class Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UnknownFormatError, match="module:Name"):
        load_adapter("no_colon")
    with pytest.raises(UnknownFormatError, match="cannot load it"):
        load_adapter("does_not_exist_anywhere:X")
    with pytest.raises(UnknownFormatError, match="not a sandbox.datasets.Adapter"):
        load_adapter("not_adapters:Thing")


def test_adapter_from_an_entry_point(tmp_path, monkeypatch, restore_registry):
    (tmp_path / "plugin_formats.py").write_text(MODULE.format(cls="PluginCases", name="plugincases"))
    info = tmp_path / "plugin_formats-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plugin-formats\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[qrpo.datasets]\nplugincases = plugin_formats:PluginCases\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)  # the flag lives with the registry
    loaded = load_problems([ROW], format="plugincases")  # found through the entry point on first use
    assert loaded.formats == {"plugincases": 1}
