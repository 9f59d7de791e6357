"""The run summary's efficiency section: chain and tiers, before and after federation.

The sums come from the run: without DP, a secure (or plain) sum of the firms' tier-slotted totals;
under DP, measured by the simulation harness like every other test statistic, or with
`efficiency.dp` released by the firms through a secure sum with Gaussian noise, charged to the
budget. The ratios come from `server.efficiency`.
"""

from __future__ import annotations

from typing import Any

from federation.runner import FederationOutcome
from federation.settings import RunSettings
from server.efficiency import efficiency_table
from silobridge.efficiency_sums import TIER_SLOTS

POLICY_FIELDS = ("review_period", "service_level", "lead_time", "holding_cost", "shortage_cost", "order_cost")


def simulated_periods(settings: RunSettings) -> int:
    """Periods the inventory simulation covers: one per forecast origin of the held-out periods."""
    scenario = settings.scenario
    return max(scenario.test_periods - scenario.horizon + 1, 0)


def efficiency_summary(settings: RunSettings, outcome: FederationOutcome) -> dict[str, Any] | None:
    """summary["efficiency"], or None when no firm holds demand data (nothing was simulated)."""
    if "before" not in outcome.efficiency or "after" not in outcome.efficiency:
        return None
    policy = settings.spec.inventory
    present = {m.tier for m in outcome.manifests.values() if m.has_demand}
    tiers = [tier for tier in TIER_SLOTS if tier in present]
    table = efficiency_table(outcome.efficiency["before"], outcome.efficiency["after"], tiers)
    return {
        "horizon": simulated_periods(settings),
        "policy": {name: getattr(policy, name) for name in POLICY_FIELDS},
        "dp": outcome.efficiency_dp,
        "chain": table["chain"],
        "tiers": table["tiers"],
    }


def _dp_text(dp: dict[str, Any] | None, private: bool) -> str:
    if dp is None and private:
        return (
            "Measured by the simulation harness, like every test statistic of a private run (set "
            "`efficiency.dp = true` to have the firms release them with DP instead)."
        )
    if dp is None:
        return "Exact sums of the firms' totals (secure aggregation, no noise)."
    return (
        f"Released with DP: Gaussian noise (multiplier {dp['noise_multiplier']:g}), epsilon {dp['epsilon']:.4g} "
        f"at delta {dp['delta']:g}, charged to the run's budget."
    )


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def efficiency_markdown(section: dict[str, Any] | None, *, private: bool = False) -> list[str]:
    """The summary.md lines of the efficiency section."""
    if section is None:
        return ["## Cross-firm efficiency", "", "Not measured: no firm holds demand data.", ""]
    policy = section["policy"]
    lines = [
        "## Cross-firm efficiency",
        "",
        f"Inventory simulation over {section['horizon']} held-out periods, order-up-to every "
        f"{policy['review_period']} period(s), lead time {policy['lead_time']}, service level "
        f"{policy['service_level']:g}; costs: holding {policy['holding_cost']:g}, "
        f"shortage {policy['shortage_cost']:g}, order {policy['order_cost']:g}. "
        "Before: local-only demand models; after: the federated one. " + _dp_text(section["dp"], private),
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
    return lines
