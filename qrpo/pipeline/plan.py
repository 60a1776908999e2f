"""`qrpo run CONFIG --plan`: what a recipe will do, computed without running anything.

Problems kept come from `prepare`'s record when it has run, else from loading the sources and applying the
filters here (the length filter needs the model's tokenizer; without it the count is before that filter). A
source that cannot be read here (a hub dataset offline) or cannot be filtered fully falls back to the counts the
reference code's filters give on the released revision, when the plan knows them (`EXPECTED`). Everything else
follows from the config: pairs and sequences per step, optimizer steps (with the reference's drop_last rule),
checkpoints, evaluation samples, and GPU-hours at the throughputs stated in `Throughput`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .config import PAIRS_PATTERN, PipelineConfig, SourceConfig
from .layout import RunLayout
from .sweep import expand_sweep

# (dataset, revision, split) -> problems left by the reference code's filters (>= 20 tests, prompt + response
# <= 2048 Llama-3 tokens): its leetcode-sandbox dataset config (train end 2563, eval end 223).
EXPECTED = {("newfacade/LeetCodeDataset", "a9eca79", "train"): 2563, ("newfacade/LeetCodeDataset", "a9eca79", "test"): 223}


@dataclass(frozen=True)
class Throughput:
    """The assumptions behind the GPU-hours (one H100, an 8B Llama in bf16); change them with your measurements."""

    generate_tokens_per_s: float = 2500.0  # vLLM decoding, many sequences in flight
    train_tokens_per_s: float = 2500.0  # forward + backward, ZeRO-3, gradient checkpointing
    score_tokens_per_s: float = 10000.0  # forward only: reference log-probs, KL pass
    prompt_tokens: float = 750.0  # a paper-style LeetCode prompt (the query and the pre-code block)
    completion_tokens: float = 500.0  # a sampled solution


def optimizer_steps(items: int, batch: int, drop_last: bool, epochs: float = 1.0) -> int:
    """Optimizer steps of one training run: `items` batch items (pairs, or pointwise rows) at `batch` per step.
    With drop_last an incomplete last batch (and an incomplete accumulation) is dropped, as the reference code's
    transformers 4.49 does; without it the last partial batch is one more step."""
    per_epoch = items // batch if drop_last else -(-items // batch)
    return math.ceil(max(per_epoch, 1) * epochs) if items else 0


def problems_kept(config: PipelineConfig, split: str) -> tuple[int, str]:
    """(problems the plan counts with, how that number was found)."""
    source: SourceConfig | None = getattr(config.data, split)
    if source is None:
        return 0, "no source"
    record = RunLayout(Path(config.output_dir)).record("prepare")
    if record is not None and split in record.summary:
        return int(record.summary[split]["problems"]), "prepare's record"
    expected = EXPECTED.get((source.path, source.revision or "", split))
    try:
        count, note = _count_here(config, source, split)
    except Exception as error:  # noqa: BLE001 -- offline hub dataset, unreadable file: the plan still prints
        note = f"{source.path} could not be read here ({type(error).__name__})"
        return (expected, f"{note}; the count the reference's filters leave in revision {source.revision}") \
            if expected is not None else (0, note)
    if "before the length filter" in note and expected is not None:
        return expected, f"here {count} {note}; expected {expected} on {source.path}@{source.revision}"
    return count, note


def _count_here(config: PipelineConfig, source: SourceConfig, split: str) -> tuple[int, str]:
    from .problems import load_source
    from .stages.prepare import count_tokens, problem_rows

    loaded = load_source(f"data.{split}", source, config.data)
    rows = problem_rows(loaded, config.data.prompt_style, config.data.graded_preamble)
    tests = f"{len(rows)} with >= {config.data.min_tests} tests of {len(rows) + len(loaded.skipped) + len(loaded.errors)} rows"
    if config.data.max_tokens is None:
        return len(rows), tests
    if config.model.is_tiny:
        return len(rows), f"{tests}, before the length filter (the tiny model is built by the model stage)"
    try:
        count_tokens(rows, config.model.name_or_path, config.data.length_answer)
    except Exception:  # noqa: BLE001 -- no tokenizer here (offline hub id)
        return len(rows), f"{tests}, before the length filter (no tokenizer of {config.model.name_or_path} here)"
    kept = sum(r["chat_tokens"] <= config.data.max_tokens for r in rows)
    return kept, f"{tests}, {kept} within {config.data.max_tokens} tokens"


def items_per_prompt(config: PipelineConfig) -> tuple[int, int]:
    """(batch items per training prompt, sequences per batch item)."""
    pairs = config.build.pairs
    if pairs is None:
        return config.build.pointwise_samples or config.generate.num_samples, 1
    match = PAIRS_PATTERN.match(pairs)
    k = int(match.group(2)) if match and match.group(2) else 1
    together = config.train.args.get("pair_batching", "pairs") == "pairs"
    return (k, 2) if together else (2 * k, 1)


def plan(config: PipelineConfig, throughput: Throughput = Throughput()) -> list[str]:
    """The lines `qrpo run CONFIG --plan` prints."""
    t = throughput
    train, train_note = problems_kept(config, "train") if config.data.train is not None else (0, "none")
    test, test_note = problems_kept(config, "test")
    runs = expand_sweep(config)
    args = config.train.args
    per_prompt, per_item = items_per_prompt(config)
    items = train * per_prompt
    batch = config.train.total_batch_size or int(args.get("per_device_train_batch_size", 8))
    drop_last = bool(args.get("dataloader_drop_last", False))
    steps = optimizer_steps(items, batch, drop_last, float(args.get("num_train_epochs", 1)))
    save = int(args.get("save_steps", 500))
    saved = sorted({*range(save, steps + 1, save), steps}) if steps else []
    per_run = len(saved) if config.evaluate.checkpoints == "all" else min(1, len(saved))
    policies = len(runs) * per_run + (1 if config.evaluate.reference else 0)
    eval_samples = policies * config.evaluate.seeds * test
    kind = "pairs" if per_item == 2 else "rows"
    sequence = t.prompt_tokens + t.completion_tokens
    hours: dict[str, float] = {}
    lines = [f"plan for {config.name} (nothing is run)",
             f"  problems kept: train {train} ({train_note})", f"                 test {test} ({test_note})"]
    if config.sft.enabled:
        sft = config.sft.args
        sft_steps = optimizer_steps(train, config.sft.total_batch_size or int(sft.get("per_device_train_batch_size", 8)),
                                    bool(sft.get("dataloader_drop_last", False)), float(sft.get("num_train_epochs", 3)))
        lines.append(f"  sft: {train} chats x {sft.get('num_train_epochs', 3)} epochs = {sft_steps} optimizer steps")
        hours["sft"] = float(sft.get("num_train_epochs", 3)) * train * sequence / t.train_tokens_per_s / 3600
    completions = train * config.generate.num_samples
    hours["generate"] = completions * t.completion_tokens / t.generate_tokens_per_s / 3600
    lines += [f"  reference completions: {train} x {config.generate.num_samples} = {completions}",
              f"  training table: {items} {kind} ({per_prompt} per prompt, {build_name(config)})",
              f"  per step: {batch} {kind} = {batch * per_item} sequences; drop_last {drop_last}",
              f"  runs: {len(runs)}; optimizer steps per run: {steps}; checkpoints per run: {len(saved)} "
              f"(steps {', '.join(map(str, saved)) or '-'}) + checkpoint-0 (the reference model)",
              f"  evaluation: {policies} policies x {config.evaluate.seeds} seeds x {test} test prompts = {eval_samples} samples"]
    sequences = min(items, steps * batch if drop_last else items) * per_item
    hours["train"] = len(runs) * sequences * sequence / t.train_tokens_per_s / 3600
    hours["reference log-probs"] = items * per_item * sequence / t.score_tokens_per_s / 3600  # cached: once per sweep
    hours["evaluate"] = eval_samples * (t.completion_tokens / t.generate_tokens_per_s
                                        + (2 * sequence / t.score_tokens_per_s if config.evaluate.kl else 0)) / 3600
    total = sum(hours.values())
    lines.append(f"  GPU-hours: {total:.0f} (" + ", ".join(f"{k} {v:.1f}" for k, v in hours.items()) + ")")
    lines.append(f"    at {t.generate_tokens_per_s:.0f} generated / {t.train_tokens_per_s:.0f} trained / "
                 f"{t.score_tokens_per_s:.0f} scored tokens/s per GPU, {t.prompt_tokens:.0f}-token prompts, "
                 f"{t.completion_tokens:.0f}-token completions (assumed: qrpo.pipeline.plan.Throughput)")
    return lines


def build_name(config: PipelineConfig) -> str:
    return config.build.pairs or "pointwise"
