"""Reference log-probs computed once, before training, as TRL computes them: through the model the
distributed engine wrapped, under a cache key that every rank agrees on, in a cache written through
`sandbox.rundir`.

- The engine. Before `Trainer.train` wraps the policy, its weights may be partitioned (ZeRO-3 with
  `zero3_init`), on the CPU (ZeRO-1/2) or whole but unsharded (FSDP), so the pass runs through the wrapper
  the engine would use: a DeepSpeed inference engine (`trl.models.utils.prepare_deepspeed`, which places the
  weights and gathers ZeRO-3 shards) or an FSDP-sharded copy (`prepare_fsdp`, freed after the pass).
  Without either, the model itself runs on the device.
- The key. It names what determines the values: the tokenized rows (their ids, in order: not the `datasets`
  fingerprint, which also hashes unrelated training arguments, so a sweep over beta would never hit the
  cache), the full weights (sharded parameters are gathered first) and the precision. Rank 0 computes it
  and broadcasts it, so every rank reads and writes the same file whatever its shard holds.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, broadcast_object_list
from datasets import Dataset
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from qrpo.logprobs import sequence_logps
from sandbox.rundir import Hasher, fingerprint, write_atomic

ID_COLUMNS = ("prompt_ids", "completion_ids", "chosen_ids", "rejected_ids")


def wrap_for_engine(model: torch.nn.Module, accelerator: Accelerator) -> torch.nn.Module | None:
    """`model` wrapped for inference the way the engine wraps the policy (DeepSpeed, FSDP), or None when the
    engine needs no wrapper (single device, DDP). FSDP shards `model` in place: pass a copy of the policy."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        from trl.models.utils import prepare_deepspeed

        engine: torch.nn.Module = prepare_deepspeed(model, accelerator)
        return engine
    if accelerator.distributed_type == DistributedType.FSDP:
        from trl.models.utils import prepare_fsdp

        sharded = prepare_fsdp(model, accelerator)
        return cast(torch.nn.Module, sharded)
    return None


# ---------------------------------------------------------------------------------------------- the key


def weights_fingerprint(model: torch.nn.Module, accelerator: Accelerator) -> str:
    """Identity of a model's full weights: its config and the bytes of every parameter. A sharded parameter
    (an FSDP2 DTensor, a ZeRO-3 partition) is gathered first, so the value does not depend on the world size;
    every rank takes part in the gathers, rank 0 hashes, and its value is broadcast."""
    config = getattr(model, "config", None)
    digests: list[tuple[str, str]] = []
    for name, tensor in _full_parameters(model):
        if accelerator.is_main_process:
            flat = tensor.detach().cpu().contiguous().reshape(-1)
            digest = hashlib.sha256(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy().data)
            digests.append((name, digest.hexdigest()))
    value = [fingerprint(config.to_json_string() if config is not None else type(model).__name__, digests)]
    broadcast_object_list(value, from_process=0)
    return str(value[0])


def _full_parameters(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, whole tensor) for every parameter, gathering the sharded ones (a collective: every rank must
    iterate in the same order, which `named_parameters` guarantees)."""
    from torch.distributed.tensor import DTensor

    for name, param in model.named_parameters():
        if isinstance(param, DTensor):
            yield name, param.full_tensor()
        elif hasattr(param, "ds_id"):  # a ZeRO-3 partition: whole on every rank inside the context
            import deepspeed

            with deepspeed.zero.GatheredParameters([param]):
                yield name, param.data.clone()
        else:
            yield name, param


def rows_fingerprint(dataset: Dataset) -> str:
    """Identity of the tokenized rows the log-probs belong to: their token ids, in order."""
    columns = [c for c in ID_COLUMNS if c in dataset.column_names]
    hasher = Hasher().add(columns).add(len(dataset))
    for batch in dataset.select_columns(columns).iter(batch_size=1024):
        hasher.add([batch[c] for c in columns])
    return hasher.hexdigest()


def cache_key(dataset: Dataset, weights: str, precision: str, accelerator: Accelerator) -> str:
    """The cache file's name, computed on rank 0 and broadcast."""
    value = [fingerprint(rows_fingerprint(dataset), weights, precision) if accelerator.is_main_process else None]
    broadcast_object_list(value, from_process=0)
    return str(value[0])


# ---------------------------------------------------------------------------------------------- the cache


def cache_dir(configured: str | None, dataset: Dataset) -> Path:
    """Where cached log-probs go: the configured folder, else beside the dataset's files (where a sweep over
    the same table finds them), else $QRPO_CACHE or ~/.cache/qrpo."""
    if configured:
        return Path(configured)
    if dataset.cache_files and os.access(os.path.dirname(dataset.cache_files[0]["filename"]), os.W_OK):
        return Path(dataset.cache_files[0]["filename"]).parent / "qrpo-ref-logps"
    return Path(os.environ.get("QRPO_CACHE", Path.home() / ".cache" / "qrpo")) / "ref-logps"


def load_cached(path: Path) -> np.ndarray | None:
    return np.load(path) if path.is_file() else None


def save_cached(path: Path, values: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, values)
    write_atomic(path, buffer.getvalue())


# ---------------------------------------------------------------------------------------------- the pass


@torch.no_grad()
def compute_logps(
    model: torch.nn.Module, dataset: Dataset, collator: Any, accelerator: Accelerator, batch_size: int, name: str
) -> np.ndarray:
    """Log-probs of every row's completion(s) under `model`, shape (rows, 1) or (rows, 2) for pairs; each rank
    scores its share of the rows and the results are gathered."""
    per_row = 2 if "chosen_ids" in dataset.column_names else 1
    indexed = dataset.add_column("row_index", list(range(len(dataset))))
    loader = accelerator.prepare(DataLoader(indexed, batch_size=batch_size, collate_fn=collator))
    values = np.full((len(dataset), per_row), np.nan, dtype=np.float32)
    was_training = model.training
    model.eval()
    for batch in tqdm(loader, desc=f"{name}: reference log-probs", disable=not accelerator.is_local_main_process):
        with accelerator.autocast():  # the precision of the training forward, so step 0 has log-ratio 0
            logps = sequence_logps(model, batch).view(-1, per_row)
        rows, logps = accelerator.gather_for_metrics((batch["row_index"], logps))
        values[rows.cpu().numpy()] = logps.float().cpu().numpy()
    model.train(was_training)
    if np.isnan(values).any():
        raise RuntimeError(f"{name}: the reference pass left {int(np.isnan(values).any(1).sum())} rows without log-probs")
    return values
