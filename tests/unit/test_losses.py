"""QRPO loss, its partition functions, its optimum, and the DPO / SimPO / REBEL baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from qrpo.losses import (
    TRANSFORMS,
    Transform,
    dpo_loss,
    log_partition,
    qrpo_loss,
    rebel_loss,
    simpo_loss,
    transform_quantiles,
)
from qrpo.quantile import quantile_rewards

BETAS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
LOG_FLOAT64_MAX = math.log(np.finfo(np.float64).max)  # 709.78: exp() of more overflows
f64 = torch.float64


# ------------------------------------------------------------------------------- the paper's formula


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_matches_the_seed_formula(data: st.DataObject) -> None:
    """ties="upper", identity, approximate=True is exactly the paper's code."""
    b = data.draw(st.integers(1, 8), label="B")
    n = data.draw(st.integers(1, 16), label="N")
    beta = data.draw(st.sampled_from(BETAS) | st.floats(1e-3, 10.0), label="beta")
    reward = st.integers(0, 4).map(float) | st.floats(-10, 10)  # pass-rate-like ties or continuous
    logp = st.floats(-200.0, 0.0)
    logps = torch.tensor(data.draw(st.lists(logp, min_size=b, max_size=b)), dtype=f64)
    ref_logps = torch.tensor(data.draw(st.lists(logp, min_size=b, max_size=b)), dtype=f64)
    rewards = torch.tensor(data.draw(st.lists(reward, min_size=b, max_size=b)), dtype=f64)
    ref_rewards = torch.tensor(
        data.draw(st.lists(st.lists(reward, min_size=n, max_size=n), min_size=b, max_size=b)), dtype=f64
    )

    # the seed formula, verbatim
    beta_ = torch.tensor(beta, dtype=f64)
    log_ratios = logps - ref_logps
    quantile_rewards = (ref_rewards <= rewards.unsqueeze(dim=1)).float().mean(dim=1)
    log_Z = torch.log(beta_) + 1 / beta_  # approximation of log(beta * (exp(1/beta) - 1))
    loss = (quantile_rewards - beta_ * log_Z - beta_ * log_ratios) ** 2

    out = qrpo_loss(logps, ref_logps, rewards, ref_rewards, beta=beta, ties="upper", transform="identity",
                    approximate=True)
    torch.testing.assert_close(out.losses, loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.metrics["quantile_rewards"], quantile_rewards.to(f64), rtol=0, atol=1e-7)


# ------------------------------------------------------------------------------ partition functions


def log_integral(transform: Transform, beta: float, scale: float) -> float:
    """log E_{u ~ U(0,1)}[exp(f(u)/beta)] by adaptive quadrature, f being the library's own transform.

    The integrand is shifted by its maximum c (exp(f/beta - c) <= 1) so that nothing overflows; the normal
    transforms are integrated in z = Phi^{-1}(u) (du = phi(z) dz), because for small beta their mass sits at
    1 - u ~ Phi(-1/beta), closer to 1 than float64 can represent.
    """
    if transform in ("normal-icdf", "scaled-normal-icdf"):
        s = scale if transform == "scaled-normal-icdf" else 1.0
        peak = s / beta  # argmax of s z / beta - z^2 / 2
        c = s * peak / beta - peak**2 / 2
        value, _ = integrate.quad(
            lambda z: math.exp(s * z / beta - z * z / 2 - c) / math.sqrt(2 * math.pi),
            peak - 40, peak + 40, points=[peak], limit=200, epsabs=0, epsrel=1e-10,
        )
        return c + math.log(value)

    def f(u: float) -> float:
        return float(transform_quantiles(torch.tensor([u], dtype=f64), transform)[0])

    c = f(1.0) / beta  # every other transform is increasing
    value, _ = integrate.quad(
        lambda u: math.exp(f(u) / beta - c), 0, 1, points=[max(0.0, 1 - 30 * beta)], limit=200,
        epsabs=0, epsrel=1e-10,
    )
    return c + math.log(value)


CASES = [(t, beta, 1.0) for t in TRANSFORMS if t != "scaled-normal-icdf" for beta in BETAS] + [
    ("scaled-normal-icdf", beta, s) for s in (0.5, 2.0) for beta in BETAS
]


@pytest.mark.parametrize(("transform", "beta", "scale"), CASES)
def test_log_partition_is_the_expectation_under_uniform_quantiles(transform: Transform, beta: float, scale: float) -> None:
    """E[exp(f(R_q)/beta)] = exp(log Z) within 1%, for every transform and beta.

    Compared as numbers where exp(log Z) is finite in float64. Where it overflows (log Z > 709.78) the
    number comparison is skipped, but the ratio is still checked to the same 1% in log space:
      normal-icdf              beta = 0.003, 0.01        log Z = 1/(2 beta^2) = 55556, 5000
      scaled-normal-icdf s=0.5 beta = 0.003, 0.01        log Z = s^2/(2 beta^2) = 13889, 1250
      scaled-normal-icdf s=2   beta = 0.003, 0.01, 0.03  log Z = 222222, 20000, 2222
    Every other case, including identity, sqrt and square at beta = 0.003 (log Z ~ 327), is finite and
    compared directly.
    """
    log_Z = float(log_partition(transform, beta, scale=scale))
    reference = log_integral(transform, beta, scale)
    assert abs(reference - log_Z) < math.log(1.01)
    if log_Z < LOG_FLOAT64_MAX:
        assert math.isclose(math.exp(reference), math.exp(log_Z), rel_tol=0.01)
    else:  # exactly the documented cases
        assert (transform, scale, beta) in {("normal-icdf", 1.0, 0.003), ("normal-icdf", 1.0, 0.01),
                                            ("scaled-normal-icdf", 0.5, 0.003), ("scaled-normal-icdf", 0.5, 0.01),
                                            ("scaled-normal-icdf", 2.0, 0.003), ("scaled-normal-icdf", 2.0, 0.01),
                                            ("scaled-normal-icdf", 2.0, 0.03)}


@pytest.mark.parametrize("transform", [t for t in TRANSFORMS if t != "scaled-normal-icdf"])
def test_monte_carlo_with_computed_quantiles(transform: Transform) -> None:
    """End to end: quantiles computed from seeded reference rewards (continuous, ties="random": exactly
    uniform), transformed, averaged; betas where 400k draws pin the mean to much better than 1%."""
    rng = np.random.default_rng(0)
    draws = rng.normal(size=(400_000, 21))
    quantiles = torch.from_numpy(quantile_rewards(draws[:, 0], draws[:, 1:], ties="random", seed=1))
    assert stats.kstest(quantiles.numpy(), "uniform").pvalue > 0.01
    modified = transform_quantiles(quantiles, transform)
    for beta in (1.0, 3.0) if transform == "normal-icdf" else (0.3, 1.0, 3.0):
        mean = torch.exp(modified / beta).mean().item()
        assert math.isclose(mean, math.exp(log_partition(transform, beta)), rel_tol=0.01), (transform, beta)


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_log_partition_is_finite_and_accurate_at_extreme_betas(transform: Transform) -> None:
    """Stable for every beta > 0: no overflow at small beta, no cancellation at large beta.

    Large beta: log Z = E[f(U)]/beta + O(1/beta^2). Small beta: Laplace at u = 1,
    log Z = f(1)/beta + log(beta / f'(1)) + o(1) (normal-icdf: exactly 1/(2 beta^2)).
    """
    large = {"identity": 1 / 2, "log": -1.0, "sqrt": 2 / 3, "square": 1 / 3, "normal-icdf": 0.0,
             "scaled-normal-icdf": 0.0}[transform]
    for beta in np.logspace(-6, 12, 37):
        assert math.isfinite(float(log_partition(transform, float(beta), scale=1.0)))
    beta = 1e8
    if large:
        assert math.isclose(log_partition(transform, beta, scale=1.0), large / beta, rel_tol=1e-6)
    else:
        assert math.isclose(log_partition(transform, beta, scale=1.0), 1 / (2 * beta**2), rel_tol=1e-12)
    beta = 1e-5
    small = {"identity": 1 / beta + math.log(beta), "log": math.log(beta), "sqrt": 1 / beta + math.log(2 * beta),
             "square": 1 / beta + math.log(beta / 2), "normal-icdf": 1 / (2 * beta**2),
             "scaled-normal-icdf": 1 / (2 * beta**2)}[transform]
    assert math.isclose(log_partition(transform, beta, scale=1.0), small, rel_tol=0, abs_tol=10 * beta)


def test_approximate_is_the_paper_identity_form_only() -> None:
    for beta in BETAS:
        assert log_partition("identity", beta, approximate=True) == math.log(beta) + 1 / beta
        for transform in ("log", "normal-icdf", "sqrt", "square"):
            assert log_partition(transform, beta, approximate=True) == log_partition(transform, beta)
    # the dropped term log(1 - e^{-1/beta}): invisible at small beta, large at large beta
    assert log_partition("identity", 0.01) == log_partition("identity", 0.01, approximate=True)
    exact, approx = log_partition("identity", 1.0), log_partition("identity", 1.0, approximate=True)
    assert math.isclose(exact - approx, -0.45867514538708193, rel_tol=1e-12)  # log(1 - 1/e)


def test_log_partition_rejects_bad_beta_and_transform() -> None:
    for beta in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="beta must be a finite number > 0"):
            log_partition("identity", beta)
    with pytest.raises(ValueError, match="is not one of"):
        log_partition("cube", 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs scale"):
        log_partition("scaled-normal-icdf", 1.0)


def test_transforms_and_their_clamps() -> None:
    u = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=f64)
    torch.testing.assert_close(transform_quantiles(u, "identity"), u)
    torch.testing.assert_close(transform_quantiles(u, "sqrt"), torch.tensor([0, 0.5, 0.5**0.5, 1], dtype=f64))
    torch.testing.assert_close(transform_quantiles(u, "square"), torch.tensor([0, 1 / 16, 1 / 4, 1], dtype=f64))
    # the paper's clamps with N = 20 references: log to [1/20, 1], normal-icdf to [1/20, 19/20]
    log_u = transform_quantiles(u, "log", min_quantile=1 / 20)
    torch.testing.assert_close(log_u, torch.log(torch.tensor([0.05, 0.25, 0.5, 1.0], dtype=f64)))
    z = transform_quantiles(u, "normal-icdf", min_quantile=1 / 20)
    np.testing.assert_allclose(z.numpy(), stats.norm.ppf([0.05, 0.25, 0.5, 0.95]), rtol=1e-12)
    scaled = transform_quantiles(u, "scaled-normal-icdf", min_quantile=1 / 20, scale=torch.full((4,), 2.0, dtype=f64))
    torch.testing.assert_close(scaled, 2 * z)
    # without a clamp: finite, and the normal quantile function wherever float64 can say
    for dtype in (torch.float32, f64):
        assert torch.isfinite(transform_quantiles(u.to(dtype), "log")).all()
        assert torch.isfinite(transform_quantiles(u.to(dtype), "normal-icdf")).all()
    grid = np.linspace(1e-6, 1 - 1e-6, 101)
    np.testing.assert_allclose(transform_quantiles(torch.from_numpy(grid), "normal-icdf").numpy(), stats.norm.ppf(grid),
                               rtol=1e-10)
    with pytest.raises(ValueError, match=r"N >= 2 references"):
        transform_quantiles(u, "normal-icdf", min_quantile=1.0)


# ------------------------------------------------------------------------------------ the QRPO loss


def test_loss_metrics_and_gradients_on_a_hand_example() -> None:
    beta = 0.5
    logps = torch.tensor([-1.0, -4.0], dtype=f64, requires_grad=True)
    ref_logps = torch.tensor([-2.0, -3.0], dtype=f64)
    rewards = torch.tensor([0.8, 0.1], dtype=f64)
    ref_rewards = torch.tensor([[0.0, 0.5, 1.0, 0.8], [0.2, 0.3, 0.4, 0.5]], dtype=f64)
    out = qrpo_loss(logps, ref_logps, rewards, ref_rewards, beta=beta)

    log_Z = math.log(0.5) + 2 + math.log1p(-math.exp(-2))  # log(beta (e^{1/beta} - 1)) = 1.1599...
    assert math.isclose(log_Z, math.log(0.5 * (math.e**2 - 1)), rel_tol=1e-12)
    quantiles = [3 / 4, 0.0]
    calibrated = [q - beta * log_Z for q in quantiles]
    implicit = [beta * 1.0, beta * -1.0]
    residuals = [c - i for c, i in zip(calibrated, implicit)]
    torch.testing.assert_close(out.losses, torch.tensor([r**2 for r in residuals], dtype=f64))
    torch.testing.assert_close(out.metrics["quantile_rewards"], torch.tensor(quantiles, dtype=f64))
    torch.testing.assert_close(out.metrics["modified_rewards"], torch.tensor(quantiles, dtype=f64))
    torch.testing.assert_close(out.metrics["log_Z"], torch.tensor([log_Z, log_Z], dtype=f64))
    torch.testing.assert_close(out.metrics["calibrated_rewards"], torch.tensor(calibrated, dtype=f64))
    torch.testing.assert_close(out.metrics["implicit_rewards"], torch.tensor(implicit, dtype=f64))
    # calibrated = [0.75 - 0.58, -0.58] > 0, < 0; implicit = [0.5, -0.5]: both agree in sign
    torch.testing.assert_close(out.metrics["sign_agreement"], torch.tensor([1.0, 1.0], dtype=f64))
    assert all(not m.requires_grad for m in out.metrics.values())

    out.losses.sum().backward()  # d/dlogp (c - beta lr)^2 = -2 beta (c - beta lr)
    torch.testing.assert_close(logps.grad, torch.tensor([-2 * beta * r for r in residuals], dtype=f64))

    mae = qrpo_loss(logps.detach(), ref_logps, rewards, ref_rewards, beta=beta, loss="mae")
    torch.testing.assert_close(mae.losses, torch.tensor([abs(r) for r in residuals], dtype=f64))
    lower = qrpo_loss(ref_logps - 1, ref_logps, rewards, ref_rewards, beta=beta)  # implicit rewards -0.5, -0.5
    torch.testing.assert_close(lower.metrics["sign_agreement"], torch.tensor([0.0, 1.0], dtype=f64))


def test_precomputed_quantiles_give_the_same_loss() -> None:
    rng = torch.Generator().manual_seed(0)
    logps, ref_logps = -torch.rand(6, generator=rng, dtype=f64) * 50, -torch.rand(6, generator=rng, dtype=f64) * 50
    rewards, ref_rewards = torch.rand(6, generator=rng), torch.rand(6, 10, generator=rng)
    for transform in ("identity", "log", "normal-icdf", "sqrt", "square"):
        direct = qrpo_loss(logps, ref_logps, rewards, ref_rewards, beta=0.1, transform=transform)
        precomputed = quantile_rewards(rewards.numpy(), ref_rewards.numpy())  # e.g. from the data pipeline
        given = qrpo_loss(logps, ref_logps, quantiles=torch.from_numpy(precomputed), beta=0.1, transform=transform,
                          min_quantile=1 / 10)
        torch.testing.assert_close(direct.losses, given.losses)


def test_default_clamp_is_one_over_n_for_upper_and_mid() -> None:
    logps = torch.zeros(2, dtype=f64)
    rewards, ref_rewards = torch.tensor([-1.0, 9.0]), torch.tensor([[0.0, 1, 2, 3, 4]] * 2)  # below / above all
    for ties in ("upper", "mid"):
        out = qrpo_loss(logps, logps, rewards, ref_rewards, beta=1.0, transform="normal-icdf", ties=ties)
        np.testing.assert_allclose(out.metrics["modified_rewards"].numpy(), stats.norm.ppf([1 / 5, 4 / 5]))
    out = qrpo_loss(logps, logps, rewards, ref_rewards, beta=1.0, transform="log", exclude_self=False)
    np.testing.assert_allclose(out.metrics["modified_rewards"].numpy(), [math.log(1 / 5), 0.0])


def test_scaled_normal_icdf_uses_the_normalised_reference_std() -> None:
    beta = 0.5
    logps = torch.tensor([-1.0, -2.0], dtype=f64)
    rewards = torch.tensor([0.5, 0.5], dtype=f64)
    ref_rewards = torch.tensor([[0.0, 0.25, 0.75, 1.0], [0.4, 0.45, 0.55, 0.6]], dtype=f64)
    mean_std = 0.3  # the training-set mean of the per-prompt std
    out = qrpo_loss(logps, logps, rewards, ref_rewards, beta=beta, transform="scaled-normal-icdf",
                    mean_reference_std=mean_std)
    s = ref_rewards.std(dim=1) / mean_std
    z = torch.special.ndtri(torch.tensor([0.5, 0.5], dtype=f64))  # both rewards sit at the median
    torch.testing.assert_close(out.metrics["modified_rewards"], s * z)
    torch.testing.assert_close(out.metrics["log_Z"], s**2 / (2 * beta**2))
    torch.testing.assert_close(out.losses, (s * z - beta * s**2 / (2 * beta**2)) ** 2)
    given_std = qrpo_loss(logps, logps, rewards, ref_rewards, beta=beta, transform="scaled-normal-icdf",
                          reference_std=torch.tensor([0.3, 0.6], dtype=f64), mean_reference_std=mean_std)
    torch.testing.assert_close(given_std.metrics["log_Z"], torch.tensor([1.0, 4.0], dtype=f64) / (2 * beta**2))
    with pytest.raises(ValueError, match="needs mean_reference_std"):
        qrpo_loss(logps, logps, rewards, ref_rewards, beta=beta, transform="scaled-normal-icdf")


def test_qrpo_loss_rejects_bad_inputs() -> None:
    x = torch.zeros(3)
    refs = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="either rewards and ref_rewards, or quantiles"):
        qrpo_loss(x, x, beta=0.1)
    with pytest.raises(ValueError, match="either rewards and ref_rewards, or quantiles"):
        qrpo_loss(x, x, x, refs, quantiles=x, beta=0.1)
    with pytest.raises(ValueError, match="loss='huber'"):
        qrpo_loss(x, x, x, refs, beta=0.1, loss="huber")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="transform='cube'"):
        qrpo_loss(x, x, x, refs, beta=0.1, transform="cube")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must both have shape"):
        qrpo_loss(x, torch.zeros(2), x, refs, beta=0.1)
    with pytest.raises(ValueError, match=r"quantiles must lie in \[0, 1\]"):
        qrpo_loss(x, x, quantiles=torch.tensor([0.5, 1.5, 0.0]), beta=0.1)
    with pytest.raises(ValueError, match=r"rewards\[0\] is NaN"):
        qrpo_loss(x, x, torch.tensor([math.nan, 0, 0]), refs, beta=0.1)
    with pytest.raises(ValueError, match="beta must be"):
        qrpo_loss(x, x, x, refs, beta=0.0)
    with pytest.raises(ValueError, match="beta must be"):
        qrpo_loss(x, x, quantiles=x, beta=-1.0, log_Z=0.0)
    with pytest.raises(ValueError, match="beta must be"):
        rebel_loss(x, x, x, x, x, x, beta=0.0)


# ---------------------------------------------------------------------------- the optimum of the loss


def toy_problem(beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A categorical policy over 20 answers with a known reward. Returns log pi_ref, the exact quantile
    reward R_q(y) = P_{y' ~ pi_ref}(R(y') <= R(y)), and the KL-regularised optimum pi_ref e^{R_q/beta} / Z."""
    generator = torch.Generator().manual_seed(0)
    log_pi_ref = torch.log_softmax(torch.randn(20, generator=generator, dtype=f64), dim=0)
    reward = torch.randn(20, generator=generator, dtype=f64)
    at_or_below = (reward.unsqueeze(0) <= reward.unsqueeze(1)).to(f64)  # [y, y'] = R(y') <= R(y)
    quantiles = (at_or_below @ log_pi_ref.exp()).clamp(max=1.0)
    optimum = torch.softmax(log_pi_ref + quantiles / beta, dim=0)
    return log_pi_ref, quantiles, optimum


def minimise(beta: float, weights: str, log_Z: float | None) -> torch.Tensor:
    """Gradient descent (Adam) on the logits of pi, minimising sum_y d(y) qrpo_loss(y)."""
    log_pi_ref, quantiles, _ = toy_problem(beta)
    logits = log_pi_ref.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([logits], lr=0.1)
    for _ in range(800):
        logps = torch.log_softmax(logits, dim=0)
        losses = qrpo_loss(logps, log_pi_ref, quantiles=quantiles, beta=beta, log_Z=log_Z).losses
        # off-policy: a fixed uniform dataset; on-policy: samples from the current policy
        d = torch.full_like(logps, 1 / 20) if weights == "uniform" else logps.exp().detach()
        objective = (d * losses).sum() / beta**2
        optimiser.zero_grad()
        objective.backward()
        optimiser.step()
    return torch.softmax(logits.detach(), dim=0)


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * (p - q).abs().sum().item()


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_minimising_the_loss_recovers_the_kl_regularised_optimum(beta: float) -> None:
    """Off-policy (any full-support data) with the exact Z, the regression's minimiser is
    pi* = pi_ref e^{R_q/beta} / Z. Twenty answers make R_q discrete, so its exact Z is the finite sum
    sum_y pi_ref(y) e^{R_q(y)/beta}, passed as log_Z; the closed form is exact only for continuous R_q.
    """
    log_pi_ref, quantiles, optimum = toy_problem(beta)
    exact_log_Z = torch.logsumexp(log_pi_ref + quantiles / beta, dim=0).item()
    assert total_variation(minimise(beta, "uniform", exact_log_Z), optimum) < 1e-3
    # On-policy the constant log Z does not move the minimiser, so the closed form recovers pi* too ...
    assert total_variation(minimise(beta, "on-policy", None), optimum) < 1e-3
    # ... but off-policy a wrong Z does: the exact partition function is what makes QRPO work off-policy.
    assert total_variation(minimise(beta, "uniform", None), optimum) > 1e-2


# ---------------------------------------------------------------------------------------- baselines


def test_dpo_loss_by_hand() -> None:
    # log-ratios: chosen -1 - (-2) = 1, rejected -3 - (-2.5) = -0.5; logits = 1.5, beta logits = 0.15
    # -log sigmoid(0.15) = log(1 + e^{-0.15}) = 0.620957...; second pair: logits = -2, beta logits = -0.2
    out = dpo_loss(torch.tensor([-1.0, -5.0]), torch.tensor([-3.0, -3.0]), torch.tensor([-2.0, -4.0]),
                   torch.tensor([-2.5, -4.0]), beta=0.1)
    torch.testing.assert_close(out.losses, torch.tensor([0.6209570477895321, 0.7981388693815918]))
    torch.testing.assert_close(out.metrics["chosen_rewards"], torch.tensor([0.1, -0.1]))
    torch.testing.assert_close(out.metrics["rejected_rewards"], torch.tensor([-0.05, 0.1]))
    torch.testing.assert_close(out.metrics["margins"], torch.tensor([0.15, -0.2]))
    torch.testing.assert_close(out.metrics["accuracy"], torch.tensor([1.0, 0.0]))


def test_simpo_loss_by_hand() -> None:
    # means: -6/3 = -2 and -10/4 = -2.5; beta = 2: 2 (0.5) - gamma (= 0.5 * 2 = 1) = 0 -> log 2
    # second pair: means -1 and -3: 2 (2) - 1 = 3 -> log(1 + e^{-3}) = 0.048587...
    out = simpo_loss(torch.tensor([-6.0, -2.0]), torch.tensor([-10.0, -6.0]), torch.tensor([3, 2]),
                     torch.tensor([4, 2]), beta=2.0, gamma_beta_ratio=0.5)
    torch.testing.assert_close(out.losses, torch.tensor([0.6931471805599453, 0.04858735157374206]))
    torch.testing.assert_close(out.metrics["chosen_rewards"], torch.tensor([-4.0, -2.0]))
    torch.testing.assert_close(out.metrics["margins"], torch.tensor([1.0, 4.0]))


def test_rebel_loss_by_hand() -> None:
    # (r_c - r_r)/beta = (1 - 0)/0.5 = 2; log-ratio difference = 1 - (-0.5) = 1.5; (2 - 1.5)^2 = 0.25
    # second pair: (0.2 - 0.6)/0.5 = -0.8; 0 - 1 = -1; (-0.8 + 1)^2 = 0.04
    out = rebel_loss(torch.tensor([-1.0, -3.0]), torch.tensor([-3.0, -1.0]), torch.tensor([-2.0, -3.0]),
                     torch.tensor([-2.5, -2.0]), torch.tensor([1.0, 0.2]), torch.tensor([0.0, 0.6]), beta=0.5)
    torch.testing.assert_close(out.losses, torch.tensor([0.25, 0.04]))
    torch.testing.assert_close(out.metrics["chosen_rewards"], torch.tensor([0.5, 0.0]))
    torch.testing.assert_close(out.metrics["rejected_rewards"], torch.tensor([-0.25, 0.5]))
