"""The test split's two halves: `selection` (picks checkpoints and hyperparameters) and `reporting` (what is
reported), stratified by difficulty.

`sklearn` reproduces the reference code's halves exactly (its create_eval_split.py: `train_test_split(indices,
test_size=0.5, random_state=43, stratify=difficulty)` over the filtered test rows in dataset order, groups with
fewer than 2 rows left out; the first part reports, the second selects). The steps of scikit-learn's
`StratifiedShuffleSplit` are written out here on numpy's RandomState, so the product does not depend on
scikit-learn; tests compare the ids with scikit-learn's own. `per-difficulty` is the project's: each difficulty
shuffled by task id, so a problem's half does not depend on the row order or on which other rows were kept.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from typing import Literal, get_args

import numpy as np

SplitMethod = Literal["sklearn", "per-difficulty"]
SPLIT_METHODS: tuple[SplitMethod, ...] = get_args(SplitMethod)


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """scikit-learn's `_approximate_mode`: per class, its share of n_draws, floored, the remainder handed out
    to the largest fractional parts (ties drawn at random)."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            inds = rng.choice(inds, size=add_now, replace=False)
            floored[inds] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


def sklearn_halves(labels: list[str], test_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Row positions of (first part, second part) as `train_test_split(range(n), test_size=test_fraction,
    random_state=seed, stratify=labels)` returns them, after leaving out labels with fewer than 2 rows."""
    counts = Counter(labels)
    kept = [i for i, label in enumerate(labels) if counts[label] >= 2]
    y = np.asarray([labels[i] for i in kept])
    n = len(kept)
    n_test = math.ceil(test_fraction * n)
    n_train = n - n_test
    classes, y_indices = np.unique(y, return_inverse=True)
    class_counts = np.bincount(y_indices)
    class_indices = np.split(np.argsort(y_indices, kind="mergesort"), np.cumsum(class_counts)[:-1])
    rng = np.random.RandomState(seed)
    n_i = _approximate_mode(class_counts, n_train, rng)
    t_i = _approximate_mode(class_counts - n_i, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for i in range(len(classes)):
        permutation = rng.permutation(class_counts[i])
        members = class_indices[i].take(permutation, mode="clip")
        train.extend(members[: n_i[i]])
        test.extend(members[n_i[i] : n_i[i] + t_i[i]])
    first, second = rng.permutation(train), rng.permutation(test)
    return [kept[int(i)] for i in first], [kept[int(i)] for i in second]


def assign_subsets(rows: list[dict], reporting_fraction: float, seed: int, method: SplitMethod) -> None:
    """Set each test row's `subset`: selection, reporting, or `none` (sklearn: a difficulty with one row)."""
    if method == "sklearn":
        reporting, selection = sklearn_halves([r["difficulty"] for r in rows], 1 - reporting_fraction, seed)
        for row in rows:
            row["subset"] = "none"
        for i in reporting:
            rows[i]["subset"] = "reporting"
        for i in selection:
            rows[i]["subset"] = "selection"
        return
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["difficulty"]].append(row)
    rng = random.Random(seed)
    for name in sorted(groups):
        members = sorted(groups[name], key=lambda r: r["task_id"])
        rng.shuffle(members)
        count = round(len(members) * reporting_fraction)
        for i, row in enumerate(members):
            row["subset"] = "reporting" if i < count else "selection"
