"""Run by test_train_launch.py, alone or under torchrun: QRPOTrainer's reference pass, and what it saw.

    python fsdp_reference.py WORKDIR OUT.json [fsdp2]

With `fsdp2` the accelerator is declared FSDP2 before the pass: accelerate enables FSDP only on accelerators
(on a CPU it reports MULTI_CPU), so the test declares it; the sharding (torch `fully_shard`) and the
collectives (gloo) are real. Rank 0 writes OUT.json: the reference log-probs, the cache file's name, the
weight fingerprint of the policy and of an FSDP-sharded copy of it, and the module the pass ran through.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from datasets import load_from_disk
from torch.distributed.tensor import DTensor
from transformers import AutoTokenizer

from qrpo import reference
from qrpo.config import QRPOConfig
from qrpo.trainer import QRPOTrainer, load_model


def declare_fsdp2() -> None:
    state = AcceleratorState()
    state.distributed_type = DistributedType.FSDP
    state.fsdp_plugin = FullyShardedDataParallelPlugin(fsdp_version=2)


def main(root: Path, out: Path, fsdp2: bool) -> None:
    name = "fsdp2" if fsdp2 else "single"
    args = QRPOConfig(output_dir=str(root / f"ref-out-{name}"), use_cpu=True, report_to=[], beta=0.1, seed=0,
                      per_device_eval_batch_size=3, ref_log_probs_cache_dir=str(root / f"ref-cache-{name}"), disable_tqdm=True)
    model = load_model(str(root / "model"), args)
    trainer = QRPOTrainer(model=model, args=args, train_dataset=load_from_disk(str(root / "data")),
                          processing_class=AutoTokenizer.from_pretrained(root / "model"))
    if fsdp2:
        declare_fsdp2()
    passes: list[str] = []
    compute = reference.compute_logps

    def observed(engine: Any, *rest: Any, **options: Any) -> Any:  # which module the pass runs through
        passes.append(type(engine).__name__)
        return compute(engine, *rest, **options)

    reference.compute_logps = observed  # type: ignore[assignment]
    dataset = trainer._with_ref_logps(trainer.train_dataset, "train")
    accelerator = trainer.accelerator
    if fsdp2:
        declare_fsdp2()  # again: wrapping re-reads accelerate's state, which says MULTI_CPU on a CPU
    sharded = reference.wrap_for_engine(copy.deepcopy(model), accelerator) if fsdp2 else None
    sharded_weights = reference.weights_fingerprint(sharded, accelerator) if sharded is not None else None
    if accelerator.is_main_process:
        out.write_text(json.dumps({
            "processes": accelerator.num_processes,
            "passes": passes,
            "ref_logps": list(dataset["ref_logps"]),
            "cache_files": sorted(p.name for p in Path(args.ref_log_probs_cache_dir or "").glob("*.npy")),
            "weights": reference.weights_fingerprint(model, accelerator),
            "sharded_weights": sharded_weights,
            "sharded_parameters": sum(isinstance(p, DTensor) for p in sharded.parameters()) if sharded is not None else 0,
        }))
    else:
        reference.weights_fingerprint(model, accelerator)  # a collective: every rank takes part
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), len(sys.argv) > 3 and sys.argv[3] == "fsdp2")
