"""The LeetCode pipeline: model -> prepare -> generate -> grade -> build -> train -> evaluate.

Each stage is a module of `stages/` implementing `stage.Stage`; it reads and writes `datasets` tables under
the config's `output_dir` (`layout.RunLayout`), and the driver (`driver.Pipeline`) runs, skips or refuses it.
`qrpo run CONFIG` runs them all; `qrpo STAGE CONFIG` runs one; `qrpo status CONFIG` shows where things stand.

    from qrpo.pipeline import Pipeline, load_config
    Pipeline(load_config("tiny-cpu")).run_all()

Importing this package does not import torch: the driver of a SLURM run stays light.
"""

from .config import ConfigError, PipelineConfig, load_config
from .driver import Pipeline
from .errors import StageError
from .stages import STAGES

__all__ = ["STAGES", "ConfigError", "Pipeline", "PipelineConfig", "StageError", "load_config"]
