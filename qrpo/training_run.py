"""One training run from its spec: `python -m qrpo.training_run SPEC.json`, or under `accelerate launch`:

    accelerate launch --config_file qrpo/configs/accelerate/zero3.yaml -m qrpo.training_run SPEC.json

SPEC.json: {"model_name_or_path": str, "train_dataset": <a datasets table saved with save_to_disk>,
            "eval_dataset": <optional, same>, "args": {QRPOConfig fields, "output_dir" among them}}

A spec file (not command-line flags) because the pipeline writes it and a SLURM job replays it exactly.
It resumes from the last checkpoint in output_dir, so a preempted job just runs again; it saves the
final model, tokenizer and trainer_state.json to output_dir, and a finished output_dir is left alone.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from sandbox.rundir import read_json

KNOWN_KEYS = {"model_name_or_path", "train_dataset", "eval_dataset", "args"}


def load_spec(path: str | Path) -> dict[str, Any]:
    """Read and check a spec; every problem is one line naming the key and the fix."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"qrpo.training_run: spec {path} does not exist; write one (see `python -m qrpo.training_run --help`)")
    spec = read_json(path)
    if not isinstance(spec, dict):
        raise SystemExit(f"qrpo.training_run: spec {path} is not a JSON object; "
                         "write one (see `python -m qrpo.training_run --help`)")
    unknown = set(spec) - KNOWN_KEYS
    if unknown:
        raise SystemExit(f"qrpo.training_run: unknown key(s) {sorted(unknown)} in {path}; valid keys: {sorted(KNOWN_KEYS)}")
    for key in ("model_name_or_path", "train_dataset", "args"):
        if key not in spec:
            raise SystemExit(f"qrpo.training_run: {path} lacks {key!r}")
    for key in ("train_dataset", "eval_dataset"):
        if key in spec and not Path(spec[key]).is_dir():
            raise SystemExit(f"qrpo.training_run: {key} {spec[key]} is not a directory saved with Dataset.save_to_disk; "
                             "run `qrpo build` first")
    return spec


def train(spec: dict[str, Any]) -> Path:
    from datasets import load_from_disk
    from transformers import AutoTokenizer
    from transformers.trainer_utils import get_last_checkpoint

    from qrpo.config import QRPOConfig, unknown_arguments
    from qrpo.trainer import QRPOTrainer, load_model

    unknown = unknown_arguments(spec["args"])
    if unknown:
        raise ValueError(f"unknown training argument(s) {unknown}; see QRPOConfig / transformers.TrainingArguments")
    args = QRPOConfig(**spec["args"])
    output_dir = Path(args.output_dir or ".")
    if (output_dir / "trainer_state.json").is_file():  # written last, by a finished run
        print(f"qrpo.training_run: {output_dir} holds a finished run; nothing to do (delete it to train again)")
        return output_dir
    model_path = spec["model_name_or_path"]
    model = load_model(model_path, args)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    eval_dataset = load_from_disk(spec["eval_dataset"]) if spec.get("eval_dataset") else None
    trainer = QRPOTrainer(
        model=model,
        args=args,
        train_dataset=load_from_disk(spec["train_dataset"]),
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
    )
    checkpoint = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(output_dir))
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(output_dir)
        trainer.save_state()
    # Every process leaves together and takes its process group down: a rank that exits while rank 0 is still
    # saving aborts in gloo's teardown ("terminate called without an active exception", seen in CI).
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
    return output_dir


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__)
        raise SystemExit(0 if argv and argv[0] in ("-h", "--help") else 2)
    spec = load_spec(argv[0])
    try:
        train(spec)
    except (FileNotFoundError, ValueError) as error:  # bad model path, bad rows, bad arguments: one line
        raise SystemExit(f"qrpo.training_run: {error}") from None


if __name__ == "__main__":
    main()
