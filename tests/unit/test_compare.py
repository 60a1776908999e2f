"""stdio output comparison modes (sandbox/judge/compare.py)."""

from __future__ import annotations

import pytest

from sandbox.judge.compare import CheckerError, compare


def test_tokens_is_the_default_and_ignores_spacing():
    assert compare("   home  \n", "home") == (True, "")
    assert compare("1 2\r\n3\n\n", "1\n2 3")[0]
    ok, detail = compare("1 2 4", "1 2 3")
    assert not ok and detail == "token 3: got '4', expected '3'"
    assert compare("1 2", "1 2 3") == (False, "token 3: got end of output, expected '3'")
    assert not compare("12", "1 2")[0]


def test_lines_mode():
    spec = {"mode": "lines"}
    assert compare("a b  \n\n\n", "a b\n", spec=spec)[0]
    assert not compare("a  b\n", "a b\n", spec=spec)[0]  # inner spacing matters line-wise
    assert compare("x\n", "x\ny\n", spec=spec) == (False, "line 2: got end of output, expected 'y'")


def test_exact_mode():
    spec = {"mode": "exact"}
    assert compare("a\r\nb\n", "a\nb\n", spec=spec)[0]
    ok, detail = compare("a\nb", "a\nb\n", spec=spec)
    assert not ok and "character 3" in detail


def test_float_tolerance_absolute_and_relative():
    assert not compare("0.3333", "0.333333")[0]
    assert compare("0.3333", "0.333333", spec={"abs_tol": 1e-3})[0]
    assert not compare("0.3333", "0.333333", spec={"abs_tol": 1e-6})[0]
    assert compare("1000001", "1000000", spec={"rel_tol": 1e-6})[0]
    assert compare("yes 1.0000001", "yes 1", spec={"mode": "lines", "abs_tol": 1e-6})[0]
    assert not compare("nan", "nan", spec={"abs_tol": 1})[0] or compare("nan", "nan")[0]  # equal text is equal
    assert not compare("no 1", "yes 1", spec={"abs_tol": 1})[0]


def test_checker_program_gets_the_texts_as_data():
    checker = (
        "def check(input, expected, output):\n"
        "    n = int(input)\n"
        "    got = [int(x) for x in output.split()]\n"
        "    return (sorted(got) == list(range(1, n + 1)), 'not a permutation')\n"
    )
    spec = {"checker": checker}
    assert compare("3 1 2", "1 2 3", "3", spec) == (True, "")  # any permutation is accepted
    assert compare("1 1 2", "1 2 3", "3", spec) == (False, "checker: not a permutation")


def test_a_broken_checker_is_the_datasets_fault():
    with pytest.raises(CheckerError, match="does not load"):
        compare("1", "1", "", {"checker": "def check(:"})
    with pytest.raises(CheckerError, match="raised ZeroDivisionError"):
        compare("1", "1", "", {"checker": "def check(i, e, o):\n    return 1 / 0\n"})
    with pytest.raises(CheckerError, match="no check"):
        compare("1", "1", "", {"checker": "x = 1\n"})
    with pytest.raises(CheckerError, match="unknown stdio comparison mode"):
        compare("1", "1", "", {"mode": "fuzzy"})


def test_details_are_bounded():
    _, detail = compare("x" * 10_000, "y" * 10_000)
    assert len(detail) < 250
