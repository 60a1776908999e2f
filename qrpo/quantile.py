"""Quantile rewards: where a reward falls among the reference policy's rewards for the same prompt.

QRPO (arXiv 2507.08068) regresses onto the optimum of the KL-regularised objective,

    pi*(y|x) = pi_ref(y|x) exp(f(R_q(x, y)) / beta) / Z(x),

whose partition function Z is intractable for a raw reward but not for the quantile reward
R_q(x, y) = P_{y' ~ pi_ref(.|x)}(r(x, y') <= r(x, y)): under pi_ref it is uniform on [0, 1], so
Z = E_{u ~ U(0, 1)}[exp(f(u) / beta)] has a closed form (``qrpo.losses.log_partition``).
We estimate R_q from N reference rewards per prompt.

Ties. Uniformity needs a continuous reward. Pass rates tie a lot, so three rules are offered:
  - ``"upper"``: the fraction of references at or below the reward (the paper's ``<=``);
  - ``"mid"``: mid-rank, ties count one half; its mean under pi_ref is exactly 1/2, but it is not uniform;
  - ``"random"``: the randomised probability integral transform. The reward and its N references are
    exchangeable under pi_ref, so the reward's rank among the N + 1 values with ties broken at random is
    uniform on {0, ..., N}; adding a uniform fraction makes it uniform on [0, 1], for any reward
    distribution: u = (#less + V (#equal + 1)) / (N + 1) with V ~ U(0, 1).

Backends. Inputs that are torch tensors are computed with torch (on their device; quantiles carry no
gradient); anything else (numpy arrays, lists, ``datasets`` columns) with numpy. This module never imports
torch itself, so the data pipeline can precompute quantiles for millions of rows on nodes without it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

if TYPE_CHECKING:
    import torch

Ties = Literal["upper", "mid", "random"]
Method = Literal["auto", "broadcast", "sorted"]

TIES: tuple[Ties, ...] = get_args(Ties)
METHODS: tuple[Method, ...] = get_args(Method)

# "auto" uses the sorted path once each row of references is shared by this many rewards: sorting costs
# about N log N per row, and each search log N, against N comparisons per reward for broadcasting.
# numpy also needs long rows (see _use_sorted). Both measured on CPU with bench/quantiles.py.
SORTED_MIN_REWARDS_PER_ROW = 4
SORTED_MIN_REFERENCES_NUMPY = 128


def quantile_rewards(
    rewards: Any,
    ref_rewards: Any,
    *,
    ties: Ties = "upper",
    exclude_self: bool = False,
    seed: int | None = None,
    method: Method = "auto",
) -> Any:
    """Quantile of each reward among the rewards of its prompt's reference completions.

    Shapes: ``ref_rewards`` is (B, N), one row of N references per prompt, with ``rewards`` (B,) or (B, M)
    (M completions per prompt); or ``ref_rewards`` is (N,), one set shared by ``rewards`` of any shape.
    The result has the shape of ``rewards``: a float tensor for torch inputs, else a float64 numpy array.

    ``exclude_self``: the reward is one of its own references (in-sample data, as the paper's LeetCode
    set); one reference equal to it is left out, so it is ranked against the other N - 1 only. Ranking a
    sample against itself biases its quantile upwards and, for ``"random"``, breaks exact uniformity.

    ``seed`` makes ``ties="random"`` reproducible (None draws fresh entropy).
    ``method``: ``"broadcast"`` compares every reward with every reference (the paper's formula);
    ``"sorted"`` sorts each row of references once and binary-searches it, which is much faster when many
    rewards share a row; ``"auto"`` picks by that rule. Both give identical counts.
    """
    if ties not in TIES:
        raise ValueError(f"ties={ties!r} is not one of {TIES}")
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {METHODS}")
    if _is_torch_tensor(rewards) or _is_torch_tensor(ref_rewards):
        return _quantile_rewards_torch(rewards, ref_rewards, ties, exclude_self, seed, method)
    return _quantile_rewards_numpy(rewards, ref_rewards, ties, exclude_self, seed, method)


def reference_std(ref_rewards: Any) -> Any:
    """Per-prompt standard deviation of the reference rewards (unbiased, as ``torch.std`` in the paper).

    The scaled-normal-icdf transform multiplies by this std divided by its mean over the training set, so
    prompts whose references disagree more get a wider target; compute that mean once with this function.
    """
    refs: Any = ref_rewards if _is_torch_tensor(ref_rewards) else _as_float_array(ref_rewards, "ref_rewards")
    if refs.ndim == 0 or refs.shape[-1] < 2:
        raise ValueError(f"reference_std needs at least 2 references per prompt, got shape {tuple(refs.shape)}")
    return refs.std(dim=-1) if _is_torch_tensor(refs) else refs.std(axis=-1, ddof=1)


def from_counts(less: Any, less_equal: Any, num_references: int, ties: Ties, uniform: Any = None) -> Any:
    """The quantile from how many of the ``num_references`` references are below the reward (``less``)
    and at or below it (``less_equal``). Works on numpy arrays and torch tensors alike.

    ``less`` is unused for ``"upper"``; ``uniform`` holds the V ~ U(0, 1) draws that ``"random"`` needs.
    """
    n = num_references
    if ties == "upper":
        return less_equal / n
    if ties == "mid":
        return (less + less_equal) / (2 * n)
    if uniform is None:
        raise ValueError('ties="random" needs uniform draws')
    return (less + uniform * (less_equal - less + 1)) / (n + 1)


# ---------------------------------------------------------------------------------------------- helpers


def _is_torch_tensor(x: Any) -> bool:
    """True for torch tensors, without importing torch (it is loaded already if x is one)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _as_float_array(x: Any, name: str) -> np.ndarray:
    """numpy view of a numeric column (list, array, ``datasets`` column); clear errors otherwise."""
    try:
        array = np.asarray(x)
    except ValueError as error:  # ragged nested lists
        raise ValueError(
            f"{name} could not be read as a rectangular array ({error}); every prompt needs the same "
            "number of references: group rows by reference count, or pad and use a separate call per group"
        ) from None
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.bool_)
    ):
        raise ValueError(f"{name} must be numeric with a rectangular shape, got dtype {array.dtype}")
    return array.astype(np.float64, copy=False)


def _check_shapes(reward_shape: tuple[int, ...], ref_shape: tuple[int, ...], exclude_self: bool) -> int:
    """Validate the two shapes; return the number of references each reward is ranked against."""
    if len(ref_shape) not in (1, 2):
        raise ValueError(
            "ref_rewards must have shape (N,), one set of references shared by all rewards, or (B, N), "
            f"one row of N references per prompt; got shape {tuple(ref_shape)}"
        )
    if len(ref_shape) == 2:
        if len(reward_shape) not in (1, 2) or reward_shape[0] != ref_shape[0]:
            raise ValueError(
                f"rewards has shape {tuple(reward_shape)} but ref_rewards has shape {tuple(ref_shape)}: "
                "with one row of references per prompt, rewards must be (B,) or (B, M) with the same B "
                "(rewards[i] is ranked against ref_rewards[i])"
            )
    n = ref_shape[-1] - int(exclude_self)
    if n < 1:
        raise ValueError(
            f"ref_rewards has {ref_shape[-1]} references per prompt; at least {1 + int(exclude_self)} "
            f"needed{' with exclude_self=True' if exclude_self else ''}"
        )
    return n


def _raise_on_nan(index: tuple[int, ...], name: str) -> None:
    where = "".join(f"[{i}]" for i in index)
    raise ValueError(
        f"{name}{where} is NaN: a quantile of NaN is undefined. Map failed or missing grades to a number "
        "(e.g. reward 0.0 for a program that did not run) or drop the row before computing quantiles"
    )


def _raise_on_missing_self(index: tuple[int, ...]) -> None:
    where = "".join(f"[{i}]" for i in index)
    raise ValueError(
        f"exclude_self=True but rewards{where} equals none of its references; exclude_self is for "
        "in-sample data where each reward is one of its own references: pass exclude_self=False otherwise"
    )


def _use_sorted(method: str, reward_shape: tuple[int, ...], ref_shape: tuple[int, ...], numpy: bool) -> bool:
    """The rule behind ``method="auto"`` (measured on CPU; see bench/quantiles.py)."""
    if method != "auto":
        return method == "sorted"
    if len(ref_shape) == 1:  # one shared row: a native 1-D searchsorted
        return int(np.prod(reward_shape)) >= SORTED_MIN_REWARDS_PER_ROW
    rewards_per_row = int(np.prod(reward_shape)) // max(ref_shape[0], 1)
    # numpy counts a broadcast comparison at memory speed but has no batched searchsorted: its row-wise
    # binary search costs log2(N) numpy passes, which pays off only for long rows
    min_references = SORTED_MIN_REFERENCES_NUMPY if numpy else 1
    return rewards_per_row >= SORTED_MIN_REWARDS_PER_ROW and ref_shape[1] >= min_references


# ------------------------------------------------------------------------------------------------ numpy


def _quantile_rewards_numpy(
    rewards: Any, ref_rewards: Any, ties: Ties, exclude_self: bool, seed: int | None, method: Method
) -> np.ndarray:
    r = _as_float_array(rewards, "rewards")
    refs = _as_float_array(ref_rewards, "ref_rewards")
    n = _check_shapes(r.shape, refs.shape, exclude_self)
    for array, name in ((r, "rewards"), (refs, "ref_rewards")):
        if np.isnan(array.sum()):  # cheap screen: a sum is NaN if any term is (or with +inf and -inf)
            nans = np.argwhere(np.isnan(array))
            if len(nans):
                _raise_on_nan(tuple(int(i) for i in nans[0]), name)

    if refs.ndim == 1:
        use_sorted = _use_sorted(method, r.shape, refs.shape, numpy=True)
        sorted_refs = np.sort(refs) if use_sorted else refs

        def count(strict: bool) -> np.ndarray:
            if use_sorted:
                return np.searchsorted(sorted_refs, r, side="left" if strict else "right")
            below = refs < r[..., None] if strict else refs <= r[..., None]
            counts: np.ndarray = below.sum(axis=-1, dtype=np.int32)  # int32 sums bools faster than count_nonzero
            return counts

    else:
        rows = r.reshape(r.shape[0], -1)  # (B, M)
        use_sorted = _use_sorted(method, r.shape, refs.shape, numpy=True)
        sorted_refs = np.sort(refs, axis=1) if use_sorted else refs

        def count(strict: bool) -> np.ndarray:
            if use_sorted:
                counts = _count_sorted_rows_numpy(rows, sorted_refs, strict)
            else:
                pair = (refs[:, None, :], rows[:, :, None])  # (B, 1, N) against (B, M, 1)
                counts = (pair[0] < pair[1] if strict else pair[0] <= pair[1]).sum(axis=-1, dtype=np.int32)
            return counts.reshape(r.shape)

    def uniform() -> np.ndarray:
        return np.random.default_rng(seed).random(r.shape)

    return np.asarray(_quantiles(count, uniform, n, ties, exclude_self), dtype=np.float64)


def _quantiles(
    count: Callable[[bool], Any], uniform: Callable[[], Any], n: int, ties: Ties, exclude_self: bool
) -> Any:
    """Shared by both backends: counts -> (self exclusion) -> quantiles."""
    less_equal = count(False)
    less = count(True) if ties != "upper" or exclude_self else None
    if exclude_self:
        missing = less_equal - less < 1
        if bool(missing.any()):
            _raise_on_missing_self(_first_index(missing))
        less_equal = less_equal - 1  # one reference equal to the reward is the reward itself
    return from_counts(less, less_equal, n, ties, uniform() if ties == "random" else None)


def _first_index(mask: Any) -> tuple[int, ...]:
    indices = mask.nonzero()[0] if _is_torch_tensor(mask) else np.argwhere(mask)[0]
    return tuple(int(i) for i in indices)


def _count_sorted_rows_numpy(rows: np.ndarray, sorted_refs: np.ndarray, strict: bool) -> np.ndarray:
    """Row-wise ``searchsorted`` for numpy, whose own is 1-D only: per reward, how many references of its
    row are below it (``strict``) or at or below it.

    A branch-free binary search run on all rewards at once: log2(N) vectorised passes, each probing one
    reference per reward and keeping the step when that reference still counts.
    """
    n = sorted_refs.shape[1]
    count = np.zeros(rows.shape, dtype=np.int64)
    step = 1 << (n.bit_length() - 1)  # largest power of two <= n
    while step:
        candidate = count + step
        probe = np.take_along_axis(sorted_refs, np.minimum(candidate, n) - 1, axis=1)
        below = probe < rows if strict else probe <= rows
        count = np.where((candidate <= n) & below, candidate, count)
        step >>= 1
    return count


# ------------------------------------------------------------------------------------------------ torch


def _quantile_rewards_torch(
    rewards: Any, ref_rewards: Any, ties: Ties, exclude_self: bool, seed: int | None, method: Method
) -> torch.Tensor:
    import torch  # already imported by the caller: an input is a tensor

    device = (rewards if isinstance(rewards, torch.Tensor) else ref_rewards).device
    r = torch.as_tensor(rewards, device=device)
    refs = torch.as_tensor(ref_rewards, device=device)
    n = _check_shapes(tuple(r.shape), tuple(refs.shape), exclude_self)
    dtype = torch.float64 if torch.float64 in (r.dtype, refs.dtype) else torch.float32
    for tensor, name in ((r, "rewards"), (refs, "ref_rewards")):
        if tensor.is_floating_point() and bool(torch.isnan(tensor.sum())):  # cheap screen, as for numpy
            nans = torch.isnan(tensor)
            if bool(nans.any()):
                _raise_on_nan(tuple(int(i) for i in nans.nonzero()[0]), name)
    # searchsorted wants one dtype; comparisons are exact in the promoted type
    common = torch.promote_types(r.dtype, refs.dtype)
    r, refs = r.to(common), refs.to(common)

    use_sorted = _use_sorted(method, tuple(r.shape), tuple(refs.shape), numpy=False)
    if refs.ndim == 1:
        sorted_refs = _sort_rows_torch(refs) if use_sorted else refs

        def count(strict: bool) -> torch.Tensor:
            if use_sorted:
                counts = torch.searchsorted(sorted_refs, r, side="left" if strict else "right", out_int32=True)
            else:
                below = refs < r.unsqueeze(-1) if strict else refs <= r.unsqueeze(-1)
                counts = below.sum(-1, dtype=torch.int32)  # int32: much faster than bool -> int64 on CPU
            return counts.to(dtype)

    else:
        rows = r.reshape(r.shape[0], -1).contiguous()  # (B, M)
        sorted_refs = _sort_rows_torch(refs) if use_sorted else refs

        def count(strict: bool) -> torch.Tensor:
            if use_sorted:
                counts = torch.searchsorted(sorted_refs, rows, side="left" if strict else "right", out_int32=True)
            else:
                pair = (refs.unsqueeze(1), rows.unsqueeze(-1))  # (B, 1, N) against (B, M, 1)
                counts = (pair[0] < pair[1] if strict else pair[0] <= pair[1]).sum(-1, dtype=torch.int32)
            return counts.reshape(r.shape).to(dtype)

    def uniform() -> torch.Tensor:
        generator = torch.Generator(device=r.device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        return torch.rand(r.shape, generator=generator, device=r.device, dtype=dtype)

    quantiles: torch.Tensor = _quantiles(count, uniform, n, ties, exclude_self)
    return quantiles


def _sort_rows_torch(refs: torch.Tensor) -> torch.Tensor:
    """Sort along the last dimension. On CPU numpy's vectorised sort is ~20x faster than torch's for many
    short rows (20,000 x 50: 2 ms against 40 ms), so it is used where the dtype allows."""
    import torch

    if refs.device.type == "cpu" and refs.dtype in (torch.float32, torch.float64, torch.int32, torch.int64):
        return torch.from_numpy(np.sort(refs.detach().numpy(), axis=-1))
    return torch.sort(refs, dim=-1).values.contiguous()
