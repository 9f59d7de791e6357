"""Central DP: Gaussian noise on the (securely) summed, clipped updates.

The aggregator, trusted with the sum but not with individual updates, adds N(0, (z C)^2) per
coordinate. Under add/remove or zero-out neighbouring the sum moves by at most C, so the event is
Gaussian(z); under replace-one it moves by 2C, so the same noise buys Gaussian(z / 2).
"""

from __future__ import annotations

import math

import dp_accounting as dpa
import numpy as np
from dp_accounting import NeighboringRelation

from silobridge.errors import ConfigError
from silobridge.privacy.dp.events import combine_gaussians, gaussian_event, l2_sensitivity
from silobridge.privacy.dp.sampling import Sampling


def central_round_event(
    noise_multiplier: float,
    clip_norm: float,
    sampling: Sampling,
    relation: NeighboringRelation = NeighboringRelation.ADD_OR_REMOVE_ONE,
    *,
    extra: tuple[dpa.GaussianDpEvent, ...] = (),
) -> dpa.DpEvent:
    """The event of one central-DP round: the sampled Gaussian release of the update sum.

    `extra` holds other Gaussian releases made on the same sample in the same round (the adaptive
    clipping count); they are folded into one Gaussian before sampling is applied.
    """
    sampling.check_relation(relation)
    release = gaussian_event(noise_multiplier * clip_norm, l2_sensitivity(clip_norm, relation))
    if extra:
        release = combine_gaussians(release, *extra)
    return sampling.wrap(release)


def add_gaussian_noise(
    summed: np.ndarray, noise_multiplier: float, clip_norm: float, rng: np.random.Generator
) -> np.ndarray:
    """`summed` plus N(0, (noise_multiplier * clip_norm)^2) on every coordinate."""
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise ConfigError(f"must be a positive finite number, got {noise_multiplier!r}", field="noise_multiplier")
    if not (math.isfinite(clip_norm) and clip_norm > 0):
        raise ConfigError(f"must be a positive finite number, got {clip_norm!r}", field="clip_norm")
    summed = np.asarray(summed, dtype=np.float64)
    return summed + rng.normal(0.0, noise_multiplier * clip_norm, size=summed.shape)


def central_release(
    summed: np.ndarray,
    *,
    noise_multiplier: float,
    clip_norm: float,
    sampling: Sampling,
    rng: np.random.Generator,
    relation: NeighboringRelation = NeighboringRelation.ADD_OR_REMOVE_ONE,
    extra: tuple[dpa.GaussianDpEvent, ...] = (),
) -> tuple[np.ndarray, dpa.DpEvent]:
    """Noise a summed update and return it with the event that accounts it."""
    event = central_round_event(noise_multiplier, clip_norm, sampling, relation, extra=extra)
    return add_gaussian_noise(summed, noise_multiplier, clip_norm, rng), event
