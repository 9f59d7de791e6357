"""Differentially private training rounds, the coordinator's policy without any transport.

Before a round: which firms' budgets can pay for it (the ledger's admission; under central DP with
firm sampling, the secret Poisson sample). After it: the private update (FedAvg with public weights
under record-level DP-SGD; the clipped sum plus Gaussian noise, or the Skellam shares' sum, under
firm-level DP), recorded in the ledger, and adaptive clipping's next clip norm. The coordinator
(`federation.training`) carries the messages; everything here works on sums and firm names.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from silobridge.contract.arrays import flatten, unflatten
from silobridge.contract.wire_names import update_segment, weight_segment
from silobridge.errors import FederationError
from silobridge.privacy.dp import UNCLIPPED_SEGMENT, Sampling
from silobridge.privacy.ledger import PrivacyRun, Release
from silobridge.server.privacy import PrivacyPlan
from silobridge.server.strategy import FedAvg

Weights = dict[str, OrderedDict[str, np.ndarray]]


def dataset_party(firm: str, kind: str) -> str:
    """The ledger's name for one data set of one firm (record-level accounting)."""
    return f"{firm}/{kind}"


def accounted_parties(unit: str, trains: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """What the ledger accounts, each with its firm: the firms, or (record unit) each firm's data sets.

    `trains` maps each firm to the models it trains, in the run's model order. Under record-level DP a
    record sits in one data set only (a demand window or a delivery row), so a firm's two data sets
    compose in parallel: each is accounted on its own, and the firm has spent what its most-spent data
    set has.
    """
    if unit == "firm":
        return {firm: firm for firm in trains}
    return {dataset_party(firm, kind): firm for firm, kinds in trains.items() for kind in kinds}


@dataclass(frozen=True)
class RoundAdmission:
    """The firms asked this round, and those whose own budget is spent (logged as dropped, in this order)."""

    participants: list[str]
    refused: list[str]


class DpRounds:
    """One private run's round policy: admission, the private update and adaptive clipping's state."""

    def __init__(self, plan: PrivacyPlan, strategy: FedAvg):
        self.plan = plan
        self.strategy = strategy
        # adaptive clipping's state: the clip norm the next round sends (firm-level central DP only)
        self.clipping = plan.clipping_state() if plan.adaptive else None
        self.eligible: list[str] = []  # the firms the last firm-level round admitted (before sampling)

    def admit(
        self,
        ledger: PrivacyRun,
        server_round: int,
        firms: Iterable[str],
        parties: Mapping[str, str],
        kinds: Sequence[str],
    ) -> RoundAdmission:
        """Before contacting any firm: which firms' budgets can pay for this round (BudgetExhausted if none).

        `parties` are the ledger's accounted parties with their firms; `kinds` the models, in the order
        their data sets are admitted (record unit).
        """
        plan, release = self.plan, f"round-{server_round}"
        firms = list(firms)
        if plan.spec.unit == "record":
            refused: set[str] = set()
            for kind in kinds:
                candidates = sorted(p for p in parties if p.endswith(f"/{kind}"))
                if candidates:
                    admission = ledger.admit(f"{release}/{kind}", plan.record_event(), candidates)
                    refused |= {parties[p] for p in admission.excluded}
            # a firm takes part only while every data set it trains can pay
            return RoundAdmission(sorted(set(firms) - refused), sorted(refused))
        admission = ledger.admit(release, plan.firm_event(), sorted(firms))
        self.eligible = list(admission.participants)
        if plan.spec.mechanism == "central" and plan.spec.firm_sample_rate < 1:
            draw = np.random.default_rng()  # fresh OS entropy: the sample must stay secret to amplify
            sample = [firm for firm in self.eligible if draw.random() < plan.spec.firm_sample_rate]
            return RoundAdmission(sample, list(admission.excluded))
        return RoundAdmission(self.eligible, list(admission.excluded))

    def release(
        self,
        ledger: PrivacyRun,
        server_round: int,
        weights: Weights,
        segments: Mapping[str, np.ndarray],
        contributors: Sequence[str],
        parties: Mapping[str, str],
    ) -> list[Release]:
        """Apply the round's noised sum to `weights` (in place); returns the releases the ledger must record,
        each naming the firms its admission left out, so that a checkpoint can hold them before the ledger does."""
        plan = self.plan
        spec = plan.spec
        kinds = list(weights)
        release = f"round-{server_round}"
        if spec.unit == "record":
            for kind in kinds:  # FedAvg with the firms' public weights
                weight_sum = float(segments[weight_segment(kind)][0])
                if weight_sum > 0:
                    flat = flatten(weights[kind])
                    weights[kind] = unflatten(
                        self.strategy.aggregate_train(flat, segments[update_segment(kind)], weight_sum), weights[kind]
                    )
            contributed = set(contributors)
            releases = []
            for kind in kinds:
                paid = sorted(p for p, firm in parties.items() if firm in contributed and p.endswith(f"/{kind}"))
                if paid:
                    releases.append(
                        Release(
                            release_id=f"{release}/{kind}",
                            mechanism="dpsgd",
                            event=plan.record_event(),
                            firms=paid,
                            sampling=Sampling.poisson(spec.sample_rate),
                            noise_multiplier=spec.noise_multiplier,
                            clip_norm=spec.max_grad_norm(kind),
                            excluded_firms=_excluded(ledger, f"{release}/{kind}", paid),
                            parameters={"steps": plan.dpsgd_steps, "local_epochs": plan.local_epochs},
                        )
                    )
            return releases
        sizes = {kind: flatten(weights[kind]).size for kind in kinds}
        joint = np.concatenate([segments[update_segment(kind)] for kind in kinds])
        clip_norm = spec.clip_norm
        parameters: dict[str, float | bool] = {}
        if spec.mechanism == "central":
            rng = np.random.default_rng()  # fresh OS entropy: noise the firms cannot predict
            expected = plan.expected_participants(len(self.eligible))
            if self.clipping is not None:
                clip_norm, parameters = self.adaptive_step(segments, len(contributors), expected, rng)
            noised = plan.add_central_noise(joint, rng, clip_norm)
            change = noised / expected
            event, accounted, shares = plan.firm_event(), self.eligible, None
        else:
            shares = len(contributors)
            change = plan.skellam().dequantise(joint) / shares
            event, accounted = plan.firm_event(noise_shares=shares), list(contributors)
        offset = 0
        for kind in kinds:
            flat = flatten(weights[kind])
            weights[kind] = unflatten(flat + change[offset : offset + sizes[kind]], weights[kind])
            offset += sizes[kind]
        return [
            Release(
                release_id=release,
                mechanism="gaussian" if spec.mechanism == "central" else "skellam",
                event=event,
                firms=sorted(accounted),
                sampling=plan.firm_sampling if spec.mechanism == "central" else Sampling.none(),
                noise_multiplier=spec.noise_multiplier,
                clip_norm=clip_norm,
                excluded_firms=_excluded(ledger, release, accounted),
                parameters={"noise_shares": shares} if shares is not None else parameters,
            )
        ]

    def adaptive_step(
        self, segments: Mapping[str, np.ndarray], contributors: int, expected: float, rng: np.random.Generator
    ) -> tuple[float, dict[str, float | bool]]:
        """Release the noised unclipped count and move the clip norm; the norm this round used, and what the
        ledger records of the two queries (the update's multiplier and the count's noise)."""
        plan, clipping = self.plan, self.clipping
        if clipping is None:
            raise FederationError("adaptive clipping is off in this run")
        unclipped = float(segments[UNCLIPPED_SEGMENT][0])
        centred = unclipped - contributors / 2  # the sum of (b - 1/2) over the firms in the sum
        noised = clipping.noised_count(centred, rng)
        self.clipping = clipping.step(noised, expected)
        parameters: dict[str, float | bool] = {
            "adaptive_clipping": True,
            "update_noise_multiplier": plan.update_noise_multiplier(),
            "count_noise_std": clipping.count_noise_std,
            "target_quantile": clipping.target_quantile,
            "clip_learning_rate": clipping.learning_rate,
            "next_clip_norm": self.clipping.clip_norm,
        }
        return clipping.clip_norm, parameters


def _excluded(ledger: PrivacyRun, release_id: str, accounted: Sequence[str]) -> list[str]:
    """The firms the release's admission left out for their budgets, less those it accounts."""
    return sorted(set(ledger.excluded_for(release_id)) - set(accounted))
