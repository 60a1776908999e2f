"""The driver: runs the stages of one config in one output directory, skips what is done, refuses what is
stale, records what finished.

Each stage (`stage.Stage`) has `requires(config)` (the stages it reads), `inputs(config)` (the config values
that change its result) and `run(ctx)` (does the work, returns a summary). Its fingerprint hashes its inputs and the
tokens of the stage records it reads; a record's token changes whenever that stage is redone, so redoing a
stage makes every stage after it stale. Then:

- no record: the stage runs (resuming from its saved chunks, if any);
- a record with the current fingerprint: the stage is skipped;
- a record with another fingerprint because the stage's own settings changed: it refuses, naming what
  changed and the fix (`--force STAGE`), so an edited config never silently throws away expensive work;
- a record with another fingerprint because an earlier stage was redone: it is redone (its output was derived
  from data that is gone);
- the incremental stages (train, evaluate) keep a fingerprint per unit (run, policy): they redo or add only
  the units that changed, so adding a run to the sweep trains and evaluates just that run.

`qrpo run` runs the stages the final one needs, in order; `--force STAGE` redoes that stage and the ones after it.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from sandbox.rundir import LockedError, fingerprint, lock, remove_tree, write_atomic

from .config import ExecutorKind, PipelineConfig, as_dict
from .errors import StageError
from .executor import Executor, make_executor
from .layout import RunLayout, StageRecord
from .stage import StageContext
from .stages import STAGES

STAGE_FORMAT = 2  # bump when a stage's outputs change meaning: old records become stale (2: sandbox.rundir fingerprints)
INCREMENTAL = {"train", "evaluate"}


def token(record: StageRecord) -> str:
    """Changes whenever the stage is redone, even with the same inputs (new samples, new grades)."""
    return fingerprint([record.fingerprint, record.finished])


class Pipeline:
    """The stages of one config in one output directory."""

    def __init__(self, config: PipelineConfig, executor: ExecutorKind | None = None) -> None:
        self.config = config
        self.layout = RunLayout(Path(config.output_dir))
        self.executor_kind: ExecutorKind = executor or config.executor
        self._executor: Executor | None = None

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            self._executor = make_executor(self.executor_kind, self.layout.root.resolve(), self.config.slurm)
        return self._executor

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One qrpo at a time per output directory (two would write the same chunks); the lock dies with its
        process, so a killed run never leaves it behind."""
        try:
            with lock(self.layout.root, "qrpo"):
                yield
        except LockedError as error:
            raise StageError(f"{error} (--output-dir)") from None

    def requires(self, stage: str) -> list[str]:
        return STAGES[stage].requires(self.config)

    def needed(self, final: str = "evaluate") -> list[str]:
        """The stages `final` depends on (itself included), in pipeline order."""
        wanted = {final}
        for name in reversed(list(STAGES)):
            if name in wanted:
                wanted.update(self.requires(name))
        return [name for name in STAGES if name in wanted]

    def expected(self, stage: str) -> tuple[str, dict[str, Any], dict[str, str]] | None:
        """(fingerprint, inputs, upstream tokens) of `stage` now, or None while an upstream stage is not done."""
        tokens = {}
        for dep in self.requires(stage):
            record = self.layout.record(dep)
            upstream = self.expected(dep) if record is not None else None
            if record is None or upstream is None or record.fingerprint != upstream[0]:
                return None
            tokens[dep] = token(record)
        inputs = STAGES[stage].inputs(self.config)
        return fingerprint({"stage": stage, "format": STAGE_FORMAT, "inputs": inputs, "upstream": tokens}), inputs, tokens

    def state(self, stage: str) -> str:
        """done, stale, partial, pending (ready to run) or blocked (an upstream stage is not done)."""
        record = self.layout.record(stage)
        expected = self.expected(stage)
        if record is not None:
            if expected is not None and record.fingerprint == expected[0]:
                return "done"
            return "stale"
        if expected is None:
            return "blocked"
        return "partial" if self.layout.stage(stage).exists() else "pending"

    def run_stage(self, stage: str, force: bool = False) -> bool:
        """Run one stage unless it is done. Returns True if it ran."""
        for dep in self.requires(stage):
            state = self.state(dep)
            if state == "stale":
                raise StageError(f"stage {stage} needs {dep}, which is stale ({self.staleness(dep)}): "
                                 f"run `qrpo {dep} CONFIG --force` first (or `qrpo run CONFIG --force {dep}`)")
            if state != "done":
                todo = [s for s in self.needed(stage) if s != stage and self.state(s) != "done"]
                raise StageError(f"stage {stage} needs {', '.join(todo)} done first: run `qrpo {todo[0]} CONFIG` "
                                 "and the next ones, or `qrpo run CONFIG`")
        expected = self.expected(stage)
        assert expected is not None
        fp, inputs, tokens = expected
        record = self.layout.record(stage)
        if record is not None and record.fingerprint == fp and not force:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.finished))
            print(f"qrpo {stage}: skipped (done {when}; --force {stage} redoes it)", file=sys.stderr, flush=True)
            return False
        if force:
            remove_tree(self.layout.stage(stage))
        elif record is not None:
            if stage in INCREMENTAL:  # its units keep their own fingerprints: redo or add only what changed
                self.layout.record_path(stage).unlink()
            elif _diff(record.inputs, inputs):  # its own settings changed: the user says whether to throw it away
                raise StageError(f"stage {stage}: {self.layout.stage(stage)} was made from other inputs "
                                 f"({changes(record, inputs, tokens)}); rerun with --force {stage} to redo it "
                                 "(the stages after it follow)")
            else:  # only an earlier stage was redone: this output is derived from data that is gone
                print(f"qrpo {stage}: redoing it: an earlier stage was redone since it ran", file=sys.stderr, flush=True)
                remove_tree(self.layout.stage(stage))
        started = time.monotonic()
        ctx = StageContext(self.config, self.layout, self.executor, stage, fp, tokens)
        summary = STAGES[stage].run(ctx)
        self.layout.write_record(stage, fp, inputs, summary, time.monotonic() - started)
        print(f"qrpo {stage}: done in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
        return True

    def run_all(self, force: tuple[str, ...] = (), final: str = "evaluate") -> list[str]:
        """Run the stages `final` needs; `force` names stages to redo (with everything after them)."""
        unknown = [f for f in force if f not in STAGES and f != "all"]
        if unknown:
            raise StageError(f"--force {unknown[0]}: no such stage; stages: {', '.join(STAGES)} (or all)")
        stages = self.needed(final)
        self.write_config()
        forced: set[str] = set()
        ran = []
        for stage in stages:
            redo = "all" in force or stage in force or any(dep in forced for dep in self.requires(stage))
            if redo:
                forced.add(stage)
            if self.run_stage(stage, force=redo):
                ran.append(stage)
        return ran

    def write_config(self) -> None:
        write_atomic(self.layout.root / "config.yaml", yaml.safe_dump(as_dict(self.config), sort_keys=False))

    def staleness(self, stage: str) -> str:
        """Why a stage's record is not current, in a few words."""
        record = self.layout.record(stage)
        expected = self.expected(stage)
        if record is None:
            return "not done"
        if expected is None:
            return "an earlier stage is stale or not done"
        return changes(record, expected[1], expected[2])

    def status(self) -> list[tuple[str, str, str]]:
        """(stage, state, detail) for every stage; `not needed` for stages the final one does not read."""
        needed = set(self.needed())
        rows = []
        for stage in STAGES:
            if stage not in needed:
                rows.append((stage, "not needed", ""))
                continue
            state = self.state(stage)
            record = self.layout.record(stage)
            detail = ""
            if record is not None:
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.finished))
                detail = f"{when}, {record.seconds:.0f} s; " + describe(record.summary)
                if state == "stale":
                    detail = self.staleness(stage) + "; " + detail
            elif state == "partial":
                detail = STAGES[stage].progress(self.layout) or "started, not finished"
            rows.append((stage, state, detail))
        return rows


def changes(record: StageRecord, inputs: dict[str, Any], tokens: dict[str, str]) -> str:
    """What differs between a record and the current inputs, in a few words."""
    differing = sorted(_diff(record.inputs, inputs))
    if differing:
        return "config changed: " + ", ".join(differing[:4]) + (" ..." if len(differing) > 4 else "")
    return "an earlier stage was redone since"


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    normalize = fingerprint
    return [] if normalize(old) == normalize(new) else [prefix.rstrip(".")]


def describe(summary: dict[str, Any]) -> str:
    parts = []
    for key, value in summary.items():
        if isinstance(value, (dict, list)):
            continue
        parts.append(f"{key} {value}")
    return ", ".join(parts[:5])
