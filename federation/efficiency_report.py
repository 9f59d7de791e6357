"""The run summary's efficiency section: chain and tiers, before and after federation.

The sums come from the run: without DP, a secure (or plain) sum of the firms' tier-slotted totals;
under DP, measured by the simulation harness like every other test statistic, or with
`efficiency.dp` released by the firms through a secure sum with Gaussian noise, charged to the
budget. The ratios come from `server.efficiency`.

Only groups of at least `efficiency.min_firms_per_group` firms are published: the chain and the slots
the server assigned from the manifests (`server.efficiency.group_tiers`). If dropouts leave a published
group with fewer firms in a sum than that, only the chain is published: withholding one group alone
would not help, as the chain minus the others gives it.
"""

from __future__ import annotations

from typing import Any

from silobridge.federation.runner import FederationOutcome
from silobridge.federation.settings import RunSettings
from silobridge.server.efficiency import Grouping, efficiency_table, group_tiers

POLICY_FIELDS = ("review_period", "service_level", "lead_time", "holding_cost", "shortage_cost", "order_cost")


def simulated_periods(settings: RunSettings) -> int:
    """Periods the inventory simulation covers: one per forecast origin of the held-out periods."""
    scenario = settings.scenario
    return max(scenario.test_periods - scenario.horizon + 1, 0)


def efficiency_summary(settings: RunSettings, outcome: FederationOutcome) -> dict[str, Any] | None:
    """summary["efficiency"]: the chain and the published groups (`tiers`, keyed by group), how they were
    formed (`groups`, `suppressed_tiers`); None when nothing was simulated or the chain is too small."""
    if "before" not in outcome.efficiency or "after" not in outcome.efficiency:
        return None
    policy = settings.spec.efficiency
    grouping = outcome.efficiency_grouping or group_tiers(
        [m.tier for m in outcome.manifests.values() if m.has_demand], policy.min_firms_per_group
    )
    account = grouping.describe()
    in_sums = _firms_in_sums(grouping, outcome)
    if in_sums["chain"] < grouping.minimum:
        return None
    published = list(grouping.published)
    short = [slot for slot in published if in_sums[slot] < grouping.minimum]
    if short:
        reason = (
            f"dropouts left group(s) {', '.join(short)} with fewer than {grouping.minimum} firms in a sum; only the "
            "chain is published"
        )
        account["suppressed_tiers"] = {**account["suppressed_tiers"], **dict.fromkeys(account["groups"], reason)}
        account["groups"] = {}
        published = []
    table = efficiency_table(outcome.efficiency["before"], outcome.efficiency["after"], published)
    return {
        "horizon": simulated_periods(settings),
        "policy": {name: getattr(policy, name) for name in POLICY_FIELDS},
        "dp": outcome.efficiency_dp,
        "after_model": (
            "what each firm deploys (its own choice), measured by the simulation harness"
            if outcome.deployed is not None and outcome.efficiency_dp is None
            else "the federated model"
        ),
        "chain": table["chain"],
        "tiers": table["tiers"],
        **account,
    }


def _firms_in_sums(grouping: Grouping, outcome: FederationOutcome) -> dict[str, int]:
    """Per published slot and for the chain, the fewest firms whose totals are in the before or after sum."""
    tier_of = {m.firm_id: m.tier for m in outcome.manifests.values()}
    firms = outcome.efficiency_firms or {
        when: [m.firm_id for m in outcome.manifests.values() if m.has_demand] for when in ("before", "after")
    }
    counts: dict[str, int] = {}
    for slot in ("chain", *grouping.published):
        counts[slot] = min(
            sum(1 for f in firms.get(when, []) if slot == "chain" or grouping.assignment.slots.get(tier_of[f]) == slot)
            for when in ("before", "after")
        )
    return counts


def _dp_text(dp: dict[str, Any] | None, private: bool) -> str:
    if dp is None and private:
        return (
            "Measured by the simulation harness, like every test statistic of a private run (set "
            "`efficiency.dp = true` to have the firms release them with DP instead)."
        )
    if dp is None:
        return "Exact sums of the firms' totals (secure aggregation, no noise; the deployed 'after' is the harness's)."
    return (
        f"Released with DP: Gaussian noise (multiplier {dp['noise_multiplier']:g}), epsilon {dp['epsilon']:.4g} "
        f"at delta {dp['delta']:g}, charged to the run's budget."
    )


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def efficiency_markdown(section: dict[str, Any] | None, *, private: bool = False) -> list[str]:
    """The summary.md lines of the efficiency section."""
    if section is None:
        return [
            "## Cross-firm efficiency",
            "",
            "Not published: fewer firms with demand data than the minimum group size (or none at all).",
            "",
        ]
    policy = section["policy"]
    lines = [
        "## Cross-firm efficiency",
        "",
        f"Inventory simulation over {section['horizon']} held-out periods, order-up-to every "
        f"{policy['review_period']} period(s), lead time {policy['lead_time']}, service level "
        f"{policy['service_level']:g}; costs: holding {policy['holding_cost']:g}, "
        f"shortage {policy['shortage_cost']:g}, order {policy['order_cost']:g}. "
        f"Before: local-only demand models; after: {section.get('after_model', 'the federated one')}. "
        + _dp_text(section["dp"], private),
        "",
        "| group | E0 | E1 | O0 | O1 | I0 | I1 | TFP0 | TFP1 | K_E | K_O | K_I | K_TFP |",
        "| --- " * 13 + "|",
    ]
    for name, row in (("chain", section["chain"]), *section["tiers"].items()):
        b, a, k = row["before"], row["after"], row["K"]
        cells = [b["E"], a["E"], b["O"], a["O"], b["I"], a["I"], b["TFP"], a["TFP"]]
        cells += [k["K_E"], k["K_O"], k["K_I"], k["K_TFP"]]
        lines.append(f"| {name} | " + " | ".join(_cell(c) for c in cells) + " |")
    lines.append("")
    lines += _grouping_lines(section)
    return lines


def _grouping_lines(section: dict[str, Any]) -> list[str]:
    """Which groups are published, and why each tier not shown on its own is not."""
    minimum = section.get("min_firms_per_group")
    if minimum is None:
        return []
    groups = section.get("groups", {})
    shown = "; ".join(f"{name}: {g['firms']} firms ({', '.join(g['tiers'])})" for name, g in groups.items())
    lines = [
        f"Only groups of at least {minimum} firms are published (chain: {section.get('chain_firms')} firms"
        + (f"; {shown}" if shown else "")
        + ")."
    ]
    lines += [f"- {tier} not published on its own: {why}" for tier, why in section.get("suppressed_tiers", {}).items()]
    return [*lines, ""]
