"""Careless users: every bad option value and flag of `sandbox grade`, `sandbox serve` and `qrpo run`
exits 2 with one line naming the option, never a traceback; an internal error prints one line and
the path of a log that holds the traceback. Each case runs the real command in a subprocess."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click
import pytest

from qrpo.cli import main as qrpo_main
from qrpo.pipeline.config import numeric_keys
from sandbox.cli import main as sandbox_main
from sandbox.cli_common import FloatIn, IntIn
from sandbox.problem import Range

from ..conftest import REPO

PROBLEMS = REPO / "sandbox" / "demo" / "problems.jsonl"
COMPLETIONS = REPO / "sandbox" / "demo" / "completions.jsonl"
COMMANDS = {"grade": sandbox_main.commands["grade"], "serve": sandbox_main.commands["serve"],
            "demo": sandbox_main.commands["demo"], "run": qrpo_main.commands["run"]}


def run(module: str, args: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environment.get("PYTHONPATH")]))
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=environment, capture_output=True, text=True,
                          timeout=timeout, check=False)


def numeric_options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option)
            and isinstance(p.type, (click.types.IntParamType, click.types.FloatParamType))]


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_numeric_option_has_a_range_with_an_example(name):
    """An option added later with type=int or a bare IntRange fails here: it would accept -3 or 10**9."""
    options = numeric_options(COMMANDS[name])
    unbounded = [max(p.opts, key=len) for p in options if not isinstance(p.type, (IntIn, FloatIn))]
    assert unbounded == []
    if name in ("grade", "serve"):
        assert {"--cpu", "--memory", "--wall", "--workers"} <= {max(p.opts, key=len) for p in options}


def bad_values(option: click.Option) -> list[str]:
    """Below the range, above it, and not a number."""
    kind: Any = option.type
    low, high = kind.min, kind.max
    below = str(low - 1) if isinstance(kind, IntIn) else str(min(-1.0, low - 1))
    return [below, str(high * 10 + 1), "abc"]


def sandbox_cases(tmp: Path) -> list[tuple[str, list[str], dict[str, str], str]]:
    """(module, args, env, what the one line must name)."""
    output = str(tmp / "out" / "graded.jsonl")
    grade = ["grade", "-p", str(PROBLEMS), "-c", str(COMPLETIONS), "-o", output, "--backend", "process"]
    cases = []
    for command, base in (("grade", grade), ("serve", ["serve"]), ("demo", ["demo"])):
        for option in numeric_options(COMMANDS[command]):
            flag = max(option.opts, key=len)
            cases += [("sandbox.cli", base + [flag, value], {}, flag) for value in bad_values(option)]
    empty = tmp / "empty.jsonl"
    empty.write_text("")
    (tmp / "a-directory").mkdir()
    no_image = {"HOME": str(tmp), "QRPO_SANDBOX_IMAGE": "", "XDG_CACHE_HOME": str(tmp / "cache")}
    flags: list[tuple[list[str], dict[str, str], str]] = [
        (grade + ["--backend", "docker"], {}, "--backend"),
        (grade + ["--backend", "apptainer"], no_image, "apptainer"),
        (grade + ["--granularity", "per_line"], {}, "--granularity"),
        (grade + ["--extract", "middle"], {}, "--extract"),
        (grade + ["--executor", "k8s"], {}, "--executor"),
        (grade + ["--jobs", "4"], {}, "--jobs"),
        (grade + ["--executor", "local", "--workers", "2"], {}, "--workers"),
        (grade[:5] + ["-o", str(tmp / "a-directory")], {}, "--output"),
        (["grade", "-p", str(tmp / "missing.jsonl"), "-c", str(COMPLETIONS), "-o", str(tmp / "o.jsonl")], {}, "missing.jsonl"),
        (["grade", "-p", str(empty), "-c", str(COMPLETIONS), "-o", output, "--backend", "process"], {}, "empty.jsonl"),
        (grade + ["--frobnicate"], {}, "--frobnicate"),
        (["grade", "-c", str(COMPLETIONS), "-o", str(tmp / "o.jsonl")], {}, "--problems"),
        (["serve", "--backend", "docker"], {}, "--backend"),
        (["serve", "--backend", "apptainer"], no_image, "apptainer"),
        (["serve", "--slurm"], {}, "--address-file"),
        (["serve", "--wait", "5"], {}, "--wait"),
        (["serve", "--cpus", "4"], {}, "--cpus"),
        (["serve", "-p", str(PROBLEMS), "-p", str(PROBLEMS)], {}, "in both"),
        (["serve", "--host", "0.0.0.0"], {"SANDBOX_TOKEN": ""}, "--token"),
        (["serve", "--log-level", "loud"], {}, "--log-level"),
        (["serve", "--mem", "8X"], {}, "--mem"),
        (["serve", "--slurm", "--address-file", str(tmp / "addr"), "--sbatch", "account"], {}, "--sbatch"),
        (["demo", "--backend", "docker"], {}, "--backend"),
        (["nonsense"], {}, "nonsense"),
    ]
    return cases + [("sandbox.cli", args, env, named) for args, env, named in flags]


def out_of_range(kind: type, bounds: Range) -> list[str]:
    """A config value just below a key's range and one just above it (as --set writes them)."""
    low = bounds.low if bounds.low_open else bounds.low - (1 if kind is int else min(1, bounds.low / 2 or 1))
    high = bounds.high if bounds.high_open else bounds.high + (1 if kind is int else bounds.high / 1000)
    return [str(kind(low)), str(kind(high))]


def qrpo_cases(tmp: Path) -> list[tuple[str, list[str], dict[str, str], str]]:
    """Every numeric config key below and above its range. `--plan` and a scratch output directory: a value
    that is wrongly accepted prints a plan and exits 0 (the test fails) instead of starting the pipeline."""
    cases = []
    guard = ["--plan", "--output-dir", str(tmp / "qrpo-out")]
    for i, (key, (kind, bounds)) in enumerate(numeric_keys().items()):
        assert bounds is not None, f"config key {key} has no range"
        for value in out_of_range(kind, bounds):
            named = f"'{key}' is {value}, not in the range {bounds.text()}; for example --set {key}={bounds.example}"
            cases.append(("qrpo.cli", ["run", "--set", f"{key}={value}", *guard], {}, named))
        if kind is int and i % 4 == 0:  # a sample: pydantic checks every field's type the same way
            cases.append(("qrpo.cli", ["run", "--set", f"{key}=many", *guard], {}, f"'{key}' must be an integer"))
    for args, named in [
        (["run", "--executor", "docker"], "--executor"),
        (["run", "--force", "grading"], "--force"),
        (["run", "--set", "generate.num_samples"], "KEY=VALUE"),
        (["run", "--set", "generate.num_sample=4"], "generate.num_sample"),
        (["run", "--set", "data.reporting_fraction=7"], "data.reporting_fraction"),
        (["run", "--set", "sandbox.granularity=per_line"], "sandbox.granularity"),
        (["run", "no-such-config.yaml"], "no-such-config.yaml"),
        (["run", "--frobnicate"], "--frobnicate"),
    ]:
        cases.append(("qrpo.cli", args, {}, named))
    return cases


def test_bad_values_and_flags_exit_2_with_one_line_and_no_traceback(tmp_path):
    cases = sandbox_cases(tmp_path) + qrpo_cases(tmp_path)
    assert len(cases) > 200
    with ThreadPoolExecutor(4) as pool:
        procs = list(pool.map(lambda case: run(case[0], case[1], case[2]), cases))
    failures = []
    for (module, args, _, named), proc in zip(cases, procs):
        output = proc.stdout + proc.stderr
        lines = [line for line in output.splitlines() if line.strip()]
        ok = proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("Error: ") and named in lines[0]
        if not ok or "Traceback" in output:
            failures.append(f"{module} {' '.join(args)} -> exit {proc.returncode}: {output[-400:]!r}")
    assert failures == [], "\n".join(failures)
    assert not (tmp_path / "out").exists() and not (tmp_path / "qrpo-out").exists()  # nothing was graded or run


def test_a_range_error_names_a_valid_value():
    proc = run("sandbox.cli", ["grade", "-p", str(PROBLEMS), "-c", str(COMPLETIONS), "-o", "x.jsonl", "--cpu", "-1"])
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("Error: Invalid value for '--cpu': -1.0 is not in the range 0.1<=x<=3600; for example --cpu 2 "
                                   "(see `python -m sandbox.cli grade --help`)")


@pytest.mark.parametrize("module,prog", [("sandbox.cli", "sandbox"), ("qrpo.cli", "qrpo")])
def test_version(module, prog):
    from qrpo import __version__

    proc = run(module, ["--version"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{prog}, version {__version__}"


INTERNAL_ERROR = """
import click
from sandbox.cli_common import Group

@click.group(cls=Group)
def main():
    pass

@main.command()
def divide():
    return {}["a key that is not there"]

main(prog_name="sandbox")
"""


def test_an_internal_error_prints_one_line_and_the_log_that_holds_the_traceback(tmp_path):
    env = dict(os.environ, QRPO_LOG_DIR=str(tmp_path / "logs"), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", INTERNAL_ERROR, "divide"], capture_output=True, text=True, env=env,
                          timeout=60, check=False)
    assert proc.returncode == 3
    assert "Traceback" not in proc.stdout + proc.stderr
    (line,) = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert line.startswith("Error: internal error (KeyError: 'a key that is not there'); the traceback is in ")
    (log,) = (tmp_path / "logs").iterdir()
    assert str(log) in line
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "KeyError" in text and "sandbox divide" in text
