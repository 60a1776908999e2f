"""The LeetCode pipeline end to end (`qrpo run`), for real: the tiny model is built and trained here, every
completion is graded by the sandbox (apptainer where it is installed, as in CI), training runs `qrpo.training_run`
in a subprocess, and `--executor slurm` sends the work to the local SLURM cluster through submitit.

- the tiny pipeline runs end to end and writes the report and plots; a rerun skips every stage;
- `qrpo generate` SIGKILLed after its first chunks resumes without redoing them;
- the same pipeline with `--executor slurm` produces the same completions and rewards;
- the LeetCodeDataset v0.3.1 test solutions, evaluated as if they were model samples, score Avg. Pass 100%
  (but for the documented slow ones), and empty completions score 0;
- a changed config makes a done stage stale: it refuses with the fix, and --force redoes it and what follows;
- bad input fails fast with a one-line message naming the fix.

The tiny pipeline takes about 2 minutes on 2 CPUs; the SLURM and interruption tests reuse its model and
prepared prompts (those two stages never use the executor) and run the other stages again.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from click.testing import CliRunner

from qrpo.cli import main as qrpo_main
from qrpo.pipeline.executor import LocalExecutor
from sandbox.datasets import BUILTIN_ORDER

from ..conftest import REPO, backend_or_fail

pytestmark = pytest.mark.slow

STAGES = ["model", "prepare", "generate", "grade", "build", "train", "evaluate"]
DEMO_PROBLEMS, SAMPLES = 14, 8  # tiny-cpu: the bundled demo problems, 8 reference completions each
# LeetCodeDataset v0.3.1-test solutions slower than the paper's 1 s per test on this kind of machine
# (../shared/data/README.md): they may time out, every other solution must pass every test.
SLOW = {
    "find-the-number-of-subsequences-with-equal-gcd": "the canonical solution needs ~22 s for its tests here",
    "maximum-number-of-moves-to-kill-all-pawns": "the canonical solution needs 10-15 s for its tests here",
    # One of its 85 tests takes ~0.9 s of CPU on a quiet machine, against the paper's 1 s per test: it passed
    # 3/3 quietly here, and timed out in a CI run under load (reward 84/85).
    "sorted-gcd-pair-queries": "one test needs ~0.9 s of the 1 s CPU limit; it times out under load",
}


def qrpo(*args: str, timeout: float = 1200, **environment: str) -> subprocess.CompletedProcess:
    """The real command line, in a subprocess (as a user runs it)."""
    env = dict(os.environ, **environment)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "qrpo.cli", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"qrpo failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def load(path: Path):
    from datasets import load_from_disk

    return load_from_disk(str(path))


def files_state(root: Path) -> dict[str, tuple[int, int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size)
            for p in root.rglob("*") if p.is_file() and p.name not in ("config.yaml", ".lock")}  # rewritten by every run


def copy_stages(source: Path, target: Path, stages: tuple[str, ...] = ("model", "prepare")) -> None:
    for stage in stages:
        shutil.copytree(source / stage, target / stage)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """`qrpo run tiny-cpu` from scratch, with the strongest sandbox backend here (apptainer in CI)."""
    root = tmp_path_factory.mktemp("tiny") / "run"
    started = time.monotonic()
    proc = ok(qrpo("run", "tiny-cpu", "--output-dir", str(root)))
    seconds = time.monotonic() - started
    print(f"\ntiny pipeline: {seconds:.0f} s end to end")
    return root, proc, seconds


# ---------------------------------------------------------------------------------------------------------------
# (1) end to end through apptainer, rerun skipped, resume after SIGKILL


def test_tiny_pipeline_end_to_end_through_apptainer(tiny_run):
    backend_or_fail("apptainer")
    root, proc, _ = tiny_run
    for stage in STAGES:
        record = json.loads((root / stage / "stage.json").read_text())
        assert record["stage"] == stage and record["fingerprint"]
    assert f"stages run: {', '.join(STAGES)}" in proc.stdout
    report = root / "evaluate" / "report.md"
    plots = [root / "evaluate" / "plots" / "rewards.png", root / "evaluate" / "plots" / "pass_rate.png"]
    assert f"report: {report}" in proc.stdout and f"plots: {', '.join(map(str, plots))}" in proc.stdout
    for plot in plots:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000

    # generate: 8 completions per prompt; grade: every one graded in apptainer, a mix of passes and failures
    graded = load(root / "grade" / "graded")
    assert len(graded) == DEMO_PROBLEMS * SAMPLES
    assert Counter(graded["task_id"]) == {t: SAMPLES for t in set(graded["task_id"])}
    assert len(set(graded["task_id"])) == DEMO_PROBLEMS
    assert set(graded["backend"]) == {"apptainer"}
    rewards = graded["reward"]
    assert all(0.0 <= r <= 1.0 for r in rewards)
    full, zero = sum(r == 1.0 for r in rewards), sum(r == 0.0 for r in rewards)
    assert full >= 10 and zero >= 10, f"the warmed-up tiny model should pass some and fail some: {full} full passes, {zero} zeros"
    by_task = defaultdict(set)
    for task, reward in zip(graded["task_id"], rewards):
        by_task[task].add(reward)
    assert sum(len(v) > 1 for v in by_task.values()) >= 5, "too few prompts with differing rewards: quantiles would all tie"
    assert set(load(root / "grade" / "solutions")["reward"]) == {1.0}  # every demo solution passes in the sandbox

    # build: 4 random pairs per prompt, with the 8 reference rewards of their prompt
    table = load(root / "build" / "train")
    assert len(table) == DEMO_PROBLEMS * 4
    assert set(table.column_names) >= {"prompt", "chosen", "rejected", "chosen_reward", "rejected_reward", "ref_rewards"}
    assert all(c >= r for c, r in zip(table["chosen_reward"], table["rejected_reward"]))
    assert all(len(refs) == SAMPLES for refs in table["ref_rewards"])
    assert table[0]["prompt"][0]["role"] == "user" and table[0]["chosen"][0]["role"] == "assistant"

    # train: both runs of the sweep finished, with checkpoints; QRPO batches pairs as DPO does (the reference):
    # 14 prompts x 4 pairs at 8 pairs per step
    assert "training 2 run(s): qrpo-beta0.1, dpo-beta0.1" in proc.stdout + proc.stderr
    for run in ("qrpo-beta0.1", "dpo-beta0.1"):
        model = root / "train" / run / "model"
        assert (model / "trainer_state.json").is_file() and list(model.glob("checkpoint-*"))
        assert json.loads((model / "trainer_state.json").read_text())["global_step"] == len(table) // 8 == 7

    # evaluate: the reference, every checkpoint, the oracles; graded in apptainer
    report_data = json.loads((root / "evaluate" / "report.json").read_text())
    policies = {p["policy"]: p for p in report_data["policies"]}
    expected = {"reference", "qrpo-beta0.1/checkpoint-7", "dpo-beta0.1/checkpoint-7", "oracle-solution", "oracle-empty"}
    assert expected <= set(policies)
    assert policies["oracle-solution"]["subsets"]["all"]["avg_pass"] == 100.0
    assert policies["oracle-empty"]["subsets"]["all"]["avg_pass"] == 0.0
    assert policies["reference"]["subsets"]["all"]["kl"] == 0.0
    # the reference's split (scikit-learn's, stratified): a difficulty with a single demo problem is in neither half
    assert report_data["subset_sizes"] == {"all": 14, "selection": 7, "reporting": 6}
    assert {"method:qrpo", "method:dpo"} <= {r["run"] for r in report_data["runs"]}  # per method, checkpoint-0 included
    results = load(root / "evaluate" / "results")
    assert len(results) == len(policies) * 2 * DEMO_PROBLEMS  # 2 seeds
    assert set(b for b in results["backend"] if b) == {"apptainer"}
    assert {r["run"] for r in report_data["runs"]} >= {"qrpo-beta0.1", "dpo-beta0.1", "reference"}
    assert "Avg. Pass %" in report.read_text()


def test_rerun_skips_every_stage(tiny_run):
    root, _, _ = tiny_run
    before = files_state(root)
    started = time.monotonic()
    proc = ok(qrpo("run", "tiny-cpu", "--output-dir", str(root)))
    for stage in STAGES:
        assert f"qrpo {stage}: skipped" in proc.stderr, proc.stderr[-3000:]
    assert "stages run: none (all done already)" in proc.stdout
    assert files_state(root) == before  # nothing rewritten
    assert time.monotonic() - started < 60
    status = ok(qrpo("status", "tiny-cpu", "--output-dir", str(root))).stdout
    assert all(f"  {stage:<9} done" in status for stage in STAGES), status


def test_interrupted_generate_resumes_without_redoing_finished_chunks(tiny_run, tmp_path):
    source, _, _ = tiny_run
    root = tmp_path / "run"
    copy_stages(source, root)
    options = ["tiny-cpu", "--output-dir", str(root), "--set", "generate.chunk_size=1"]  # 14 chunks of 1 prompt
    chunks = root / "generate" / "chunks"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    process = subprocess.Popen([sys.executable, "-m", "qrpo.cli", "generate", *options], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while not (chunks.is_dir() and list(chunks.glob("chunk-*"))):
            assert process.poll() is None, "generate ended before it saved a chunk"
            assert time.monotonic() < deadline, "no chunk saved within 300 s"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the whole process group, as a crash or an OOM kill would
        process.wait()
    saved = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in chunks.glob("chunk-*")}
    assert 1 <= len(saved) < DEMO_PROBLEMS, f"the kill came too late to test resumption: {len(saved)} chunks saved"
    assert not (root / "generate" / "stage.json").exists()
    status = ok(qrpo("status", *options)).stdout
    assert f"generate  partial    {len(saved)}/{DEMO_PROBLEMS} chunks saved" in status, status

    proc = ok(qrpo("generate", *options))
    assert f"{DEMO_PROBLEMS - len(saved)} of {DEMO_PROBLEMS} chunks to generate" in proc.stderr
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in chunks.glob("chunk-*")}
    assert len(after) == DEMO_PROBLEMS
    assert {name: after[name] for name in saved} == saved  # the finished chunks were not generated again
    completions = load(root / "generate" / "completions")
    assert len(completions) == DEMO_PROBLEMS * SAMPLES and set(Counter(completions["task_id"]).values()) == {SAMPLES}
    assert "skipped" in ok(qrpo("generate", *options)).stderr


def test_a_redone_stage_makes_the_next_one_redo_itself(tiny_run, tmp_path):
    source, _, _ = tiny_run
    root = tmp_path / "run"
    copy_stages(source, root, ("model", "prepare", "generate"))
    options = ["tiny-cpu", "--output-dir", str(root)]
    ok(qrpo("grade", *options))
    graded = json.loads((root / "grade" / "stage.json").read_text())
    assert "skipped" in ok(qrpo("grade", *options)).stderr
    ok(qrpo("generate", *options, "--force"))
    assert "grade     stale      an earlier stage was redone since" in ok(qrpo("status", *options)).stdout
    proc = ok(qrpo("grade", *options))
    assert "qrpo grade: redoing it: an earlier stage was redone since it ran" in proc.stderr
    regraded = json.loads((root / "grade" / "stage.json").read_text())
    assert regraded["fingerprint"] != graded["fingerprint"] and regraded["finished"] > graded["finished"]
    # same model, same seeds: the regenerated completions are the same, and so are their rewards
    assert load(root / "grade" / "graded")["reward"] == load(source / "grade" / "graded")["reward"]


def test_a_model_directory_is_used_as_it_is(tiny_run, tmp_path):
    model = tiny_run[0] / "model" / "model"
    proc = ok(qrpo("run", "tiny-cpu", "-o", str(tmp_path / "run"), "--set", f"model.name_or_path={model}",
                   "--set", "train.sweep=[]", "--set", "evaluate.seeds=1", "--set", "evaluate.oracles=[]"))
    assert "stages run: model, prepare, evaluate" in proc.stdout
    assert f"qrpo model: reference model {model} (nothing to build)" in proc.stderr
    assert not (tmp_path / "run" / "model" / "model").exists()
    prompts = load(tmp_path / "run" / "prepare" / "test")
    assert all(n > 0 for n in prompts["prompt_tokens"])  # counted with that model's tokenizer
    report = json.loads((tmp_path / "run" / "evaluate" / "report.json").read_text())
    assert [(p["policy"], p["path"]) for p in report["policies"]] == [("reference", str(model))]


# ---------------------------------------------------------------------------------------------------------------
# (2) the same pipeline on the local SLURM cluster


def sacct_states(job_ids: list[str]) -> dict[str, str]:
    deadline = time.monotonic() + 60
    while True:
        jobs = ",".join(sorted({j.split("_")[0] for j in job_ids}))
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", jobs],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        states = {line.split("|")[0]: line.split("|")[1].split()[0] for line in out.splitlines() if "|" in line}
        if all(states.get(j) not in (None, "PENDING", "RUNNING", "COMPLETING") for j in job_ids) or time.monotonic() > deadline:
            return states
        time.sleep(1)


def test_tiny_pipeline_on_slurm(tiny_run, slurm, tmp_path):
    local, _, _ = tiny_run
    root = tmp_path / "run"
    copy_stages(local, root)  # model and prepare run on the driver with either executor
    proc = ok(qrpo("run", "tiny-cpu", "--output-dir", str(root), "--executor", "slurm"))
    assert "stages run: generate, grade, build, train, evaluate" in proc.stdout
    jobs = {}
    for stage in ("generate", "grade", "train", "evaluate"):  # every stage's work through the one SLURM executor
        lines = (root / "slurm" / stage / "jobs.jsonl").read_text().splitlines()
        jobs[stage] = [json.loads(line)["job_id"] for line in lines]
    assert len(jobs["train"]) == 2 and len(jobs["grade"]) == 2  # one job per run; sandbox.jobs stripes of chunks
    manifest = json.loads((root / "grade" / "chunks" / "manifest.json").read_text())  # what `qrpo status` reads
    assert manifest["count"] >= 2 and len(list((root / "grade" / "chunks").glob("chunk-*.jsonl"))) == manifest["count"]
    all_ids = [j for ids in jobs.values() for j in ids]
    states = sacct_states(all_ids)
    assert all(states.get(j) == "COMPLETED" for j in all_ids), states
    # the same pipeline: the same model and seeds give the same completions, graded the same
    here, there = load(local / "grade" / "graded"), load(root / "grade" / "graded")
    assert there["completion"] == here["completion"]
    assert there["reward"] == here["reward"]
    for run in ("qrpo-beta0.1", "dpo-beta0.1"):
        assert (root / "train" / run / "model" / "trainer_state.json").is_file()
    report = json.loads((root / "evaluate" / "report.json").read_text())
    local_report = json.loads((local / "evaluate" / "report.json").read_text())
    assert [p["policy"] for p in report["policies"]] == [p["policy"] for p in local_report["policies"]]
    assert (root / "evaluate" / "plots" / "pass_rate.png").is_file()


# ---------------------------------------------------------------------------------------------------------------
# (3) LeetCode v0.3.1-test solutions as model samples: Avg. Pass 100% (but for the slow ones); empty: 0


def test_leetcode_solutions_score_avg_pass_100_and_empty_completions_0(shared_data, tmp_path):
    config = tmp_path / "canonical.yaml"
    config.write_text(
        "name: canonical-solutions\n"
        f"output_dir: {tmp_path / 'run'}\n"
        # the canonical solutions were written against the dataset's own preamble (`from heapq import *`, ...)
        f"data: {{test: {{path: {shared_data / 'leetcode' / 'LeetCodeDataset-v0.3.1-test.jsonl.gz'}}}, max_tokens: null, "
        "graded_preamble: pre_code+dataset}\n"
        # The CPU limit stays the default 1 s per test; the wall limit is raised from 3 s because wall time is the
        # machine's load, not the solution's work (two canonical solutions timed out on the wall clock alone in
        # loaded CI runs, a different one each time, while passing on a quiet machine).
        "sandbox: {wall_s: 10}\n"
        "train: {sweep: []}\n"  # no model: the oracles answer with the dataset's solution, or with nothing
        "evaluate: {seeds: 1, reference: false, oracles: [solution, empty]}\n"
    )
    proc = ok(qrpo("run", str(config)))
    assert "stages run: prepare, evaluate" in proc.stdout
    root = tmp_path / "run"
    prepared = json.loads((root / "prepare" / "stage.json").read_text())["summary"]["test"]
    assert prepared["problems"] == 228 - prepared["too_few_tests"] and prepared["problems"] >= 220
    prompts = load(root / "prepare" / "test")
    first = prompts[0]["prompt"]
    assert [m["role"] for m in first] == ["user"]  # one user turn, no system prompt
    assert "Your code will run after the following definitions and imports" in first[0]["content"]
    assert "You have to add the missing imports" in first[0]["content"]

    results = load(root / "evaluate" / "results").to_list()
    solutions = {r["task_id"]: r for r in results if r["policy"] == "oracle-solution"}
    empties = [r for r in results if r["policy"] == "oracle-empty"]
    assert len(solutions) == len(empties) == prepared["problems"]
    failing = {t: (r["reward"], r["verdict"]) for t, r in solutions.items() if r["reward"] != 1.0 and t not in SLOW}
    assert not failing, f"canonical solutions that did not pass every test: {failing}"
    others = [r["reward"] for t, r in solutions.items() if t not in SLOW]
    assert 100 * sum(others) / len(others) == 100.0
    assert all(r["reward"] == 0.0 and r["verdict"] == "no_code" for r in empties)
    report = {p["policy"]: p for p in json.loads((root / "evaluate" / "report.json").read_text())["policies"]}
    n = len(solutions)
    assert report["oracle-solution"]["subsets"]["all"]["avg_pass"] >= 100 * (n - len(SLOW)) / n
    assert report["oracle-empty"]["subsets"]["all"]["avg_pass"] == 0.0
    assert report["oracle-empty"]["subsets"]["all"]["strict_pass@1"] == 0.0


# ---------------------------------------------------------------------------------------------------------------
# other problem sources: every registered format prepares into chat prompts and gradable problems

SOURCES = {  # file, problems expected (MapCoder's APPS sample has 22 duplicate rows), text the prompt must hold
    "humaneval": ("humaneval/HumanEval.jsonl.gz", 164,
                  "Complete the following Python function.\n```python\nfrom typing import List"),
    "mbpp": ("mbpp/MbppPlus-v0.2.0.jsonl.gz", 378, "enclose it in a single ```python code block"),
    "stdio": ("apps/mapcoder_apps_selected150.jsonl", 128, "```python"),
}


@pytest.mark.parametrize("name", list(SOURCES))
def test_other_dataset_formats_prepare_into_prompts_and_problems(name, shared_data, tmp_path):
    from sandbox.problem import Problem

    path, count, text = SOURCES[name]
    proc = ok(qrpo("prepare", "tiny-cpu", "-o", str(tmp_path), "--set", f"data.test.path={shared_data / path}",
                   "--set", "data.train=null", "--set", "train.sweep=[]", "--set", "data.min_tests=null",
                   "--set", "data.max_tokens=null", "--set", "data.prompt_style=paper"))
    assert f"test: {count} problems from" in proc.stderr
    table = load(tmp_path / "prepare" / "test")
    assert len(table) == count and set(table["subset"]) == {"selection", "reporting"}
    assert text in table[0]["prompt"][0]["content"] and [m["role"] for m in table[0]["prompt"]] == ["user"]
    problem = Problem.from_dict(json.loads(table[0]["problem"]))
    assert problem.task_id == table[0]["task_id"] and len(problem.tests) == table[0]["num_tests"] > 0


def test_a_hub_dataset_that_cannot_be_reached_fails_in_one_line(tmp_path):
    proc = qrpo("prepare", "tiny-cpu", "-o", str(tmp_path), "--set", "data.test.path=newfacade/LeetCodeDataset",
                "--set", "data.test.split=test", "--set", "data.train=null", "--set", "train.sweep=[]",
                "--set", "data.max_tokens=null", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: data.test.path newfacade/LeetCodeDataset: could not load it from the Hugging Face Hub (")
    assert last.endswith("download the dataset file and give its path instead")


# ---------------------------------------------------------------------------------------------------------------
# (4) stale stages and --force


def test_changed_config_makes_a_stage_stale_and_force_redoes_it_and_what_follows(tmp_path):
    backend = backend_or_fail("bubblewrap")
    options = ["tiny-cpu", "--output-dir", str(tmp_path / "run"), "--set", "data.max_tokens=null", "--set", "train.sweep=[]",
               "--set", "evaluate.reference=false", "--set", "evaluate.oracles=[solution]", "--set", "evaluate.seeds=1",
               "--set", f"sandbox.backend={backend}"]
    ok(qrpo("run", *options))
    evaluated = json.loads((tmp_path / "run" / "evaluate" / "stage.json").read_text())
    changed = options + ["--set", "data.min_tests=25"]  # drops the demo problems with fewer than 25 tests
    proc = qrpo("run", *changed)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"Error: stage prepare: {tmp_path / 'run' / 'prepare'} was made from other inputs (config changed: data.min_tests); "
        "rerun with --force prepare to redo it (the stages after it follow)")
    status = ok(qrpo("status", *changed)).stdout
    assert "prepare   stale      config changed: data.min_tests" in status and "evaluate  stale" in status
    proc = ok(qrpo("run", *changed, "--force", "prepare"))
    assert "stages run: prepare, evaluate" in proc.stdout
    redone = json.loads((tmp_path / "run" / "evaluate" / "stage.json").read_text())
    assert redone["fingerprint"] != evaluated["fingerprint"]
    problems = json.loads((tmp_path / "run" / "prepare" / "stage.json").read_text())["summary"]["test"]
    assert problems["too_few_tests"] > 0 and redone["summary"]["policies"] == 1


# ---------------------------------------------------------------------------------------------------------------
# (5) bad input fails fast, in one line naming the fix


def bad_rows_file(tmp_path: Path) -> Path:
    path = tmp_path / "questions.jsonl"
    path.write_text(json.dumps({"id": 1, "question": "Add two numbers.", "answer": 3}) + "\n")
    return path


BAD_INPUTS = {
    "missing config": (lambda t: ["run", str(t / "nope.yaml")],
                       "config {t}/nope.yaml does not exist; give a YAML file or one of the bundled configs"),
    "unknown config key": (lambda t: ["run", "tiny-cpu", "--set", "generate.num_sample=4"],
                           "unknown config key 'generate.num_sample'; valid keys under generate: num_samples,"),
    "wrong value type": (lambda t: ["status", "tiny-cpu", "--set", "generate.num_samples=many"],
                         "config key 'generate.num_samples' must be an integer, got str 'many'"),
    "missing data file": (lambda t: ["prepare", "tiny-cpu", "-o", str(t / "out"), "--set", f"data.train.path={t}/none.jsonl"],
                          "data.train.path {t}/none.jsonl does not exist; give a JSONL(.gz) file of problems"),
    "unknown dataset format": (lambda t: ["prepare", "tiny-cpu", "-o", str(t / "out"),
                                          "--set", f"data.train.path={bad_rows_file(t)}",
                                          "--set", f"data.test.path={bad_rows_file(t)}", "--set", "data.max_tokens=null"],
                               "no row of {t}/questions.jsonl is a usable problem"),
    "unknown format name": (lambda t: ["prepare", "tiny-cpu", "--set", "data.train.format=csv"],
                            "config key 'data.train.format' is 'csv'; choose one of: auto, " + ", ".join(BUILTIN_ORDER)),
    "missing model": (lambda t: ["run", "tiny-cpu", "--set", f"model.name_or_path={t}/no-such-model"],
                      "model.name_or_path {t}/no-such-model does not exist; give a model directory"),
    "unknown training argument": (lambda t: ["train", "tiny-cpu", "-o", str(t / "out"),
                                             "--set", "train.sweep=[{loss_type: qrpo, betta: 0.1}]"],
                                  "unknown training argument 'betta' in train.sweep run"),
    "training argument outside its choices": (lambda t: ["run", "tiny-cpu", "-o", str(t / "out"),
                                                         "--set", "train.sweep=[{loss_type: [qrpo, dpo2]}]"],
                                              "training argument loss_type='dpo2' is not one of "
                                              "('qrpo', 'dpo', 'simpo', 'rebel') in train.sweep run 'dpo2'"),
    "unknown stage to force": (lambda t: ["run", "tiny-cpu", "-o", str(t / "out"), "--force", "grading"],
                               "--force grading: no such stage; stages: model, prepare"),
    "stage before its input": (lambda t: ["grade", "tiny-cpu", "-o", str(t / "out")],
                               "stage grade needs model, prepare, generate done first: "
                               "run `qrpo model CONFIG` and the next ones"),
    "override without value": (lambda t: ["run", "tiny-cpu", "--set", "generate.num_samples"],
                               "is not KEY=VALUE; write e.g. --set"),
}


STAGE_ERRORS = {"unknown dataset format", "stage before its input"}


def test_a_second_qrpo_in_the_same_output_directory_is_refused(tmp_path):
    from qrpo.pipeline import Pipeline, load_config

    pipeline = Pipeline(load_config("tiny-cpu", [f"output_dir={tmp_path}"]))
    with pipeline.lock():
        result = CliRunner().invoke(qrpo_main, ["prepare", "tiny-cpu", "-o", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.strip() == (f"Error: another qrpo (pid {os.getpid()}) is working in {tmp_path}; wait for it to finish, "
                                     "or give this one another directory (--output-dir)")
    assert not (tmp_path / "prepare").exists()


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_fast_with_one_line_naming_the_fix(case, tmp_path):
    make_args, expected = BAD_INPUTS[case]
    started = time.monotonic()
    result = CliRunner().invoke(qrpo_main, make_args(tmp_path))
    seconds = time.monotonic() - started
    lines = [line for line in result.output.splitlines() if line.strip()]
    # 2: a usage error (an option, a config key, a missing file it names); 1: a stage that cannot go on
    assert result.exit_code == (1 if case in STAGE_ERRORS else 2), result.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert expected.format(t=tmp_path) in lines[0], lines[0]
    assert seconds < 30


# ---------------------------------------------------------------------------------------------------------------
# issue 16, item 3: what a test runs. The reference code grades `pre_code + "\n" + extracted code` (no dataset
# preamble), so a solution that needs a name only the dataset's preamble imports fails there, and here by default.


def test_a_solution_needing_a_preamble_only_import_fails_as_in_the_reference(shared_data, tmp_path):
    import dataclasses

    from qrpo.pipeline.config import load_config
    from qrpo.pipeline.problems import load_source
    from qrpo.pipeline.prompts import PRE_CODE
    from qrpo.pipeline.sandbox_grading import grade_rows
    from qrpo.pipeline.stages.prepare import problem_rows
    from sandbox.problem import Problem

    task = "final-array-state-after-k-multiplication-operations-i"  # its solution calls heappush, imported by
    source = shared_data / "leetcode" / "LeetCodeDataset-v0.3.1-test.jsonl.gz"  # `from heapq import *` only
    config = load_config("tiny-cpu", [f"data.test.path={source}", "data.max_tokens=null", "sandbox.wall_s=1.0"])
    loaded = load_source("data.test", config.data.test, config.data)  # type: ignore[arg-type]
    loaded.problems = {task: loaded.problems[task]}
    code = loaded.problems[task].metadata["canonical_solution"]
    assert "heappush(" in code and "import" not in code and "from heapq import *" in loaded.problems[task].preamble
    assert "heappush" not in PRE_CODE.replace("import heapq", "")

    # The reference's rule, run as its judge runs it: exec(pre_code + "\n" + code), then the asserts.
    problem = loaded.problems[task]
    program = f"{PRE_CODE}\n{code}\ncandidate = {problem.entry_point}\n{problem.tests[0].source}\n"
    reference = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert reference.returncode != 0 and "NameError: name 'heap" in reference.stderr  # heapify, then heappush

    rewards = {}
    for preamble in ("pre_code", "pre_code+dataset"):
        row = problem_rows(loaded, "paper", preamble)[0]  # type: ignore[arg-type]
        problem = Problem.from_dict(json.loads(row["problem"]))
        assert dataclasses.asdict(problem)["preamble"] == (PRE_CODE if preamble == "pre_code" else
                                                           PRE_CODE + "\n" + loaded.problems[task].preamble)
        results = grade_rows({task: problem}, [{"task_id": task, "completion": row["solution"]}], tmp_path / preamble,
                             config, LocalExecutor(), "evaluate")
        rewards[preamble] = results[0].pass_rate
    assert rewards == {"pre_code": 0.0, "pre_code+dataset": 1.0}


# ---------------------------------------------------------------------------------------------------------------
# issue 16, item 5: the "sft" starting point: fine-tune on the training problems' answers, then that model is the
# reference policy (what generate samples, what train starts from, checkpoint-0 of the evaluation)


def test_the_sft_stage_makes_the_reference_policy(tmp_path):
    root = tmp_path / "run"
    proc = ok(qrpo("run", "tiny-cpu", "-o", str(root), "--set", "sft.enabled=true", "--set", "sft.answer=solution",
                   "--set", "sft.args={num_train_epochs: 2, learning_rate: 1.0e-3, per_device_train_batch_size: 4, "
                   "use_cpu: true, save_strategy: 'no', max_length: 512, logging_steps: 1}",
                   "--set", "train.sweep=[]", "--set", "evaluate.seeds=1", "--set", "evaluate.oracles=[]"))
    assert "stages run: model, prepare, sft, evaluate" in proc.stdout
    model = root / "sft" / "model"
    state = json.loads((model / "trainer_state.json").read_text())
    chats = load(root / "sft" / "train")
    assert len(chats) == DEMO_PROBLEMS and state["global_step"] == 2 * -(-DEMO_PROBLEMS // 4)
    first = chats[0]["messages"]
    assert [m["role"] for m in first] == ["user", "assistant"] and first[1]["content"].startswith("```python")
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert losses and all(math.isfinite(x) for x in losses)
    report = json.loads((root / "evaluate" / "report.json").read_text())
    assert [(p["policy"], p["path"]) for p in report["policies"]] == [("reference", str(model.resolve()))]
    again = ok(qrpo("run", "tiny-cpu", "-o", str(root), "--set", "sft.enabled=true", "--set", "sft.answer=solution",
                    "--set", "sft.args={num_train_epochs: 2, learning_rate: 1.0e-3, per_device_train_batch_size: 4, "
                    "use_cpu: true, save_strategy: 'no', max_length: 512, logging_steps: 1}",
                    "--set", "train.sweep=[]", "--set", "evaluate.seeds=1", "--set", "evaluate.oracles=[]"))
    assert "stages run: none" in again.stdout


# ---------------------------------------------------------------------------------------------------------------
# issue 16, item 6: `qrpo run CONFIG --plan` prints the recipe's numbers without running anything


@pytest.mark.parametrize("name,sft_line", [("leetcode-paper", None), ("leetcode-paper-sft", "sft: 2563 chats x 3 epochs = 60")])
def test_plan_prints_the_paper_recipe_without_running(name, sft_line, tmp_path):
    proc = ok(qrpo("run", name, "--plan", "-o", str(tmp_path / "run"), HF_HUB_OFFLINE="1"))
    out = proc.stdout
    assert "problems kept: train 2563" in out and "test 223" in out  # offline: the released revision's counts
    assert "reference completions: 2563 x 50 = 128150" in out
    assert "training table: 25630 pairs" in out and "per step: 128 pairs = 256 sequences; drop_last True" in out
    assert "runs: 36; optimizer steps per run: 200; checkpoints per run: 5 (steps 40, 80, 120, 160, 200)" in out
    assert "evaluation: 181 policies x 3 seeds x 223 test prompts = 121089 samples" in out
    assert "GPU-hours:" in out
    assert (sft_line in out) if sft_line else ("sft:" not in out)
    assert not (tmp_path / "run").exists()  # nothing ran
