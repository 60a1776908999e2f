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
from pathlib import Path
from typing import Any

from sandbox.problem import Problem
from sandbox.rundir import fingerprint, read_json, read_jsonl, remove_tree, write_json, write_jsonl

from ..config import Oracle, PipelineConfig
from ..layout import RunLayout, load_table, save_table
from ..policies import Policy, list_policies, model_identity
from ..problems import load_problems_table
from ..report import write_report
from ..sandbox_grading import grade_rows, grading_settings, result_columns
from ..stage import StageContext
from ..sweep import expand_sweep

NAME = "evaluate"
SUMMARY = "every checkpoint on the test prompts, graded; report and plots"


def requires(config: PipelineConfig) -> list[str]:
    deps = ["prepare"]
    runs = expand_sweep(config)
    if runs:
        deps.append("train")
    if config.evaluate.reference or (runs and config.evaluate.kl):
        deps += ["model"] + (["sft"] if config.sft.enabled else [])
    return deps


def inputs(config: PipelineConfig) -> dict[str, Any]:
    return {"evaluate": config.evaluate.model_dump(), **grading_settings(config), "engine": config.generate.engine,
            "dtype": config.model.dtype, "runs": [r.name for r in expand_sweep(config)]}


def run(ctx: StageContext) -> dict[str, Any]:
    config = ctx.config
    ev = config.evaluate
    reference = ctx.model_path() if "model" in requires(config) else None  # the SFT model in the sft setting
    test = load_table(ctx.layout.prompts("test"))
    problems = load_problems_table(test)
    todo: list[tuple[Policy, list[int]]] = []
    units = list_policies(config, ctx.layout, reference)
    # What a policy's samples and grades depend on: not the stage's fingerprint, which changes whenever a run
    # is added to the sweep (the policies evaluated already are kept then).
    settings = {k: v for k, v in inputs(config).items() if k != "runs"}
    base = {"settings": settings, "prepare": ctx.upstream_token("prepare"), "reference": model_identity(reference)}
    for policy in units:
        unit = ctx.layout.policy(policy.folder_name)
        fp = fingerprint({**base, "key": policy.key, "model": model_identity(policy.path)})
        record = read_json(unit / "policy.json")
        if record is not None and record.get("fingerprint") != fp:
            ctx.say(f"{policy.key}: its model or the evaluation settings changed since it was evaluated; evaluating it again")
            remove_tree(unit)
        write_json(unit / "policy.json", {**dataclasses.asdict(policy), "fingerprint": fp})
        seeds = [s for s in range(ev.seeds) if not (unit / f"samples-seed{s}").exists()]
        if seeds:
            todo.append((policy, seeds))
    for policy, seeds in todo:
        if policy.oracle is not None:
            for seed in seeds:
                save_table(oracle_samples(test, policy.oracle), ctx.layout.policy(policy.folder_name) / f"samples-seed{seed}")
    models = [(p, s) for p, s in todo if p.oracle is None]
    if models:
        ctx.say(f"sampling {sum(len(s) for _, s in models)} (policy, seed) pairs on {len(test)} test prompts")
        calls = [(config, str(ctx.layout.root), policy, seeds, reference) for policy, seeds in models]
        ctx.executor.map("evaluate", sample_policy, calls, config.slurm.evaluate)
    _grade_pending(ctx, units, problems)
    results = [(policy, [row for seed in range(ev.seeds) for row in load_policy_results(ctx.layout, policy, seed)])
               for policy in units]
    return write_report(ctx, results, test)


def oracle_samples(test: Any, oracle: Oracle) -> list[dict[str, Any]]:
    rows = []
    for row in test:
        text = row["solution"] if oracle == "solution" else ""
        rows.append({"task_id": row["task_id"], "completion": text, "num_tokens": -1, "finished": True, "logp": 0.0,
                     "ref_logp": 0.0})
    return rows


def sample_policy(config: PipelineConfig, root: str, policy: Policy, seeds: list[int], reference: str | None) -> str:
    """Sample (and score) one policy's test completions for the given seeds; here or in a SLURM job."""
    from ..progress import bar
    from ..sampling import Sampler

    ev = config.evaluate
    layout = RunLayout(Path(root))
    test = load_table(layout.prompts("test"))
    prompts = test["prompt"]
    unit = layout.policy(policy.folder_name)
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
        rows = [{"task_id": t, "completion": s.text, "num_tokens": len(s.token_ids), "finished": s.finished, "logp": a,
                 "ref_logp": b} for t, s, a, b in zip(test["task_id"], samples, logp, ref_logp)]
        save_table(rows, unit / f"samples-seed{seed}")
    return policy.key


def _grade_pending(ctx: StageContext, units: list[Policy], problems: dict[str, Problem]) -> None:
    """Grade every saved sample table that has no grades yet, in one batch."""
    pending = [(ctx.layout.policy(policy.folder_name), seed) for policy in units for seed in range(ctx.config.evaluate.seeds)
               if not (ctx.layout.policy(policy.folder_name) / f"graded-seed{seed}.jsonl").exists()]
    if not pending:
        return
    rows: list[dict[str, Any]] = []
    spans = []
    for unit, seed in pending:
        samples = load_table(unit / f"samples-seed{seed}")
        spans.append((unit, seed, len(rows), len(rows) + len(samples)))
        rows.extend({"task_id": t, "completion": c} for t, c in zip(samples["task_id"], samples["completion"]))
    ctx.say(f"grading {len(rows)} samples of {len(pending)} (policy, seed) pairs")
    folder = ctx.layout.stage("evaluate")
    batch = folder / "grading" / fingerprint([f"{u.name}/{s}" for u, s in pending])
    results = grade_rows(problems, rows, batch, ctx.config, ctx.executor, "evaluate")
    for unit, seed, start, end in spans:
        write_jsonl(unit / f"graded-seed{seed}.jsonl", [result_columns(r) for r in results[start:end]])
    remove_tree(folder / "grading")  # this batch, and any batch an interrupted run left behind


def load_policy_results(layout: RunLayout, policy: Policy, seed: int) -> list[dict[str, Any]]:
    """One policy's samples for one seed, joined with their grades, tagged with the seed."""
    unit = layout.policy(policy.folder_name)
    samples = load_table(unit / f"samples-seed{seed}").to_list()
    grades = read_jsonl(unit / f"graded-seed{seed}.jsonl")
    return [{**s, **g, "seed": seed} for s, g in zip(samples, grades)]


def progress(layout: RunLayout) -> str | None:
    """For `qrpo status`: (policy, seed) pairs sampled and graded."""
    folder = layout.stage("evaluate") / "policies"
    if not folder.is_dir():
        return None
    sampled = len([p for p in folder.glob("*/samples-seed*") if p.is_dir()])
    graded = len(list(folder.glob("*/graded-seed*.jsonl")))
    return f"{sampled} (policy, seed) pairs sampled, {graded} graded"
