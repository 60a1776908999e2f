"""The pipeline's configuration: one YAML file mapped onto the typed dataclasses below.

    from qrpo.pipeline.config import load_config
    config = load_config("qrpo/configs/tiny-cpu.yaml", overrides=["generate.num_samples=4"])

Every key has a type and a default; a key that does not exist, a value of the wrong type or a value outside
its choices is a `ConfigError` whose one-line message names the key and the fix. `CONFIG` may also be the name
of a bundled config (`tiny-cpu`, `leetcode-paper`). Relative paths in a config are relative to the directory
`qrpo` runs in, as for any command-line tool.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Union

import yaml

EXECUTORS = ("local", "slurm")
PROMPT_STYLES = ("paper", "plain")
ENGINES = ("auto", "vllm", "transformers")
BACKENDS = ("auto", "apptainer", "bubblewrap", "process")
GRANULARITIES = ("per_test", "per_solution")
EXTRACT_POLICIES = ("first", "last", "longest")
DTYPES = ("auto", "float32", "bfloat16", "float16")
PAIR_TIES = ("keep", "drop")
LAUNCHERS = ("python", "accelerate")
ORACLES = ("solution", "empty")
PAIRS_PATTERN = re.compile(r"^(offline|offpolicy2best|offpolicy(\d+)random)$")


class ConfigError(ValueError):
    """A config that cannot be used; the message is one line naming the key and the fix."""


@dataclass
class TinyModelConfig:
    """The tiny Llama of tiny-cpu.yaml. A random model writes garbage (every reward 0, quantiles meaningless),
    so after building it the `model` stage trains it briefly on the problems' own solutions: sampled at T=1 it
    then writes a mix of passing and failing programs, which is what the rest of the pipeline needs."""

    vocab_size: int = 1024
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 128
    warmup_steps: int = 300
    warmup_learning_rate: float = 3e-3
    warmup_batch_size: int = 8
    seed: int = 0


@dataclass
class ModelConfig:
    """The reference policy: `tiny` (built by the `model` stage), a local directory, or a Hugging Face hub id."""

    name_or_path: str = "tiny"
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    dtype: str = "auto"

    @property
    def is_tiny(self) -> bool:
        return self.name_or_path == "tiny"


@dataclass
class SourceConfig:
    """Where problems come from: a JSONL(.gz) file in any registered format, `demo` (the bundled demo
    problems), or a Hugging Face dataset id (with `split`, optionally `revision`)."""

    path: str = ""
    format: str = "auto"
    split: str | None = None
    revision: str | None = None
    limit: int | None = None  # keep the first N problems (quick runs)


@dataclass
class DataConfig:
    """The `prepare` stage: problems -> prompts, tests and splits (the paper's filters by default)."""

    train: SourceConfig | None = None
    test: SourceConfig | None = None
    prompt_style: str = "paper"  # paper: the pre-code block and import note on LeetCode queries; plain: as is
    min_tests: int | None = 20  # drop problems with fewer tests (the paper)
    max_tests: int | None = 100  # grade the first N tests of each problem (the paper)
    max_tokens: int | None = 2048  # drop problems whose chat (prompt + the dataset's answer) is longer (the paper)
    reporting_fraction: float = 0.5  # share of the test split for reporting; the rest selects checkpoints
    split_seed: int = 43


@dataclass
class GenerateConfig:
    """The `generate` stage: N reference completions per training prompt."""

    num_samples: int = 50
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 2048
    engine: str = "auto"  # vllm when installed and a GPU is there, else transformers
    batch_size: int = 64  # sequences (prompts x samples) per transformers generate() call; vLLM schedules its own
    chunk_size: int = 64  # prompts per saved chunk: the unit of resumption
    jobs: int = 1  # SLURM jobs the chunks are spread over
    seed: int = 42


@dataclass
class SandboxConfig:
    """Grading, for `grade` and `evaluate` (limits per test: the paper's 1 s and 1 GiB)."""

    backend: str = "auto"
    workers: int | None = None  # local judges (default: one per CPU)
    granularity: str = "per_test"
    extract: str = "first"
    cpu_s: float = 1.0
    wall_s: float = 3.0
    memory_mb: int = 1024
    solution_s: float = 60.0
    chunk_size: int = 256  # completions per saved chunk when grading locally: the unit of resumption
    jobs: int = 4  # SLURM: shards, one array task each
    cpus_per_job: int = 4  # SLURM: CPUs per array task, one judge each
    time_min: float = 60  # SLURM: time limit per array task


@dataclass
class BuildConfig:
    """The `build` stage: the training table.

    `pairs`: null for pointwise rows (prompt, completion, reward, ref_rewards); `offpolicy<K>random` (K pairs
    per prompt from completions (0, 1), (2, 3), ...), `offpolicy2best` (best and worst of the first
    `best_of`) or `offline` (the dataset's own solution against the first completion) for paired rows."""

    pairs: str | None = None
    num_ref_rewards: int | None = None  # keep the first N reference rewards per prompt (null: all)
    pointwise_samples: int | None = None  # pointwise: completions per prompt that become rows (null: all)
    pair_ties: str = "keep"  # pairs of equal rewards: keep (the paper) or drop
    best_of: int = 6  # offpolicy2best: among how many completions


@dataclass
class TrainConfig:
    """The `train` stage: one run of `qrpo.training_run` per entry of the sweep.

    `args` are QRPOConfig / TrainingArguments fields shared by every run; each `sweep` entry adds its own,
    and a list value makes a grid (`beta: [0.003, 0.01]` is two runs). An entry's `name` names the run."""

    launcher: str = "python"  # python: `python -m qrpo.training_run`; accelerate: `accelerate launch`
    accelerate_config: str | None = None  # a name in qrpo/configs/accelerate (e.g. zero3) or a path
    total_batch_size: int | None = None  # sets gradient_accumulation_steps from the processes and per-device batch
    args: dict[str, Any] = field(default_factory=dict)
    sweep: list[dict[str, Any]] = field(default_factory=lambda: [{"loss_type": "qrpo"}])


@dataclass
class EvaluateConfig:
    """The `evaluate` stage: k seeds of one sample per test prompt, per checkpoint, graded."""

    seeds: int = 3
    temperature: float = 0.6
    top_p: float = 0.9
    max_new_tokens: int = 2048
    batch_size: int = 8  # sequences per generate() call and per log-probability pass
    checkpoints: str = "all"  # all: every checkpoint-N and the final model; final: the final model only
    reference: bool = True  # also evaluate the reference model (step 0)
    kl: bool = True  # KL(policy || reference) on the policy's samples
    oracles: list[str] = field(default_factory=list)  # solution: the dataset's solutions as samples; empty: ""


@dataclass
class SlurmJobConfig:
    """Resources of one kind of SLURM job."""

    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 2
    mem_gb: float | None = None
    time_min: int = 60


@dataclass
class SlurmConfig:
    partition: str | None = None
    account: str | None = None
    additional: dict[str, Any] = field(default_factory=dict)  # extra sbatch options, e.g. {qos: high}
    generate: SlurmJobConfig = field(default_factory=SlurmJobConfig)
    train: SlurmJobConfig = field(default_factory=SlurmJobConfig)
    evaluate: SlurmJobConfig = field(default_factory=SlurmJobConfig)


@dataclass
class PipelineConfig:
    """The whole pipeline. `output_dir` holds one directory per stage."""

    name: str = "qrpo"
    output_dir: str = "runs/qrpo"
    executor: str = "local"
    cpu_threads: int | None = None  # torch threads (and OMP_NUM_THREADS of subprocesses); null: torch's default
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    build: BuildConfig = field(default_factory=BuildConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    source: str = ""  # the file it was read from (set by load_config)


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
    raise ConfigError(f"config {name_or_path} does not exist; give a YAML file or one of the bundled configs: {', '.join(bundled_configs())}")


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
        raise ConfigError(f"{path}: the top level must be a mapping of keys (name, output_dir, model, ...), got {type(data).__name__}")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not KEY=VALUE; write e.g. --set generate.num_samples=4")
        _set_dotted(data, key.strip(), yaml.safe_load(value) if value.strip() else None)
    config = from_dict(PipelineConfig, data, "")
    config.source = str(path)
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


def from_dict(cls: type, data: Any, prefix: str) -> Any:
    """Build dataclass `cls` from a mapping, naming any unknown key with the valid ones."""
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping of keys ({', '.join(f.name for f in _fields(cls))}), got {_kind(data)}")
    fields = {f.name: f for f in _fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}'; valid keys{' under ' + where if prefix else ''}: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {name: _coerce(hints[name], value, f"{prefix}{name}") for name, value in data.items()}
    return cls(**values)


def _fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.name != "source"]


def _kind(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r}"[:80]


def _coerce(hint: Any, value: Any, key: str) -> Any:
    """Check `value` against the type `hint` (ints are accepted where floats are expected)."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None and type(None) in typing.get_args(hint):
            return None
        errors = []
        for option in options:
            try:
                return _coerce(option, value, key)
            except ConfigError as error:
                errors.append(error)
        raise errors[0]
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, {} if value is None else value, f"{key}.")
    if hint is Any:
        return _number(value)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key {key!r} must be a list, got {_kind(value)}")
        (item,) = typing.get_args(hint) or (Any,)
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} must be a mapping, got {_kind(value)}")
        return {k: _number(v) for k, v in value.items()}
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads 1e-6 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint in (int, str, bool) and type(value) is hint:
        return value
    raise ConfigError(f"config key {key!r} must be {_type_name(hint)}, got {_kind(value)}")


SCIENTIFIC = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _number(value: Any) -> Any:
    """YAML 1.1 (PyYAML) reads 1e-6 as a string; free-form values (training arguments) get the number back."""
    if isinstance(value, str) and SCIENTIFIC.match(value):
        return float(value)
    if isinstance(value, list):
        return [_number(v) for v in value]
    if isinstance(value, dict):
        return {k: _number(v) for k, v in value.items()}
    return value


def _type_name(hint: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(hint, str(hint))


# ---------------------------------------------------------------------------------------------- checks


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"config key {key!r} is {value!r}; choose one of: {', '.join(choices)}")


def _positive(key: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value <= 0:
        raise ConfigError(f"config key {key!r} must be > 0, got {value!r}")


def check(config: PipelineConfig) -> None:
    """Cheap checks of values (choices, ranges, files that must exist); the stages check the rest."""
    _choice("executor", config.executor, EXECUTORS)
    _positive("cpu_threads", config.cpu_threads, allow_none=True)
    _choice("model.dtype", config.model.dtype, DTYPES)
    check_model_path(config.model.name_or_path)
    data = config.data
    _choice("data.prompt_style", data.prompt_style, PROMPT_STYLES)
    if data.test is None:
        raise ConfigError("config key 'data.test' is missing; evaluate needs test prompts: add data.test.path (it may be the training file)")
    if data.train is None and config.train.sweep:
        raise ConfigError("config key 'data.train' is missing but train.sweep has runs; add data.train.path, or set train.sweep: [] to evaluate only")
    for name in ("train", "test"):
        source = getattr(data, name)
        if source is not None:
            check_source(f"data.{name}", source)
    for key in ("min_tests", "max_tests", "max_tokens"):
        _positive(f"data.{key}", getattr(data, key), allow_none=True)
    if not 0 < data.reporting_fraction < 1:
        raise ConfigError(f"config key 'data.reporting_fraction' must be between 0 and 1, got {data.reporting_fraction}")
    gen = config.generate
    _choice("generate.engine", gen.engine, ENGINES)
    for key in ("num_samples", "max_new_tokens", "batch_size", "chunk_size", "jobs"):
        _positive(f"generate.{key}", getattr(gen, key))
    if not gen.temperature >= 0 or not 0 < gen.top_p <= 1:
        raise ConfigError(f"generate.temperature must be >= 0 and generate.top_p in (0, 1], got {gen.temperature}, {gen.top_p}")
    box = config.sandbox
    _choice("sandbox.backend", box.backend, BACKENDS)
    _choice("sandbox.granularity", box.granularity, GRANULARITIES)
    _choice("sandbox.extract", box.extract, EXTRACT_POLICIES)
    for key in ("cpu_s", "wall_s", "memory_mb", "solution_s", "chunk_size", "jobs", "cpus_per_job", "time_min"):
        _positive(f"sandbox.{key}", getattr(box, key))
    _positive("sandbox.workers", box.workers, allow_none=True)
    build = config.build
    if build.pairs is not None and not PAIRS_PATTERN.match(build.pairs):
        raise ConfigError(f"config key 'build.pairs' is {build.pairs!r}; choose null (pointwise rows), offline, offpolicy2best or offpolicy<K>random (e.g. offpolicy10random)")
    _choice("build.pair_ties", build.pair_ties, PAIR_TIES)
    for key in ("num_ref_rewards", "pointwise_samples"):
        _positive(f"build.{key}", getattr(build, key), allow_none=True)
    _positive("build.best_of", build.best_of)
    train = config.train
    _choice("train.launcher", train.launcher, LAUNCHERS)
    _positive("train.total_batch_size", train.total_batch_size, allow_none=True)
    for i, entry in enumerate(train.sweep):
        if not isinstance(entry, dict):
            raise ConfigError(f"config key 'train.sweep[{i}]' must be a mapping of training arguments (loss_type: qrpo, beta: ...), got {_kind(entry)}")
    ev = config.evaluate
    _choice("evaluate.checkpoints", ev.checkpoints, ("all", "final"))
    for key in ("seeds", "max_new_tokens", "batch_size"):
        _positive(f"evaluate.{key}", getattr(ev, key))
    for i, oracle in enumerate(ev.oracles):
        _choice(f"evaluate.oracles[{i}]", oracle, ORACLES)
    for name in ("generate", "train", "evaluate"):
        job: SlurmJobConfig = getattr(config.slurm, name)
        for key in ("nodes", "cpus_per_task", "time_min"):
            _positive(f"slurm.{name}.{key}", getattr(job, key))


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
        raise ConfigError(f"model.name_or_path {name_or_path} does not exist; give a model directory (with config.json), a hub id such as allenai/Llama-3.1-Tulu-3-8B-SFT, or tiny")
    if not (path / "config.json").is_file():
        raise ConfigError(f"model.name_or_path {name_or_path} has no config.json; give a directory saved with save_pretrained")


def check_source(key: str, source: SourceConfig) -> None:
    if not source.path:
        raise ConfigError(f"config key '{key}.path' is missing; give a JSONL file, demo, or a Hugging Face dataset id")
    if source.format != "auto":
        from sandbox.datasets import known_formats

        _choice(f"{key}.format", source.format, ("auto", *known_formats()))
    _positive(f"{key}.limit", source.limit, allow_none=True)
    if source.path == "demo" or is_hub_dataset(source.path):
        return
    if not Path(source.path).expanduser().is_file():
        raise ConfigError(f"{key}.path {source.path} does not exist; give a JSONL(.gz) file of problems, demo, or a Hugging Face dataset id")


def as_dict(config: PipelineConfig) -> dict[str, Any]:
    """The config as plain data (what `qrpo run` saves beside its outputs)."""
    data = dataclasses.asdict(config)
    data.pop("source", None)
    return data
