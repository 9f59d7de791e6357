"""The coordinator's half of the linear family: noise, accounting and noise-aware solves.

Firms send clipped sufficient statistics into one secure sum; here Gaussian noise is added once to
the sum (central DP: the coordinator sees the un-noised sum for an instant, see the README's security
notes), and the models are solved from the noised statistics:

- demand ridge by AdaSSP (Wang 2018): the noised X^T X is symmetrised, its eigenvalues floored at
  zero, and regularised by the ridge penalty plus a high-probability bound on the noise's operator
  norm, so the matrix inverted is always positive definite, whatever the draw;
- risk logistic regression by a few Newton steps, each from a noised [gradient, Hessian] sum.

Unit of privacy: one record of one firm (a demand window, a delivery row); neighbouring data sets
differ by adding or removing one record. The demand release is one Gaussian event; the risk model is
`steps` Gaussian events composed. Both are calibrated to spend the run's budget (less any reserved
release) with the run's accountant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import dp_accounting as dpa
import numpy as np

from silobridge.contract.config import FederationSpec, PrivacySpec
from silobridge.contract.sufficient import split_newton, split_regression
from silobridge.privacy.dp import Budget, calibrate_noise_multiplier
from silobridge.server.efficiency_release import efficiency_event
from silobridge.server.privacy import accounting_spec

NOISE_FAILURE = 0.05
"""Probability that the noise's operator norm exceeds the bound AdaSSP regularises by."""


def release_event(noise_multiplier: float, steps: int = 1) -> dpa.DpEvent:
    """`steps` Gaussian releases of multiplier z (noise std over L2 sensitivity) on the same records."""
    gaussian = dpa.GaussianDpEvent(noise_multiplier)
    return gaussian if steps == 1 else dpa.SelfComposedDpEvent(gaussian, steps)


def calibrate_release(privacy: PrivacySpec, steps: int = 1, reserved: Sequence[dpa.DpEvent] = ()) -> float:
    """The smallest multiplier z with which `steps` releases (and the reserved ones) spend the run's budget."""

    def whole(z: float) -> dpa.DpEvent:
        event = release_event(z, steps)
        return dpa.ComposedDpEvent([event, *reserved]) if reserved else event

    return calibrate_noise_multiplier(whole, Budget(privacy.epsilon, privacy.delta), accounting_spec(privacy))


def linear_noise_multipliers(spec: FederationSpec) -> dict[str, float]:
    """Each linear model's noise multiplier, calibrated so its releases (and a DP efficiency release) spend the
    run's budget: the coordinator noises with these, and a firm's lifetime odometer charges them, both from
    the same spec."""
    policy = spec.efficiency
    reserved = (efficiency_event(spec.privacy.unit, policy.dp_noise_multiplier),) if policy.dp else ()
    return {
        "demand": calibrate_release(spec.privacy, 1, reserved),
        "risk": calibrate_release(spec.privacy, spec.linear.newton_steps, reserved),
    }


def add_noise(vector: np.ndarray, noise_std: float, rng: np.random.Generator) -> np.ndarray:
    """Independent N(0, noise_std^2) on every released coordinate."""
    return vector + rng.normal(0.0, noise_std, size=vector.shape) if noise_std > 0 else vector.copy()


def noise_norm_bound(noise_std: float, dim: int, failure: float = NOISE_FAILURE) -> float:
    """A bound, holding with probability 1 - failure, on the operator norm of a symmetric d x d matrix
    with independent N(0, s^2) entries on and above the diagonal: s (2 sqrt(d) + sqrt(2 log(1/failure)))
    (Wigner matrices; Bandeira and van Handel 2016)."""
    return noise_std * (2.0 * math.sqrt(dim) + math.sqrt(2.0 * math.log(1.0 / failure)))


def floored_solve(matrix: np.ndarray, rhs: np.ndarray, penalty: float) -> np.ndarray:
    """(M_+ + penalty I)^-1 rhs, M_+ the symmetrised matrix with negative eigenvalues set to zero."""
    if not penalty > 0:
        raise ValueError(f"the penalty must be positive, got {penalty}")
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    inverse = 1.0 / (np.maximum(values, 0.0) + penalty)
    scaled = inverse[:, None] * (vectors.T @ rhs) if rhs.ndim == 2 else inverse * (vectors.T @ rhs)
    return vectors @ scaled


def adassp(statistics: np.ndarray, dim: int, outputs: int, noise_std: float, ridge: float) -> np.ndarray:
    """Ridge coefficients (dim, outputs) from (noised) [triu(X^T X), X^T Y], regularised by the noise scale."""
    xtx, xty = split_regression(statistics, dim, outputs)
    return floored_solve(xtx, xty, ridge + noise_norm_bound(noise_std, dim))


def newton_step(coef: np.ndarray, statistics: np.ndarray, noise_std: float, ridge: float) -> np.ndarray:
    """One Newton step of L2-penalised logistic regression from (noised) [gradient, triu(Hessian)]."""
    dim = coef.size
    gradient, hessian = split_newton(statistics, dim)
    penalty = ridge + noise_norm_bound(noise_std, dim)
    return coef - floored_solve(hessian, gradient + ridge * coef, penalty)
