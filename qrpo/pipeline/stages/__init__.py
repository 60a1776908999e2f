"""The stages of the pipeline, in order: each module implements `qrpo.pipeline.stage.Stage`.

    model -> prepare -> [sft] -> generate -> grade -> build -> train -> evaluate

Stages never import each other: what two stages share (problems, grading, the sweep, the layout of the run
directory) lives in the modules of `qrpo.pipeline` they both import.
"""

from __future__ import annotations

from ..stage import Stage
from . import build, evaluate, generate, grade, model, prepare, sft, train

STAGES: dict[str, Stage] = {stage.NAME: stage for stage in (model, prepare, sft, generate, grade, build, train, evaluate)}

__all__ = ["STAGES"]
