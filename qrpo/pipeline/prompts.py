"""The model-facing prompts: the QRPO paper's rewriting of LeetCodeDataset queries, and chat messages.

The paper (arXiv 2507.08068, LeetCode experiments) grades a completion after a fixed block of imports and
helper definitions, so its prompt says so: the query's "### Format:" section gains that block ("Your code
will run after the following definitions and imports, which may or may not be needed."), a line asking the
model to add any missing imports, and an empty "# Additional imports." slot at the top of the starter code.
The prompt is the single user message of a chat, without a system prompt.

What the prompt promises must hold when grading, so `PRE_CODE` is what the solution runs after
(`graded_preamble`): alone, as the reference code, or followed by the problem's own preamble.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

from sandbox.problem import Problem

# paper: LeetCode queries rewritten as the paper does (and instructions for other formats); plain: as they are.
PromptStyle = Literal["paper", "plain"]
PROMPT_STYLES: tuple[PromptStyle, ...] = get_args(PromptStyle)
# What a paper-style LeetCode solution runs after. pre_code: PRE_CODE alone, as the reference code grades
# (`pre_code + extracted code`), so a name only the dataset's preamble imports fails. pre_code+dataset: the
# project's, PRE_CODE then the dataset's own preamble (its `prompt` field), which the dataset's tests and
# canonical solutions were written against (e.g. `from sortedcontainers import SortedList`).
GradedPreamble = Literal["pre_code", "pre_code+dataset"]
GRADED_PREAMBLES: tuple[GradedPreamble, ...] = get_args(GradedPreamble)

PRE_CODE = """import collections
import itertools
import functools
import math
import string
import random
import bisect
import re
import operator
import heapq
import queue

from typing import List, Tuple, Dict, Any, Union, Optional
from queue import PriorityQueue
from itertools import combinations, permutations
from functools import lru_cache
from collections import defaultdict
from collections import OrderedDict
from collections import deque
from collections import Counter

inf = float('inf')

class ListNode:
    def __init__(self, val=0, next=None):
        self.val = val
        self.next = next

def list_node(values: list):
    if not values:
        return None
    head = ListNode(values[0])
    p = head
    for val in values[1:]:
        node = ListNode(val)
        p.next = node
        p = node
    return head

def is_same_list(p1, p2):
    if p1 is None and p2 is None:
        return True
    if not p1 or not p2:
        return False
    return p1.val == p2.val and is_same_list(p1.next, p2.next)

class TreeNode:
    def __init__(self, val=0, left=None, right=None):
        self.val = val
        self.left = left
        self.right = right

def tree_node(values: list):
    if not values:
        return None
    root = TreeNode(values[0])
    i = 1
    queue = deque()
    queue.append(root)
    while queue:
        node = queue.popleft()
        if i < len(values) and values[i] is not None:
            node.left = TreeNode(values[i])
            queue.append(node.left)
        i += 1
        if i < len(values) and values[i] is not None:
            node.right = TreeNode(values[i])
            queue.append(node.right)
        i += 1
    return root

def is_same_tree(p, q):
    if not p and not q:
        return True
    elif not p or not q:
        return False
    elif p.val != q.val:
        return False
    else:
        return is_same_tree(p.left, q.left) and is_same_tree(p.right, q.right)

class Node:
    def __init__(self, val=0, left=None, right=None, random=None):
        self.val = val
        self.left = left
        self.right = right
        self.random = random

class CategoryHandler:
    def haveSameCategory(self, a: int, b: int) -> bool:
        pass
"""

FORMAT_MARKER = "### Format:"
CODE_INSTRUCTION = "Write your solution in Python and enclose it in a single ```python code block."


def paper_query(query: str) -> str:
    """A LeetCodeDataset query rewritten as in the paper: the pre-code block and the import note."""
    query = re.sub(r"### Format:\s+", "### Format:\n", query, count=1)
    query = re.sub(r"```python\s*\n", "```python\n# Additional imports.\n\n# End of additional imports.\n\n", query, count=1)
    query = re.sub(r"(### Format:\n.*?\n)", r"\1You have to add the missing imports to the starter code to run correctly.\n",
                   query, count=1, flags=re.DOTALL)
    block = ("Your code will run after the following definitions and imports, which may or may not be needed.\n"
             f"```python\n{PRE_CODE}```\n\n")
    return query.replace("### Format:\n", "### Format:\n" + block, 1)


def is_leetcode_query(problem: Problem) -> bool:
    return problem.metadata.get("source_format") == "leetcode" and FORMAT_MARKER in problem.prompt


def prompt_text(problem: Problem, style: PromptStyle) -> str:
    """The user message for a problem. `paper`: LeetCode queries get the paper's rewriting; prompts of other
    formats that do not ask for a code block yet (HumanEval's signature + docstring, MBPP's task) are wrapped
    in a short instruction so that a chat model answers with a ```python block. `plain`: the prompt as is."""
    if style == "plain":
        return problem.prompt
    if is_leetcode_query(problem):
        return paper_query(problem.prompt)
    if "```" in problem.prompt:
        return problem.prompt
    if problem.metadata.get("source_format") == "humaneval":
        return f"Complete the following Python function.\n```python\n{problem.prompt.rstrip()}\n```\n\n{CODE_INSTRUCTION}\n"
    return f"{problem.prompt.rstrip()}\n\n{CODE_INSTRUCTION}\n"


def chat_prompt(problem: Problem, style: PromptStyle) -> list[dict[str, str]]:
    """The prompt as chat messages: one user turn, no system prompt (as the paper)."""
    return [{"role": "user", "content": prompt_text(problem, style)}]


def graded_preamble(problem: Problem, style: PromptStyle, preamble: GradedPreamble = "pre_code") -> str:
    """The preamble the solution runs after: for a paper-style LeetCode query the pre-code the prompt promised,
    alone (`pre_code`, the reference) or followed by the problem's own preamble (`pre_code+dataset`: the
    dataset's definitions win); for any other problem its own preamble."""
    if style == "paper" and is_leetcode_query(problem):
        return PRE_CODE if preamble == "pre_code" else PRE_CODE + "\n" + problem.preamble
    return problem.preamble


def solution_completion(problem: Problem) -> str | None:
    """The dataset's own solution written as a model answer (a ```python block), or None if it has none."""
    code = problem.metadata.get("canonical_solution")
    if not isinstance(code, str) or not code.strip():
        return None
    return f"```python\n{code.rstrip()}\n```"
