"""Stage `generate`: N reference completions per training prompt, sampled from the reference model.

The prompts are cut into chunks of `generate.chunk_size`; each chunk's completions are saved as a table once
complete (`generate/chunks/chunk-00003`), so an interrupted run resumes at the first missing chunk, and on
SLURM the chunks are spread over `generate.jobs` jobs. Each chunk has its own seed, so its samples do not
depend on which job or which run produced it. The merged table, `generate/completions`, has one row per
completion:

    task_id, prompt (chat messages), completion (the text), sample_index (0..N-1), num_tokens, finished
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sandbox.rundir import Chunks, fingerprint

from ..config import PipelineConfig
from ..layout import RunLayout, chunk_progress, load_table, save_table
from ..stage import StageContext

NAME = "generate"
SUMMARY = "N reference completions per training prompt"


def requires(config: PipelineConfig) -> list[str]:
    return ["prepare", "model"] + (["sft"] if config.sft.enabled else [])


def inputs(config: PipelineConfig) -> dict[str, Any]:
    g = config.generate
    return {"num_samples": g.num_samples, "temperature": g.temperature, "top_p": g.top_p, "max_new_tokens": g.max_new_tokens,
            "engine": g.engine, "chunk_size": g.chunk_size, "seed": g.seed, "dtype": config.model.dtype}


def run(ctx: StageContext) -> dict[str, Any]:
    config = ctx.config
    prompts = load_table(ctx.layout.prompts("train"))
    chunks = _chunks(ctx.layout, config, len(prompts), ctx.fingerprint)
    pending = chunks.pending()
    if pending:
        ctx.say(f"{len(pending)} of {chunks.count} chunks to generate "
                f"({len(prompts)} prompts x {config.generate.num_samples} samples)")
        jobs = min(config.generate.jobs, len(pending)) if ctx.executor.kind == "slurm" else 1
        calls = [(config, str(ctx.layout.root), ctx.model_path(), ctx.fingerprint, pending[k::jobs]) for k in range(jobs)]
        ctx.executor.map("generate", generate_chunks, calls, config.slurm.generate)
    else:
        ctx.say(f"all {chunks.count} chunks were generated already; merging")
    from datasets import concatenate_datasets

    table = concatenate_datasets([load_table(chunks.path(i)) for i in range(chunks.count)])
    save_table(table, ctx.layout.completions)
    finished = sum(table["finished"]) / max(len(table), 1)
    return {"completions": len(table), "prompts": len(prompts), "chunks": chunks.count, "finished_share": round(finished, 4),
            "mean_tokens": round(sum(table["num_tokens"]) / max(len(table), 1), 1)}


def _chunks(layout: RunLayout, config: PipelineConfig, num_prompts: int, fp: str) -> Chunks:
    """Each chunk is a `datasets` table (a folder, saved atomically) of `chunk_size` prompts' completions."""
    return Chunks(layout.generate_chunks, fp, math.ceil(num_prompts / config.generate.chunk_size), kind="completions",
                  fix="rerun with --force generate to redo the stage")


def generate_chunks(config: PipelineConfig, root: str, model_path: str, fp: str, indices: list[int]) -> int:
    """Generate the given chunks (skipping saved ones); runs here or in a SLURM job. Returns chunks made."""
    from ..progress import bar
    from ..sampling import Sampler

    g = config.generate
    layout = RunLayout(Path(root))
    prompts = load_table(layout.prompts("train"))
    chunks = _chunks(layout, config, len(prompts), fp)
    todo = [i for i in indices if not chunks.done(i)]
    if not todo:
        return 0
    sampler = Sampler(model_path, g.engine, config.model.dtype, config.cpu_threads)
    made = 0
    for index in bar(todo, desc="generate: chunks", unit="chunk"):
        if chunks.done(index):  # another job got there first
            continue
        part = prompts.select(range(index * g.chunk_size, min((index + 1) * g.chunk_size, len(prompts))))
        samples = sampler.sample(part["prompt"], g.num_samples, g.temperature, g.top_p, g.max_new_tokens,
                                 seed=int(fingerprint([g.seed, index]), 16) % 2**31, batch_size=g.batch_size)
        rows = []
        for task_id, prompt, group in zip(part["task_id"], part["prompt"], samples):
            for k, sample in enumerate(group):
                rows.append({"task_id": task_id, "prompt": prompt, "completion": sample.text, "sample_index": k,
                             "num_tokens": len(sample.token_ids), "finished": sample.finished})
        save_table(rows, chunks.path(index))
        made += 1
    return made


def progress(layout: RunLayout) -> str | None:
    """For `qrpo status`: how many chunks are saved."""
    found = chunk_progress(layout.generate_chunks)
    return None if found is None else f"{found[0]}/{found[1]} chunks saved"
