"""Quantile rewards: the paper's formula, tie rules, both backends, both paths, and uniformity.

Uniformity of R_q under the reference policy is what makes QRPO's partition function exact, so the
statistical tests here check it directly (Kolmogorov-Smirnov, seeded, deterministic).
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from qrpo.losses import Transform, log_partition, transform_quantiles
from qrpo.quantile import TIES, Method, Ties, quantile_rewards, reference_std

REPO_ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ("numpy", "torch")
METHODS: tuple[Method, ...] = ("broadcast", "sorted")


def as_backend(x: object, backend: str) -> object:
    return torch.tensor(x, dtype=torch.float64) if backend == "torch" else np.asarray(x, dtype=np.float64)


def to_numpy(x: object) -> np.ndarray:
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def paper_quantiles(rewards: torch.Tensor, ref_rewards: torch.Tensor) -> torch.Tensor:
    """The paper's formula, verbatim."""
    return (ref_rewards <= rewards.unsqueeze(dim=1)).float().mean(dim=1)


# ------------------------------------------------------------------------------------- exact values


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", METHODS)
def test_tie_rules_on_a_hand_example(backend: str, method: Method) -> None:
    # reward 2 among references [1, 2, 2, 3]: 1 below, 2 equal, 1 above
    rewards = as_backend([2.0, 0.0, 5.0], backend)
    refs = as_backend([[1, 2, 2, 3]] * 3, backend)
    upper = to_numpy(quantile_rewards(rewards, refs, ties="upper", method=method))
    mid = to_numpy(quantile_rewards(rewards, refs, ties="mid", method=method))
    random = to_numpy(quantile_rewards(rewards, refs, ties="random", method=method, seed=0))
    np.testing.assert_allclose(upper, [3 / 4, 0, 1])
    np.testing.assert_allclose(mid, [2 / 4, 0, 1])  # (1 + 2/2) / 4
    # (less + V (equal + 1)) / (N + 1): [1/5, 4/5] for the tie, [0, 1/5] below all, [4/5, 1] above all
    assert 1 / 5 <= random[0] <= 4 / 5
    assert 0 <= random[1] <= 1 / 5
    assert 4 / 5 <= random[2] <= 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_exclude_self_ranks_against_the_other_references(backend: str) -> None:
    refs = as_backend([[1, 2, 3, 4], [2, 2, 3, 5]], backend)
    rewards = as_backend([2.0, 2.0], backend)  # each is one of its own references
    upper = to_numpy(quantile_rewards(rewards, refs, exclude_self=True))
    mid = to_numpy(quantile_rewards(rewards, refs, ties="mid", exclude_self=True))
    # others: [1, 3, 4] -> 1 of 3 at or below; [2, 3, 5] -> 1 of 3 at or below, 0 below
    np.testing.assert_allclose(upper, [1 / 3, 1 / 3])
    np.testing.assert_allclose(mid, [1 / 3, 1 / 6])
    np.testing.assert_allclose(to_numpy(quantile_rewards(rewards, refs)), [2 / 4, 2 / 4])


@pytest.mark.parametrize("backend", BACKENDS)
def test_exclude_self_requires_the_reward_among_its_references(backend: str) -> None:
    with pytest.raises(ValueError, match=r"exclude_self=True but rewards\[1\] equals none"):
        quantile_rewards(as_backend([1.0, 2.5], backend), as_backend([[1, 2], [2, 3]], backend), exclude_self=True)
    with pytest.raises(ValueError, match="at least 2 needed with exclude_self"):
        quantile_rewards(as_backend([1.0], backend), as_backend([[1.0]], backend), exclude_self=True)


# ------------------------------------------------------------------------------ agreement properties

small_ints = st.integers(min_value=-3, max_value=3)  # few values: many ties


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_upper_is_the_paper_formula(data: st.DataObject) -> None:
    b = data.draw(st.integers(1, 6), label="B")
    n = data.draw(st.integers(1, 12), label="N")
    rewards = torch.tensor(data.draw(st.lists(small_ints, min_size=b, max_size=b)), dtype=torch.float32)
    refs = torch.tensor(
        data.draw(st.lists(st.lists(small_ints, min_size=n, max_size=n), min_size=b, max_size=b)),
        dtype=torch.float32,
    )
    expected = paper_quantiles(rewards, refs)
    for method in METHODS:
        assert torch.equal(quantile_rewards(rewards, refs, method=method), expected)
        np.testing.assert_allclose(quantile_rewards(rewards.numpy(), refs.numpy(), method=method), expected, rtol=1e-6)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_paths_and_backends_agree_for_every_tie_rule(data: st.DataObject) -> None:
    b = data.draw(st.integers(1, 5), label="B")
    m = data.draw(st.integers(1, 6), label="M")
    n = data.draw(st.integers(1, 40), label="N")  # crosses powers of two for the numpy binary search
    values = st.one_of(small_ints, st.floats(-1e3, 1e3, allow_nan=False))
    rewards = np.array(data.draw(st.lists(values, min_size=b * m, max_size=b * m)), dtype=np.float64).reshape(b, m)
    refs = np.array(data.draw(st.lists(values, min_size=b * n, max_size=b * n)), dtype=np.float64).reshape(b, n)
    for ties in TIES:
        results = [
            to_numpy(quantile_rewards(backend(rewards), backend(refs), ties=ties, method=method, seed=7))
            for backend in (np.asarray, torch.from_numpy)
            for method in METHODS
        ]
        assert results[0].shape == (b, m)
        np.testing.assert_array_equal(results[0], results[1])  # numpy: broadcast == sorted
        np.testing.assert_array_equal(results[2], results[3])  # torch: broadcast == sorted
        if ties != "random":  # the backends draw V from different generators
            np.testing.assert_allclose(results[0], results[2], rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", METHODS)
def test_shared_references_equal_one_row_per_prompt(backend: str, method: Method) -> None:
    rng = np.random.default_rng(0)
    refs = rng.integers(0, 5, size=7).astype(np.float64)
    rewards = rng.integers(-1, 6, size=(3, 4)).astype(np.float64)
    shared = quantile_rewards(as_backend(rewards, backend), as_backend(refs, backend), ties="mid", method=method)
    per_row = quantile_rewards(
        as_backend(rewards, backend), as_backend(np.tile(refs, (3, 1)), backend), ties="mid", method=method
    )
    assert to_numpy(shared).shape == (3, 4)
    np.testing.assert_array_equal(to_numpy(shared), to_numpy(per_row))


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_ties_are_reproducible_from_the_seed(backend: str) -> None:
    rewards, refs = as_backend([0.5] * 50, backend), as_backend([[0.5, 0.5, 1.0]] * 50, backend)
    first = to_numpy(quantile_rewards(rewards, refs, ties="random", seed=3))
    np.testing.assert_array_equal(first, to_numpy(quantile_rewards(rewards, refs, ties="random", seed=3)))
    assert not np.array_equal(first, to_numpy(quantile_rewards(rewards, refs, ties="random", seed=4)))
    assert ((first >= 0) & (first <= 3 / 4)).all()  # (0 + V (2 + 1)) / (3 + 1)


def test_torch_dtypes() -> None:
    refs = torch.tensor([[1, 2, 3]])
    assert quantile_rewards(torch.tensor([2]), refs).dtype == torch.float32  # integer rewards: pass counts
    assert quantile_rewards(torch.tensor([2.0], dtype=torch.float64), refs).dtype == torch.float64
    assert quantile_rewards(torch.tensor([2.0], dtype=torch.bfloat16), refs).dtype == torch.float32


# ------------------------------------------------------------------------------------ input handling


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_rewards_are_rejected_with_their_position(backend: str) -> None:
    with pytest.raises(ValueError, match=r"rewards\[1\] is NaN.*Map failed or missing grades"):
        quantile_rewards(as_backend([0.0, math.nan], backend), as_backend([[0, 1], [0, 1]], backend))
    with pytest.raises(ValueError, match=r"ref_rewards\[0\]\[1\] is NaN"):
        quantile_rewards(as_backend([0.0], backend), as_backend([[0, math.nan]], backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_shape_mismatches_are_rejected(backend: str) -> None:
    with pytest.raises(ValueError, match=r"rewards has shape \(3,\) but ref_rewards has shape \(2, 4\)"):
        quantile_rewards(as_backend(np.zeros(3), backend), as_backend(np.zeros((2, 4)), backend))
    with pytest.raises(ValueError, match=r"ref_rewards must have shape \(N,\).*got shape \(2, 3, 4\)"):
        quantile_rewards(as_backend(np.zeros(2), backend), as_backend(np.zeros((2, 3, 4)), backend))
    with pytest.raises(ValueError, match="at least 1 needed"):
        quantile_rewards(as_backend(np.zeros(2), backend), as_backend(np.zeros((2, 0)), backend))


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="rectangular"):
        quantile_rewards([1.0, 2.0], [[1.0, 2.0], [1.0]])  # ragged reference lists
    with pytest.raises(ValueError, match="numeric"):
        quantile_rewards(["a"], [["b"]])
    with pytest.raises(ValueError, match="ties='lower' is not one of"):
        quantile_rewards([1.0], [[1.0]], ties="lower")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method='fast' is not one of"):
        quantile_rewards([1.0], [[1.0]], method="fast")  # type: ignore[arg-type]


def test_plain_columns_give_numpy_arrays() -> None:
    """What a `datasets` column looks like to the pipeline: lists of numbers and lists of lists."""
    result = quantile_rewards([0.0, 1.0, 0.5], [[0.0, 1.0], [0.0, 1.0], [0.5, 0.5]])
    assert isinstance(result, np.ndarray) and result.dtype == np.float64
    np.testing.assert_allclose(result, [0.5, 1.0, 1.0])


def test_datasets_columns() -> None:
    datasets = pytest.importorskip("datasets")
    table = datasets.Dataset.from_dict({"reward": [0.0, 1.0], "ref_rewards": [[0.0, 1.0], [1.0, 1.0]]})
    np.testing.assert_allclose(quantile_rewards(table["reward"], table["ref_rewards"]), [0.5, 1.0])
    numpy_table = table.with_format("numpy")
    np.testing.assert_allclose(quantile_rewards(numpy_table["reward"], numpy_table["ref_rewards"]), [0.5, 1.0])


def test_the_numpy_path_never_imports_torch() -> None:
    code = (
        "import sys, numpy as np\n"
        "from qrpo.quantile import quantile_rewards, reference_std\n"
        "rng = np.random.default_rng(0)\n"
        "refs = rng.integers(0, 5, size=(100, 200))\n"
        "for ties in ('upper', 'mid', 'random'):\n"
        "    for method in ('broadcast', 'sorted'):\n"
        "        quantile_rewards(rng.integers(0, 5, size=(100, 8)), refs, ties=ties, method=method)\n"
        "reference_std(refs)\n"
        "assert 'torch' not in sys.modules, 'qrpo.quantile imported torch'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr


def test_reference_std_is_the_unbiased_per_prompt_std() -> None:
    refs = np.array([[0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0]])
    np.testing.assert_allclose(reference_std(refs), [math.sqrt(5 / 3), 0.0])
    torch.testing.assert_close(reference_std(torch.from_numpy(refs)), torch.from_numpy(reference_std(refs)))
    with pytest.raises(ValueError, match="at least 2 references"):
        reference_std([[1.0]])
    with pytest.raises(ValueError, match="at least 2 references"):
        reference_std(torch.ones(3, 1))


# ---------------------------------------------------------------------------- uniformity under pi_ref


def reference_draws(sampler, prompts: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One sample and n references per prompt, all drawn from the same (reference) distribution."""
    draws = sampler(rng, (prompts, n + 1))
    return draws[:, 0], draws[:, 1:]


CONTINUOUS = {
    "normal": lambda rng, size: rng.normal(size=size),
    "exponential": lambda rng, size: rng.exponential(size=size),
    "cauchy": lambda rng, size: rng.standard_cauchy(size=size),
}


@pytest.mark.parametrize("distribution", sorted(CONTINUOUS))
@pytest.mark.parametrize(("ties", "n", "prompts"), [("random", 20, 20_000), ("upper", 2_000, 3_000), ("mid", 2_000, 3_000)])
def test_quantiles_of_reference_samples_are_uniform(distribution: str, ties: Ties, n: int, prompts: int) -> None:
    """Continuous rewards: R_q ~ U(0, 1) under pi_ref, whatever the reward distribution.

    "random" is exactly uniform for any N; "upper" and "mid" take values k/N, so they are uniform up to
    1/(N + 1) in KS distance: N is large enough for that to be far below what the test can see.
    """
    rng = np.random.default_rng(1)
    rewards, refs = reference_draws(CONTINUOUS[distribution], prompts, n, rng)
    quantiles = quantile_rewards(rewards, refs, ties=ties, seed=2)
    assert stats.kstest(quantiles, "uniform").pvalue > 0.01


def pass_rates(rng: np.random.Generator, size: tuple[int, int], tests: int = 10) -> np.ndarray:
    """Discrete rewards like LeetCode's: the pass rate over 10 tests, problem difficulty ~ Beta(0.5, 0.5)
    (many problems all-fail or all-pass), so the references of a prompt tie heavily."""
    difficulty = rng.beta(0.5, 0.5, size=(size[0], 1))
    return rng.binomial(tests, difficulty, size=size) / tests


def test_discrete_rewards_random_ties_are_uniform_and_upper_ties_are_not() -> None:
    rng = np.random.default_rng(3)
    rewards, refs = reference_draws(pass_rates, 100_000, 20, rng)
    random = quantile_rewards(rewards, refs, ties="random", seed=4)
    upper = quantile_rewards(rewards, refs, ties="upper")
    mid = quantile_rewards(rewards, refs, ties="mid")
    assert np.mean(refs == rewards[:, None]) > 0.25  # heavy ties indeed

    assert stats.kstest(random, "uniform").pvalue > 0.01
    assert stats.kstest(upper, "uniform").pvalue < 1e-12
    # in-sample data (the reward is one of its references, as on LeetCode): uniform once it is left out
    in_sample = np.concatenate([rewards[:, None], refs], axis=1)
    own = quantile_rewards(rewards, in_sample, ties="random", exclude_self=True, seed=5)
    assert stats.kstest(own, "uniform").pvalue > 0.01
    assert stats.kstest(quantile_rewards(rewards, in_sample, ties="random", seed=5), "uniform").pvalue < 1e-6
    # mid-ranks are not uniform but have the uniform's mean 1/2 exactly (by symmetry)
    assert stats.kstest(mid, "uniform").pvalue < 1e-12
    assert abs(mid.mean() - 0.5) < 4 * mid.std() / math.sqrt(len(mid))

    # What "upper" costs: log E[exp(f(R_q)/beta)] against the closed-form log Z the loss assumes.
    print("\nlog Z error on pass rates (N = 20): log E[exp(f(R_q)/beta)] - closed form")
    print(f"{'transform':>12} {'beta':>6} {'upper':>10} {'random':>10} {'beta*err upper':>15}")
    # betas where 100k draws pin E[exp(f/beta)] to well under 1% (normal-icdf's variance is e^{1/beta^2} - 1)
    cases: tuple[tuple[Transform, tuple[float, ...]], ...] = (("identity", (0.3, 1.0, 3.0)), ("log", (0.3, 1.0, 3.0)),
                                                              ("normal-icdf", (1.0, 3.0)))
    for transform, betas in cases:
        for beta in betas:
            errors = {}
            for name, q in (("upper", upper), ("random", random)):
                min_quantile = 1 / 20 if name == "upper" else None  # the paper's clamp for k/N quantiles
                f = transform_quantiles(torch.from_numpy(q), transform, min_quantile=min_quantile).numpy()
                log_mean = np.logaddexp.reduce(f / beta) - math.log(len(f))
                errors[name] = log_mean - log_partition(transform, beta)
            print(f"{transform:>12} {beta:>6} {errors['upper']:>10.4f} {errors['random']:>10.4f} "
                  f"{beta * errors['upper']:>15.4f}")
            assert abs(errors["random"]) < math.log(1.01), (transform, beta, errors)
            assert abs(errors["upper"]) > 5 * abs(errors["random"]), (transform, beta, errors)
