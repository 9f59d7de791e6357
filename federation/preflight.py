"""Refusals a private run can make before any firm is contacted, from the settings alone.

- A fixed noise multiplier whose first round alone overspends the run's budget: the run could
  release nothing and would end with an untrained model. (One that fits some rounds but not all
  is allowed: training stops cleanly when the next round would overspend, and the ledger says so.)
- Firms whose own `budget_epsilon` cannot pay for one round take part in no round; if that leaves
  fewer firms than a round needs (secure aggregation's minimum of 3, the run's `min_firms`), the
  run could never complete a round: refused, naming each firm and its budget.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from federation.settings import RunSettings
from privacy.dp import epsilon
from server.privacy import accounting_spec
from silobridge.errors import ConfigError

log = logging.getLogger("silobridge")

SECURE_MINIMUM = 3  # server.secure_sum.resolve_aggregation: secure aggregation needs at least 3 firms


def round_epsilon(settings: RunSettings) -> float:
    """Epsilon (at the run's delta) one round charges a firm, as the ledger's admission computes it."""
    plan = settings.privacy_plan()
    event = plan.record_event() if plan.spec.unit == "record" else plan.firm_event()
    return epsilon([event], plan.spec.delta, accounting_spec(plan.spec))


def firms_needed(settings: RunSettings) -> int:
    """Fewest firms a round can aggregate."""
    secure = SECURE_MINIMUM if settings.aggregation == "secure" else 1
    return max(settings.min_firms, secure)


def preflight(settings: RunSettings) -> None:
    """ConfigError for a private run that cannot release a single round (see the module's notes)."""
    privacy = settings.spec.privacy
    if not privacy.enabled:
        return
    plan = settings.privacy_plan()
    first = epsilon(
        [replace(plan, rounds=1).planned_run_event(plan.noise_multiplier)], privacy.delta, accounting_spec(privacy)
    )
    if first > privacy.epsilon:
        raise ConfigError(
            f"the fixed noise multiplier {privacy.noise_multiplier:g} spends epsilon {first:.4g} in the first round "
            f"alone, over the run's budget {privacy.epsilon:g} at delta {privacy.delta:g}: no round could be released. "
            "Raise the noise multiplier or leave it out to calibrate it",
            source=str(settings.scenario_path),
            field="privacy.noise_multiplier",
        )
    per_round = round_epsilon(settings)
    priced_out = {
        firm.id: firm.budget_epsilon
        for firm in settings.scenario.firms
        if firm.budget_epsilon is not None and firm.budget_epsilon < per_round
    }
    if not priced_out:
        return
    left, needed = len(settings.scenario.firms) - len(priced_out), firms_needed(settings)
    named = ", ".join(f"'{firm}' (budget_epsilon {budget:g})" for firm, budget in sorted(priced_out.items()))
    if left < needed:
        raise ConfigError(
            f"one round charges each firm epsilon {per_round:.4g} at delta {privacy.delta:g}; firm(s) {named} cannot "
            f"pay for it and would take part in no round, leaving {left} firm(s), fewer than the {needed} a round "
            f"needs{' (secure aggregation needs at least 3)' if settings.aggregation == 'secure' else ''}",
            source=str(settings.scenario_path),
            field=f"firms.{sorted(priced_out)[0]}.budget_epsilon",
        )
    log.warning("firm(s) %s cannot pay for one round (epsilon %.4g) and will take part in no round", named, per_round)
