"""DpEvent builders: every release is described by a dp-accounting `DpEvent` before it happens.

The events are dp-accounting's own immutable records, plus one of ours (`SkellamDpEvent`) for the
distributed discrete noise that dp-accounting has no event for. Builders here do the unit
conversions (noise standard deviation over the sensitivity of the neighbouring relation) once, so
that callers never hand-compute a noise multiplier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import dp_accounting as dpa
from dp_accounting import NeighboringRelation

from silobridge.errors import ConfigError


@dataclass(frozen=True)
class SkellamDpEvent(dpa.DpEvent):
    """A sum of integer vectors released with symmetric Skellam noise (Poisson(V/2) - Poisson(V/2)).

    `variance` is the per-coordinate variance V of the noise present in the released sum (the sum of
    the shares actually added); `l1_sensitivity` and `l2_sensitivity` are the L1 and L2 norms by
    which the integer sum can move between neighbouring inputs. Accounted by
    `privacy.dp.skellam.skellam_rdp` (Agarwal, Kairouz, Liu 2021); dp-accounting has no such event.
    """

    variance: float
    l1_sensitivity: float
    l2_sensitivity: float

    def __post_init__(self) -> None:
        _require_positive("variance", self.variance)
        _require_positive("l1_sensitivity", self.l1_sensitivity)
        _require_positive("l2_sensitivity", self.l2_sensitivity)


def _require_positive(field: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"must be a positive finite number, got {value!r}", field=field)


def l2_sensitivity(clip_norm: float, relation: NeighboringRelation) -> float:
    """L2 sensitivity of a sum of vectors each clipped to `clip_norm`, under `relation`.

    Adding, removing or zeroing one contribution moves the sum by at most `clip_norm`; replacing one
    contribution by another moves it by up to twice that.
    """
    _require_positive("clip_norm", clip_norm)
    return 2.0 * clip_norm if relation is NeighboringRelation.REPLACE_ONE else float(clip_norm)


def gaussian_event(noise_std: float, sensitivity: float) -> dpa.GaussianDpEvent:
    """The Gaussian mechanism with noise `noise_std` on a query of L2 `sensitivity`."""
    _require_positive("noise_std", noise_std)
    _require_positive("sensitivity", sensitivity)
    return dpa.GaussianDpEvent(noise_multiplier=noise_std / sensitivity)


def combine_gaussians(*events: dpa.GaussianDpEvent) -> dpa.GaussianDpEvent:
    """Several Gaussian queries on the same sample as one Gaussian query.

    Their effective noise multiplier is (sum z_i^-2)^-1/2 (Mironov, Talwar, Zhang 2019, section 3;
    Andrew et al. 2021, theorem 1 for adaptive clipping). One event keeps the release accountable by
    PLD too, which accepts only a plain Gaussian under Poisson sampling.
    """
    if not events:
        raise ConfigError("combine_gaussians needs at least one event", field="events")
    for event in events:
        if not isinstance(event, dpa.GaussianDpEvent):
            raise ConfigError(f"expected GaussianDpEvent, got {type(event).__name__}", field="events")
        _require_positive("noise_multiplier", event.noise_multiplier)
    precision = sum(event.noise_multiplier**-2 for event in events)
    return dpa.GaussianDpEvent(noise_multiplier=precision**-0.5)


def remaining_noise_multiplier(combined: float, *others: dpa.GaussianDpEvent) -> float:
    """The multiplier one query may have so that it and `others`, combined, have multiplier `combined`.

    The inverse of `combine_gaussians`: (combined^-2 - sum z_i^-2)^-1/2 (Andrew et al. 2021, section 3:
    the update's noise once the clip count has taken its share). Impossible when the others alone
    are already as revealing as `combined` allows.
    """
    _require_positive("noise_multiplier", combined)
    remaining = combined**-2 - sum(event.noise_multiplier**-2 for event in others)
    if remaining <= 0:
        taken = sum(event.noise_multiplier**-2 for event in others) ** -0.5
        raise ConfigError(
            f"the other queries (combined multiplier {taken:.6g}) already spend the whole combined multiplier "
            f"{combined:.6g}; their noise must be larger",
            field="noise_multiplier",
        )
    multiplier: float = remaining**-0.5
    return multiplier


def dpsgd_event(noise_multiplier: float, sample_rate: float, steps: int) -> dpa.DpEvent:
    """Record-level DP-SGD: `steps` Poisson-sampled Gaussian steps (Abadi et al. 2016).

    `noise_multiplier` is the noise std over the per-example clip norm (add/remove one record);
    the torch layer only counts steps and passes them here.
    """
    _require_positive("noise_multiplier", noise_multiplier)
    if not 0 < sample_rate <= 1:
        raise ConfigError(f"must be in (0, 1], got {sample_rate!r}", field="sample_rate")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"must be a positive integer, got {steps!r}", field="steps")
    step = dpa.PoissonSampledDpEvent(
        sampling_probability=float(sample_rate),
        event=dpa.GaussianDpEvent(noise_multiplier=float(noise_multiplier)),
    )
    return dpa.SelfComposedDpEvent(event=step, count=steps)
