"""Stage `model`: the reference policy.

A hub id or a local directory is used as it is (nothing to do). `tiny` builds a small Llama here, for the
CPU pipeline: a byte-level BPE tokenizer trained on the problems' prompts and solutions, a random model
(`qrpo.tiny`), then a short causal-LM warm-up on the chat-formatted prompt + solution of each problem (loss on
the solution tokens only). A random model writes garbage, so every reward would be 0 and every quantile a tie;
after a few hundred steps it has half-learned the solutions, and sampling at T=1 writes a mix of passing and
failing programs, like a real model on real problems. Seconds on a CPU; the result is `model/model`.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from qrpo import tasks
from sandbox.rundir import atomic_dir

from ..config import PipelineConfig, TinyModelConfig
from ..errors import StageError
from ..layout import RunLayout
from ..stage import StageContext

NAME = "model"
SUMMARY = "the reference model: builds and warms up the tiny model, or names a hub id / directory"


def requires(config: PipelineConfig) -> list[str]:
    return []


def inputs(config: PipelineConfig) -> dict[str, Any]:
    model = config.model
    if not model.is_tiny:
        return {"name_or_path": model.name_or_path}
    data = config.data
    return {"tiny": model.tiny.model_dump(), "prompt_style": data.prompt_style,
            "sources": [s.model_dump() for s in (data.train, data.test) if s is not None]}


def run(ctx: StageContext) -> dict[str, Any]:
    config = ctx.config
    if not config.model.is_tiny:
        ctx.say(f"reference model {config.model.name_or_path} (nothing to build)")
        return {"model": config.model.name_or_path}
    out = ctx.layout.model
    if config.data.train is not None and tasks.source_split(config.data.train.path) is not None:
        from qrpo.tasks.reference import reference_model  # the task's SFT mix of right and wrong answers, cached

        record = reference_model(config.model.tiny, out, build_tiny_model, config.cpu_threads, say=ctx.say)
        return {"model": str(out), **record}
    examples = training_examples(config)
    losses = build_tiny_model(config.model.tiny, examples, out, config.cpu_threads)
    ctx.say(f"tiny model in {out}: warm-up loss {losses[0]:.2f} -> {losses[-1]:.3f} on {len(examples)} solutions")
    return {"model": str(out), "examples": len(examples), "first_loss": round(losses[0], 4), "last_loss": round(losses[-1], 4)}


def training_examples(config: PipelineConfig) -> list[tuple[list[dict[str, str]], str]]:
    """(chat prompt, solution answer) for every problem of the sources that has a solution."""
    from ..problems import load_source
    from ..prompts import chat_prompt, solution_completion

    examples: dict[str, tuple[list[dict[str, str]], str]] = {}
    for name in ("train", "test"):
        source = getattr(config.data, name)
        if source is None:
            continue
        for problem in load_source(f"data.{name}", source, config.data):
            answer = solution_completion(problem)
            if answer is not None:
                examples.setdefault(problem.task_id, (chat_prompt(problem, config.data.prompt_style), answer))
    if not examples:
        raise StageError("model: tiny learns from the problems' own solutions, but no problem of data.train or data.test "
                         "has one; "
                         "use problems with solutions or give model.name_or_path")
    return list(examples.values())


def build_tiny_model(tiny: TinyModelConfig, examples: list[tuple[list[dict[str, str]], str]], out: Path,
                     threads: int | None = None) -> list[float]:
    """Train the tokenizer, build the model, warm it up on `examples`, save both to `out`. Returns the losses."""
    import torch

    from qrpo.tiny import tiny_llama, train_tokenizer

    if threads:
        torch.set_num_threads(threads)
    texts = [prompt[-1]["content"] + answer for prompt, answer in examples]
    tokenizer = train_tokenizer(texts, vocab_size=tiny.vocab_size)
    sequences = [_tokenize(tokenizer, prompt, answer) for prompt, answer in examples]
    longest = max(len(ids) for ids, _ in sequences)
    model = tiny_llama(tokenizer, hidden_size=tiny.hidden_size, num_hidden_layers=tiny.num_hidden_layers,
                       num_attention_heads=tiny.num_attention_heads, num_key_value_heads=tiny.num_key_value_heads,
                       intermediate_size=tiny.intermediate_size, max_position_embeddings=max(2048, 2 * longest), seed=tiny.seed)
    losses = warm_up(model, sequences, tokenizer.pad_token_id, tiny)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return losses


def _tokenize(tokenizer: Any, prompt: list[dict[str, str]], answer: str) -> tuple[list[int], int]:
    """Token ids of the chat prompt + answer, and where the answer starts."""
    prompt_text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    full_text = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": answer}], tokenize=False)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(full_text, add_special_tokens=False)["input_ids"]
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise StageError("model: the chat template does not extend the prompt with the answer; "
                         "the tiny tokenizer is inconsistent")
    return full_ids, len(prompt_ids)


def warm_up(model: Any, sequences: list[tuple[list[int], int]], pad_id: int, tiny: TinyModelConfig) -> list[float]:
    """Plain-torch causal-LM training on the answer tokens (AdamW, constant learning rate, random batches)."""
    import torch

    from qrpo.logprobs import SequenceCollator

    from ..progress import bar as progress_bar

    collate = SequenceCollator(pad_id, padding_free=False)
    torch.manual_seed(tiny.seed)
    rng = random.Random(tiny.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tiny.warmup_learning_rate)
    model.train()
    losses = []
    bar = progress_bar(range(tiny.warmup_steps), desc="tiny model warm-up", unit="step")
    for _ in bar:
        picks = [sequences[rng.randrange(len(sequences))] for _ in range(tiny.warmup_batch_size)]
        batch = collate([{"prompt_ids": ids[:start], "completion_ids": ids[start:]} for ids, start in picks])
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    model.eval()
    return losses


def progress(layout: RunLayout) -> str | None:
    return None  # one step: built or not
