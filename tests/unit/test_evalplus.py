"""HumanEval+ / MBPP+ adapters and evalplus's output oracle (sandbox.datasets.evalplus*)."""

from __future__ import annotations

import json
import math

import pytest

from sandbox.datasets import load_problems
from sandbox.datasets.evalplus import effective_atol, encode, mbpp_deserialize_inputs
from sandbox.datasets.evalplus import test_setup as judge_setup
from sandbox.datasets.evalplus_oracle import qrpo_decode, qrpo_evalplus_match, qrpo_untag

from ..conftest import shared_data_dir

DATA = shared_data_dir()
HEP = DATA / "humaneval" / "HumanEvalPlus-v0.1.10.jsonl.gz"
MBPP = DATA / "mbpp" / "MbppPlus-v0.2.0.jsonl.gz"
needs_data = pytest.mark.usefixtures("shared_data")


def match(out, exp, atol=0.0, dataset="humaneval", entry="f", inp=()):
    return qrpo_evalplus_match(dataset, entry, list(inp), out, exp, atol)


def test_exact_then_tolerance():
    assert match([1, 2], [1, 2]) and not match([1, 2], [1, 3])
    assert not match(0.1 + 0.2, 0.3)  # atol 0 and no float rule applied here: exact
    assert match(0.1 + 0.2, 0.3, atol=1e-6)
    assert not match(1.0, 1.1, atol=1e-6)
    assert not match(1, 1.0000001, atol=1e-6)  # a different type is never close
    assert match((1.0, 2.0), (1.0, 2.0000001), atol=1e-6) and not match((1.0,), (1.0, 2.0), atol=1e-6)
    assert not match(["a", 1.0000001], ["a", 1.0], atol=1e-6)  # numpy cannot compare strings: evalplus fails it
    assert not match(float("nan"), float("nan"), atol=1e-6)
    assert match(float("inf"), float("inf"), atol=1e-6)


def test_effective_atol_is_sticky_like_evalplus_loop():
    assert effective_atol(0, [1, 2.5, 3]) == [0, 1e-6, 1e-6]
    assert effective_atol(0, [1, [1, 2]]) == [0, 0]
    assert effective_atol(1e-4, [1.0]) == [1e-4]


def test_mbpp_special_oracles():
    assert match([3, 4], [4, 3], dataset="mbpp", entry="similar_elements")  # set equality
    with pytest.raises(TypeError):  # evalplus counts the exception as a failure; so does the judge
        match(None, [], dataset="mbpp", entry="similar_elements")
    assert match(True, True, dataset="mbpp", entry="check_str") and match("x", True, dataset="mbpp", entry="check_str")
    assert not match(None, True, dataset="mbpp", entry="check_str")
    assert match(123, 5, dataset="mbpp", entry="are_equivalent")
    assert match(0, 7, dataset="mbpp", entry="sum_div")


def test_find_zero_checks_the_root():
    xs = [-6, 11, -6, 1]  # roots 1, 2, 3
    assert match(1.0, 99.0, atol=1e-4, entry="find_zero", inp=(xs,))
    assert not match(1.5, 1.0, atol=1e-4, entry="find_zero", inp=(xs,))


def test_tagged_json_round_trip():
    value = [(1, 2), {3}, frozenset({4}), {(1, 2): [3.5]}, 1 + 2j, b"x", float("inf"), -(10**5000), None, True]
    text = json.dumps(encode(value))
    for back in (qrpo_decode(json.loads(text)), json.loads(text, object_hook=qrpo_untag)):  # the judge's way: one parse
        assert back[:6] == value[:6] and math.isinf(back[6]) and back[7] == value[7] and back[8:] == [None, True]
        assert type(back[0]) is tuple and type(back[2]) is frozenset and type(next(iter(back[3]))) is tuple
    nested = {"d": [[{"t": [1, {"fs": [2]}]}, {"s": [{"t": [3]}]}]]}  # tags inside tags, a dict key that is a tuple
    assert json.loads(json.dumps(nested), object_hook=qrpo_untag) == qrpo_decode(nested) == {(1, frozenset({2})): {(3,)}}


def test_long_lists_of_numbers_travel_packed_in_the_tagged_json():
    """HumanEval+/130 expects lists of up to a million numbers: the host packs them (8 bytes a
    number), the setup's parse unpacks them with their exact types, inside tuples too."""
    floats = [0.5 * i for i in range(100)] + [float("nan"), float("-inf"), -0.0]
    mixed = [1, 3] + [2.0 + i for i in range(200)]
    value = [floats, (mixed,), [list(range(70))], [True] * 70, [2**70] * 70]
    encoded = encode(value)
    assert set(encoded[0]) == {"pk"} and set(encoded[1]["t"][0]) == {"pk"} and set(encoded[2][0]) == {"pk"}
    assert type(encoded[3]) is list and type(encoded[4]) is list  # bools, ints past 64 bits: JSON
    text = json.dumps(encoded)
    for back in (qrpo_decode(json.loads(text)), json.loads(text, object_hook=qrpo_untag)):
        assert back[0][:100] == floats[:100] and math.isnan(back[0][100]) and back[0][101:] == floats[101:]
        assert math.copysign(1, back[0][102]) == -1
        assert back[1] == (mixed,) and [type(x) for x in back[1][0]] == [type(x) for x in mixed]
        assert back[2:] == value[2:] and type(back[3][0]) is bool


def test_mbpp_inputs_are_deserialised_as_evalplus_does():
    assert mbpp_deserialize_inputs("Mbpp/2", [[[1, 2], [3]]]) == [[(1, 2), (3,)]]
    assert mbpp_deserialize_inputs("Mbpp/124", [[1, "1+2j"]]) == [(1.0, 1 + 2j)]
    assert mbpp_deserialize_inputs("Mbpp/580", [[[1, [2]]]]) == [((1, (2,)),)]
    assert mbpp_deserialize_inputs("Mbpp/3", [[5]]) == [[5]]


def test_setup_runs_and_checks():
    code, data = judge_setup("mbpp", "f", [[1], [2]], [2, 4.0], [0, 1e-6])
    namespace: dict = {"qrpo_test_data": data}
    exec(code, namespace)
    assert namespace["qrpo_check"](2, 0) and not namespace["qrpo_check"](3, 0)
    assert namespace["qrpo_check"](4.0000001, 1)


@needs_data
def test_humaneval_plus_loads_with_base_and_plus_tests():
    loaded = load_problems(HEP)
    assert len(loaded) == 164 and not loaded.errors and loaded.formats == {"humanevalplus": 164}
    problem = loaded["HumanEval/0"]
    info = problem.metadata["evalplus"]
    assert len(problem.tests) == info["base"] + info["plus"] and info["plus"] > info["base"] > 0
    assert problem.preamble == problem.prompt and problem.tests[0].source == "assert qrpo_check(candidate(*qrpo_inputs[0]), 0)"
    assert "expected outputs" in problem.test_setup  # not computed yet: the judge would report sandbox_error
    base = load_problems(HEP, tests="base")["HumanEval/0"]
    assert len(base.tests) == info["base"]
    # expected outputs are computed for the base inputs alone (Mbpp/255's plus outputs are 336 MB)
    assert json.loads(base.metadata["evalplus"]["inputs"]) == json.loads(info["inputs"])[: info["base"]]
    with pytest.raises(ValueError, match="tests must be one of"):
        load_problems(HEP, tests="extra")  # type: ignore[arg-type]


@needs_data
def test_mbpp_plus_loads_with_plus_inputs():
    loaded = load_problems(MBPP)
    assert len(loaded) == 378 and not loaded.errors and loaded.formats == {"mbppplus": 378}
    assert loaded["Mbpp/793"].metadata["evalplus"]["plus"] == 0  # its plus_input is {}
    assert loaded.num_tests > 10 * load_problems(MBPP, tests="base").num_tests


@needs_data
def test_expected_outputs_carry_the_reference_time_the_pool_schedules_by():
    from sandbox.datasets.reference import with_expected

    problem = load_problems(MBPP)["Mbpp/2"]
    assert problem.expected_s == 0.0  # nothing run yet: no hint
    n = len(problem.tests)
    records = [{"ok": [3, 4], "time_s": 0.5 if i == 0 else 0.001} for i in range(n)]
    filled = with_expected(problem, records)
    assert filled.expected_s == pytest.approx(0.5 + 0.001 * (n - 1))
    assert filled.metadata["evalplus"]["reference_time_s"][0] == 0.5
