"""What a stage is: the `Stage` protocol every module of `stages/` implements, and the context it runs in.

A stage says which stages it reads (`requires`), which config values change its result (`inputs`: they go
into its fingerprint), does its work (`run`, returning a summary for its record) and, for `qrpo status`,
how far an unfinished run got (`progress`). The driver (`driver.Pipeline`) decides whether it runs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .config import PipelineConfig
from .executor import Executor
from .layout import RunLayout


@dataclass
class StageContext:
    """What a stage's `run` gets."""

    config: PipelineConfig
    layout: RunLayout
    executor: Executor
    stage: str
    fingerprint: str
    tokens: dict[str, str] = field(default_factory=dict)  # per stage read: changes whenever that stage is redone

    def say(self, message: str) -> None:
        print(f"qrpo {self.stage}: {message}", file=sys.stderr, flush=True)

    def model_path(self) -> str:
        """The reference policy: the `sft` stage's model when it is on, else the base model."""
        if self.config.sft.enabled:
            return str(self.layout.stage("sft").resolve() / "model")
        return self.base_model_path()

    def base_model_path(self) -> str:
        """The configured model: the tiny model the `model` stage built, or the configured id or directory."""
        if self.config.model.is_tiny:
            return str(self.layout.model.resolve())
        local = Path(self.config.model.name_or_path).expanduser()
        return str(local.resolve()) if local.is_dir() else self.config.model.name_or_path  # jobs may start elsewhere

    def upstream_token(self, stage: str) -> str:
        return self.tokens[stage]


class Stage(Protocol):
    """One stage of the pipeline (each module of `qrpo.pipeline.stages` is one)."""

    @property
    def NAME(self) -> str: ...  # a module constant: the stage's name

    @property
    def SUMMARY(self) -> str: ...  # one line for `qrpo --help` and `qrpo STAGE --help`

    def requires(self, config: PipelineConfig) -> list[str]:
        """The stages whose outputs this one reads."""
        ...

    def inputs(self, config: PipelineConfig) -> dict[str, Any]:
        """The config values that change this stage's result (its fingerprint hashes them)."""
        ...

    def run(self, ctx: StageContext) -> dict[str, Any]:
        """Do the work (resuming from saved chunks); return the summary its record keeps."""
        ...

    def progress(self, layout: RunLayout) -> str | None:
        """For `qrpo status`: how far an unfinished run of this stage got, or None."""
        ...
