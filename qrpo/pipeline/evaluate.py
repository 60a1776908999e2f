"""Stage `evaluate`: every checkpoint on the test prompts, graded; the report and its plots.

Policies evaluated: the reference model (step 0, `evaluate.reference`), every checkpoint of every training
run and its final model (`evaluate.checkpoints: all`, or the final model only), and optional oracles that
need no model: `solution` answers with the dataset's own solution (a check of the whole grading path: it
scores 100% but for solutions too slow for the time limit) and `empty` answers nothing (scores 0).

Per policy and seed (`evaluate.seeds`), one sample per test prompt at T=0.6, top-p 0.9 (the paper), saved as
`evaluate/policies/<policy>/samples-seed<k>` with the log-probabilities of the sample under the policy and
under the reference model (for the KL). All samples not graded yet are then graded in one batch (one warm
pool, or one SLURM array) and saved per policy and seed; every unit is resumable. Finally `evaluate/results`
(one row per graded sample), `report.json`, `report.md` and the plots are written (see `report.py`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import PipelineConfig
from .grading import grade_rows, result_columns
from .prepare import load_problems_table
from .rundir import RunDir, fingerprint, load_table, read_json, read_jsonl, remove_tree, save_table, write_json, write_jsonl
from .train import checkpoints, expand_sweep


@dataclass(frozen=True)
class Policy:
    """One thing evaluated: a model directory (reference, checkpoint, final model) or an oracle."""

    key: str  # reference, <run>/checkpoint-20, <run>/final, oracle-solution
    run: str  # reference, the run's name, or oracle
    step: int | None
    path: str | None  # model directory; None for oracles
    oracle: str | None = None

    @property
    def folder_name(self) -> str:
        return re.sub(r"[^\w.-]", "__", self.key)


def requires(config: PipelineConfig) -> list[str]:
    deps = ["prepare"]
    runs = expand_sweep(config)
    if runs:
        deps.append("train")
    if config.evaluate.reference or (runs and config.evaluate.kl):
        deps.append("model")
    return deps


def inputs(config: PipelineConfig) -> dict[str, Any]:
    from .grade import inputs as grading_inputs

    return {"evaluate": dataclasses.asdict(config.evaluate), **grading_inputs(config), "engine": config.generate.engine,
            "dtype": config.model.dtype, "runs": [r.name for r in expand_sweep(config)]}


def policies(config: PipelineConfig, run_dir: RunDir, reference_path: str | None) -> list[Policy]:
    out = []
    if config.evaluate.reference and reference_path:
        out.append(Policy("reference", "reference", 0, reference_path))
    for train_run in expand_sweep(config):
        found = checkpoints(run_dir.run_dir(train_run.name) / "model")
        if config.evaluate.checkpoints == "final":
            found = found[-1:]
        for step, path in found:
            label = path.name if path.name.startswith("checkpoint-") else "final"
            out.append(Policy(f"{train_run.name}/{label}", train_run.name, step, str(path)))
    for oracle in config.evaluate.oracles:
        out.append(Policy(f"oracle-{oracle}", "oracle", None, None, oracle))
    return out


def _identity(path: str | None) -> list[Any]:
    """Size and modification time of a model's files: a retrained checkpoint of the same name differs."""
    if path is None:
        return []
    folder = Path(path)
    if not folder.is_dir():
        return [path]
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()
                  if p.is_file() and (p.suffix in (".safetensors", ".bin") or p.name == "config.json"))


def run(ctx: Any) -> dict[str, Any]:
    config: PipelineConfig = ctx.config
    ev = config.evaluate
    reference = ctx.model_path() if "model" in requires(config) else None
    test = load_table(ctx.run_dir.prompts("test"))
    problems = load_problems_table(test)
    folder = ctx.run_dir.stage("evaluate")
    todo: list[tuple[Policy, list[int]]] = []
    units = policies(config, ctx.run_dir, reference)
    # What a policy's samples and grades depend on: not the stage's fingerprint, which changes whenever a run
    # is added to the sweep (the policies evaluated already are kept then).
    settings = {k: v for k, v in inputs(config).items() if k != "runs"}
    base = {"settings": settings, "prepare": ctx.upstream_token("prepare"), "reference": _identity(reference)}
    for policy in units:
        unit = folder / "policies" / policy.folder_name
        fp = fingerprint({**base, "key": policy.key, "model": _identity(policy.path)})
        record = read_json(unit / "policy.json")
        if record is not None and record.get("fingerprint") != fp:
            ctx.say(f"{policy.key}: its model or the evaluation settings changed since it was evaluated; evaluating it again")
            remove_tree(unit)
        write_json(unit / "policy.json", {**dataclasses.asdict(policy), "fingerprint": fp})
        seeds = [s for s in range(ev.seeds) if not (unit / f"samples-seed{s}").exists()]
        if seeds:
            todo.append((policy, seeds))
    oracles = [(p, s) for p, s in todo if p.oracle]
    models = [(p, s) for p, s in todo if not p.oracle]
    for policy, seeds in oracles:
        for seed in seeds:
            save_table(oracle_samples(test, policy.oracle or ""), folder / "policies" / policy.folder_name / f"samples-seed{seed}")
    if models:
        ctx.say(f"sampling {sum(len(s) for _, s in models)} (policy, seed) pairs on {len(test)} test prompts")
        calls = [(config, str(ctx.run_dir.root), policy, seeds, reference) for policy, seeds in models]
        ctx.executor.map("evaluate", sample_policy, calls, config.slurm.evaluate)
    _grade_pending(ctx, units, problems)
    from .report import write_report

    return write_report(ctx, units, test)


def oracle_samples(test: Any, oracle: str) -> list[dict[str, Any]]:
    rows = []
    for row in test:
        text = row["solution"] if oracle == "solution" else ""
        rows.append({"task_id": row["task_id"], "completion": text, "num_tokens": -1, "finished": True, "logp": 0.0, "ref_logp": 0.0})
    return rows


def sample_policy(config: PipelineConfig, root: str, policy: Policy, seeds: list[int], reference: str | None) -> str:
    """Sample (and score) one policy's test completions for the given seeds; here or in a SLURM job."""
    from .progress import bar
    from .sampling import Sampler

    ev = config.evaluate
    run_dir = RunDir(Path(root))
    test = load_table(run_dir.prompts("test"))
    prompts = test["prompt"]
    unit = run_dir.stage("evaluate") / "policies" / policy.folder_name
    assert policy.path is not None
    sampler = Sampler(policy.path, config.generate.engine, config.model.dtype, config.cpu_threads)
    sampled = {}
    for seed in bar(seeds, desc=f"evaluate: sampling {policy.key}", unit="seed"):
        sampled[seed] = [group[0] for group in sampler.sample(prompts, 1, ev.temperature, ev.top_p, ev.max_new_tokens, seed=seed,
                                                               batch_size=ev.batch_size)]
    sampler.release()
    ref_sampler = None
    if ev.kl and reference is not None and policy.path != reference:
        ref_sampler = Sampler(reference, "transformers", config.model.dtype, config.cpu_threads)
    for seed, samples in sampled.items():
        ids = [s.token_ids for s in samples]
        logp = sampler.log_probs(prompts, ids, ev.batch_size) if ev.kl else [0.0] * len(ids)
        ref_logp = ref_sampler.log_probs(prompts, ids, ev.batch_size) if ref_sampler is not None else logp
        rows = [{"task_id": t, "completion": s.text, "num_tokens": len(s.token_ids), "finished": s.finished, "logp": a, "ref_logp": b}
                for t, s, a, b in zip(test["task_id"], samples, logp, ref_logp)]
        save_table(rows, unit / f"samples-seed{seed}")
    return policy.key


def _grade_pending(ctx: Any, units: list[Policy], problems: dict[str, Any]) -> None:
    """Grade every saved sample table that has no grades yet, in one batch."""
    folder = ctx.run_dir.stage("evaluate")
    pending = []
    for policy in units:
        unit = folder / "policies" / policy.folder_name
        for seed in range(ctx.config.evaluate.seeds):
            if not (unit / f"graded-seed{seed}.jsonl").exists():
                pending.append((unit, seed))
    if not pending:
        return
    rows: list[dict[str, Any]] = []
    spans = []
    for unit, seed in pending:
        samples = load_table(unit / f"samples-seed{seed}")
        spans.append((unit, seed, len(rows), len(rows) + len(samples)))
        rows.extend({"task_id": t, "completion": c} for t, c in zip(samples["task_id"], samples["completion"]))
    ctx.say(f"grading {len(rows)} samples of {len(pending)} (policy, seed) pairs")
    batch = folder / "grading" / fingerprint([f"{u.name}/{s}" for u, s in pending])
    results = grade_rows(problems, rows, batch, ctx.config, ctx.executor.kind, "evaluate")
    for unit, seed, start, end in spans:
        write_jsonl(unit / f"graded-seed{seed}.jsonl", [result_columns(r) for r in results[start:end]])
    remove_tree(folder / "grading")  # this batch, and any batch an interrupted run left behind


def load_policy_results(unit: Path, seed: int) -> list[dict[str, Any]]:
    """One policy's samples for one seed, joined with their grades."""
    samples = load_table(unit / f"samples-seed{seed}").to_list()
    grades = read_jsonl(unit / f"graded-seed{seed}.jsonl")
    return [{**s, **g} for s, g in zip(samples, grades)]


def progress(run_dir: RunDir) -> str | None:
    """For `qrpo status`: (policy, seed) pairs sampled and graded."""
    folder = run_dir.stage("evaluate") / "policies"
    if not folder.is_dir():
        return None
    sampled = len([p for p in folder.glob("*/samples-seed*") if p.is_dir()])
    graded = len(list(folder.glob("*/graded-seed*.jsonl")))
    return f"{sampled} (policy, seed) pairs sampled, {graded} graded"
