"""Sampling completions from a model, and their log-probabilities: what `generate` and `evaluate` share.

Two engines: vLLM (when installed and a GPU is there: the only sensible choice for 50 samples of 2,641
prompts) and `transformers` generate (anything else, CPUs included). Prompts are chat messages rendered with
the model's chat template (generation prompt added) and tokenized without extra special tokens, so both
engines see exactly the tokens the trainer will.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

from .errors import StageError

# auto: vllm when it is installed and a GPU is there, else transformers.
Engine = Literal["auto", "vllm", "transformers"]
ENGINES: tuple[Engine, ...] = get_args(Engine)
DType = Literal["auto", "float32", "bfloat16", "float16"]  # the weights' dtype when loading a model
DTYPES: tuple[DType, ...] = get_args(DType)


@dataclass(frozen=True)
class Sample:
    text: str
    token_ids: list[int]
    finished: bool  # ended with the end-of-sequence token (False: cut at max_new_tokens)


def pick_engine(engine: Engine) -> Engine:
    """`auto`: vllm when it is installed and CUDA is available, else transformers."""
    if engine != "auto":
        return engine
    import importlib.util

    import torch

    return "vllm" if importlib.util.find_spec("vllm") and torch.cuda.is_available() else "transformers"


class Sampler:
    """A loaded model that samples completions for chat prompts and scores completions."""

    def __init__(self, model_path: str, engine: Engine = "auto", dtype: DType = "auto", threads: int | None = None) -> None:
        import torch
        from transformers import AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.model_path = model_path
        self.engine = pick_engine(engine)
        self.dtype = dtype
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        except OSError as error:
            raise StageError(f"model {model_path} could not be loaded ({str(error).splitlines()[0][:200]}); "
                             "check model.name_or_path") from None
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._model: Any = None
        self._llm: Any = None

    # -- models
    @property
    def device(self) -> str:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def model(self) -> Any:
        if self._model is None:
            from trl.trainer.utils import add_fused_lm_head

            self._model = load_causal_lm(self.model_path, self.dtype, self.device)
            add_fused_lm_head(self._model)  # for log_probs; generation keeps the original forward
        return self._model

    def prompt_ids(self, prompt: list[dict[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    # -- sampling
    def sample(self, prompts: list[list[dict[str, str]]], n: int, temperature: float, top_p: float, max_new_tokens: int,
               seed: int, batch_size: int = 8) -> list[list[Sample]]:
        """n samples for each prompt, reproducible from `seed` (for a given engine and hardware). `batch_size`
        bounds the sequences (prompts x n) of one transformers generate() call; vLLM schedules its own."""
        ids = [self.prompt_ids(p) for p in prompts]
        if self.engine == "vllm":
            return self._sample_vllm(ids, n, temperature, top_p, max_new_tokens, seed)
        return self._sample_transformers(ids, n, temperature, top_p, max_new_tokens, seed, batch_size)

    def _sample_transformers(self, ids: list[list[int]], n: int, temperature: float, top_p: float, max_new_tokens: int,
                             seed: int, batch_size: int) -> list[list[Sample]]:
        import torch

        model = self.model()
        eos = _eos_ids(model, self.tokenizer)
        pad = self.tokenizer.pad_token_id
        out: list[list[Sample]] = []
        prompts_per_call = max(1, batch_size // n)
        for start in range(0, len(ids), prompts_per_call):
            batch = ids[start: start + prompts_per_call]
            width = max(len(x) for x in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for i, x in enumerate(batch):  # left padding: generation continues every row at the same position
                input_ids[i, width - len(x):] = torch.tensor(x)
                attention[i, width - len(x):] = 1
            torch.manual_seed(seed * 1_000_003 + start)
            options: dict[str, Any] = {"do_sample": temperature > 0, "max_new_tokens": max_new_tokens,
                                       "num_return_sequences": n, "pad_token_id": pad, "eos_token_id": sorted(eos)}
            if temperature > 0:
                options.update(temperature=temperature, top_p=top_p, top_k=0)
            with torch.no_grad():
                generated = model.generate(input_ids=input_ids.to(model.device), attention_mask=attention.to(model.device),
                                           **options)
            new = generated[:, width:].tolist()
            for i in range(len(batch)):
                out.append([self._sample_of(new[i * n + j], eos, pad) for j in range(n)])
        return out

    def _sample_of(self, tokens: list[int], eos: set[int], pad: int) -> Sample:
        kept: list[int] = []
        finished = False
        for token in tokens:
            if token in eos:
                finished = True
                break
            kept.append(token)
        return Sample(cast(str, self.tokenizer.decode(kept, skip_special_tokens=True)), kept, finished)

    def _sample_vllm(self, ids: list[list[int]], n: int, temperature: float, top_p: float, max_new_tokens: int,
                     seed: int) -> list[list[Sample]]:
        from vllm import LLM, SamplingParams

        if self._llm is None:
            self._llm = LLM(model=self.model_path, dtype=self.dtype, seed=seed)
        params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, seed=seed)
        outputs = self._llm.generate([{"prompt_token_ids": x} for x in ids], params, use_tqdm=False)
        special = set(self.tokenizer.all_special_ids)
        samples = []
        for request in outputs:
            group = []
            for o in request.outputs:
                tokens = list(o.token_ids)
                finished = o.finish_reason == "stop"
                if finished and tokens and tokens[-1] in special:  # the end-of-sequence token: not part of the completion
                    tokens.pop()
                group.append(Sample(o.text, tokens, finished))
            samples.append(group)
        return samples

    def release(self) -> None:
        """Free the vLLM engine (its GPU memory) before a transformers model is loaded for scoring."""
        if self._llm is not None:
            import gc

            import torch

            self._llm = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    # -- scoring
    def log_probs(self, prompts: list[list[dict[str, str]]], completions: list[list[int]], batch_size: int = 8) -> list[float]:
        """Sum of log p(completion token | prefix) over the completion's tokens (the end-of-sequence token not
        included: a completion cut at max_new_tokens has none), one per (prompt, completion).

        The trainer's own computation (`qrpo.logprobs`): padded rows, TRL's fused LM head, which scores only
        completion tokens and never builds the (tokens x vocabulary) logits, a 128k vocabulary would not fit."""
        import torch

        from qrpo.logprobs import SequenceCollator, sequence_logps

        model = self.model()
        collate = SequenceCollator(self.tokenizer.pad_token_id, padding_free=False)
        order = sorted(range(len(prompts)), key=lambda i: len(completions[i]))  # similar lengths batch together
        results: dict[int, float] = {}
        for start in range(0, len(order), batch_size):
            picked = order[start: start + batch_size]
            batch = collate([{"prompt_ids": self.prompt_ids(prompts[i]), "completion_ids": completions[i]} for i in picked])
            with torch.no_grad():
                values = sequence_logps(model, {k: v.to(model.device) for k, v in batch.items()})
            results.update(zip(picked, values.tolist()))
        return [results[i] for i in range(len(prompts))]


def load_causal_lm(path: str, dtype: DType, device: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" for every checkpoint is noise; the stages show progress
    torch_dtype: Any = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    except OSError as error:
        raise StageError(f"model {path} could not be loaded ({str(error).splitlines()[0][:200]}); "
                         "check model.name_or_path") from None
    model.to(device)
    model.eval()
    return model


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids = set()
    configured = getattr(model.generation_config, "eos_token_id", None)
    for value in configured if isinstance(configured, list) else [configured]:
        if value is not None:
            ids.add(int(value))
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if not ids:
        print("qrpo: the model has no end-of-sequence token; every completion runs to max_new_tokens", file=sys.stderr)
    return ids
