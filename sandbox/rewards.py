"""A reward function for TRL's GRPOTrainer (or anything with its reward-function signature).

    from sandbox.rewards import SandboxReward

    reward = SandboxReward("problems.jsonl", backend="bubblewrap", workers=8)   # a local warm pool
    reward = SandboxReward(client=SandboxClient("/shared/sandbox.addr"))      # or a server
    trainer = GRPOTrainer(model=..., reward_funcs=[reward], train_dataset=dataset, ...)

TRL calls `reward(prompts=..., completions=..., completion_ids=..., **columns)` where every
other dataset column arrives as a list with one value per completion (and `trainer_state`,
`log_extra`, `log_metric` as single objects, ignored here). Completions are strings, or, for
conversational datasets, lists of messages [{"role": "assistant", "content": "..."}]; the
assistant messages' text is what gets graded. The reward of a completion is its pass rate
(passed tests / tests); a completion without a ```python block gets 0.0.

Each row's problem is found, in this order, from
  * a `problem` column: a Problem dict (or a JSON string of one, or a dataset row in any
    registered format),
  * the `task_id` column, looked up in the problems given to the constructor (or, with a
    client and no problems, on the server's preloaded set),
  * the row's own dataset columns (for example `task_id` + `tests` in our native format, or a
    LeetCodeDataset row's `test`/`entry_point`/...), converted like a problems file row.
A row whose problem cannot be found raises ValueError (a misconfigured dataset should stop
training, not quietly teach the model nothing). A completion the sandbox failed to grade
(`sandbox_error`, an infrastructure failure, never the solution's fault) gets None, which TRL
treats as "no reward from this function" (pass `sandbox_error_reward=0.0` to score it 0).

Metrics: when TRL passes `log_metric`, every call logs, under `<name>/...`, the fraction of the
batch's completions per verdict (`passed`, `wrong_answer`, `timeout`, `runtime` (runtime_error
and memory), `syntax`, `no_code`, `sandbox_error`), `tests_per_s` (tests judged / grading wall
time) and `latency_s` (the grading wall time of the batch); TRL averages them per logging step
and they appear in `trainer.state.log_history`.

Async: `AsyncSandboxReward` is the same reward with `async def __call__` (grading runs in a
thread, so the event loop stays free); TRL awaits async reward functions concurrently with each
other, so a sandbox reward and, say, a format reward overlap.

Thread-safe: a local pool (`sandbox.pool.Pool`) is an executor that any number of threads may
share, so concurrent calls need no lock. With a local pool, every training process
(accelerate/torchrun rank) starts its own judges:
pass `workers=` (the CPUs each rank may use), or run one `sandbox serve` and give every rank a
client. The full results of the last call are in `reward.last_results`.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import json
import time
import warnings
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from .pool import Pool
from .problem import GradeResult, Limits, Problem, Verdict

# Keyword arguments TRL passes that are not dataset columns.
_NOT_COLUMNS = {
    "prompts",
    "completions",
    "completion_ids",
    "trainer_state",
    "log_extra",
    "log_metric",
    "num_generations",
    "prompt",
    "completion",
}


def completion_text(completion: Any) -> str:
    """The text to grade from one TRL completion: a string, a message, or a list of messages
    (the assistant messages' contents, joined; content may be a list of {"type": "text"} parts)."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        return _content_text(completion.get("content"))
    if isinstance(completion, Sequence):
        messages = [m for m in completion if isinstance(m, Mapping)]
        if not messages:
            return "\n".join(str(m) for m in completion if isinstance(m, str))
        assistant = [m for m in messages if m.get("role", "assistant") == "assistant"] or messages
        return "\n\n".join(_content_text(m.get("content")) for m in assistant)
    raise TypeError(f"a completion must be a string or a list of chat messages, got {type(completion).__name__}")


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping) and part.get("type", "text") == "text":
                parts.append(str(part.get("text", "")))
        return "".join(parts)
    return str(content)


class SandboxReward:
    """Pass rate of each completion on its problem's tests, with TRL's reward-function signature.

    `problems`: a dataset file, LoadedProblems, {task_id: Problem} or Problems (optional with a
    client whose server preloads them, or when rows carry their problem). Backed by a local
    `Pool` (`backend`, `workers`; started on the first call, kept warm, closed by `close()` or at
    exit) or by `client` (a `sandbox.client.SandboxClient`).
    """

    def __init__(
        self,
        problems: Any = None,
        *,
        backend: str = "auto",
        workers: int | None = None,
        client: Any = None,
        extract: str = "first",
        granularity: str = "per_test",
        limits: Limits | None = None,
        sandbox_error_reward: float | None = None,
        name: str = "sandbox_pass_rate",
    ) -> None:
        from .api import as_problems

        self.problems: dict[str, Problem] = as_problems(problems) if problems is not None else {}
        if limits is not None:
            self.problems = {k: p.with_limits(limits) for k, p in self.problems.items()}
        self.limits = limits
        self.backend = backend
        self.workers = workers
        self.client = client
        self.extract = extract
        self.granularity = granularity
        self.sandbox_error_reward = sandbox_error_reward
        self.__name__ = name  # TRL logs rewards/<__name__>
        self.last_results: list[GradeResult] = []
        self._pool: Pool | None = None if client is not None else Pool(backend, workers=workers)  # started by the first call
        atexit.register(_close_ref, weakref.ref(self))

    # ----------------------------------------------------------------------------------------

    def __call__(self, prompts: Any = None, completions: Any = None, **kwargs: Any) -> list[float | None]:
        started = time.perf_counter()
        results = self.grade(prompts, completions, **kwargs)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            for key, value in batch_metrics(results, time.perf_counter() - started).items():
                log_metric(f"{self.__name__}/{key}", value)
        return self.rewards(results)

    def rewards(self, results: list[GradeResult]) -> list[float | None]:
        """The reward of each result: its pass rate, or `sandbox_error_reward` for a sandbox error."""
        rewards: list[float | None] = []
        for result in results:
            if any(t.verdict is Verdict.SANDBOX_ERROR for t in result.tests):
                rewards.append(self.sandbox_error_reward)
            else:
                rewards.append(result.pass_rate)
        errors = sum(r is None for r in rewards)
        if errors:
            warnings.warn(
                f"{errors} of {len(rewards)} completions could not be graded (sandbox_error); their reward is None", stacklevel=2
            )
        return rewards

    def grade(self, prompts: Any = None, completions: Any = None, **kwargs: Any) -> list[GradeResult]:
        """The full GradeResults behind the rewards (same arguments as a call)."""
        if completions is None:
            raise TypeError("SandboxReward needs completions=[...] (TRL passes prompts=, completions= and the dataset columns)")
        completions = list(completions)
        n = len(completions)
        columns = {k: v for k, v in kwargs.items() if k not in _NOT_COLUMNS and isinstance(v, (list, tuple)) and len(v) == n}
        table: dict[str, Problem] = {}
        rows: list[dict[str, Any]] = []
        remote_ids = self.client is not None and not self.problems
        for i, completion in enumerate(completions):
            row_columns = {k: v[i] for k, v in columns.items()}
            problem = self._problem_for(i, row_columns, remote_ids)
            text = completion_text(completion)
            if problem is None:  # the server resolves the task_id
                rows.append({"task_id": str(row_columns["task_id"]), "completion": text})
                continue
            key = problem.task_id
            if key in table and table[key] != problem:  # two different problems share a task_id
                key = f"{problem.task_id}#{i}"
                problem = dataclasses.replace(problem, task_id=key)
            table[key] = problem
            rows.append({"task_id": key, "completion": text})
        results = self._grade(table, rows)
        self.last_results = results
        return results

    def _problem_for(self, i: int, row: dict[str, Any], remote_ids: bool) -> Problem | None:
        inline = row.get("problem")
        if inline is not None:
            return self._convert(inline, f"row {i}, column 'problem'")
        task_id = row.get("task_id")
        if task_id is not None and str(task_id) in self.problems:
            return self.problems[str(task_id)]
        dataset_row = {k: v for k, v in row.items() if v is not None}
        if len(dataset_row) > 1:
            from .datasets import detect_format

            try:
                detect_format(dataset_row)
            except ValueError:
                pass
            else:
                return self._convert(dataset_row, f"row {i}")
        if remote_ids and task_id is not None:
            return None
        raise ValueError(
            f"row {i}: no problem for this completion (task_id {task_id!r}; columns {sorted(row)}). Pass problems= to "
            "SandboxReward, or give the dataset a 'problem' column (Problem dicts) or the columns of a problems file row"
        )

    def _convert(self, value: Any, where: str) -> Problem:
        from .datasets import load_problems

        if isinstance(value, Problem):
            problem = value
        else:
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{where}: not a JSON object ({exc.msg})") from None
            if not isinstance(value, Mapping):
                raise TypeError(f"{where}: expected a Problem dict, got {type(value).__name__}")
            loaded = load_problems([dict(value)])
            if not loaded.problems:
                raise ValueError(f"{where}: not a usable problem: {loaded.errors[0] if loaded.errors else 'unknown format'}")
            (problem,) = loaded.problems.values()
        return problem.with_limits(self.limits) if self.limits is not None else problem

    def _grade(self, table: dict[str, Problem], rows: list[dict[str, Any]]) -> list[GradeResult]:
        if self.client is not None:
            return self.client.grade(table or None, rows, granularity=self.granularity, extract=self.extract)
        from .api import grade

        assert self._pool is not None
        return grade(table, rows, pool=self._pool, granularity=self.granularity, extract=self.extract)

    # ----------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the local pool's judges (a later call starts them again)."""
        if self._pool is not None:
            self._pool.close()

    def __enter__(self) -> SandboxReward:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        via = "client" if self.client is not None else f"{self.backend} pool"
        return f"<SandboxReward {self.__name__} via {via}, {len(self.problems)} problems>"


class AsyncSandboxReward(SandboxReward):
    """`SandboxReward` with `async def __call__`: TRL awaits it (concurrently with its other async
    reward functions); the grading itself runs in a worker thread on the shared pool or client."""

    async def __call__(  # type: ignore[override]
        self, prompts: Any = None, completions: Any = None, **kwargs: Any
    ) -> list[float | None]:
        call = super().__call__
        return await asyncio.to_thread(lambda: call(prompts, completions, **kwargs))


# Per-batch verdict rates: metric name -> the verdicts it counts.
RATE_VERDICTS: dict[str, tuple[Verdict, ...]] = {
    "passed": (Verdict.PASSED,),
    "wrong_answer": (Verdict.WRONG_ANSWER,),
    "timeout": (Verdict.TIMEOUT,),
    "runtime": (Verdict.RUNTIME_ERROR, Verdict.MEMORY),
    "syntax": (Verdict.SYNTAX_ERROR,),
    "no_code": (Verdict.NO_CODE,),
    "sandbox_error": (Verdict.SANDBOX_ERROR,),
}


def batch_metrics(results: list[GradeResult], latency_s: float) -> dict[str, float]:
    """Fraction of completions per verdict (a completion's verdict: its first failing test's, or
    passed), tests judged per second of grading, and the batch's grading latency."""
    n = max(1, len(results))
    verdicts = [r.verdict for r in results]
    metrics = {name: sum(v in kinds for v in verdicts) / n for name, kinds in RATE_VERDICTS.items()}
    judged = sum(r.total for r in results if r.verdict not in (Verdict.NO_CODE, None))
    metrics["tests_per_s"] = judged / latency_s if latency_s > 0 else 0.0
    metrics["latency_s"] = latency_s
    return metrics


def _close_ref(ref: weakref.ref[SandboxReward]) -> None:
    reward = ref()
    if reward is not None:
        reward.close()


__all__ = ["RATE_VERDICTS", "AsyncSandboxReward", "SandboxReward", "batch_metrics", "completion_text"]
