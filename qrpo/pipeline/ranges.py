"""Every number of the pipeline's config has a range: the table of the pipeline's own ranges, the typed
pydantic fields that carry them, and reading a field's range back.

A range is declared once, as a `sandbox.problem.Range` (the sandbox's limits take theirs from the table in
sandbox.problem, the one `sandbox grade` checks its options against; the pipeline's own are below), and turned
into pydantic's constraints by `within`; `range_of` reads them back so an error names the range and a valid
example, and `numeric_keys` lists every numeric key so a test can refuse one without a range. YAML numbers
are read as numbers here too (PyYAML reads 1e-6 as a string).
"""

from __future__ import annotations

import re
import types
from inspect import isclass
from typing import Annotated, Any, Union, get_args, get_origin

import annotated_types
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field
from pydantic.fields import FieldInfo

from sandbox.problem import CPUS_PER_JOB, JOBS, Range

SCIENTIFIC = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _yaml_number(value: Any) -> Any:
    """YAML 1.1 (PyYAML) reads 1e-6 (no dot) as a string, and 1 as an integer: both are numbers here."""
    if isinstance(value, str) and SCIENTIFIC.match(value):
        return float(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _numbers(value: Any) -> Any:
    """Free-form values (training arguments): scientific strings become numbers, at any depth."""
    if isinstance(value, str) and SCIENTIFIC.match(value):
        return float(value)
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    return value


def within(bounds: Range) -> Any:
    """pydantic's constraints for a range (ge or gt, le or lt) and its example: `Jobs`.
    `one_line` reads them back (`range_of`) to name the range and a valid value in the error."""
    low, high = (bounds.low_open, bounds.low), (bounds.high_open, bounds.high)
    return Field(gt=low[1] if low[0] else None, ge=None if low[0] else low[1],
                 lt=high[1] if high[0] else None, le=None if high[0] else high[1], examples=[bounds.example])


# The ranges of the pipeline's own numbers (the sandbox's limits are sandbox.problem's). A lower bound is what
# still works, an upper bound what is surely a typo.
SEED = Range(0, 2**32 - 1, 42)  # numpy's seeds are 32-bit
TOKENS = Range(1, 1_048_576, 2048)  # tokens of a prompt or a completion
SAMPLES = Range(1, 10_000, 50)  # completions (or rewards) per prompt
BEST_OF = Range(2, 10_000, 6)  # best and worst of one completion would be the same text
BATCH = Range(1, 65_536, 64)  # sequences per forward pass or optimizer step
TOTAL_BATCH = Range(1, 1_048_576, 128)  # sequences (or pairs) per optimizer step over every process
CHUNK = Range(1, 1_000_000, 64)  # prompts or completions per saved chunk
PROBLEMS = Range(1, 10_000_000, 100)  # problems kept from a source
SEEDS = Range(1, 1000, 3)  # evaluation seeds
TEMPERATURE = Range(0, 10, 1.0)  # sampling temperature (0: greedy)
TOP_P = Range(0, 1, 0.9, low_open=True)  # nucleus sampling mass
FRACTION = Range(0, 1, 0.5, low_open=True, high_open=True)  # a share of a split: both halves non-empty
LEARNING_RATE = Range(0, 1, 3e-3, low_open=True)
STEPS = Range(1, 10_000_000, 300)  # optimizer steps
VOCAB = Range(256, 1_048_576, 1024)  # byte-level BPE: the 256 bytes are always tokens
WIDTH = Range(1, 262_144, 128)  # hidden and intermediate sizes
DEPTH = Range(1, 1024, 4)  # layers, attention heads
NODES = Range(1, 100_000, 2)  # SLURM nodes of one job
GPUS_PER_NODE = Range(0, 64, 8)
MEM_GB = Range(0.25, 65_536, 64)  # SLURM memory per job in GB (sbatch --mem in whole MiB: at least 256)

Number = Annotated[float, BeforeValidator(_yaml_number)]
Seed = Annotated[int, within(SEED)]
Tokens = Annotated[int, within(TOKENS)]
Samples = Annotated[int, within(SAMPLES)]
Batch = Annotated[int, within(BATCH)]
TotalBatch = Annotated[int, within(TOTAL_BATCH)]
Chunk = Annotated[int, within(CHUNK)]
Jobs = Annotated[int, within(JOBS)]
Cpus = Annotated[int, within(CPUS_PER_JOB)]
Temperature = Annotated[Number, within(TEMPERATURE)]
TopP = Annotated[Number, within(TOP_P)]
Width = Annotated[int, within(WIDTH)]
Depth = Annotated[int, within(DEPTH)]
Arguments = Annotated[dict[str, Any], AfterValidator(_numbers)]


def strip_optional(annotation: Any) -> Any:
    """`X | None` -> X (a union of more types stays as it is)."""
    if get_origin(annotation) in (Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        return options[0] if len(options) == 1 else annotation
    return annotation


def range_of(field: FieldInfo | None) -> Range | None:
    """The range of a numeric key (None: not a number, or no range), read back from its pydantic constraints
    (`within`), also under `| None`."""
    if field is None:
        return None
    metadata, examples = list(field.metadata), list(field.examples or [])
    annotation = strip_optional(field.annotation)
    if get_origin(annotation) is Annotated:
        annotation, *extra = get_args(annotation)
        for item in extra:
            metadata += item.metadata if isinstance(item, FieldInfo) else [item]
            examples += (item.examples or []) if isinstance(item, FieldInfo) else []
    if annotation not in (int, float) or not examples:
        return None
    bounds: dict[str, Any] = {"example": examples[0]}
    for item in metadata:
        if isinstance(item, (annotated_types.Ge, annotated_types.Gt)):
            bounds.update(low=item.ge if isinstance(item, annotated_types.Ge) else item.gt,
                          low_open=isinstance(item, annotated_types.Gt))
        elif isinstance(item, (annotated_types.Le, annotated_types.Lt)):
            bounds.update(high=item.le if isinstance(item, annotated_types.Le) else item.lt,
                          high_open=isinstance(item, annotated_types.Lt))
    return Range(**bounds) if {"low", "high"} <= set(bounds) else None


def numeric_keys(model: type[BaseModel], prefix: str = "") -> dict[str, tuple[type, Range | None]]:
    """Every numeric config key (dotted), its type (int or float) and its range (None would be a key without
    one: tests/unit/test_pipeline_config.py refuses that)."""
    keys: dict[str, tuple[type, Range | None]] = {}
    for name, field in model.model_fields.items():
        annotation = strip_optional(field.annotation)
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
        if isclass(annotation) and issubclass(annotation, BaseModel):
            keys |= numeric_keys(annotation, f"{prefix}{name}.")
        elif annotation in (int, float):
            keys[f"{prefix}{name}"] = (annotation, range_of(field))
    return keys
