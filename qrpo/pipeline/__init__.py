"""The LeetCode pipeline: model -> prepare -> generate -> grade -> build -> train -> evaluate.

Each stage is a module with `requires(config)`, `inputs(config)` and `run(ctx)`, reads and writes `datasets`
tables under the config's `output_dir`, and is run, skipped or refused by `runner.Pipeline` (see runner.py).
`qrpo run CONFIG` runs them all; `qrpo STAGE CONFIG` runs one; `qrpo status CONFIG` shows where things stand.

    from qrpo.pipeline import Pipeline, load_config
    Pipeline(load_config("tiny-cpu")).run_all()

Importing this package does not import torch: the driver of a SLURM run stays light.
"""

from .config import ConfigError, PipelineConfig, load_config
from .errors import StageError
from .runner import STAGES, Pipeline

__all__ = ["STAGES", "ConfigError", "Pipeline", "PipelineConfig", "StageError", "load_config"]
