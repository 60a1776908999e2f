"""Extracting solution code from model text (sandbox.extract)."""

from __future__ import annotations

import pytest

from sandbox.extract import code_blocks, completion_code, extract_code

TWO_BLOCKS = """Draft:

```python
def f():
    return 1
```

Better:

```python
def f():
    # the longer, fixed version
    return 2
```

Also a test:

```python
assert f() == 2
```
"""


def test_first_block_is_the_default_policy():
    assert extract_code(TWO_BLOCKS) == "def f():\n    return 1\n"


def test_last_and_longest_policies():
    assert extract_code(TWO_BLOCKS, "last") == "assert f() == 2\n"
    assert extract_code(TWO_BLOCKS, "longest") == "def f():\n    # the longer, fixed version\n    return 2\n"


def test_longest_keeps_the_first_of_equal_blocks():
    text = "```python\na = 1\n```\n```python\nb = 2\n```\n"
    assert extract_code(text, "longest") == "a = 1\n"


def test_unknown_policy_is_an_error():
    with pytest.raises(ValueError, match="policy"):
        extract_code(TWO_BLOCKS, "middle")  # type: ignore[arg-type]


@pytest.mark.parametrize("tag", ["python", "py", "Python3", "python3", "PY", "Python", "py3"])
def test_python_tags(tag):
    assert extract_code(f"text\n```{tag}\nx = 1\n```\n") == "x = 1\n"


def test_info_string_after_the_language_is_ignored():
    assert extract_code("```python title=solution.py\nx = 1\n```") == "x = 1\n"
    assert extract_code("``` python\nx = 1\n```") == "x = 1\n"


def test_bare_block_only_without_a_python_block():
    assert extract_code("```\nprint(1)\n```") == "print(1)\n"
    text = "```\nnot this\n```\n\n```py\nthis = 1\n```\n"
    assert extract_code(text) == "this = 1\n"
    assert extract_code(text, "longest") == "this = 1\n"


def test_other_languages_are_not_code():
    assert extract_code("```cpp\nint main() {}\n```\n```text\nhello\n```") is None


def test_no_block_gives_none():
    assert extract_code("I would sort the array and then scan it once.") is None
    assert extract_code("") is None


def test_fences_inside_a_line_are_not_fences():
    assert extract_code("Put your answer in a ```python``` block, like `x = 1`.") is None
    assert extract_code("Here: ```python\nx = 1\n```") is None  # the opening fence must start a line


def test_empty_blocks_are_skipped():
    text = "```python\n\n   \n```\n```python\nx = 1\n```"
    assert extract_code(text) == "x = 1\n"
    assert extract_code("```python\n```") is None


def test_unterminated_final_block_runs_to_the_end():
    # generation stopped at the stop sequence "```" (or at the token limit)
    assert extract_code("Solution:\n```python\ndef f():\n    return 1\n") == "def f():\n    return 1\n"
    blocks = code_blocks("```python\nx = 1\n")
    assert len(blocks) == 1 and not blocks[0].terminated


def test_unterminated_block_after_a_complete_one():
    text = "```python\na = 1\n```\nand\n```python\nb = 2"
    assert extract_code(text) == "a = 1\n"
    assert extract_code(text, "last") == "b = 2\n"


def test_crlf_and_cr_line_ends():
    assert extract_code("hi\r\n```python\r\nif x:\r\n    y = 2\r\n```\r\n") == "if x:\n    y = 2\n"
    assert extract_code("hi\r```python\rx = 1\r```\r") == "x = 1\n"


def test_indented_fence_inside_a_list_item():
    text = "1. Code:\n\n   ```python\n   def f():\n       return 1\n   ```\n2. Done.\n"
    code = extract_code(text)
    assert code == "def f():\n    return 1\n"
    compile(code, "<test>", "exec")


def test_common_indentation_is_removed():
    text = "```python\n    x = 1\n    if x:\n        y = 2\n```"
    assert extract_code(text) == "x = 1\nif x:\n    y = 2\n"


def test_longer_fence_may_contain_shorter_fences():
    text = "````python\ns = '''\n```\n'''\n````\n"
    assert extract_code(text) == "s = '''\n```\n'''\n"


def test_closing_fence_must_be_at_least_as_long_and_may_have_trailing_spaces():
    assert extract_code("````python\nx = 1\n```\ny = 2\n````  \nz") == "x = 1\n```\ny = 2\n"
    assert extract_code("```python\nx = 1\n```   \nprose") == "x = 1\n"


def test_tilde_fences():
    assert extract_code("~~~python\nx = 4\n~~~\n") == "x = 4\n"


def test_leading_and_trailing_blank_lines_dropped_and_newline_added():
    assert extract_code("```python\n\n\nx = 1\n\n\n```") == "x = 1\n"


def test_code_blocks_reports_languages_and_lines():
    blocks = code_blocks("a\n```py\nx\n```\n```\ny\n```\n```rust\nz\n```")
    assert [(b.language, b.line, b.is_python) for b in blocks] == [("py", 2, True), ("", 5, False), ("rust", 8, False)]


def test_extract_rejects_non_text():
    with pytest.raises(TypeError):
        extract_code(None)  # type: ignore[arg-type]


# --- completion_code ----------------------------------------------------------------------------


def test_completion_code_uses_code_as_is():
    code = "```python\nnot extracted\n```"
    assert completion_code({"task_id": "t", "code": code}) == code


def test_completion_code_prefers_code_over_completion():
    assert completion_code({"code": "x = 1\n", "completion": "```python\ny = 2\n```"}) == "x = 1\n"


def test_completion_code_extracts_from_completion_with_policy():
    row = {"task_id": "t", "completion": TWO_BLOCKS}
    assert completion_code(row) == "def f():\n    return 1\n"
    assert completion_code(row, "last") == "assert f() == 2\n"
    assert completion_code({"code": None, "completion": "```python\nz = 3\n```"}) == "z = 3\n"


def test_completion_code_without_a_block_is_none():
    assert completion_code({"task_id": "t", "completion": "no code, sorry"}) is None


def test_completion_code_needs_code_or_completion():
    with pytest.raises(ValueError) as info:
        completion_code({"task_id": "two-sum", "response": "..."})
    message = str(info.value)
    assert "'code'" in message and "'completion'" in message and "two-sum" in message and "add" in message


@pytest.mark.parametrize("row", [{"code": 3}, {"completion": ["a"]}])
def test_completion_code_rejects_non_strings(row):
    with pytest.raises(ValueError, match="must be"):
        completion_code(row)


# --- harness conventions ----------------------------------------------------------------------

PROMPT = 'def add(a, b):\n    """Add two numbers."""\n'
BODY = "    return a + b\n"


def test_continuation_appends_the_completion_to_the_prompt():
    assert completion_code({"completion": BODY}, "continuation", PROMPT) == PROMPT + BODY
    assert completion_code({"completion": "  \n"}, "continuation", PROMPT) is None


def test_full_takes_the_text_as_the_program():
    program = "def add(a, b):\n    return a + b\n"
    assert completion_code({"completion": program}, "full") == program
    assert completion_code({"completion": program}, "first") is None  # no fence: the paper's rule finds nothing


def test_auto_uses_a_fence_else_the_formats_convention():
    fenced = "Here:\n```python\ndef add(a, b):\n    return a + b\n```\n"
    assert completion_code({"completion": fenced}, "auto", PROMPT, "humaneval") == "def add(a, b):\n    return a + b\n"
    assert completion_code({"completion": BODY}, "auto", PROMPT, "humaneval") == PROMPT + BODY
    assert completion_code({"completion": BODY}, "auto", PROMPT, "humanevalplus") == PROMPT + BODY
    assert completion_code({"completion": BODY}, "auto", PROMPT, "leetcode") is None  # the paper's convention: a fence


def test_evalplus_solution_field_is_the_program():
    assert completion_code({"task_id": "Mbpp/2", "solution": "x = 1\n", "completion": "ignored"}) == "x = 1\n"


def test_no_code_hint_names_the_fix():
    from sandbox.extract import no_code_hint

    assert no_code_hint(1, 10, "auto", {"leetcode"}) == ""  # 10% is not more than 10%
    hint = no_code_hint(5, 10, "first", {"humanevalplus"})
    assert "5 of 10" in hint and "--extract continuation" in hint
    assert "--extract full" in no_code_hint(8, 10, "auto", {"mbppplus"})
