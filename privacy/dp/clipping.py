"""Firm-level L2 clipping of an update, and adaptive clipping of the clip norm.

Clipping bounds what one firm can move the sum by (the sensitivity every noise scale is relative
to); it is reported, never silent. Adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy 2021)
tracks a quantile of the firms' update norms from a noised count of unclipped firms; that count is
a release too, and `AdaptiveClipping.update` returns its event.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import dp_accounting as dpa
import numpy as np
from dp_accounting import NeighboringRelation

from silobridge.errors import ConfigError, DataError
from silobridge.privacy.dp.events import gaussian_event

UNCLIPPED_SEGMENT = "unclipped"
"""Secure-sum segment of adaptive clipping: each firm's 1 if its update was within the round's clip norm, else 0."""


@dataclass(frozen=True)
class ClipResult:
    """A clipped update, its norm before clipping, and whether clipping changed it."""

    vector: np.ndarray
    norm: float
    clipped: bool


def clip_l2(update: np.ndarray, clip_norm: float, *, firm: str = "local") -> ClipResult:
    """Scale `update` down to L2 norm `clip_norm` if it is longer; refuse non-finite updates."""
    if not (math.isfinite(clip_norm) and clip_norm > 0):
        raise ConfigError(f"must be a positive finite number, got {clip_norm!r}", field="clip_norm")
    vector = np.asarray(update, dtype=np.float64)
    if not np.all(np.isfinite(vector)):
        raise DataError(firm, "the model update contains NaN or infinite values; it cannot be clipped")
    norm = float(np.linalg.norm(vector))
    if norm <= clip_norm:
        return ClipResult(vector, norm, False)
    return ClipResult(vector * (clip_norm / norm), norm, True)


@dataclass(frozen=True)
class AdaptiveClipping:
    """State of quantile-based adaptive clipping (geometric update, Andrew et al. 2021, algorithm 1).

    Each round every participating firm reports b = 1 if its update norm was <= clip_norm. The
    server releases the sum of (b - 1/2), which has sensitivity 1/2, with Gaussian noise
    `count_noise_std`, estimates the unclipped fraction over the expected number of participants,
    and moves the clip norm by exp(-learning_rate * (fraction - target_quantile)).
    Defaults follow the paper: target quantile 0.5, learning rate 0.2, and count noise about
    expected participants / 20.
    """

    clip_norm: float
    count_noise_std: float
    target_quantile: float = 0.5
    learning_rate: float = 0.2

    def __post_init__(self) -> None:
        for name in ("clip_norm", "count_noise_std", "learning_rate"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"must be a positive finite number, got {value!r}", field=f"adaptive_clipping.{name}")
        if not 0 < self.target_quantile < 1:
            raise ConfigError(
                f"must be in (0, 1), got {self.target_quantile!r}", field="adaptive_clipping.target_quantile"
            )

    def count_event(self, relation: NeighboringRelation = NeighboringRelation.ADD_OR_REMOVE_ONE) -> dpa.GaussianDpEvent:
        """The release of the noised unclipped count: sensitivity 1/2 (1 under replace-one)."""
        sensitivity = 1.0 if relation is NeighboringRelation.REPLACE_ONE else 0.5
        return gaussian_event(self.count_noise_std, sensitivity=sensitivity)

    def update(
        self,
        unclipped: np.ndarray,
        expected_participants: float,
        rng: np.random.Generator,
        relation: NeighboringRelation = NeighboringRelation.ADD_OR_REMOVE_ONE,
    ) -> tuple[AdaptiveClipping, dpa.GaussianDpEvent]:
        """The next state from this round's unclipped indicators, and the event of releasing their count.

        The event is the count query alone; combine it with the update's Gaussian (see
        `privacy.dp.events.combine_gaussians`) and wrap the pair in the round's sampling event.
        """
        bits = np.asarray(unclipped)
        if bits.ndim != 1 or not np.all((bits == 0) | (bits == 1)):
            raise ConfigError("unclipped indicators must be a 1-D array of 0/1", field="unclipped")
        noised = self.noised_count(float(np.sum(bits - 0.5)), rng)
        return self.step(noised, expected_participants), self.count_event(relation)

    def noised_count(self, centred_count: float, rng: np.random.Generator) -> float:
        """The released count: the sum of (b - 1/2) over the firms in the sum, plus N(0, count_noise_std^2).

        Split from `update` because in a run the server only ever sees the securely summed indicators.
        """
        if not math.isfinite(centred_count):
            raise ConfigError(f"must be finite, got {centred_count!r}", field="unclipped_count")
        return centred_count + rng.normal(0.0, self.count_noise_std)

    def step(self, noised_count: float, expected_participants: float) -> AdaptiveClipping:
        """The next state from an already noised count: fraction = count / expected + 1/2, then the geometric step."""
        if not (math.isfinite(expected_participants) and expected_participants > 0):
            raise ConfigError(f"must be positive, got {expected_participants!r}", field="expected_participants")
        if not math.isfinite(noised_count):
            raise ConfigError(f"must be finite, got {noised_count!r}", field="noised_count")
        fraction = noised_count / expected_participants + 0.5
        new_norm = self.clip_norm * math.exp(-self.learning_rate * (fraction - self.target_quantile))
        return replace(self, clip_norm=new_norm)
