"""The reward for TRL: `AsyncSandboxReward` awaited with TRL's keyword arguments, its per-batch
verdict rates and speed metrics through `log_metric`, and TRL's GRPOTrainer running 2 steps with
it on a tiny local model (built here, nothing downloaded) whose log history holds the rates."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict

import pytest

from sandbox.rewards import RATE_VERDICTS, AsyncSandboxReward
from sandbox.rewards import __doc__ as rewards_doc

from .test_service import COMPLETIONS, PROBLEMS


def demo_rows() -> list[dict]:
    rows = [json.loads(line) for line in COMPLETIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if r["expected_verdict"] != "timeout" and "completion" in r]


def test_async_reward_logs_verdict_rates() -> None:
    rows = demo_rows()
    logged: dict[str, list[float]] = defaultdict(list)
    with AsyncSandboxReward(PROBLEMS, backend="process", workers=2) as reward:
        coroutine = reward(prompts=[""] * len(rows), completions=[r["completion"] for r in rows],
                           task_id=[r["task_id"] for r in rows], log_metric=lambda k, v: logged[k].append(v),
                           log_extra=lambda *a: None, trainer_state=None)
        assert asyncio.iscoroutine(coroutine)
        rewards = asyncio.run(coroutine)
    assert rewards == pytest.approx([r["expected_pass_rate"] for r in rows], abs=1e-5)
    names = {"runtime_error": "runtime", "memory": "runtime", "syntax_error": "syntax"}
    want = {name: 0.0 for name in RATE_VERDICTS}
    for row in rows:
        want[names.get(row["expected_verdict"], row["expected_verdict"])] += 1 / len(rows)
    got = {key.split("/", 1)[1]: values for key, values in logged.items()}
    assert {k: v[0] for k, v in got.items() if k in want} == pytest.approx(want)
    assert len(got["latency_s"]) == 1 and got["latency_s"][0] > 0 and got["tests_per_s"][0] > 0
    assert "log_metric" in (rewards_doc or "")


def test_grpo_trainer_two_steps_logs_verdict_rates(tmp_path) -> None:
    pytest.importorskip("trl")
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from qrpo.tiny import tiny_llama, train_tokenizer
    from sandbox.datasets import load_problems

    problems = list(load_problems(PROBLEMS).problems.values())[:4]
    tokenizer = train_tokenizer([p.prompt for p in problems] + ["```python\ndef f(x):\n    return x\n```"], vocab_size=300)
    model = tiny_llama(tokenizer)
    dataset = Dataset.from_list([{"prompt": p.prompt[:200], "task_id": p.task_id} for p in problems])
    reward = AsyncSandboxReward(PROBLEMS, backend="process", workers=2)
    config = GRPOConfig(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4, num_generations=4,
                        max_completion_length=16, logging_steps=1, report_to=[], use_cpu=True, save_strategy="no",
                        bf16=False, seed=0)
    try:
        trainer = GRPOTrainer(model=model, processing_class=tokenizer, reward_funcs=[reward], args=config,
                              train_dataset=dataset)
        trainer.train()
    finally:
        reward.close()
    logs = [entry for entry in trainer.state.log_history if "sandbox_pass_rate/passed" in entry]
    assert len(logs) == 2
    for entry in logs:
        rates = [entry[f"sandbox_pass_rate/{name}"] for name in RATE_VERDICTS]
        assert sum(rates) == pytest.approx(1.0) and all(0 <= r <= 1 for r in rates)
        assert entry["sandbox_pass_rate/latency_s"] > 0
    # A random tiny model writes no code block: every completion is no_code, its reward 0.
    assert [entry["sandbox_pass_rate/no_code"] for entry in logs] == [1.0, 1.0]
    assert all(r.verdict is not None for r in reward.last_results) and len(reward.last_results) == 4
