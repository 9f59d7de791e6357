"""Refusals a private run can make before any firm is contacted, from the settings alone.

- A fixed noise multiplier whose first round alone overspends the run's budget: the run could
  release nothing and would end with an untrained model. (One that fits some rounds but not all
  is allowed: training stops cleanly when the next round would overspend, and the ledger says so.)
- Firms whose own `budget_epsilon` cannot pay for one round take part in no round; if that leaves
  fewer firms than a round needs (secure aggregation's minimum of 3, the run's `min_firms`), the
  run could never complete a round: refused, naming each firm and its budget.
- A simulation with `--state`: every firm's lifetime odometer is opened (verified, its budget set);
  firms whose odometer cannot pay for the run's first release would refuse it, so the same count applies.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

import dp_accounting as dpa

from silobridge.clients.own_budget import round_event
from silobridge.contract.config import FederationSpec
from silobridge.errors import ConfigError
from silobridge.federation.linear_run import model_families
from silobridge.federation.odometer_charges import linear_release_event
from silobridge.federation.odometer_glue import node_odometer
from silobridge.federation.settings import RunSettings
from silobridge.privacy.dp import epsilon
from silobridge.server.privacy import accounting_spec

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
    budgets = {firm.id: firm.budget_epsilon for firm in settings.scenario.firms}
    check_firm_budgets(settings, budgets, extra=_lifetime_priced_out(settings))


def check_firm_budgets(
    settings: RunSettings, budgets: Mapping[str, float | None], *, extra: Mapping[str, str] | None = None
) -> None:
    """Refuse a run in which the firms whose own budgets (by firm, or by `firm/dataset` party) cannot pay for
    one round, with those in `extra` (firm -> why), leave fewer firms than a round needs."""
    privacy = settings.spec.privacy
    per_round = round_epsilon(settings)
    firms = {party.partition("/")[0] for party in budgets}
    priced_out = {
        party.partition("/")[0]: f"budget_epsilon {budget:g}"
        for party, budget in budgets.items()
        if budget is not None and budget < per_round
    }
    priced_out.update(extra or {})
    if not priced_out:
        return
    left, needed = len(firms - set(priced_out)), firms_needed(settings)
    named = ", ".join(f"'{firm}' ({why})" for firm, why in sorted(priced_out.items()))
    first = sorted(priced_out)[0]
    if left < needed:
        raise ConfigError(
            f"one round charges each firm epsilon {per_round:.4g} at delta {privacy.delta:g}; firm(s) {named} cannot "
            f"pay for it and would take part in no round, leaving {left} firm(s), fewer than the {needed} a round "
            f"needs{' (secure aggregation needs at least 3)' if settings.aggregation == 'secure' else ''}",
            source=str(settings.scenario_path),
            field="--lifetime-epsilon" if priced_out[first].startswith("lifetime") else f"firms.{first}.budget_epsilon",
        )
    log.warning("firm(s) %s cannot pay for one round (epsilon %.4g) and will take part in no round", named, per_round)


def _lifetime_priced_out(settings: RunSettings) -> dict[str, str]:
    """Simulated firms whose lifetime odometer (`--state`) cannot pay for the run's next release, and why."""
    if settings.state_dir is None:
        return {}
    privacy = settings.spec.privacy
    if privacy.unit != "record":
        raise ConfigError(
            "lifetime odometers count record-level releases only; a firm-level run's spend is not the firms' to count",
            source="command line",
            field="--state",
        )
    events = first_release_events(settings.spec)
    out = {}
    for firm in settings.scenario.firms:
        odometer = node_odometer(firm.id, settings, {})
        if odometer is None:
            continue
        worst = max(odometer.preview(dataset, event) for dataset, event in events.items())
        if worst > odometer.lifetime.epsilon:
            spent = max((row.epsilon for row in odometer.datasets()), default=0.0)
            out[firm.id] = (
                f"lifetime odometer at epsilon {spent:.4g} of {odometer.lifetime.epsilon:g}, the run's first release "
                f"takes it to {worst:.4g}"
            )
    return out


def first_release_events(spec: FederationSpec) -> dict[str, dpa.DpEvent]:
    """Per data set, the first release a private run of `spec` asks of it: a DP-SGD round, or the linear family's
    first release (the demand statistics; the first risk Newton step)."""
    if "linear" in model_families(spec):
        return {model: linear_release_event(spec, model) for model in ("demand", "risk")}
    return dict.fromkeys(("demand", "risk"), round_event(spec.privacy))
