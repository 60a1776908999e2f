"""Trainer throughput: is pointwise QRPO (packed, reference precomputed) faster than DPO on the same data?

Trains a randomly initialised Llama-architecture model on sequences shaped like the paper's LeetCode data
(prompt ~600 tokens, completion ~400), the same completions for every method:

  (a)  QRPOTrainer, packed (padding-free) batches, reference log-probs precomputed in one pass; packing
       needs flash-attention or flex attention (GPU): on a CPU (a) pads, as QRPOTrainer does by default there
  (b)  QRPOTrainer, padded batches, online reference model
  (c)  TRL's DPOTrainer, its defaults (padded, online reference), the completions arranged as pairs
  (c2) TRL's DPOTrainer with its own padding-free and precomputed-reference options

and prints completion tokens/s (steady state, and end to end with the reference pass), MFU (steady state,
training FLOPs from TRL's `compute_flops_per_token`; GPUs only) and peak memory, with ratios against (c).
Lengths vary +-20% around the means, so padding costs what it costs on real data.

    python bench/trainer_throughput.py --size 3b            # on one GPU, bf16 (targets: (a)/(c) >= 1.5, MFU >= 40%)
    python bench/trainer_throughput.py --size tiny --steps 6  # CPU smoke run
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qrpo.config import QRPOConfig  # noqa: E402
from qrpo.trainer import QRPOTrainer  # noqa: E402

SIZES: dict[str, dict[str, Any]] = {  # Llama 3.2 1B and 3B shapes, Llama 3 vocabulary
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 vocab_size=1024),
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
               vocab_size=128256),
    "3b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8,
               vocab_size=128256),
}
WORDS = 1000  # the tokenizer's words: one token each, so lengths are exact


def word_tokenizer() -> PreTrainedTokenizerFast:
    """One token per whitespace-separated word: text lengths in tokens are exactly what we ask for."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3} | {f"w{i}": i + 4 for i in range(WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
                                   unk_token="<unk>")


def words(rng: random.Random, mean: int) -> str:
    return " ".join(f"w{rng.randrange(WORDS)}" for _ in range(rng.randint(int(mean * 0.8), int(mean * 1.2))))


def make_data(pairs: int, prompt_tokens: int, completion_tokens: int, seed: int = 0) -> tuple[Dataset, Dataset, int]:
    """Pointwise rows and the same completions as DPO pairs; returns both and the completion token count."""
    rng = random.Random(seed)
    pointwise, paired, tokens = [], [], 0
    for _ in range(pairs):
        prompt, a, b = words(rng, prompt_tokens), words(rng, completion_tokens), words(rng, completion_tokens)
        refs = [rng.random() for _ in range(20)]
        for completion in (a, b):
            pointwise.append({"prompt": prompt, "completion": completion, "reward": rng.random(), "ref_rewards": refs})
            tokens += len(completion.split()) + 1  # + EOS
        paired.append({"prompt": prompt, "chosen": a, "rejected": b})
    return Dataset.from_list(pointwise), Dataset.from_list(paired), tokens


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step (synchronised), to report the steady state without warm-up."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        _sync()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        _sync()
        self.times.append(time.perf_counter() - self._start)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def build_model(size: str, dtype: torch.dtype, attention: str) -> Any:
    torch.manual_seed(0)
    config = LlamaConfig(**SIZES[size], max_position_embeddings=4096, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    config._attn_implementation = attention
    model: Any = LlamaForCausalLM(config)
    return model.to(dtype)


def packed_attention() -> str:
    """A packed row needs an attention kernel that skips the other sequences' blocks (flash-attention's
    varlen kernel, or flex attention's block mask); sdpa would compute the whole (tokens x tokens) square."""
    if not torch.cuda.is_available():
        return "sdpa"
    try:
        import flash_attn  # noqa: F401

        return "flash_attention_2"
    except ImportError:
        return "flex_attention"


def run_method(name: str, options: argparse.Namespace, pointwise: Dataset, paired: Dataset, workdir: Path) -> dict:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    gpu = torch.cuda.is_available()
    dtype = torch.bfloat16 if gpu else torch.float32
    attention = options.packed_attention if name == "a" else "sdpa"
    model = build_model(options.size, dtype, attention)
    if gpu:
        model = model.cuda()
    tokenizer = word_tokenizer()
    timer = StepTimer()
    steps = options.warmup + options.steps
    common = dict(
        output_dir=str(workdir / name),
        max_steps=steps,
        learning_rate=1e-6,
        logging_steps=10**6,
        save_strategy="no",
        report_to=[],
        bf16=gpu,
        use_cpu=not gpu,
        activation_checkpointing=options.gradient_checkpointing,
        disable_tqdm=True,
        seed=0,
        dataloader_drop_last=True,
    )
    completions_per_step = options.completions_per_step
    start = time.perf_counter()
    if name in ("a", "b"):
        args: Any = QRPOConfig(
            **common,
            per_device_train_batch_size=completions_per_step,
            per_device_eval_batch_size=completions_per_step,
            padding_free=None if name == "a" else False,  # (a): packed where the attention kernel allows it
            precompute_ref_log_probs=name == "a",
            ref_log_probs_cache_dir=str(workdir / f"ref-{name}-{time.time_ns()}"),  # measured, never a cache hit
            max_prompt_length=None,
            max_completion_length=None,
        )
        trainer: Any = QRPOTrainer(model=model, args=args, train_dataset=pointwise, processing_class=tokenizer, callbacks=[timer])
    else:
        from trl import DPOConfig, DPOTrainer

        args = DPOConfig(
            **common,
            per_device_train_batch_size=completions_per_step // 2,
            max_length=None,
            padding_free=name == "c2",
            precompute_ref_log_probs=name == "c2",
            precompute_ref_batch_size=completions_per_step // 2,
        )
        reference = copy.deepcopy(model)  # the model has no path TRL could load the reference from
        trainer = DPOTrainer(
            model=model, ref_model=reference, args=args, train_dataset=paired, processing_class=tokenizer, callbacks=[timer]
        )
    packed = getattr(trainer, "padding_free", False)
    trainer.train()
    _sync()
    total = time.perf_counter() - start
    steady = timer.times[options.warmup :]
    step_time = sum(steady) / len(steady)
    tokens_per_step = options.completion_tokens_per_completion * completions_per_step
    result = {
        "method": name,
        "attention": attention + (", packed" if packed else ", padded"),
        "completion_tokens_per_s": tokens_per_step / step_time,
        "end_to_end_completion_tokens_per_s": tokens_per_step * steps / total,
        "step_s": step_time,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if gpu else float("nan"),
        "mfu": float("nan"),
    }
    if gpu:
        from trl.trainer.utils import compute_flops_per_token, get_peak_flops

        seq_len = options.prompt_tokens + options.completion_tokens
        flops = compute_flops_per_token(model.config, seq_len) * seq_len * completions_per_step
        peak = get_peak_flops(torch.cuda.get_device_name(), "bfloat16") or float("nan")
        result["mfu"] = flops / step_time / peak
    del trainer, model
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--methods", default="a,b,c,c2")
    parser.add_argument("--prompt-tokens", type=int, default=600)
    parser.add_argument("--completion-tokens", type=int, default=400)
    parser.add_argument("--completions-per-step", type=int, default=16, help="per optimizer step (DPO: half as many pairs)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--packed-attention", default=packed_attention(), help="attention kernel of (a)")
    parser.add_argument("--json", help="also write the results here")
    options = parser.parse_args()
    if not torch.cuda.is_available() and options.size != "tiny":
        parser.error(f"--size {options.size} needs a GPU; on a CPU use --size tiny")
    pairs = options.completions_per_step // 2 * (options.warmup + options.steps)
    pointwise, paired, tokens = make_data(pairs, options.prompt_tokens, options.completion_tokens)
    options.completion_tokens_per_completion = tokens / len(pointwise)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (float32)"
    print(f"{options.size} Llama on {device}: {len(pointwise)} completions, "
          f"~{options.prompt_tokens}+{options.completion_tokens} tokens, "
          f"{options.completions_per_step} completions per step, {options.steps} measured steps after {options.warmup}")
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in options.methods.split(","):
            results.append(run_method(name, options, pointwise, paired, Path(workdir)))
            print(json.dumps(results[-1]), flush=True)
    baseline = next((r for r in results if r["method"] == "c"), results[-1])
    print("\n| method | attention | completion tok/s | vs (c) | end-to-end tok/s | vs (c) | MFU | peak GiB |\n"
          "|---|---|---|---|---|---|---|---|")
    for r in results:
        step = r["completion_tokens_per_s"]
        end_to_end = r["end_to_end_completion_tokens_per_s"]
        print(
            f"| ({r['method']}) | {r['attention']} | {step:.0f} | {step / baseline['completion_tokens_per_s']:.2f}x "
            f"| {end_to_end:.0f} | {end_to_end / baseline['end_to_end_completion_tokens_per_s']:.2f}x "
            f"| {r['mfu']:.1%} | {r['peak_memory_gib']:.1f} |"
        )
    a = next((r for r in results if r["method"] == "a"), None)
    if a is not None and baseline is not a:
        ratio = a["completion_tokens_per_s"] / baseline["completion_tokens_per_s"]
        print(f"\n(a)/(c) completion tokens/s = {ratio:.2f} (target >= 1.5): {'PASS' if ratio >= 1.5 else 'MISS'}")
    if a is not None:
        verdict = "n/a (no GPU)" if a["mfu"] != a["mfu"] else "PASS" if a["mfu"] >= 0.4 else "MISS"
        print(f"MFU of (a) = {a['mfu']:.1%} (target >= 40% on --size 3b): {verdict}")
    if options.json:
        Path(options.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
