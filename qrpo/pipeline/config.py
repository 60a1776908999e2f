"""The pipeline's configuration: one YAML file loaded onto the typed pydantic models below.

    from qrpo.pipeline.config import load_config
    config = load_config("qrpo/configs/tiny-cpu.yaml", overrides=["generate.num_samples=4"])

Every key has a type, a default and a description; every number a range (the typed fields of `ranges`).
pydantic validates (strictly: an unknown key, a value of another type, outside its choices or its range is
refused, not coerced); its first error becomes a `ConfigError` whose one-line message (`config_messages`) names
the key and the fix (for a number: the range and a valid example). `CONFIG` may also be the name of a bundled
config (`tiny-cpu`, `leetcode-paper`). Relative paths are relative to the directory `qrpo` runs in, as for any
command-line tool.

Choice lists come from the modules that act on them (prompt styles from `prompts`, engines and dtypes from
`sampling`, granularity and extraction from `sandbox`, backends and dataset formats from sandbox's registries);
the pipeline's own (executors, pair ties, launchers, checkpoints, oracles) are defined here.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from sandbox.problem import (
    CPU_S,
    MAX_TESTS,
    MEMORY_MB,
    MIN_TESTS,
    SLURM_MINUTES,
    SOLUTION_S,
    WALL_S,
    WORKERS,
    BackendChoice,
    ExecutorKind,
    Granularity,
    Range,
)
from sandbox.problem import Extraction as ExtractPolicy

from . import ranges
from .config_messages import one_line
from .prompts import GradedPreamble, PromptStyle
from .ranges import (
    BEST_OF,
    FRACTION,
    GPUS_PER_NODE,
    LEARNING_RATE,
    MEM_GB,
    NODES,
    PROBLEMS,
    SEEDS,
    STEPS,
    VOCAB,
    Arguments,
    Batch,
    Chunk,
    Cpus,
    Depth,
    Jobs,
    Number,
    Samples,
    Seed,
    Temperature,
    Tokens,
    TopP,
    TotalBatch,
    Width,
    within,
)
from .sampling import DType, Engine
from .splits import SplitMethod

PairTies = Literal["keep", "drop"]  # pairs whose two rewards are equal: kept (the paper) or left out
Launcher = Literal["python", "accelerate"]  # how a training run starts (`python -m` or `accelerate launch`)
Checkpoints = Literal["all", "final"]  # which checkpoints of a training run are evaluated
Oracle = Literal["solution", "empty"]  # policies without a model: the dataset's solutions, or nothing
# The answer the length filter counts with the prompt: the dataset's `response` (an LLM answer; the reference
# code's filter) or its canonical solution (the project's: the answer the oracle grades; `response` is empty
# for about half of the v0.3.1 test rows, which then count the prompt alone).
LengthAnswer = Literal["response", "solution"]
# offpolicy2best when all of a prompt's first `best_of` rewards tie: same (the reference code: best and worst are
# both the first completion, a pair of one text with itself) or distinct (the project's: the second completion
# is the rejected one, so the pair holds two texts).
BestWorstTies = Literal["same", "distinct"]
# Checkpoint selection: method (the reference: per loss type, the best selection score over every run and
# checkpoint of that method, the reference model as checkpoint-0 among them) or run (the project's: per run).
SelectionScope = Literal["method", "run"]
EXECUTORS: tuple[ExecutorKind, ...] = get_args(ExecutorKind)
PAIRS_PATTERN = re.compile(r"^(offline|offpolicy2best|offpolicy(\d+)random)$")


class ConfigError(ValueError):
    """A config that cannot be used; the message is one line naming the key and the fix."""


# ---------------------------------------------------------------------------------------------- value types
# (the numeric types, with their ranges, are in `ranges`)


def _pairs(value: str | None) -> str | None:
    if value is not None and not PAIRS_PATTERN.match(value):
        raise ValueError(f"is {value!r}; choose null (pointwise rows), offline, offpolicy2best or offpolicy<K>random "
                         "(e.g. offpolicy10random)")
    return value


class Section(BaseModel):
    """A config section: unknown keys are refused and values are not coerced (a "4" is no integer); a section
    written as null gets its defaults."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_defaults(cls, data: Any) -> Any:
        return {} if data is None else data


# ---------------------------------------------------------------------------------------------- sections


class TinyModelConfig(Section):
    """The tiny Llama of tiny-cpu.yaml. A random model writes garbage (every reward 0, quantiles meaningless),
    so after building it the `model` stage trains it briefly on the problems' own solutions: sampled at T=1 it
    then writes a mix of passing and failing programs, which is what the rest of the pipeline needs."""

    vocab_size: Annotated[int, within(VOCAB)] = 1024
    hidden_size: Width = 64
    num_hidden_layers: Depth = 2
    num_attention_heads: Depth = 4
    num_key_value_heads: Depth = 2
    intermediate_size: Width = 128
    warmup_steps: Annotated[int, within(STEPS)] = Field(default=300, description="Steps of causal-LM training on the "
                                                        "problems' solutions.")
    warmup_learning_rate: Annotated[Number, within(LEARNING_RATE)] = 3e-3
    warmup_batch_size: Batch = 8
    seed: Seed = 0


class ModelConfig(Section):
    """The reference policy: `tiny` (built by the `model` stage), a local directory, or a Hugging Face hub id."""

    name_or_path: str = Field(default="tiny", description="tiny, a directory saved with save_pretrained, or a hub id.")
    tiny: TinyModelConfig = TinyModelConfig()
    dtype: DType = Field(default="auto", description="The weights' dtype when sampling and scoring.")

    @property
    def is_tiny(self) -> bool:
        return self.name_or_path == "tiny"


class SourceConfig(Section):
    """Where problems come from: a JSONL(.gz) file in any registered format, `demo` (the bundled demo
    problems), or a Hugging Face dataset id (with `split`, optionally `revision`)."""

    path: str = ""
    format: str = Field(default="auto", description="auto (detected from the fields) or a registered format name.")
    split: str | None = None
    revision: str | None = None
    limit: Annotated[int, within(PROBLEMS)] | None = Field(default=None, description="Keep the first N problems "
                                                           "(quick runs).")


class DataConfig(Section):
    """The `prepare` stage: problems -> prompts, tests and splits (the paper's filters by default)."""

    train: SourceConfig | None = None
    test: SourceConfig | None = None
    prompt_style: PromptStyle = Field(default="paper", description="paper: the pre-code block and import note on LeetCode "
                                      "queries; plain: the queries as they are.")
    min_tests: Annotated[int, within(MIN_TESTS)] | None = Field(default=20, description="Drop problems with fewer tests "
                                                                "(the paper; null or 0: none).")
    max_tests: Annotated[int, within(MAX_TESTS)] | None = Field(default=100, description="Grade the first N tests of each "
                                                                "problem (the paper).")
    max_tokens: Tokens | None = Field(default=2048, description="Drop problems whose chat (prompt + the dataset's answer) "
                                      "is longer (the paper).")
    length_answer: LengthAnswer = Field(default="response", description="The answer max_tokens counts: response (the "
                                        "reference code) or solution (the canonical solution).")
    graded_preamble: GradedPreamble = Field(default="pre_code", description="What paper-style LeetCode solutions run "
                                            "after: pre_code (the reference code) or pre_code+dataset.")
    reporting_fraction: Annotated[Number, within(FRACTION)] = Field(default=0.5, description="Share of the test split "
                                                                    "for reporting; the rest selects checkpoints.")
    split_method: SplitMethod = Field(default="sklearn", description="sklearn: the reference code's stratified halves; "
                                      "per-difficulty: the project's, independent of row order.")
    split_seed: Seed = 43


class GenerateConfig(Section):
    """The `generate` stage: N reference completions per training prompt."""

    num_samples: Samples = 50
    temperature: Temperature = 1.0
    top_p: TopP = 1.0
    max_new_tokens: Tokens = 2048
    engine: Engine = Field(default="auto", description="vllm when installed and a GPU is there, else transformers.")
    batch_size: Batch = Field(default=64, description="Sequences (prompts x samples) per transformers generate() call.")
    chunk_size: Chunk = Field(default=64, description="Prompts per saved chunk: the unit of resumption.")
    jobs: Jobs = Field(default=1, description="SLURM jobs the chunks are spread over.")
    seed: Seed = 42


class SandboxConfig(Section):
    """Grading, for `grade` and `evaluate` (limits per test: the paper's 1 s and 1 GiB)."""

    backend: BackendChoice = "auto"
    workers: Annotated[int, within(WORKERS)] | None = Field(default=None, description="Local judges (default: one per CPU).")
    granularity: Granularity = "per_test"
    extract: ExtractPolicy = "first"
    cpu_s: Annotated[Number, within(CPU_S)] = 1.0
    wall_s: Annotated[Number, within(WALL_S)] = 3.0
    memory_mb: Annotated[int, within(MEMORY_MB)] = 1024
    solution_s: Annotated[Number, within(SOLUTION_S)] = 60.0
    chunk_size: Chunk = Field(default=256, description="Completions per saved chunk (the unit of resumption); "
                       "on SLURM each of the `jobs` array tasks grades a stripe of chunks.")
    jobs: Jobs = Field(default=4, description="SLURM: shards, one array task each.")
    cpus_per_job: Cpus = Field(default=4, description="SLURM: CPUs per array task, one judge each.")
    time_min: Annotated[Number, within(SLURM_MINUTES)] = Field(default=60, description="SLURM: time limit per array task.")


class BuildConfig(Section):
    """The `build` stage: the training table.

    `pairs`: null for pointwise rows (prompt, completion, reward, ref_rewards); `offpolicy<K>random` (K pairs
    per prompt from completions (0, 1), (2, 3), ...), `offpolicy2best` (best and worst of the first
    `best_of`) or `offline` (the dataset's own solution against the first completion) for paired rows."""

    pairs: Annotated[str | None, AfterValidator(_pairs)] = None
    num_ref_rewards: Samples | None = Field(default=None, description="The first N reference rewards per prompt (null: all).")
    pointwise_samples: Samples | None = Field(default=None, description="Pointwise: completions per prompt that become rows.")
    pair_ties: PairTies = "keep"
    best_of: Annotated[int, within(BEST_OF)] = Field(default=6, description="offpolicy2best: among how many completions.")
    best_worst_ties: BestWorstTies = Field(default="same", description="offpolicy2best when every reward ties: same "
                                           "(the reference code: the first completion on both sides) or distinct.")


class SftConfig(Section):
    """The optional `sft` stage: the reference code's "sft" setting. The model is first fine-tuned on the training
    problems' chats (prompt + the dataset's `response`, or its solution), every token counted as TRL's
    SFTTrainer does on messages; the result is the reference policy of generate, train and evaluate (evaluated
    as checkpoint-0). Off (the "nosft" setting): the model as it is.

    `args` are trl.SFTConfig / TrainingArguments fields (the reference: 3 epochs, lr 5e-7, batch 128, cosine,
    10% warmup, max_grad_norm 10, max_length 2048, drop_last); `total_batch_size` sets gradient accumulation
    from the processes and the per-device batch; launcher, accelerate config and SLURM resources are train's."""

    enabled: bool = False
    answer: LengthAnswer = Field(default="response", description="The assistant turn trained on: response (the reference "
                                 "code) or solution (the canonical solution).")
    total_batch_size: TotalBatch | None = None
    args: Arguments = Field(default_factory=dict)


class TrainConfig(Section):
    """The `train` stage: one training run (`qrpo.training_run`) per entry of the sweep.

    `args` are QRPOConfig / TrainingArguments fields shared by every run; each `sweep` entry adds its own,
    and a list value makes a grid (`beta: [0.003, 0.01]` is two runs). An entry's `name` names the run."""

    launcher: Launcher = "python"
    accelerate_config: str | None = Field(default=None, description="A name in qrpo/configs/accelerate (e.g. zero3) or a path.")
    total_batch_size: TotalBatch | None = Field(default=None, description="Sets gradient_accumulation_steps from the processes "
                                              "and the per-device batch.")
    args: Arguments = Field(default_factory=dict)
    sweep: list[Arguments] = Field(default_factory=lambda: [{"loss_type": "qrpo"}])


class EvaluateConfig(Section):
    """The `evaluate` stage: k seeds of one sample per test prompt, per checkpoint, graded."""

    seeds: Annotated[int, within(SEEDS)] = 3
    temperature: Temperature = 0.6
    top_p: TopP = 0.9
    max_new_tokens: Tokens = 2048
    batch_size: Batch = Field(default=8, description="Sequences per generate() call and per log-probability pass.")
    checkpoints: Checkpoints = Field(default="all", description="all: every checkpoint and the final model; final: the last.")
    reference: bool = Field(default=True, description="Also evaluate the reference model (step 0).")
    kl: bool = Field(default=True, description="KL(policy || reference) on the policy's samples.")
    oracles: list[Oracle] = Field(default_factory=list)
    selection: SelectionScope = Field(default="method", description="method: also pick per loss type over every run's "
                                      "checkpoints and the reference model (the reference code); run: per run only.")


class SlurmJobConfig(Section):
    """Resources of one kind of SLURM job."""

    nodes: Annotated[int, within(NODES)] = 1
    gpus_per_node: Annotated[int, within(GPUS_PER_NODE)] = 0
    cpus_per_task: Cpus = 2
    mem_gb: Annotated[Number, within(MEM_GB)] | None = None
    time_min: Annotated[int, within(SLURM_MINUTES)] = 60


class SlurmConfig(Section):
    partition: str | None = None
    account: str | None = None
    additional: Arguments = Field(default_factory=dict, description="Extra sbatch options, e.g. {qos: high}.")
    generate: SlurmJobConfig = SlurmJobConfig()
    train: SlurmJobConfig = SlurmJobConfig()
    evaluate: SlurmJobConfig = SlurmJobConfig()


class PipelineConfig(Section):
    """The whole pipeline. `output_dir` holds one directory per stage."""

    name: str = "qrpo"
    output_dir: str = "runs/qrpo"
    executor: ExecutorKind = "local"
    cpu_threads: Cpus | None = Field(default=None, description="torch threads (and OMP_NUM_THREADS of subprocesses); "
                                         "null: torch's default.")
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    generate: GenerateConfig = GenerateConfig()
    sandbox: SandboxConfig = SandboxConfig()
    sft: SftConfig = SftConfig()
    build: BuildConfig = BuildConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    slurm: SlurmConfig = SlurmConfig()


# ---------------------------------------------------------------------------------------------- loading


def bundled_configs() -> list[str]:
    """Names of the configs shipped in qrpo/configs (usable in place of a path)."""
    folder = resources.files("qrpo").joinpath("configs")
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def config_path(name_or_path: str | Path) -> Path:
    """A config file's path: the path itself, or a bundled config by name (`tiny-cpu`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = resources.files("qrpo").joinpath("configs", f"{name_or_path}.yaml")
    if isinstance(bundled, Path) and bundled.is_file() and "/" not in str(name_or_path):
        return bundled
    raise ConfigError(f"config {name_or_path} does not exist; give a YAML file or one of the bundled configs: "
                      f"{', '.join(bundled_configs())}")


def load_config(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """Read a YAML config, apply `key.sub=value` overrides (values parsed as YAML) and check it."""
    path = config_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(error, 'problem', error)}); fix the syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys (name, output_dir, model, ...), "
                          f"got {type(data).__name__}")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not KEY=VALUE; write e.g. --set generate.num_samples=4")
        _set_dotted(data, key.strip(), yaml.safe_load(value) if value.strip() else None)
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(one_line(error, PipelineConfig)) from None
    check(config)
    return config


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def as_dict(config: PipelineConfig) -> dict[str, Any]:
    """The config as plain data (what `qrpo run` saves beside its outputs)."""
    return config.model_dump()


def numeric_keys() -> dict[str, tuple[type, Range | None]]:
    """Every numeric key of the pipeline's config, its type and its range (`ranges.numeric_keys`)."""
    return ranges.numeric_keys(PipelineConfig)




# ---------------------------------------------------------------------------------------------- checks


def check(config: PipelineConfig) -> None:
    """What types cannot say: keys that depend on each other, ranges with a reason, files that must exist."""
    check_model_path(config.model.name_or_path)
    data = config.data
    if data.test is None:
        raise ConfigError("config key 'data.test' is missing; evaluate needs test prompts: add data.test.path "
                          "(it may be the training file)")
    if data.train is None and config.train.sweep:
        raise ConfigError("config key 'data.train' is missing but train.sweep has runs; add data.train.path, or set "
                          "train.sweep: [] to evaluate only")
    for name in ("train", "test"):
        source = getattr(data, name)
        if source is not None:
            check_source(f"data.{name}", source)


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_hub_id(value: str) -> bool:
    """`owner/name` that is not a path on this machine: a Hugging Face hub id."""
    return bool(HUB_ID.match(value)) and not Path(value).exists()


def is_hub_dataset(path: str) -> bool:
    """`owner/name` that is no file here and does not end like a data file: a Hugging Face dataset id."""
    return looks_like_hub_id(path) and not path.endswith((".jsonl", ".json", ".gz"))


def check_model_path(name_or_path: str) -> None:
    if name_or_path == "tiny" or looks_like_hub_id(name_or_path):
        return
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        raise ConfigError(f"model.name_or_path {name_or_path} does not exist; give a model directory (with config.json), "
                          "a hub id such as allenai/Llama-3.1-Tulu-3-8B-SFT, or tiny")
    if not (path / "config.json").is_file():
        raise ConfigError(f"model.name_or_path {name_or_path} has no config.json; give a directory saved with save_pretrained")


def check_source(key: str, source: SourceConfig) -> None:
    if not source.path:
        raise ConfigError(f"config key '{key}.path' is missing; give a JSONL file, demo, or a Hugging Face dataset id")
    if source.format != "auto":
        from sandbox.datasets import known_formats

        choices = ("auto", *known_formats())
        if source.format not in choices:
            raise ConfigError(f"config key '{key}.format' is {source.format!r}; choose one of: {', '.join(choices)}")
    if source.path == "demo" or is_hub_dataset(source.path):
        return
    from qrpo import tasks

    try:
        if tasks.source_split(source.path) is not None:  # qrpo-tasks:train / qrpo-tasks:test
            return
    except ValueError as error:
        raise ConfigError(f"config key '{key}.path': {error}") from None
    if not Path(source.path).expanduser().is_file():
        raise ConfigError(f"{key}.path {source.path} does not exist; give a JSONL(.gz) file of problems, demo, "
                          "or a Hugging Face dataset id")
