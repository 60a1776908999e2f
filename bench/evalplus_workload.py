"""The MBPP+ / HumanEval+ workload of sandbox_throughput.py: our judge against evalplus's own evaluator.

Why a workload of its own: with plus tests a problem has tens (MBPP+) to hundreds (HumanEval+) of
inputs, so the cost that matters is per input, and the peer to beat is the harness these datasets
were published with, not the paper's fork-per-assert harness.

Both sides grade the same canonical solutions (each must pass everywhere, base + plus) from one
subset file that both read: ours through a warm `Pool` (per_solution: one runner serves every
input, the judge compares), evalplus through `evalplus.evaluate.evaluate` (PyPI `evalplus`, a dev
dependency, run offline via HUMANEVAL_OVERRIDE_PATH / MBPP_OVERRIDE_PATH in a subprocess). Each
side's expected outputs are computed before its clock starts (ours when the workload loads, from
the canonical solutions in the sandbox; evalplus's `get_groundtruth` cache), and evalplus's clock
covers the `evaluate()` call only: loading the problems and its cached ground truth, then its
process pool checking each sample, as a user of its CLI pays it.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from agreement import DATA, EXCLUDED, FILES, read_rows

DATASETS = ("mbppplus", "humanevalplus")

# Run in a fresh interpreter: evalplus's evaluate() leaves a non-daemon "stuck checker" thread that
# sleeps 20 s between looks, so the process exits by os._exit once the time is printed.
_EVALPLUS = """
import json, os, sys, time
from evalplus.data import get_human_eval_plus, get_human_eval_plus_hash, get_mbpp_plus, get_mbpp_plus_hash
from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS
from evalplus.evaluate import evaluate, get_groundtruth
name, samples, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
if name == "humaneval":
    get_groundtruth(get_human_eval_plus(), get_human_eval_plus_hash(), [])
else:
    get_groundtruth(get_mbpp_plus(), get_mbpp_plus_hash(), MBPP_OUTPUT_NOT_NONE_TASKS)
started = time.perf_counter()
evaluate(name, samples=samples, parallel=workers, i_just_wanna_run=True)
print("QRPO_SECONDS", time.perf_counter() - started, flush=True)
os._exit(0)
"""


def subset_file(dataset: str, n: int) -> Path:
    """The first n problems of the release, minus the excluded ones (named in agreement.EXCLUDED),
    written where both graders read them."""
    rows = [r for r in read_rows(DATA / FILES[dataset]) if r["task_id"] not in EXCLUDED][:n]
    path = Path(tempfile.mkdtemp(prefix=f"qrpo-throughput-{dataset}-")) / Path(FILES[dataset]).name
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(row) + "\n" for row in rows)
    return path


def load_problems(dataset: str, n: int, backend: str) -> tuple[list[Any], Path]:
    """Our problems with their expected outputs (the canonical solutions run in the sandbox now, or
    read from the cache of an earlier run) and the file they came from."""
    from sandbox.api import expected_outputs_for
    from sandbox.datasets import load_problems as load
    from sandbox.pool import Pool, default_workers

    path = subset_file(dataset, n)
    table = {p.task_id: p for p in load(path)}
    with Pool(backend, workers=default_workers()) as pool:
        table = expected_outputs_for(table, [(i, {"task_id": t}) for i, t in enumerate(table)], pool)
    return list(table.values()), path


def evalplus_method(workers: int | None):
    """evalplus's evaluator with `workers` processes (None: one per CPU), as a sandbox_throughput method."""

    def run(workload: Any) -> tuple:
        count = workers or workload.cpus
        name = "humaneval" if workload.dataset == "humanevalplus" else "mbpp"
        with tempfile.TemporaryDirectory() as tmp:
            samples = Path(tmp) / "samples.jsonl"
            samples.write_text("".join(
                json.dumps({"task_id": p.task_id, "solution": workload.code(p)}) + "\n" for p in workload.problems
            ))
            env = {**os.environ, "HUMANEVAL_OVERRIDE_PATH": str(workload.source), "MBPP_OVERRIDE_PATH": str(workload.source)}
            proc = subprocess.run([sys.executable, "-c", _EVALPLUS, name, str(samples), str(count)], env=env,
                                  capture_output=True, text=True, check=False)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("QRPO_SECONDS")]
            if proc.returncode or not lines:
                raise RuntimeError(f"evalplus exited {proc.returncode}: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
            results = json.loads((Path(tmp) / "samples_eval_results.json").read_text())["eval"]
        passed = [float(results[p.task_id][0]["base_status"] == results[p.task_id][0]["plus_status"] == "pass")
                  for p in workload.problems]
        return len(workload.problems), workload.tests, float(lines[-1].split()[1]), passed, {"evalplus_workers": count}

    return run
