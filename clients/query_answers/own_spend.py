"""A firm's own count of what the queries of a run (a session) have spent on its records.

Under record-level DP every query step the firm answers is one Gaussian release at the noise
multiplier the step states, on the firm's own records only (the firms' records are disjoint), so
the firm can compose them itself with the run's accountant and refuse a step that would take its
records past its own budget, whatever the coordinator asks; the coordinator's ledger charges the
same events. (The firm trusts the coordinator to add the stated noise, as it does for training's
central noise; under firm-level DP the spend is the run's, which the firm cannot recount.)
"""

from __future__ import annotations

from collections.abc import Sequence

import dp_accounting as dpa
from dp_accounting import NeighboringRelation

from silobridge.contract.query_protocol import QueryStep
from silobridge.errors import ProtocolError
from silobridge.privacy.dp import AccountantKind, AccountingSpec, PrivacyUnit, epsilon

OWN_QUERY_SPEND = "silobridge.own_query_spend"
"""Node state (per run): the noise multipliers of the query steps this firm has released."""


def own_query_epsilon(multipliers: Sequence[float], delta: float, accountant: str) -> float:
    """Epsilon (at `delta`) of Gaussian releases at these noise multipliers on the firm's records."""
    if not multipliers:
        return 0.0
    spec = AccountingSpec(
        kind=AccountantKind(accountant), relation=NeighboringRelation.ADD_OR_REMOVE_ONE, unit=PrivacyUnit.RECORD
    )
    return epsilon([dpa.GaussianDpEvent(z) for z in multipliers], delta, spec)


def check_step(step: QueryStep, budget_epsilon: float | None, answered: Sequence[float], *, firm: str) -> None:
    """Refuse (before computing anything) a record-level step past the firm's own budget.

    `answered` are the noise multipliers of the steps the firm released earlier in this run. Nothing
    to check without an own budget, without DP, or at firm level.
    """
    if budget_epsilon is None or step.noise_multiplier is None or step.unit != "record":
        return
    if step.delta is None or step.accountant is None:
        raise ProtocolError(f"query '{step.query}' step {step.step}: DP step without delta or accountant", firm=firm)
    after = own_query_epsilon([*answered, step.noise_multiplier], step.delta, step.accountant)
    if after > budget_epsilon:
        spent = own_query_epsilon(answered, step.delta, step.accountant)
        raise ProtocolError(
            f"refused: query '{step.query}' step {step.step} would take this firm's records to epsilon "
            f"{after:.4g} (spent {spent:.4g} in {len(answered)} query steps), over its own budget "
            f"{budget_epsilon:g} at delta {step.delta:g}",
            firm=firm,
            stage=f"query {step.query} step {step.step}",
        )
