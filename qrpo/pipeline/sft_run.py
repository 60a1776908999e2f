"""The `sft` stage's training process: `python -m qrpo.pipeline.sft_run SPEC.json` (or under accelerate launch).

SPEC.json: {"model_name_or_path": str, "train_dataset": <a `messages` table saved with save_to_disk>,
            "args": {trl.SFTConfig fields, "output_dir" among them}}

TRL's SFTTrainer on conversational rows counts every token (prompt and answer), as the reference code's
TRL 0.13 did; packing stays off. It resumes from the last checkpoint in output_dir and writes the final
model, tokenizer and (last) trainer_state.json there; a finished output_dir is left alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sandbox.rundir import read_json


def main(spec_path: str) -> Path:
    import torch
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_utils import get_last_checkpoint
    from trl import SFTConfig, SFTTrainer

    spec = read_json(Path(spec_path))
    if not isinstance(spec, dict) or not {"model_name_or_path", "train_dataset", "args"} <= spec.keys():
        raise SystemExit(f"qrpo.pipeline.sft_run: {spec_path} must be a JSON object with model_name_or_path, "
                         "train_dataset and args")
    args = SFTConfig(**{"packing": False, **spec["args"]})
    output_dir = Path(args.output_dir or ".")
    if (output_dir / "trainer_state.json").is_file():
        print(f"qrpo.pipeline.sft_run: {output_dir} holds a finished run; nothing to do")
        return output_dir
    dtype = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else "auto"
    model = AutoModelForCausalLM.from_pretrained(spec["model_name_or_path"], dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(spec["model_name_or_path"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    trainer = SFTTrainer(model=model, args=args, train_dataset=load_from_disk(spec["train_dataset"]),
                         processing_class=tokenizer)
    last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    trainer.train(resume_from_checkpoint=last)
    trainer.save_model(str(output_dir))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(output_dir))
        trainer.state.save_to_json(str(output_dir / "trainer_state.json"))
    return output_dir


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        raise SystemExit(0 if len(sys.argv) == 2 else 2)
    main(sys.argv[1])
