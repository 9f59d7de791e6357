"""The coordinator's half of differential privacy: what each round releases, at what cost.

A `PrivacyPlan` fixes a run's mechanism from the federation's `PrivacySpec` and describes every
round as a dp-accounting event: record-level DP-SGD steps per firm, or a firm-level Gaussian
(central) or Skellam (distributed) release of the clipped model changes. The noise multiplier is
calibrated once, so that the planned rounds spend exactly the budget; the budget guard then checks
each round before any firm is contacted.

With adaptive clipping (firm, central) each round releases two Gaussian queries on the same firms:
the clipped update sum (noise z_update x C_t, sensitivity C_t) and the count of unclipped firms
(noise sigma_b, sensitivity 1/2). They are accounted as one Gaussian of multiplier z, the one
calibrated to the budget; the update gets z_update = (z^-2 - (2 sigma_b)^-2)^-1/2 (Andrew et al. 2021,
section 3).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import dp_accounting as dpa
import numpy as np
from dp_accounting import NeighboringRelation

from silobridge.contract.config import PrivacySpec
from silobridge.errors import ConfigError
from silobridge.privacy.dp import (
    AccountantKind,
    AccountingSpec,
    AdaptiveClipping,
    Budget,
    DistributedSkellam,
    PrivacyUnit,
    Sampling,
    add_gaussian_noise,
    calibrate_noise_multiplier,
    central_round_event,
    dpsgd_event,
    poisson_steps_per_epoch,
    remaining_noise_multiplier,
)


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

    @property
    def adaptive(self) -> bool:
        """Whether rounds release the unclipped count of adaptive clipping beside the update (firm, central)."""
        spec = self.spec
        return spec.enabled and spec.unit == "firm" and spec.mechanism == "central" and spec.adaptive_clipping

    def clipping_state(self) -> AdaptiveClipping:
        """Adaptive clipping before the first round: the spec's clip norm, its count noise, quantile and step."""
        if self.spec.clip_count_noise_std is None:
            raise ConfigError("the unclipped count's noise is not resolved yet", field="privacy.clip_count_noise_std")
        return AdaptiveClipping(
            clip_norm=self.spec.clip_norm,
            count_noise_std=self.spec.clip_count_noise_std,
            target_quantile=self.spec.clip_target_quantile,
            learning_rate=self.spec.clip_learning_rate,
        )

    def count_event(self) -> dpa.GaussianDpEvent:
        """The unclipped count's Gaussian query (sensitivity 1/2 under add/remove one firm)."""
        return self.clipping_state().count_event(accounting_spec(self.spec).relation)

    def update_noise_multiplier(self, noise_multiplier: float | None = None) -> float:
        """The noise multiplier of the update sum: all of z, or under adaptive clipping what the count leaves of it."""
        z = noise_multiplier or self.noise_multiplier
        if not self.adaptive:
            return z
        count = self.count_event()
        try:
            return remaining_noise_multiplier(z, count)
        except ConfigError:
            raise ConfigError(
                f"adaptive clipping's count noise std {self.spec.clip_count_noise_std:g} (multiplier "
                f"{count.noise_multiplier:g} at sensitivity 1/2) leaves no noise for the update: it must exceed half "
                f"the combined noise multiplier {z:.4g} (the budget's), i.e. be > {z / 2:.4g}; raise it, or the "
                "epsilon (the paper's default, expected participants / 20, assumes hundreds of firms per round)",
                field="privacy.clip_count_noise_std",
            ) from None

    def firm_event(self, noise_shares: int | None = None, noise_multiplier: float | None = None) -> dpa.DpEvent:
        """One firm-level round: central Gaussian on the sampled sum, or the Skellam noise of `noise_shares`.

        Under adaptive clipping the update's Gaussian and the count's are combined into one before sampling.
        Noise z_update x C_t on a sum of sensitivity C_t is a multiplier z_update whatever the round's clip
        norm C_t, so the event is built at C = 1: the same for the budget guard's preview and the ledger.
        """
        z = noise_multiplier or self.noise_multiplier
        if self.spec.mechanism == "central":
            relation = accounting_spec(self.spec).relation
            if self.adaptive:
                update = self.update_noise_multiplier(z)
                return central_round_event(update, 1.0, self.firm_sampling, relation, extra=(self.count_event(),))
            return central_round_event(z, self.spec.clip_norm, self.firm_sampling, relation)
        return self.skellam(z).event(noise_shares or self.min_firms)

    def planned_run_event(self, noise_multiplier: float) -> dpa.DpEvent:
        """The whole run at the worst case (every round, fewest noise shares) and the reserved releases:
        what calibration fits. Under adaptive clipping each round is one Gaussian of the combined multiplier."""
        if self.spec.unit == "record":
            event = self.record_event(noise_multiplier)
        elif self.adaptive:
            relation = accounting_spec(self.spec).relation
            event = central_round_event(noise_multiplier, 1.0, self.firm_sampling, relation)
        else:
            event = self.firm_event(noise_multiplier=noise_multiplier)
        training = event if self.rounds == 1 else dpa.SelfComposedDpEvent(event, self.rounds)
        return dpa.ComposedDpEvent([training, *self.reserved]) if self.reserved else training

    # -- noise --------------------------------------------------------------------------------------

    def add_central_noise(
        self, summed: np.ndarray, rng: np.random.Generator, clip_norm: float | None = None
    ) -> np.ndarray:
        """N(0, (z_update C)^2) on every coordinate of the securely summed changes clipped to C (the round's)."""
        return add_gaussian_noise(summed, self.update_noise_multiplier(), clip_norm or self.spec.clip_norm, rng)

    def expected_participants(self, eligible: int) -> float:
        """DP-FedAvg divides the noised sum by the expected sample size (public), not the realised one."""
        return max(1.0, self.spec.firm_sample_rate * eligible)


def resolve_privacy(plan: PrivacyPlan) -> PrivacySpec:
    """Calibrate the noise multiplier (unless given) so that the planned run fits the budget exactly.

    Under adaptive clipping the unclipped count's noise is fixed first (expected participants / 20 unless
    given), the combined multiplier is calibrated, and the update must be left some noise of its own.
    """
    spec = plan.spec
    if not spec.enabled:
        return spec
    if spec.unit == "firm" and spec.mechanism == "distributed" and spec.accountant != "rdp":
        raise ConfigError("distributed DP (Skellam noise) is accounted by RDP only", field="privacy.accountant")
    if plan.adaptive and spec.clip_count_noise_std is None:
        spec = spec.model_copy(update={"clip_count_noise_std": plan.expected_participants(plan.num_firms) / 20})
        plan = replace(plan, spec=spec)
    accounting = accounting_spec(spec)
    if spec.noise_multiplier is None:
        z = calibrate_noise_multiplier(plan.planned_run_event, Budget(spec.epsilon, spec.delta), accounting)
        spec = spec.model_copy(update={"noise_multiplier": round(z, 4) + 1e-4})  # round up: stay within budget
    if plan.adaptive:
        replace(plan, spec=spec).update_noise_multiplier()  # ConfigError if the count takes all the noise
    return spec
