"""The evaluation report: metrics per policy, checkpoint selection, plots.

Metrics, per policy, over the test prompts of a subset and averaged over seeds (with the standard deviation
across seeds):
- `avg_pass`: Avg. Pass %, the paper's LeetCode metric: the mean pass rate (passed tests / tests) x 100;
- `strict_pass@1`: the share of samples that pass every test, x 100;
- `kl`: the mean of log pi(y|x) - log pi_ref(y|x) over the policy's samples (summed over tokens), an estimate of
  KL(pi || pi_ref);
- `tokens`: the mean completion length.
Subsets: `all`, `selection` and `reporting` (prepare's difficulty-stratified halves of the test split), and
per difficulty. For each training run the checkpoint with the best selection Avg. Pass is selected and its
reporting Avg. Pass is what the run reports, so nothing reported was used to choose it.

Files: `evaluate/results` (a table, one row per graded sample), `report.json`, `report.md`, and the plots
`plots/rewards.png` (reference rewards and their quantiles) and `plots/pass_rate.png` (Avg. Pass per checkpoint).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from sandbox.rundir import write_atomic, write_json

from .layout import load_table, save_table
from .policies import Policy
from .stage import StageContext

SUBSETS = ("all", "selection", "reporting")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Avg. Pass %, strict pass@1 %, KL and mean tokens of graded samples (one seed)."""
    return {
        "avg_pass": 100 * _mean([r["reward"] for r in rows]),
        "strict_pass@1": 100 * _mean([float(r["reward"] == 1.0) for r in rows]),
        "kl": _mean([r["logp"] - r["ref_logp"] for r in rows]),
        "tokens": _mean(counted) if (counted := [r["num_tokens"] for r in rows if r["num_tokens"] >= 0]) else 0.0,
        "samples": len(rows),
    }


def over_seeds(per_seed: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in ("avg_pass", "strict_pass@1", "kl", "tokens"):
        values = [m[name] for m in per_seed]
        out[name] = round(_mean(values), 4)
        out[f"{name}_std"] = round(_std(values), 4)
    out["samples"] = sum(int(m["samples"]) for m in per_seed)
    return out


def summarize(rows: list[dict[str, Any]], seeds: int) -> dict[str, Any]:
    """Metrics of one policy: by subset and by difficulty, each a mean (and std) over seeds."""
    by_seed: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_seed[row["seed"]].append(row)
    groups: dict[str, dict[str, Any]] = {}
    for subset in SUBSETS:
        groups[subset] = over_seeds([metrics([r for r in by_seed[s] if subset == "all" or r["subset"] == subset])
                                     for s in range(seeds)])
    difficulties = sorted({r["difficulty"] for r in rows})
    by_difficulty = {d: over_seeds([metrics([r for r in by_seed[s] if r["difficulty"] == d]) for s in range(seeds)])
                     for d in difficulties}
    return {"subsets": groups, "difficulty": by_difficulty}


def write_report(ctx: StageContext, results: list[tuple[Policy, list[dict[str, Any]]]], test: Any) -> dict[str, Any]:
    """`evaluate/results`, report.json, report.md and the plots, from each policy's graded samples (rows with
    `seed`, `task_id`, `reward`, `logp`, `ref_logp`, `num_tokens`); returns the stage's summary."""
    folder = ctx.layout.stage("evaluate")
    seeds = ctx.config.evaluate.seeds
    info = {row["task_id"]: (row["subset"], row["difficulty"])
            for row in test.select_columns(["task_id", "subset", "difficulty"])}
    all_rows: list[dict[str, Any]] = []
    report_policies = []
    for policy, graded in results:
        rows = []
        for row in graded:
            subset, difficulty = info[row["task_id"]]
            rows.append({"policy": policy.key, "run": policy.run, "step": policy.step, "seed": row["seed"], "subset": subset,
                         "difficulty": difficulty, **row})
        all_rows.extend(rows)
        report_policies.append({"policy": policy.key, "run": policy.run, "step": policy.step, "path": policy.path,
                                **summarize(rows, seeds)})
    save_table(all_rows, folder / "results")
    runs = select_checkpoints(report_policies, run_methods(ctx.config) if ctx.config.evaluate.selection == "method" else None)
    report = {
        "metric": "Avg. Pass % = 100 x mean over test prompts of (tests passed / tests), averaged over seeds",
        "seeds": seeds, "test_prompts": len(test),
        "subset_sizes": {s: sum(1 for v in info.values() if s == "all" or v[0] == s) for s in SUBSETS},
        "policies": report_policies, "runs": runs,
    }
    plots = write_plots(ctx, report_policies, folder / "plots")
    report["plots"] = [str(p) for p in plots]
    write_json(folder / "report.json", report)
    write_atomic(folder / "report.md", markdown(report, ctx.config.name))
    ctx.say(f"report: {folder / 'report.md'} (and report.json); plots: {', '.join(str(p) for p in plots) or 'none'}")
    summary: dict[str, Any] = {"report": str(folder / "report.md"), "plots": [str(p) for p in plots], "policies": len(results)}
    for entry in runs:
        summary[f"{entry['run']}: reporting avg_pass"] = entry["reporting_avg_pass"]
    return summary


def select_checkpoints(report_policies: list[dict[str, Any]], methods: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The policy with the best selection Avg. Pass in each group, and what it scores on the reporting subset.

    Groups: each run (and the reference, and each oracle) on its own; with `methods` (run -> method, e.g. its
    loss type; `evaluate.selection: method`) also each method, over every checkpoint of its runs and the
    reference model (checkpoint-0), as the reference code picks a method's (beta, lr, checkpoint). Ties go to
    the lower step (checkpoint-0 first, as it is the first row of each run there), then to the run name."""
    by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in report_policies:
        by_run[entry["run"] if entry["run"] != "oracle" else entry["policy"]].append(entry)
    if methods:
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for run, method in methods.items():
            groups[f"method:{method}"] += by_run.get(run, [])
        for name in groups:
            groups[name] = by_run.get("reference", []) + groups[name]
        by_run = {**groups, **by_run}
    out = []
    for run, entries in by_run.items():
        best = min(entries, key=lambda e: (-e["subsets"]["selection"]["avg_pass"], e["step"] or 0, e["run"]))
        out.append({"run": run, "selected": best["policy"], "step": best["step"],
                    "selection_avg_pass": best["subsets"]["selection"]["avg_pass"],
                    "reporting_avg_pass": best["subsets"]["reporting"]["avg_pass"],
                    "reporting_avg_pass_std": best["subsets"]["reporting"]["avg_pass_std"],
                    "reporting_strict_pass@1": best["subsets"]["reporting"]["strict_pass@1"],
                    "reporting_kl": best["subsets"]["reporting"]["kl"]})
    return sorted(out, key=lambda e: -e["selection_avg_pass"])


def run_methods(config: Any) -> dict[str, str]:
    """Each training run's method: its loss type (QRPOConfig's default, qrpo, when unset)."""
    from .sweep import expand_sweep

    return {run.name: str({**config.train.args, **run.args}.get("loss_type", "qrpo")) for run in expand_sweep(config)}


def markdown(report: dict[str, Any], name: str) -> str:
    sizes = report["subset_sizes"]
    lines = [f"# {name}: evaluation", "", report["metric"] + f"; {report['seeds']} seed(s), {report['test_prompts']} test "
             f"prompts ({sizes['selection']} selection, {sizes['reporting']} reporting).", "",
             "## Selected checkpoints (by selection Avg. Pass; reported on the reporting subset)", "",
             "| run | checkpoint | selection Avg. Pass % | reporting Avg. Pass % | reporting strict pass@1 % | KL |",
             "|---|---|---|---|---|---|"]
    for e in report["runs"]:
        lines.append(f"| {e['run']} | {e['selected']} | {e['selection_avg_pass']:.2f} | {e['reporting_avg_pass']:.2f} "
                     f"± {e['reporting_avg_pass_std']:.2f} | {e['reporting_strict_pass@1']:.2f} | {e['reporting_kl']:.3f} |")
    lines += ["", "## Every policy (all test prompts)", "", "| policy | step | Avg. Pass % | strict pass@1 % | KL | tokens |",
              "|---|---|---|---|---|---|"]
    for p in report["policies"]:
        m = p["subsets"]["all"]
        step = "" if p["step"] is None else p["step"]
        lines.append(f"| {p['policy']} | {step} | {m['avg_pass']:.2f} ± {m['avg_pass_std']:.2f} "
                     f"| {m['strict_pass@1']:.2f} | {m['kl']:.3f} | {m['tokens']:.0f} |")
    if report.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).relative_to(Path(p).parents[1])})" for p in report["plots"]]
    return "\n".join(lines) + "\n"


def write_plots(ctx: StageContext, report_policies: list[dict[str, Any]], folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    graded = ctx.layout.graded
    if graded.exists():
        path = folder / "rewards.png"
        plot_rewards(ctx, plt, path)
        written.append(path)
    path = folder / "pass_rate.png"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    reference = next((p for p in report_policies if p["run"] == "reference"), None)
    for run in dict.fromkeys(p["run"] for p in report_policies if p["run"] not in ("reference", "oracle")):
        points = [p for p in report_policies if p["run"] == run]
        if reference is not None:
            points = [reference] + points
        last = max((p["step"] or 0 for p in points), default=0)
        xs = [p["step"] if p["step"] is not None else last + 1 for p in points]
        ys = [p["subsets"]["all"]["avg_pass"] for p in points]
        errs = [p["subsets"]["all"]["avg_pass_std"] for p in points]
        ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=run)
    for p in report_policies:
        if p["run"] == "oracle" or (p["run"] == "reference" and len(report_policies) == 1):
            ax.axhline(p["subsets"]["all"]["avg_pass"], linestyle="--", color="gray")
            ax.annotate(p["policy"], (0, p["subsets"]["all"]["avg_pass"]), fontsize=8, va="bottom")
    ax.set_xlabel("training step (0: the reference model)")
    ax.set_ylabel("Avg. Pass % (test prompts, mean over seeds)")
    ax.set_title("Pass rate per checkpoint")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)
    return written


def plot_rewards(ctx: StageContext, plt: Any, path: Path) -> None:
    """The reference completions' rewards (pass rates), and the quantile of each among its prompt's references
    (uniform on [0, 1] for a continuous reward; ties in pass rates pile it up at the top)."""
    import numpy as np

    from qrpo.quantile import quantile_rewards

    graded = load_table(ctx.layout.graded).select_columns(["task_id", "sample_index", "reward"]).to_list()
    by_prompt: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for row in graded:
        by_prompt[row["task_id"]].append((row["sample_index"], row["reward"]))
    build = ctx.config.build
    ties = ctx.config.train.args.get("ties", "upper")
    rewards, quantiles = [], []
    for samples in by_prompt.values():
        values = [r for _, r in sorted(samples)]
        refs = values[: build.num_ref_rewards] if build.num_ref_rewards else values
        rewards.extend(values)
        quantiles.extend(quantile_rewards(np.asarray(values), np.asarray(refs), ties=ties, seed=0).tolist())
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.hist(rewards, bins=20, range=(0, 1), color="tab:blue")
    left.set_xlabel("reward (pass rate)")
    left.set_ylabel("reference completions")
    left.set_title(f"Rewards: {len(rewards)} completions, {len(by_prompt)} prompts")
    right.hist(quantiles, bins=20, range=(0, 1), color="tab:orange")
    right.set_xlabel(f"quantile reward (ties={ties})")
    right.set_title("Quantile of each reward among its prompt's references")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
