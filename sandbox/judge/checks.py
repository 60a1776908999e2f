"""Split a dataset's test code into individual tests, and classify how each can be judged.

Standard library only: this module runs inside the container as part of the judge, and on the
host in the dataset adapters, so both sides agree on what "one test" is.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass


@dataclass(frozen=True)
class SplitTests:
    setup: str  # trusted code the judge runs once before the tests
    tests: list[str]  # one source per test, run in order in one namespace
    candidate: str  # the name the tests call the function under test by


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _has_assert(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Assert) for n in ast.walk(node))


def group_statements(body: list[ast.stmt], candidate: str) -> list[str]:
    """Group statements into tests. A test ends at each statement that asserts (or calls a
    local helper that does) once the group so far involves the candidate; statements before it
    (setup such as `x = [1, 2]` or `y = candidate(3)`) belong to it. Function definitions are
    setup. Statements after the last assert that still involve the candidate join the last test,
    so nothing that calls the candidate is ever dropped."""
    users = {candidate}  # the candidate, and local functions that call it
    asserting: set[str] = set()  # local functions that assert
    for stmt in body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if _names(stmt) & users:
                users.add(stmt.name)
            if _has_assert(stmt):
                asserting.add(stmt.name)
    tests: list[str] = []
    pending: list[str] = []
    involved = False
    for stmt in body:
        pending.append(ast.unparse(stmt))
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        names = _names(stmt)
        involved = involved or bool(names & users)
        if involved and (_has_assert(stmt) or names & asserting):
            tests.append("\n".join(pending))
            pending, involved = [], False
    if involved and tests:
        tests[-1] += "\n" + "\n".join(pending)
    return tests


def split_check(source: str, candidate: str = "candidate") -> SplitTests:
    """Split `def check(candidate): assert ...` (LeetCode, HumanEval) or module-level asserts
    (MBPP, with `candidate` the entry point's name) into tests.

    Raises SyntaxError for test code that does not parse, ValueError if no test is found."""
    module = ast.parse(source)
    checks = [n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    if checks:
        check = checks[-1]
        if check.args.args:
            candidate = check.args.args[0].arg
        setup = "\n".join(ast.unparse(n) for n in module.body if n is not check)
        tests = group_statements(check.body, candidate)
    else:
        setup_nodes = [n for n in module.body if not (_has_assert(n) and candidate in _names(n))]
        # Module-level code: definitions and imports are setup; everything else is grouped.
        defs = [n for n in setup_nodes if isinstance(n, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef))]
        setup = "\n".join(ast.unparse(n) for n in defs)
        tests = group_statements([n for n in module.body if n not in defs], candidate)
    if not tests:
        raise ValueError(f"no assert that calls {candidate!r} was found in the test code")
    return SplitTests(setup=setup, tests=tests, candidate=candidate)


@dataclass(frozen=True)
class TestForm:
    """How the judge can run one test (from a single parse of its source)."""

    trusted: bool  # every use of the candidate is a direct call: run here, calls proxied
    single_call: bool  # one assert with exactly one call, not in a loop: the runner may exit after it
    names: frozenset[str]  # every name the test reads (to import stdlib modules it relies on)
    stores: frozenset[str]  # names the test assigns
    call: ast.Call | None  # the single call, when there is one
    call_names: frozenset[str]  # names its arguments read


def _walk(root: ast.AST) -> list[ast.AST]:
    """ast.walk, minus the leaves of literal containers: tests hold lists of thousands of
    constants, and visiting each one dominated the judge's preparation time."""
    out: list[ast.AST] = []
    todo = [root]
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            todo.extend(e for e in node.elts if not isinstance(e, ast.Constant))
        elif isinstance(node, ast.Constant):
            continue
        else:
            todo.extend(ast.iter_child_nodes(node))
    return out


_LOOPS = (ast.For, ast.While, ast.comprehension, ast.Lambda, ast.FunctionDef, ast.AsyncFunctionDef)


def classify(tree: ast.Module, candidate: str) -> TestForm:
    """One walk over a parsed test. A test is trusted when every use of `candidate` is a direct
    call whose arguments do not themselves involve the candidate; anything else (passing the
    function around, reading its attributes, returning from the check) must run opaquely on the
    untrusted side."""
    calls: list[ast.Call] = []
    call_funcs: set[int] = set()
    uses: list[ast.Name] = []
    names: set[str] = set()
    loops = False
    escapes = False
    for node in _walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
            if node.id == candidate:
                uses.append(node)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == candidate:
            calls.append(node)
            call_funcs.add(id(node.func))
        elif isinstance(node, (ast.Global, ast.Nonlocal, ast.Return, ast.Yield, ast.YieldFrom)):
            escapes = True
        if isinstance(node, _LOOPS):
            loops = True
    trusted = not escapes and all(id(n) in call_funcs for n in uses)
    if trusted and len(uses) > 1:  # a call nested in another call's arguments
        for nested in calls:
            for arg in [*nested.args, *(k.value for k in nested.keywords)]:
                if any(isinstance(n, ast.Name) and n.id == candidate for n in _walk(arg)):
                    trusted = False
    single = trusted and len(tree.body) == 1 and isinstance(tree.body[0], ast.Assert) and len(calls) == 1 and not loops
    stores: set[str] = set()
    if len(tree.body) > 1:
        stores = {n.id for n in _walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    call = calls[0] if single else None
    call_names: set[str] = set()
    if call is not None:
        call_names = {n.id for a in [*call.args, *(k.value for k in call.keywords)] for n in _walk(a) if isinstance(n, ast.Name)}
    return TestForm(trusted, single, frozenset(names), frozenset(stores), call, frozenset(call_names))


def calls_only(source: str, candidate: str) -> bool:
    """True when the test can run in the judge with the candidate's calls proxied."""
    return classify(ast.parse(source), candidate).trusted
