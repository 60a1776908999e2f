"""Choice lists are defined once (sandbox.problem) and agree with what they name."""

from __future__ import annotations

from typing import get_args

from sandbox.backends import AUTO_ORDER, BACKENDS
from sandbox.extract import POLICIES
from sandbox.problem import BackendChoice, BackendName, Extraction


def test_backend_choices_are_the_registered_backends() -> None:
    assert set(get_args(BackendName)) == set(BACKENDS) == set(AUTO_ORDER)
    assert get_args(BackendChoice) == ("auto", *get_args(BackendName))


def test_extraction_policies_are_the_literal() -> None:
    assert POLICIES == get_args(Extraction)


def test_the_cli_offers_exactly_the_literals() -> None:
    from sandbox.cli import grade

    choices = {p.name: list(p.type.choices) for p in grade.params if hasattr(p.type, "choices")}
    assert choices["backend"] == list(get_args(BackendChoice))
    assert choices["extract"] == list(get_args(Extraction))
