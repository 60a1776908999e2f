"""The pipeline's YAML config: typed keys, one-line errors naming the key and the fix, the bundled configs."""

from __future__ import annotations

import math

import pytest

from qrpo.pipeline.config import ConfigError, bundled_configs, load_config, numeric_keys
from qrpo.pipeline.sweep import expand_sweep, run_spec_args


def write(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def error_of(path, overrides=()) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_bundled_configs_load_and_hold_the_paper_settings():
    assert {"tiny-cpu", "leetcode-paper"} <= set(bundled_configs())
    paper = load_config("leetcode-paper")
    assert paper.model.name_or_path == "allenai/Llama-3.1-Tulu-3-8B-SFT"
    assert (paper.generate.num_samples, paper.generate.temperature, paper.generate.top_p) == (50, 1.0, 1.0)
    assert (paper.evaluate.temperature, paper.evaluate.top_p, paper.evaluate.seeds) == (0.6, 0.9, 3)
    assert paper.sandbox.cpu_s == 1.0 and paper.data.min_tests == 20 and paper.data.prompt_style == "paper"
    assert paper.build.pairs == "offpolicy10random" and paper.train.args["num_ref_rewards"] == 20
    assert paper.train.total_batch_size == 128 and paper.train.args["bf16"] is True
    assert paper.train.args["lr_scheduler_type"] == "cosine" and paper.train.args["warmup_ratio"] == 0.1
    qrpo = [r for r in expand_sweep(paper) if r.args["loss_type"] == "qrpo"]
    assert sorted({r.args["beta"] for r in qrpo}) == [3e-3, 1e-2, 3e-2]
    assert sorted({r.args["learning_rate"] for r in qrpo}) == [1e-7, 3e-7, 1e-6]
    assert {r.args["loss_type"] for r in expand_sweep(paper)} == {"qrpo", "dpo", "simpo", "rebel"}
    # 2 nodes x 4 GPUs x 2 per device x 8 accumulation steps = 128
    assert run_spec_args(paper, qrpo[0], "out", executor="slurm")["gradient_accumulation_steps"] == 8
    tiny = load_config("tiny-cpu")
    assert tiny.model.is_tiny and tiny.data.train is not None and tiny.data.train.path == "demo"


def test_overrides_are_yaml_values_on_dotted_keys():
    config = load_config("tiny-cpu", ["generate.num_samples=4", "evaluate.oracles=[empty]", "output_dir=/tmp/x"])
    assert config.generate.num_samples == 4 and config.evaluate.oracles == ["empty"] and config.output_dir == "/tmp/x"


def test_unknown_keys_are_named_with_the_valid_ones(tmp_path):
    message = error_of(write(tmp_path, "generate: {num_sample: 4}\ndata: {train: {path: demo}}\n"))
    assert "'generate.num_sample'" in message and "num_samples" in message
    message = error_of(write(tmp_path, "modle: {name_or_path: tiny}\n"))
    assert "'modle'" in message and "model" in message
    assert "'nope'" in error_of("tiny-cpu", ["nope=1"])


def test_wrong_types_and_choices_are_named(tmp_path):
    message = error_of("tiny-cpu", ["generate.num_samples=many"])
    assert "'generate.num_samples'" in message and "integer" in message
    message = error_of("tiny-cpu", ["sandbox.backend=docker"])
    assert "'sandbox.backend'" in message and "apptainer" in message
    message = error_of("tiny-cpu", ["build.pairs=offpolicyrandom"])
    assert "offpolicy<K>random" in message
    message = error_of("tiny-cpu", ["data.reporting_fraction=1.5"])
    assert message == ("config key 'data.reporting_fraction' is 1.5, not in the range 0<x<1; "
                       "for example --set data.reporting_fraction=0.5")


def test_scientific_numbers_are_numbers(tmp_path):
    path = write(tmp_path, "data: {train: {path: demo}, test: {path: demo}}\n"
                           "train: {args: {learning_rate: 1e-6}, sweep: [{beta: [1e-2, 3e-2]}]}\n"
                           "generate: {temperature: 1e0}\n")
    config = load_config(path)
    assert config.train.args["learning_rate"] == 1e-6 and config.generate.temperature == 1.0
    assert [r.args["beta"] for r in expand_sweep(config)] == [1e-2, 3e-2]


def test_missing_files_name_the_fix(tmp_path):
    assert "give a YAML file or one of the bundled configs" in error_of(tmp_path / "missing.yaml")
    message = error_of("tiny-cpu", [f"data.train.path={tmp_path / 'none.jsonl'}"])
    assert "data.train.path" in message and "does not exist" in message
    message = error_of("tiny-cpu", [f"model.name_or_path={tmp_path / 'no-model'}"])
    assert "model.name_or_path" in message and "hub id" in message
    (tmp_path / "empty-dir").mkdir()
    assert "config.json" in error_of("tiny-cpu", [f"model.name_or_path={tmp_path / 'empty-dir'}"])
    assert "choose one of" in error_of("tiny-cpu", ["data.train.format=nosuch"])


def test_the_splits_the_stages_need_are_required():
    assert "data.test" in error_of("tiny-cpu", ["data.test=null"])
    assert "train.sweep: []" in error_of("tiny-cpu", ["data.train=null"])
    assert load_config("tiny-cpu", ["data.train=null", "train.sweep=[]"]).data.train is None


def test_invalid_yaml_names_the_line(tmp_path):
    message = error_of(write(tmp_path, "name: x\ngenerate: [unclosed\n"))
    assert "not valid YAML" in message and "line" in message


def test_sweep_grid_and_names():
    sweep = "[{loss_type: qrpo, beta: [0.1, 0.2], learning_rate: 1e-5}, {name: base, loss_type: dpo}]"
    config = load_config("tiny-cpu", [f"train.sweep={sweep}"])
    runs = expand_sweep(config)
    assert [r.name for r in runs] == ["qrpo-beta0.1-lr1e-05", "qrpo-beta0.2-lr1e-05", "base"]
    assert runs[1].args == {"loss_type": "qrpo", "beta": 0.2, "learning_rate": 1e-5}
    with pytest.raises(ConfigError, match="distinct"):
        expand_sweep(load_config("tiny-cpu", ["train.sweep=[{name: a}, {name: a}]"]))


def test_total_batch_size_must_divide():
    config = load_config("tiny-cpu", ["train.total_batch_size=12"])
    run = expand_sweep(config)[0]
    with pytest.raises(ConfigError, match="multiple"):
        run_spec_args(config, run, "out")  # 12 is not a multiple of per_device_train_batch_size 8
    config = load_config("tiny-cpu", ["train.total_batch_size=32"])
    assert run_spec_args(config, run, "out")["gradient_accumulation_steps"] == 4


def test_every_shipped_config_loads():
    names = bundled_configs()
    assert {"tiny-cpu", "learn-cpu", "leetcode-paper", "leetcode-paper-sft"} <= set(names)
    for name in names:
        assert load_config(name).name == name


KEYS = numeric_keys()


def test_every_numeric_key_has_a_range_with_an_example():
    """A key added later as a bare int or float (or with gt=0 alone) fails here: it would accept 10**9."""
    assert len(KEYS) > 50 and "sandbox.memory_mb" in KEYS and "slurm.train.mem_gb" in KEYS
    assert [key for key, (_, bounds) in KEYS.items() if bounds is None] == []
    for key, (kind, bounds) in KEYS.items():
        assert bounds is not None and math.isfinite(bounds.high) and bounds.example in bounds, key
        assert kind is float or all(float(n).is_integer() for n in (bounds.low, bounds.high, bounds.example)), key


def outside(kind: type, bounds) -> list[str]:
    """Values just below and just above the range (as --set writes them)."""
    step = 1 if kind is int else bounds.high / 1000
    low = bounds.low if bounds.low_open else bounds.low - (1 if kind is int else min(1, bounds.low / 2 or 1))
    high = bounds.high if bounds.high_open else bounds.high + step
    return [str(kind(low)), str(kind(high))]


@pytest.mark.parametrize("key", sorted(KEYS))
def test_a_value_outside_a_keys_range_is_refused_naming_the_key_range_and_an_example(key):
    kind, bounds = KEYS[key]
    assert bounds is not None
    for value in outside(kind, bounds):
        message = error_of("tiny-cpu", [f"{key}={value}"])
        assert message == (f"config key '{key}' is {value}, not in the range {bounds.text()}; "
                           f"for example --set {key}={bounds.example}")
    inside = [bounds.example] + [b for b, open_ in ((bounds.low, bounds.low_open), (bounds.high, bounds.high_open))
                                 if not open_]
    for value in inside:
        config = load_config("tiny-cpu", [f"{key}={kind(value)}"])
        node = config
        for part in key.split("."):
            node = getattr(node, part)
        assert node == kind(value)


def test_the_sandbox_limits_have_one_range_shared_with_the_sandbox_cli():
    """sandbox.* and data.*_tests take their ranges from sandbox.problem, as `sandbox grade`'s options do."""
    from sandbox import problem
    from sandbox.cli import grade

    options = {max(p.opts, key=len): p.type for p in grade.params}
    for key, option, bounds in [("sandbox.cpu_s", "--cpu", problem.CPU_S), ("sandbox.wall_s", "--wall", problem.WALL_S),
                                ("sandbox.memory_mb", "--memory", problem.MEMORY_MB),
                                ("sandbox.workers", "--workers", problem.WORKERS), ("sandbox.jobs", "--jobs", problem.JOBS),
                                ("sandbox.cpus_per_job", "--cpus-per-job", problem.CPUS_PER_JOB),
                                ("sandbox.time_min", "--time", problem.SLURM_MINUTES),
                                ("data.max_tests", "--max-tests", problem.MAX_TESTS),
                                ("data.min_tests", "--min-tests", problem.MIN_TESTS)]:
        assert KEYS[key][1] == bounds, key
        kind = options[option]
        assert (kind.min, kind.max, kind.min_open, kind.max_open, kind.example) == \
               (bounds.low, bounds.high, bounds.low_open, bounds.high_open, str(bounds.example)), option


def test_the_config_refuses_what_the_issue_found():
    assert "64<=x<=262144" in error_of("tiny-cpu", ["sandbox.memory_mb=10"])
    assert error_of("tiny-cpu", ["sandbox.cpu_s=1e9"]).startswith("config key 'sandbox.cpu_s' is 1e9, not in the range")
    message = error_of("tiny-cpu", ["generate.num_samples=many"])
    assert message.endswith("got str 'many'; for example --set generate.num_samples=50")
