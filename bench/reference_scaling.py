"""The paper's pre-computation scaling claim on the demo's task: held-out Avg. Pass after QRPO against the number
N of reference completions per training prompt (and against the time spent grading them), with the quantile
tie modes compared.

    python3 bench/reference_scaling.py [--ns 2 4 8 16 32] [--ties upper random mid] [--out runs/reference-scaling]

For each N: `qrpo run learn-cpu` on --prompts training prompts with generate.num_samples=N (QRPO only, pointwise
rows, the final checkpoint, 3 seeds), the model and prepared prompts shared; for each tie mode a training run of
its own on the same completions. The baseline measured in the same run is the reference policy (N does not
change it): each row prints the gain over it. Writes `scaling.json`, `scaling.md` (a table) and `scaling.png` under --out.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(root: Path, n: int, ties: list[str], backend: str, prompts: int) -> None:
    # The demo's QRPO (learn-cpu: identity transform, beta 0.1, its lr and epochs), one run per tie mode.
    sweep = "[" + ", ".join(f"{{loss_type: qrpo, beta: 0.1, transform: identity, ties: {t}, name: qrpo-{t}}}" for t in ties) + "]"
    # `prompts` training prompts (default 128; the demo takes all 543): 5 values of N x 3 tie modes then fit in
    # ~15 minutes on 2 CPUs.
    sets = [f"data.train.limit={prompts}", f"generate.num_samples={n}", "build.pairs=null", "evaluate.checkpoints=final",
            f"train.sweep={sweep}", f"sandbox.backend={backend}"]
    args = [sys.executable, "-m", "qrpo.cli", "run", "learn-cpu", "--output-dir", str(root)]
    for item in sets:
        args += ["--set", item]
    subprocess.run(args, cwd=REPO, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ns", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    parser.add_argument("--ties", nargs="+", default=["upper", "random", "mid"])
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--prompts", type=int, default=128, help="training prompts (the demo's config takes all 543)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "reference-scaling")
    opts = parser.parse_args()
    rows = []
    first: Path | None = None
    for n in opts.ns:
        root = opts.out / f"n{n}"
        if first is not None and not root.exists():
            for stage in ("model", "prepare"):
                shutil.copytree(first / stage, root / stage)
        run(root, n, opts.ties, opts.backend, opts.prompts)
        first = first or root
        report = json.loads((root / "evaluate" / "report.json").read_text())
        grade_s = json.loads((root / "grade" / "stage.json").read_text())["seconds"]
        by_run = {p["run"]: p["subsets"]["all"] for p in report["policies"]}
        ref = by_run["reference"]["avg_pass"]
        for t in opts.ties:
            m = by_run[f"qrpo-{t}"]
            rows.append({"n": n, "ties": t, "grade_s": grade_s, "reference": ref, "avg_pass": m["avg_pass"],
                         "std": m["avg_pass_std"], "gain": m["avg_pass"] - ref, "kl": m["kl"]})
            print(f"N={n:3d} ties={t:6s} grade {grade_s:6.1f} s  reference {ref:5.1f}  QRPO {m['avg_pass']:5.1f} "
                  f"± {m['avg_pass_std']:.1f}  gain {m['avg_pass'] - ref:+5.1f}  KL {m['kl']:.2f}", flush=True)
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / "scaling.json").write_text(json.dumps(rows, indent=1))
    lines = ["| N | ties | grading s | reference Avg. Pass % | QRPO Avg. Pass % | gain | KL |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['n']} | {r['ties']} | {r['grade_s']:.1f} | {r['reference']:.1f} | {r['avg_pass']:.1f} ± {r['std']:.1f} | "
              f"{r['gain']:+.1f} | {r['kl']:.2f} |" for r in rows]
    (opts.out / "scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for t in opts.ties:
        mine = [r for r in rows if r["ties"] == t]
        for ax, x in zip(axes, ("n", "grade_s")):
            ax.errorbar([r[x] for r in mine], [r["avg_pass"] for r in mine], yerr=[r["std"] for r in mine], marker="o",
                        label=f"QRPO ties={t}")
    for ax, label in zip(axes, ("reference completions per prompt (N)", "grading time (s)")):
        ax.axhline(rows[0]["reference"], color="gray", linestyle="--", label="reference")
        ax.set_xscale("log", base=2 if label.startswith("reference") else 10)
        ax.set_xlabel(label)
        ax.set_ylabel("held-out Avg. Pass %")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(opts.out / "scaling.png", dpi=120)
    print(f"table: {opts.out / 'scaling.md'}; plot: {opts.out / 'scaling.png'}")


if __name__ == "__main__":
    main()
