"""The QRPO loss and the baselines it is compared with (DPO, SimPO, REBEL), as pure functions on tensors.

Notation of the paper (QRPO, arXiv 2507.08068): x a prompt, y a completion, pi_ref the reference policy,
beta the KL coefficient, R_q(x, y) in [0, 1] the quantile reward (``qrpo.quantile``) and f a transform of
it. The KL-regularised optimum and its partition function are

    pi*(y|x) = pi_ref(y|x) exp(f(R_q(x, y)) / beta) / Z(x),     Z(x) = E_{y ~ pi_ref}[exp(f(R_q) / beta)].

R_q is uniform on [0, 1] under pi_ref, so Z = int_0^1 exp(f(u) / beta) du is known in closed form for every
transform below, and QRPO fits pi* by pointwise regression of the implicit reward onto the calibrated one:

    loss(x, y) = (f(R_q(x, y)) - beta log Z - beta log(pi(y|x) / pi_ref(y|x)))^2.

No preference pairs, no intractable Z: any (x, y, reward) sample, on- or off-policy, gives a target.

Log-probabilities are sums over completion tokens, shape (B,).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from qrpo.quantile import Ties, quantile_rewards

Transform = Literal["identity", "log", "normal-icdf", "scaled-normal-icdf", "sqrt", "square"]
TRANSFORMS: tuple[Transform, ...] = get_args(Transform)
RegressionLoss = Literal["mse", "mae"]  # QRPO's residual: squared (the paper) or absolute
REGRESSION_LOSSES: tuple[RegressionLoss, ...] = get_args(RegressionLoss)
# The training objectives: QRPO (pointwise) and the paired baselines compared with it.
LossType = Literal["qrpo", "dpo", "simpo", "rebel"]
PairedLossType = Literal["dpo", "simpo", "rebel"]
LOSS_TYPES: tuple[LossType, ...] = get_args(LossType)
PAIRED_LOSS_TYPES: tuple[PairedLossType, ...] = get_args(PairedLossType)


@dataclass(frozen=True)
class LossOutput:
    """Per-sample losses (differentiable, shape (B,)) and the per-sample metrics a trainer logs (detached)."""

    losses: torch.Tensor
    metrics: dict[str, torch.Tensor]


# ------------------------------------------------------------------------------ transforms and log Z


def transform_quantiles(
    quantiles: torch.Tensor,
    transform: Transform,
    *,
    min_quantile: float | None = None,
    scale: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """f(R_q): the transformed (modified) quantile reward.

    log and the normal inverse CDF are infinite at 0 (and 1), where an estimated quantile can land, so those
    are clamped to [min_quantile, 1 - min_quantile]. The paper uses min_quantile = 1/N for N references;
    the default, the dtype's epsilon, only guards against infinities (right for continuous quantiles such as
    ``ties="random"``, where a 1/N clamp would bias Z).
    ``scale`` (scaled-normal-icdf only): the per-prompt reference std divided by its training-set mean.
    """
    eps = torch.finfo(quantiles.dtype).eps if min_quantile is None else min_quantile
    if transform == "identity":
        return quantiles
    if transform == "log":
        if not 0 < eps <= 1:
            raise ValueError(f"min_quantile must be in (0, 1], got {eps}")
        return torch.log(quantiles.clamp(min=eps))
    if transform in ("normal-icdf", "scaled-normal-icdf"):
        if not 0 < eps <= 0.5:
            raise ValueError(f"{transform} needs min_quantile in (0, 1/2], i.e. N >= 2 references; got {eps}")
        z: torch.Tensor = torch.special.ndtri(quantiles.clamp(min=eps, max=1 - eps))
        if transform == "normal-icdf":
            return z
        if scale is None:
            raise ValueError("scaled-normal-icdf needs scale = per-prompt reference std / its training-set mean")
        scaled: torch.Tensor = scale * z
        return scaled
    if transform == "sqrt":
        return torch.sqrt(quantiles)
    if transform == "square":
        return torch.square(quantiles)
    raise ValueError(f"transform={transform!r} is not one of {TRANSFORMS}")


def log_partition(
    transform: Transform,
    beta: float,
    *,
    scale: torch.Tensor | float | None = None,
    approximate: bool = False,
) -> float | torch.Tensor:
    """log Z = log int_0^1 exp(f(u) / beta) du, exact and finite for every beta > 0 (no exp overflow).

      identity            log(beta (e^{1/beta} - 1)) = log beta + 1/beta + log(1 - e^{-1/beta})
      log                 log(beta / (1 + beta))
      normal-icdf         1 / (2 beta^2)                    (the MGF of a standard normal at 1/beta)
      scaled-normal-icdf  s^2 / (2 beta^2)                  (s = ``scale``; returns its type)
      sqrt                log(2 beta^2 (1 + (1/beta - 1) e^{1/beta}))
      square              log(sqrt(beta) e^{1/beta} D(1/sqrt(beta))), D = Dawson's integral

    ``approximate=True`` gives the paper's code for identity, log beta + 1/beta, which drops
    log(1 - e^{-1/beta}): negligible for small beta, -0.46 at beta = 1. Other transforms are exact either way.
    """
    _check_beta(beta)
    beta = float(beta)  # float64 math even for numpy scalars
    if transform == "identity":
        if approximate:
            return math.log(beta) + 1 / beta
        return math.log(beta) + 1 / beta + _log1mexp(1 / beta)
    if transform == "log":
        return math.log(beta) - math.log1p(beta)
    if transform == "normal-icdf":
        return 1 / (2 * beta**2)
    if transform == "scaled-normal-icdf":
        if scale is None:
            raise ValueError("scaled-normal-icdf needs scale = per-prompt reference std / its training-set mean")
        return scale**2 / (2 * beta**2)
    if transform == "sqrt":
        # int_0^1 e^{sqrt(u)/beta} du = 2 int_0^1 t e^{t/beta} dt = 2 beta^2 h(1/beta), h(x) = 1 + (x - 1) e^x
        return math.log(2 * beta**2) + _log_h(1 / beta)
    if transform == "square":
        # int_0^1 e^{u^2/beta} du = sqrt(pi beta)/2 erfi(1/sqrt(beta)) and erfi(x) = 2/sqrt(pi) e^{x^2} D(x)
        from scipy.special import dawsn

        return 0.5 * math.log(beta) + 1 / beta + math.log(float(dawsn(1 / math.sqrt(beta))))
    raise ValueError(f"transform={transform!r} is not one of {TRANSFORMS}")


def _check_beta(beta: float) -> None:
    if not (isinstance(beta, numbers.Real) and math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")


def _log1mexp(x: float) -> float:
    """log(1 - e^{-x}) for x > 0, accurate at both ends (Maechler's split at log 2)."""
    return math.log(-math.expm1(-x)) if x <= math.log(2) else math.log1p(-math.exp(-x))


def _log_h(x: float) -> float:
    """log(1 + (x - 1) e^x) for x > 0, without the cancellation near x = 0 or the overflow for large x."""
    if x >= 1:
        return x + math.log(x - 1 + math.exp(-x))
    # h(x) = sum_{k >= 2} (k - 1) x^k / k!, all terms positive
    total, power_over_factorial, k = 0.0, x, 1
    while True:
        k += 1
        power_over_factorial *= x / k
        term = (k - 1) * power_over_factorial
        total += term
        if term < 1e-17 * total:
            return math.log(total)


# ------------------------------------------------------------------------------------------------- QRPO


def qrpo_loss(
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    rewards: torch.Tensor | None = None,
    ref_rewards: torch.Tensor | None = None,
    *,
    beta: float,
    quantiles: torch.Tensor | None = None,
    transform: Transform = "identity",
    loss: RegressionLoss = "mse",
    ties: Ties = "upper",
    exclude_self: bool = False,
    seed: int | None = None,
    approximate: bool = False,
    min_quantile: float | None = None,
    reference_std: torch.Tensor | None = None,
    mean_reference_std: float | None = None,
    log_Z: float | torch.Tensor | None = None,
) -> LossOutput:
    """QRPO: regress beta log(pi/pi_ref) onto f(R_q) - beta log Z, one sample at a time.

    Give either ``rewards`` (B,) with ``ref_rewards`` (B, N), from which the quantile rewards are computed
    (``ties``, ``exclude_self``, ``seed`` as in ``qrpo.quantile.quantile_rewards``), or precomputed
    ``quantiles`` (B,). ``min_quantile`` clamps log / normal-icdf (see ``transform_quantiles``); it defaults
    to the paper's 1/N when quantiles are computed here with ties "upper" or "mid".
    scaled-normal-icdf needs ``mean_reference_std`` (training-set mean of the per-prompt std) and the
    per-prompt std, from ``reference_std`` or else ``ref_rewards``.
    ``log_Z`` overrides the closed form (e.g. an exact value for a known, non-uniform quantile distribution).
    ``loss``: "mse" (the paper) or "mae".
    """
    _check_beta(beta)
    if loss not in REGRESSION_LOSSES:
        raise ValueError(f"loss={loss!r} is not one of {REGRESSION_LOSSES}")
    if transform not in TRANSFORMS:
        raise ValueError(f"transform={transform!r} is not one of {TRANSFORMS}")
    if logps.shape != ref_logps.shape or logps.ndim != 1:
        raise ValueError(
            f"logps {tuple(logps.shape)} and ref_logps {tuple(ref_logps.shape)} must both have shape (B,)"
        )
    log_ratios = logps - ref_logps

    if quantiles is None:
        if rewards is None or ref_rewards is None:
            raise ValueError("give either rewards and ref_rewards, or quantiles (not both)")
        quantiles = quantile_rewards(rewards, ref_rewards, ties=ties, exclude_self=exclude_self, seed=seed)
        if min_quantile is None and ties != "random":
            min_quantile = 1 / (ref_rewards.shape[-1] - int(exclude_self))
    elif rewards is not None and ref_rewards is not None:
        raise ValueError("give either rewards and ref_rewards, or quantiles (not both)")
    quantiles = torch.as_tensor(quantiles, device=logps.device).to(log_ratios.dtype)
    if quantiles.shape != logps.shape:
        raise ValueError(f"quantiles {tuple(quantiles.shape)} must have the shape of logps {tuple(logps.shape)}")
    if not bool(((quantiles >= 0) & (quantiles <= 1)).all()):
        raise ValueError("quantiles must lie in [0, 1] (and not be NaN)")

    scale = None
    if transform == "scaled-normal-icdf":
        scale = _normalized_reference_std(reference_std, ref_rewards, mean_reference_std).to(quantiles)
    modified_rewards = transform_quantiles(quantiles, transform, min_quantile=min_quantile, scale=scale)
    if log_Z is None:
        log_Z = log_partition(transform, beta, scale=scale, approximate=approximate)

    calibrated_rewards = modified_rewards - beta * log_Z
    implicit_rewards = beta * log_ratios
    residuals = calibrated_rewards - implicit_rewards
    losses = residuals**2 if loss == "mse" else residuals.abs()

    metrics = {
        "quantile_rewards": quantiles,
        "modified_rewards": modified_rewards,
        "log_Z": torch.as_tensor(log_Z, dtype=quantiles.dtype, device=quantiles.device).expand_as(quantiles),
        "calibrated_rewards": calibrated_rewards,
        "implicit_rewards": implicit_rewards,
        "sign_agreement": (torch.sign(calibrated_rewards) == torch.sign(implicit_rewards)).to(quantiles.dtype),
    }
    return LossOutput(losses, {name: value.detach() for name, value in metrics.items()})


def _normalized_reference_std(
    reference_std: torch.Tensor | None, ref_rewards: torch.Tensor | None, mean_reference_std: float | None
) -> torch.Tensor:
    """s = per-prompt reference std / its training-set mean (the paper's scaled-normal-icdf)."""
    if mean_reference_std is None or not mean_reference_std > 0:
        raise ValueError(
            "scaled-normal-icdf needs mean_reference_std > 0: the mean over the training set of the per-prompt "
            "std of reference rewards (qrpo.quantile.reference_std, averaged once in the data pipeline)"
        )
    if reference_std is None:
        if ref_rewards is None:
            raise ValueError("scaled-normal-icdf needs reference_std (B,) or ref_rewards (B, N)")
        reference_std = torch.as_tensor(ref_rewards).to(torch.float64).std(dim=-1)  # unbiased, as the paper
    return torch.as_tensor(reference_std) / mean_reference_std


# -------------------------------------------------------------------------------------------- baselines


def dpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
) -> LossOutput:
    """DPO (sigmoid): -log sigmoid(beta [log pi/pi_ref (y_c) - log pi/pi_ref (y_r)]).

    Z cancels in the difference, which is why DPO needs pairs and QRPO does not.
    """
    _check_beta(beta)
    chosen_rewards = beta * (chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (rejected_logps - ref_rejected_logps)
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards)
    return LossOutput(losses, _pair_metrics(chosen_rewards, rejected_rewards))


def simpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    *,
    beta: float,
    gamma_beta_ratio: float,
) -> LossOutput:
    """SimPO: -log sigmoid(beta (mean log pi(y_c) - mean log pi(y_r)) - gamma), gamma = gamma_beta_ratio beta.

    Reference-free and length-normalised: the log-probs (sums over tokens) are divided by the number of
    completion tokens, as in the SimPO paper, so longer answers are not favoured by their length alone.
    """
    _check_beta(beta)
    chosen_rewards = beta * chosen_logps / chosen_lengths
    rejected_rewards = beta * rejected_logps / rejected_lengths
    gamma = gamma_beta_ratio * beta
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards - gamma)
    return LossOutput(losses, _pair_metrics(chosen_rewards, rejected_rewards))


def rebel_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    *,
    beta: float,
) -> LossOutput:
    """REBEL: ((r_c - r_r) / beta - [log pi/pi_ref (y_c) - log pi/pi_ref (y_r)])^2.

    Regression on reward differences (Z cancels, as in DPO); the rewards are divided by beta rather than the
    log-ratios multiplied, as in the REBEL reference code the paper follows.
    """
    _check_beta(beta)
    chosen_log_ratios = chosen_logps - ref_chosen_logps
    rejected_log_ratios = rejected_logps - ref_rejected_logps
    losses = ((chosen_rewards - rejected_rewards) / beta - (chosen_log_ratios - rejected_log_ratios)) ** 2
    return LossOutput(losses, _pair_metrics(beta * chosen_log_ratios, beta * rejected_log_ratios))


def _pair_metrics(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> dict[str, torch.Tensor]:
    """Implicit rewards of a pair, their margin, and whether the chosen one is ranked higher."""
    margins = chosen_rewards - rejected_rewards
    metrics = {
        "chosen_rewards": chosen_rewards,
        "rejected_rewards": rejected_rewards,
        "margins": margins,
        "accuracy": (margins > 0).to(margins.dtype),
    }
    return {name: value.detach() for name, value in metrics.items()}
