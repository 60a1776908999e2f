"""Dataset adapters and the loader (sandbox.datasets), against the real public files.

The data lives outside the repository, in ../shared/data relative to the repo root, or wherever
QRPO_SHARED_DATA points. It is never copied into the repository.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from sandbox import datasets
from sandbox.datasets import (
    Adapter,
    FieldError,
    RowError,
    UnknownFormatError,
    detect_format,
    get_adapter,
    known_formats,
    load_problems,
    read_jsonl,
    register,
)
from sandbox.datasets.stdio import StdioAdapter
from sandbox.judge.checks import split_check
from sandbox.problem import Limits, Problem
from sandbox.problem import Test as ProblemTest  # not 'Test*': pytest would try to collect it

from ..conftest import shared_data_dir

DATA = shared_data_dir()
LC3 = DATA / "leetcode" / "LeetCodeDataset-v0.3.1-test.jsonl.gz"
LC2 = DATA / "leetcode" / "LeetCodeDataset-v0.2.0-train.jsonl.gz"
HUMANEVAL = DATA / "humaneval" / "HumanEval.jsonl.gz"
MBPP = DATA / "mbpp" / "MbppPlus-v0.2.0.jsonl.gz"
HUMANEVAL_PLUS = DATA / "humaneval" / "HumanEvalPlus-v0.1.10.jsonl.gz"
APPS = DATA / "apps" / "mapcoder_apps_selected150.jsonl"

needs_data = pytest.mark.usefixtures("shared_data")  # skips locally without the data, fails where every test must run


def raw_rows(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.fixture(scope="module")
def lc3_rows():
    return raw_rows(LC3)


@pytest.fixture(scope="module")
def lc3(lc3_rows):
    return load_problems(LC3)


@pytest.fixture(scope="module")
def apps():
    return load_problems(APPS)


@pytest.fixture
def registry():
    """Restore the adapter registry after a test that registers adapters."""
    saved = dict(datasets._REGISTRY)
    yield
    datasets._REGISTRY.clear()
    datasets._REGISTRY.update(saved)


def leetcode_row(task_id: str = "add-two", **changes) -> dict:
    row = {
        "task_id": task_id,
        "question_id": 1,
        "difficulty": "Easy",
        "tags": ["Math"],
        "problem_description": "Add two numbers.",
        "starter_code": "class Solution:\n    def add(self, a: int, b: int) -> int:\n        ",
        "prompt": "from typing import *\n",
        "completion": "class Solution:\n    def add(self, a: int, b: int) -> int:\n        return a + b\n",
        "entry_point": "Solution().add",
        "test": "def check(candidate):\n" + "".join(f"    assert candidate(a = {i}, b = 1) == {i + 1}\n" for i in range(5)),
        "query": "Add two numbers.",
    }
    row.update(changes)
    return {k: v for k, v in row.items() if v is not None}


def write_lines(path: Path, lines: list[bytes | str]) -> Path:
    with open(path, "wb") as fh:
        fh.writelines((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines)
    return path


# --- detection ----------------------------------------------------------------------------------


@needs_data
@pytest.mark.parametrize(
    "path,expected",
    [(LC3, "leetcode"), (LC2, "leetcode"), (HUMANEVAL, "humaneval"), (MBPP, "mbppplus"), (HUMANEVAL_PLUS, "humanevalplus"),
     (APPS, "stdio")],
    ids=["leetcode-v0.3.1", "leetcode-v0.2.0", "humaneval", "mbpp+", "humaneval+", "apps"],
)
def test_detects_each_file_and_detection_is_unambiguous(path, expected):
    rows = raw_rows(path)[:200]
    assert {detect_format(row) for row in rows} == {expected}
    # The evalplus releases are also valid rows of their base format (forced with format=...,
    # it grades only the original asserts); otherwise exactly one built-in adapter claims a row.
    base = {"mbppplus": ["mbpp"], "humanevalplus": ["humaneval"]}.get(expected, [])
    for row in rows:
        claims = [name for name in known_formats() if get_adapter(name).detect(row)]
        assert claims == [expected, *base]


def test_native_rows_are_detected_before_the_others():
    problem = Problem("p", "prompt", (ProblemTest("function", "assert candidate() == 1"),), entry_point="f")
    assert detect_format(problem.to_dict()) == "native"
    # a native row carries 'prompt' and 'entry_point' too, but no 'test': no other adapter claims it
    assert [n for n in known_formats() if get_adapter(n).detect(problem.to_dict())] == ["native"]


def test_known_formats_in_priority_order():
    assert known_formats()[:10] == ["native", "humanevalplus", "mbppplus", "leetcode", "humaneval", "mbpp", "mbpp-original",
                                    "livecodebench", "codecontests", "stdio"]


def test_detect_format_lists_known_formats_when_nothing_matches():
    with pytest.raises(UnknownFormatError) as info:
        detect_format({"question": "?", "answer": 42})
    message = str(info.value)
    for name in ("native", "leetcode", "humaneval", "mbpp", "stdio"):
        assert name in message
    assert "['answer', 'question']" in message and "format=" in message


def test_get_adapter_unknown_name():
    with pytest.raises(UnknownFormatError, match="known formats: native, humanevalplus, mbppplus, leetcode"):
        get_adapter("leetcode-v9")
    with pytest.raises(UnknownFormatError):
        load_problems([leetcode_row()], format="leetcode-v9")


# --- counts on the real files ---------------------------------------------------------------------


@needs_data
def test_leetcode_v031_counts(lc3):
    assert len(lc3) == 228 and lc3.num_tests == 23234
    assert lc3.errors == [] and lc3.skipped == []
    assert lc3.formats == {"leetcode": 228}


@needs_data
def test_leetcode_v031_fields(lc3, lc3_rows):
    row = lc3_rows[0]
    problem = lc3[row["task_id"]]
    assert list(lc3.problems) == [r["task_id"] for r in lc3_rows]  # input order
    assert problem.prompt == row["query"]
    assert problem.preamble == row["prompt"] and "class ListNode" in problem.preamble
    assert problem.entry_point == row["entry_point"] == "Solution().shortestDistanceAfterQueries"
    assert problem.candidate == "candidate"
    assert [t.source for t in problem.tests] == split_check(row["test"]).tests
    assert all(t.kind == "function" for t in problem.tests)
    assert problem.metadata["canonical_solution"] == row["completion"]
    assert problem.metadata["difficulty"] == "Medium" and problem.metadata["question_id"] == 3243
    assert problem.metadata["tags"] == row["tags"]
    assert problem.metadata["source_format"] == "leetcode"


@needs_data
def test_leetcode_query_is_rebuilt_when_missing(lc3_rows):
    rows = [{k: v for k, v in row.items() if k != "query"} for row in lc3_rows[:25]]
    loaded = load_problems(rows, format="leetcode")
    assert [p.prompt for p in loaded] == [row["query"] for row in lc3_rows[:25]]


@needs_data
def test_leetcode_v020_meta_schema():
    loaded = load_problems(LC2)
    assert len(loaded) == 1890 and loaded.errors == []
    assert loaded.formats == {"leetcode": 1890}
    two_sum = loaded["two-sum"]
    assert two_sum.metadata["difficulty"] == "Easy" and two_sum.metadata["question_id"] == 1
    assert two_sum.metadata["starter_code"].startswith("class Solution:")
    assert two_sum.prompt.startswith("Given an array of integers nums")
    assert len(two_sum.tests) == 3


@needs_data
def test_humaneval():
    rows = raw_rows(HUMANEVAL)
    loaded = load_problems(HUMANEVAL)
    assert len(loaded) == 164 and loaded.errors == [] and loaded.formats == {"humaneval": 164}
    assert loaded.num_tests == sum(len(split_check(r["test"]).tests) for r in rows)
    first = loaded["HumanEval/0"]
    assert first.preamble == first.prompt == rows[0]["prompt"]
    assert first.entry_point == "has_close_elements"
    assert first.metadata["canonical_solution"] == rows[0]["prompt"] + rows[0]["canonical_solution"]
    assert "METADATA" in first.test_setup
    # the canonical solution is runnable: prompt + body continuation defines the function
    namespace: dict = {}
    exec(first.metadata["canonical_solution"], namespace)
    assert namespace["has_close_elements"]([1.0, 2.0], 1.5) is True


@needs_data
def test_mbpp_plus():
    loaded = load_problems(MBPP, format="mbpp")  # the original asserts only; auto picks mbppplus
    assert len(loaded) == 378 and loaded.errors == [] and loaded.formats == {"mbpp": 378}
    problem = loaded["Mbpp/2"]
    assert problem.preamble == "" and problem.entry_point == "similar_elements"
    assert problem.candidate == "similar_elements"
    assert problem.tests[0].source.startswith("assert similar_elements(")
    assert "def similar_elements" in problem.metadata["canonical_solution"]


@needs_data
def test_apps_duplicates_are_row_errors(apps):
    assert len(apps) == 128 and len(apps.errors) == 22
    assert all(e.field == "task_id" and "duplicate task_id" in e.message and "identical copy" in e.message for e in apps.errors)
    assert {e.task_id for e in apps.errors} <= set(apps.problems)
    kinds = [p.kind for p in apps]
    assert kinds.count("function") == 79 and kinds.count("stdio") == 49


@needs_data
def test_apps_stdio_problem(apps):
    problem = apps["APPS/1604"]
    assert problem.kind == "stdio" and problem.entry_point == ""
    assert problem.tests[0] == ProblemTest("stdio", stdin="1 1\n.\n", stdout="1\n")
    assert "standard input" in problem.prompt


@needs_data
def test_apps_call_based_decoding(apps):
    def sources(task_id):
        return [t.source for t in apps[task_id].tests]

    get_score = apps["APPS/3554"]
    assert get_score.entry_point == "get_score" and get_score.candidate == "candidate"
    assert sources("APPS/3554")[0] == "assert candidate([1]) == 100"
    # unquoted strings stay strings; '0000'-like values prove the whole parameter is a string
    assert "assert candidate('0000') == True" in sources("APPS/4440")
    assert "assert candidate('1234') == True" in sources("APPS/4440")  # not the int 1234
    assert "assert candidate('123321') == True" in sources("APPS/3569")
    assert apps["APPS/4440"].metadata["argument_decoding"] == {"pin": "string"}
    assert "assert candidate('12345') == '12345'" in sources("APPS/2798")
    # a numeric parameter with a few odd string inputs keeps both types
    assert "assert candidate(10) == [2, 5]" in sources("APPS/3766")
    assert "assert candidate('a') == []" in sources("APPS/3766")
    assert apps["APPS/3766"].metadata["argument_decoding"] == {"n": "mixed"}
    # several arguments, one per line; defaults allow fewer lines
    assert "assert candidate('aacb', 'aabc') == True" in sources("APPS/3613")
    assert "assert candidate(13) == '103'" in sources("APPS/1617")
    assert "assert candidate(13, 0, 8) == '15'" in sources("APPS/1617")
    # a multi-line string goes to the first parameter
    assert "assert candidate('a #b\\nc\\nd $e f g', ['#', '$']) == 'a\\nc\\nd'" in sources("APPS/1613")
    for problem in apps:
        for test in problem.tests:
            compile(test.source or "pass", problem.task_id, "exec")


@needs_data
def test_apps_call_based_as_stdio_option():
    loaded = load_problems(APPS, format=StdioAdapter(call_based="stdio"))
    assert len(loaded) == 128 and {p.kind for p in loaded} == {"stdio"}
    assert loaded["APPS/3554"].tests[0] == ProblemTest("stdio", stdin="[1]", stdout="100")


def test_apps_original_format_call_based_and_stdio():
    rows = [
        {
            "problem_id": 7,
            "question": "Add.",
            "starter_code": "class Solution:\n    def add(self, a, b):\n        ",
            "input_output": json.dumps({"fn_name": "add", "inputs": [[1, 2], ["a", "b"]], "outputs": [[3], ["ab"]]}),
            "solutions": json.dumps(["class Solution:\n    def add(self, a, b):\n        return a + b\n"]),
        },
        {
            "problem_id": 8,
            "question": "Echo.",
            "starter_code": "",
            "input_output": {"inputs": ["1\n", ["2", "3"]], "outputs": ["1\n", ["2", "3"]]},
        },
        {"problem_id": 9, "question": "No tests.", "starter_code": "", "input_output": ""},
    ]
    loaded = load_problems(rows)
    add = loaded["APPS/7"]
    assert add.entry_point == "Solution().add"
    assert [t.source for t in add.tests] == ["assert candidate(1, 2) == 3", "assert candidate('a', 'b') == 'ab'"]
    assert add.metadata["canonical_solution"].startswith("class Solution")
    assert loaded["APPS/8"].tests[1] == ProblemTest("stdio", stdin="2\n3", stdout="2\n3")
    [error] = loaded.errors
    assert (error.row, error.task_id, error.field) == (3, "APPS/9", "input_output") and "drop the row" in error.message


# --- max_tests / min_tests --------------------------------------------------------------------------


@needs_data
def test_paper_limits_on_leetcode(lc3):
    # through the native format, so the 23k asserts are not split again (the limits do not care)
    loaded = load_problems([p.to_dict() for p in lc3], max_tests=100, min_tests=20)
    counts = {p.task_id: len(p.tests) for p in lc3}
    assert len(loaded) == sum(1 for n in counts.values() if n >= 20) == 224
    assert {s.task_id for s in loaded.skipped} == {t for t, n in counts.items() if n < 20}
    assert all("< min_tests=20" in s.reason for s in loaded.skipped)
    assert loaded.num_tests == sum(min(n, 100) for n in counts.values() if n >= 20)
    for problem in loaded:
        assert problem.tests == lc3[problem.task_id].tests[:100]  # the first k, in order
        if counts[problem.task_id] > 100:
            assert problem.metadata["total_tests"] == counts[problem.task_id]


def test_max_tests_keeps_the_first_k():
    loaded = load_problems([leetcode_row()], max_tests=2)
    assert [t.source for t in loaded["add-two"].tests] == ["assert candidate(a=0, b=1) == 1", "assert candidate(a=1, b=1) == 2"]
    assert loaded["add-two"].metadata["total_tests"] == 5


def test_min_tests_counts_before_truncation():
    rows = [leetcode_row("five"), leetcode_row("one", test="def check(candidate):\n    assert candidate(a=1, b=1) == 2\n")]
    loaded = load_problems(rows, max_tests=3, min_tests=4)
    assert list(loaded.problems) == ["five"] and len(loaded["five"].tests) == 3
    assert [(s.task_id, s.row) for s in loaded.skipped] == [("one", 2)]
    assert loaded.errors == []


@pytest.mark.parametrize("kwargs", [{"max_tests": 0}, {"max_tests": 1.5}, {"min_tests": -1}])
def test_bad_limits_are_rejected(kwargs):
    with pytest.raises(ValueError):
        load_problems([leetcode_row()], **kwargs)


# --- bad rows ---------------------------------------------------------------------------------------


def test_bad_rows_become_row_errors_and_good_rows_load(tmp_path):
    good = leetcode_row("good")
    missing = leetcode_row("missing-test", test=None)
    broken = leetcode_row("broken-test", test="def check(candidate):\n    assert candidate(a = 1, b = 1 == 2\n")
    no_assert = leetcode_row("no-assert", test="def check(candidate):\n    pass\n")
    bad_entry = leetcode_row("bad-entry", entry_point="Solution(.add")
    path = write_lines(tmp_path / "rows.jsonl", [
        json.dumps(good),                                   # 1
        '{"task_id": "cut", "prompt": ',                    # 2 invalid JSON
        b'{"task_id": "latin1", "query": "caf\xe9"}',      # 3 invalid UTF-8
        "",                                                 # 4 blank: ignored
        json.dumps(missing),                                # 5 missing field
        json.dumps(broken),                                 # 6 test code does not parse
        json.dumps(good),                                   # 7 duplicate task_id
        "[1, 2, 3]",                                        # 8 not an object
        json.dumps(no_assert),                              # 9 no test found
        json.dumps(bad_entry),                              # 10 entry point does not parse
        json.dumps(leetcode_row("good-2")),                 # 11
        json.dumps({"hello": "world"}),                     # 12 matches no format: judged as the file's format
    ])
    loaded = load_problems(path)
    assert list(loaded.problems) == ["good", "good-2"]
    errors = {e.row: e for e in loaded.errors}
    assert sorted(errors) == [2, 3, 5, 6, 7, 8, 9, 10, 12]
    assert "invalid JSON" in errors[2].message and errors[2].field is None
    assert "invalid UTF-8" in errors[3].message and "re-encode" in errors[3].message
    assert (errors[5].task_id, errors[5].field) == ("missing-test", "test") and "add it" in errors[5].message
    assert (errors[6].task_id, errors[6].field) == ("broken-test", "test") and "does not parse" in errors[6].message
    assert (errors[7].task_id, errors[7].field) == ("good", "task_id") and "row 1" in errors[7].message
    assert "JSON object" in errors[8].message
    assert errors[9].field == "test" and "no assert" in errors[9].message
    assert errors[10].field == "entry_point" and "fix" in errors[10].message
    assert errors[12].format == "leetcode" and errors[12].field == "task_id"
    text = str(errors[6])
    assert text.startswith("row 6 (task_id 'broken-test') [leetcode], field 'test': ")


def test_rows_of_an_unknown_format(tmp_path):
    path = write_lines(tmp_path / "odd.jsonl", [json.dumps({"id": 1, "body": "x"}), json.dumps({"id": 2, "body": "y"})])
    loaded = load_problems(path)
    assert len(loaded) == 0 and [e.row for e in loaded.errors] == [1, 2]
    for error in loaded.errors:
        assert "no known dataset format" in error.message
        assert "leetcode" in error.message and "format=" in error.message


def test_mixed_formats_in_one_file():
    he = {
        "task_id": "HE/1",
        "prompt": "def f(x):\n    '''x+1'''\n",
        "entry_point": "f",
        "canonical_solution": "    return x + 1\n",
        "test": "def check(candidate):\n    assert candidate(1) == 2\n",
    }
    loaded = load_problems([leetcode_row(), he])
    assert loaded.formats == {"leetcode": 1, "humaneval": 1}
    assert loaded["HE/1"].metadata["source_format"] == "humaneval"


def test_forced_format_reports_missing_fields():
    loaded = load_problems([{"task_id": "x", "prompt": "p"}], format="mbpp")
    [error] = loaded.errors
    assert (error.task_id, error.format) == ("x", "mbpp") and error.field in {"entry_point", "assertion"}


def test_read_jsonl_gzip_bom_and_truncation(tmp_path):
    rows = [leetcode_row(f"p{i}") for i in range(50)]
    data = ("\ufeff" + "\n".join(json.dumps(r) for r in rows) + "\n").encode()
    path = tmp_path / "rows.dat"  # gzip is recognised by content, not by name
    path.write_bytes(gzip.compress(data))
    items = list(read_jsonl(path))
    assert [n for n, _ in items] == list(range(1, 51)) and all(isinstance(r, dict) for _, r in items)
    truncated = tmp_path / "truncated.jsonl.gz"
    truncated.write_bytes(gzip.compress(data)[:-200])
    loaded = load_problems(truncated)
    assert 0 < len(loaded) < 50
    assert len(loaded.errors) == 1 and "truncated or corrupt" in loaded.errors[0].message


def test_missing_file_raises():
    with pytest.raises(FileNotFoundError):
        load_problems("/nonexistent/problems.jsonl")


def test_row_error_is_plain_data():
    error = RowError(3, "t", "test", "boom", "leetcode")
    assert error.to_dict() == {"row": 3, "task_id": "t", "field": "test", "message": "boom", "format": "leetcode"}
    assert str(RowError(1, None, None, "bad")) == "row 1: bad"


# --- native round trip --------------------------------------------------------------------------------


@needs_data
def test_native_round_trip_of_a_real_dataset(lc3, tmp_path):
    path = tmp_path / "prepared.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for problem in lc3:
            fh.write(json.dumps(problem.to_dict()) + "\n")
    again = load_problems(path)
    assert again.formats == {"native": 228} and again.errors == []
    assert again.problems == lc3.problems


def test_native_round_trip_with_stdio_tests_and_limits():
    problem = Problem(
        "echo", "Echo the input.", (ProblemTest("stdio", stdin="1\n", stdout="1\n"), ProblemTest("stdio", stdin="", stdout="")),
        limits=Limits(cpu_s=2.0, memory_mb=512), metadata={"difficulty": "Easy", "source_format": "stdio"},
    )
    loaded = load_problems([problem.to_dict()])
    assert loaded.problems == {"echo": problem}
    assert load_problems([problem]).problems == {"echo": problem}  # Problems themselves are accepted


def test_native_bad_rows():
    good = Problem("p", "x", (ProblemTest("function", "assert candidate() == 1"),)).to_dict()
    bad_limits = {**good, "task_id": "q", "limits": {"cpu_seconds": 1}}
    bad_kind = {**good, "task_id": "r", "tests": [{"kind": "stdio", "stdin": 1}]}
    loaded = load_problems([good, bad_limits, bad_kind], format="native")
    assert list(loaded.problems) == ["p"]
    assert [(e.task_id, e.field) for e in loaded.errors] == [("q", "limits"), ("r", "tests")]
    assert "cpu_seconds" in loaded.errors[0].message


# --- registering a new format ---------------------------------------------------------------------------


def test_register_a_new_format(registry):
    class Pairs(Adapter):
        name = "pairs"
        description = "rows with 'uid' and 'pairs' of [argument, result]"

        def detect(self, row):
            return {"uid", "pairs"} <= row.keys()

        def task_id(self, row):
            return row.get("uid")

        def to_problem(self, row):
            if not row["pairs"]:
                raise FieldError("pairs", "no pairs; add at least one [argument, result]")
            tests = tuple(ProblemTest("function", f"assert candidate({a!r}) == {r!r}") for a, r in row["pairs"])
            return Problem(row["uid"], "Double it.", tests, entry_point="double")

    register(Pairs)
    with pytest.raises(ValueError, match="already registered"):
        register(Pairs())
    loaded = load_problems([{"uid": "d", "pairs": [[1, 2], [3, 6]]}, {"uid": "e", "pairs": []}])
    assert loaded.formats == {"pairs": 1} and len(loaded["d"].tests) == 2
    assert [(e.task_id, e.field) for e in loaded.errors] == [("e", "pairs")]
    assert known_formats()[-1] == "pairs"
    register(Pairs(), first=True, replace=True)
    assert known_formats()[0] == "pairs"


# --- the demo dataset --------------------------------------------------------------------------------------


def test_demo_problems_load_and_their_canonical_solutions_pass():
    from sandbox import demo

    loaded = load_problems(demo.problems_path(), min_tests=20)
    assert 12 <= len(loaded) <= 15 and loaded.errors == [] and loaded.skipped == []
    assert loaded.formats == {"leetcode": len(loaded)}
    assert any("is_same_list(" in p.tests[0].source for p in loaded)
    assert any("tree_node(" in p.tests[0].source for p in loaded)
    for problem in loaded:
        namespace: dict = {}
        exec(problem.preamble + "\n" + problem.metadata["canonical_solution"], namespace)
        namespace[problem.candidate] = eval(problem.entry_point, namespace)
        exec(problem.test_setup, namespace)
        for test in problem.tests:
            exec(test.source, namespace)


def test_demo_completions_match_problems():
    from sandbox import demo
    from sandbox.extract import completion_code

    problems = load_problems(demo.problems_path())
    rows = [row for _, row in read_jsonl(demo.completions_path())]
    assert all(isinstance(row, dict) for row in rows)
    assert {row["task_id"] for row in rows} == set(problems.problems)
    verdicts = {row["expected_verdict"] for row in rows}
    assert {"passed", "wrong_answer", "timeout", "runtime_error", "no_code", "syntax_error"} <= verdicts
    for row in rows:
        code = completion_code(row)
        assert (code is None) == (row["expected_verdict"] == "no_code")
        if row["expected_verdict"] == "passed":
            problem = problems[row["task_id"]]
            namespace: dict = {}
            exec(problem.preamble + "\n" + code, namespace)
            namespace["candidate"] = eval(problem.entry_point, namespace)
            for test in problem.tests:
                exec(test.source, namespace)


def test_demo_path_rejects_unknown_files():
    from sandbox import demo

    with pytest.raises(ValueError, match="problems.jsonl"):
        demo.path("secret.txt")
