"""Stage `sft` (optional, `sft.enabled`): the reference code's "sft" starting point.

The configured model is fine-tuned on the training problems' chats, the prepared prompt followed by the
dataset's answer (`sft.answer`: its `response`, as the reference code, or its canonical solution), with TRL's
SFTTrainer (`qrpo.pipeline.sft_run`, launched as the train stage launches its runs). The result, `sft/model`, is
then the reference policy: generate samples its reference completions, train starts from it and uses it as
pi_ref, evaluate scores it as checkpoint-0. Problems without an answer are left out (their count is recorded).
"""

from __future__ import annotations

from typing import Any

from sandbox.rundir import fingerprint, read_json, write_json

from ..config import ConfigError, PipelineConfig
from ..errors import StageError
from ..launch import launch_run
from ..layout import RunLayout, load_table, save_table
from ..stage import StageContext
from ..sweep import processes

NAME = "sft"
SUMMARY = "optional: fine-tune the model on the training problems' answers first (the reference's sft setting)"


def requires(config: PipelineConfig) -> list[str]:
    return ["prepare", "model"]


def inputs(config: PipelineConfig) -> dict[str, Any]:
    return {"sft": config.sft.model_dump(), "launcher": config.train.launcher}


def sft_args(config: PipelineConfig, output_dir: str, executor: str) -> dict[str, Any]:
    """trl.SFTConfig arguments: the configured ones, gradient accumulation from `sft.total_batch_size`."""
    args = {"report_to": "none", **config.sft.args, "output_dir": output_dir}
    total = config.sft.total_batch_size
    if total:
        per_device = int(args.get("per_device_train_batch_size", 8))
        world = processes(config, "slurm" if executor == "slurm" else "local")
        if total % (per_device * world):
            raise ConfigError(f"sft.total_batch_size {total} is not a multiple of per_device_train_batch_size {per_device} "
                              f"x {world} process(es); change one of them")
        args["gradient_accumulation_steps"] = total // (per_device * world)
    return args


def chats(prompts: Any, answer: str) -> list[dict[str, Any]]:
    """One `messages` row per training problem with a non-empty answer: the prompt, then the answer."""
    return [{"messages": [*row["prompt"], {"role": "assistant", "content": row[answer]}]}
            for row in prompts if str(row[answer] or "").strip()]


def run(ctx: StageContext) -> dict[str, Any]:
    config = ctx.config
    if not config.sft.enabled:
        raise StageError("sft: sft.enabled is false (the nosft setting); set --set sft.enabled=true to fine-tune first")
    folder = ctx.layout.stage("sft")
    prompts = load_table(ctx.layout.prompts("train"))
    rows = chats(prompts, config.sft.answer)
    if not rows:
        raise StageError(f"sft: no training problem has a non-empty {config.sft.answer!r}; set sft.answer to the other one")
    save_table(rows, folder / "train")
    model = folder / "model"
    args = sft_args(config, str(model.resolve()), ctx.executor.kind)
    spec = {"model_name_or_path": ctx.base_model_path(), "train_dataset": str((folder / "train").resolve()), "args": args}
    spec_fp = fingerprint({"args": {k: v for k, v in args.items() if k != "output_dir"},
                           "prepare": ctx.upstream_token("prepare"), "model": ctx.upstream_token("model")})
    record = read_json(folder / "run.json")
    if record is not None and record.get("fingerprint") != spec_fp:
        raise StageError(f"sft: {folder} was trained with other arguments or data; rerun with --force sft")
    if not (model / "trainer_state.json").is_file():
        write_json(folder / "spec.json", spec)
        write_json(folder / "run.json", {"fingerprint": spec_fp})
        nodes = config.slurm.train.nodes if ctx.executor.kind == "slurm" else 1
        ctx.say(f"fine-tuning {spec['model_name_or_path']} on {len(rows)} chats (prompt + {config.sft.answer})")
        ctx.executor.map("train", launch_run, [("qrpo.pipeline.sft_run", str(folder / "spec.json"), config.train.launcher,
                                                config.train.accelerate_config, nodes, config.cpu_threads)], config.slurm.train)
    state = read_json(model / "trainer_state.json") or {}
    if not state:
        raise StageError(f"sft: training ended without a final model in {model}; see {folder / 'train.log'} and rerun to resume")
    return {"model": str(model), "chats": len(rows), "left_out": len(prompts) - len(rows), "steps": state.get("global_step")}


def progress(layout: RunLayout) -> str | None:
    model = layout.stage("sft") / "model"
    saved = len(list(model.glob("checkpoint-*"))) if model.is_dir() else 0
    return f"{saved} checkpoints saved" if saved else None
