"""The coordinator's half of differential privacy: what each round releases, at what cost.

A `PrivacyPlan` fixes a run's mechanism from the federation's `PrivacySpec` and describes every
round as a dp-accounting event: record-level DP-SGD steps per firm, or a firm-level Gaussian
(central) or Skellam (distributed) release of the clipped model changes. The noise multiplier is
calibrated once, so that the planned rounds spend exactly the budget; the budget guard then checks
each round before any firm is contacted.
"""

from __future__ import annotations

from dataclasses import dataclass

import dp_accounting as dpa
import numpy as np
from dp_accounting import NeighboringRelation

from privacy.dp import (
    AccountantKind,
    AccountingSpec,
    Budget,
    DistributedSkellam,
    PrivacyUnit,
    Sampling,
    add_gaussian_noise,
    calibrate_noise_multiplier,
    central_round_event,
    dpsgd_event,
    poisson_steps_per_epoch,
)
from silobridge.config import PrivacySpec
from silobridge.errors import ConfigError


def accounting_spec(spec: PrivacySpec) -> AccountingSpec:
    """Accountant, neighbouring relation and unit for a run.

    Distributed DP protects a firm's update within a round it is seen to take part in (zero-out);
    everything else is add/remove one record or one firm.
    """
    distributed = spec.unit == "firm" and spec.mechanism == "distributed"
    relation = NeighboringRelation.REPLACE_SPECIAL if distributed else NeighboringRelation.ADD_OR_REMOVE_ONE
    return AccountingSpec(kind=AccountantKind(spec.accountant), relation=relation, unit=PrivacyUnit(spec.unit))


@dataclass(frozen=True)
class PrivacyPlan:
    """Every release of a run, as events; `spec.noise_multiplier` must be resolved."""

    spec: PrivacySpec
    rounds: int
    local_epochs: int
    num_firms: int
    min_firms: int
    model_dim: int
    reserved: tuple[dpa.DpEvent, ...] = ()  # releases beyond training (the efficiency sums), fixed noise

    @property
    def noise_multiplier(self) -> float:
        if self.spec.noise_multiplier is None:
            raise ConfigError("the noise multiplier is not calibrated yet", field="privacy.noise_multiplier")
        return self.spec.noise_multiplier

    @property
    def mechanism(self) -> str:
        return "dpsgd" if self.spec.unit == "record" else f"dp_fedavg_{self.spec.mechanism}"

    @property
    def dpsgd_steps(self) -> int:
        """DP-SGD steps one firm takes per model per round."""
        return self.local_epochs * poisson_steps_per_epoch(self.spec.sample_rate)

    @property
    def firm_sampling(self) -> Sampling:
        rate = self.spec.firm_sample_rate
        return Sampling.none() if rate >= 1 else Sampling.poisson(rate)

    def skellam(self, noise_multiplier: float | None = None) -> DistributedSkellam:
        return DistributedSkellam(
            clip_norm=self.spec.clip_norm,
            scale=self.spec.distributed_scale,
            dim=self.model_dim,
            noise_multiplier=noise_multiplier or self.noise_multiplier,
            expected_shares=self.num_firms,
        )

    # -- events -------------------------------------------------------------------------------------

    def record_event(self, noise_multiplier: float | None = None) -> dpa.DpEvent:
        """One round of DP-SGD on one of a firm's data sets (each model trains on its own records)."""
        z = noise_multiplier or self.noise_multiplier
        return dpsgd_event(z, self.spec.sample_rate, self.dpsgd_steps)

    def firm_event(self, noise_shares: int | None = None, noise_multiplier: float | None = None) -> dpa.DpEvent:
        """One firm-level round: central Gaussian on the sampled sum, or the Skellam noise of `noise_shares`."""
        z = noise_multiplier or self.noise_multiplier
        if self.spec.mechanism == "central":
            relation = accounting_spec(self.spec).relation
            return central_round_event(z, self.spec.clip_norm, self.firm_sampling, relation)
        return self.skellam(z).event(noise_shares or self.min_firms)

    def planned_run_event(self, noise_multiplier: float) -> dpa.DpEvent:
        """The whole run at the worst case (every round, fewest noise shares) and the reserved releases:
        what calibration fits."""
        if self.spec.unit == "record":
            event = self.record_event(noise_multiplier)
        else:
            event = self.firm_event(noise_multiplier=noise_multiplier)
        training = event if self.rounds == 1 else dpa.SelfComposedDpEvent(event, self.rounds)
        return dpa.ComposedDpEvent([training, *self.reserved]) if self.reserved else training

    # -- noise --------------------------------------------------------------------------------------

    def add_central_noise(self, summed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """N(0, (z C)^2) on every coordinate of the securely summed, clipped changes."""
        return add_gaussian_noise(summed, self.noise_multiplier, self.spec.clip_norm, rng)

    def expected_participants(self, eligible: int) -> float:
        """DP-FedAvg divides the noised sum by the expected sample size (public), not the realised one."""
        return max(1.0, self.spec.firm_sample_rate * eligible)


def resolve_privacy(plan: PrivacyPlan) -> PrivacySpec:
    """Calibrate the noise multiplier (unless given) so that the planned run fits the budget exactly."""
    spec = plan.spec
    if not spec.enabled:
        return spec
    if spec.unit == "firm" and spec.mechanism == "distributed" and spec.accountant != "rdp":
        raise ConfigError("distributed DP (Skellam noise) is accounted by RDP only", field="privacy.accountant")
    accounting = accounting_spec(spec)
    if spec.noise_multiplier is None:
        z = calibrate_noise_multiplier(plan.planned_run_event, Budget(spec.epsilon, spec.delta), accounting)
        spec = spec.model_copy(update={"noise_multiplier": round(z, 4) + 1e-4})  # round up: stay within budget
    return spec
