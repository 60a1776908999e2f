"""Sampling and scoring with the transformers engine, on a tiny Llama built here (random weights, CPU)."""

from __future__ import annotations

import pytest
import torch

from qrpo.pipeline.sampling import Sampler
from qrpo.tiny import tiny_llama, train_tokenizer

TEXTS = [f"def f{i}(x):\n    return x * {i} + {i * i}\n" for i in range(30)]
PROMPTS = [[{"role": "user", "content": f"Write f{i}, please." + " Thanks." * i}] for i in range(5)]


@pytest.fixture(scope="module")
def sampler(tmp_path_factory) -> Sampler:
    folder = tmp_path_factory.mktemp("tiny-model")
    tokenizer = train_tokenizer(TEXTS * 3, vocab_size=300)
    tiny_llama(tokenizer, seed=1).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Sampler(str(folder), engine="transformers", threads=1)


def reference_log_prob(sampler: Sampler, prompt, completion: list[int]) -> float:
    """One row, no padding, every logit: the plain definition."""
    ids = sampler.prompt_ids(prompt)
    with torch.no_grad():
        logits = sampler.model()(input_ids=torch.tensor([ids + completion])).logits[0].float()
    logps = torch.log_softmax(logits, dim=-1)
    return sum(float(logps[len(ids) - 1 + t, token]) for t, token in enumerate(completion))


def test_batched_log_probs_equal_the_plain_definition(sampler):
    samples = sampler.sample(PROMPTS, 2, temperature=1.0, top_p=1.0, max_new_tokens=12, seed=3, batch_size=4)
    prompts = [p for p, group in zip(PROMPTS, samples) for _ in group]
    completions = [s.token_ids for group in samples for s in group]
    assert len({len(c) for c in completions}) > 1 or all(len(c) == 12 for c in completions)
    batched = sampler.log_probs(prompts, completions, batch_size=3)
    for prompt, completion, value in zip(prompts, completions, batched):
        assert value == pytest.approx(reference_log_prob(sampler, prompt, completion), abs=1e-3)
    assert sampler.log_probs([PROMPTS[0]], [[]]) == [0.0]


def test_samples_are_reproducible_from_the_seed_and_independent_of_batching(sampler):
    first = sampler.sample(PROMPTS, 3, 1.0, 1.0, 10, seed=7, batch_size=6)
    again = sampler.sample(PROMPTS, 3, 1.0, 1.0, 10, seed=7, batch_size=6)
    other = sampler.sample(PROMPTS, 3, 1.0, 1.0, 10, seed=8, batch_size=6)
    assert [[s.token_ids for s in g] for g in first] == [[s.token_ids for s in g] for g in again]
    assert [[s.token_ids for s in g] for g in first] != [[s.token_ids for s in g] for g in other]
    assert all(len(g) == 3 for g in first)
    greedy_one = sampler.sample(PROMPTS, 1, 0.0, 1.0, 10, seed=0, batch_size=1)
    greedy_all = sampler.sample(PROMPTS, 1, 0.0, 1.0, 10, seed=0, batch_size=8)  # left padding changes nothing
    assert [g[0].token_ids for g in greedy_one] == [g[0].token_ids for g in greedy_all]
    for group in first:
        for sample in group:
            assert sample.finished or len(sample.token_ids) == 10
            assert sample.text == sampler.tokenizer.decode(sample.token_ids, skip_special_tokens=True)
