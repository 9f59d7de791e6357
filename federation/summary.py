"""The run summary: every model x method x firm group, the acceptance checks, as JSON and Markdown.

Metrics (see README): demand -- wape (sum |error| / sum demand) and mae (mean |error| in units) over
every forecast of the held-out periods; risk -- roc_auc, pr_auc (average precision) and brier.
Groups: small and large firms (scenario `large_size`), and all.
"""

from __future__ import annotations

import datetime as dt
import math
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from silobridge.clients.data import describe_risk_split
from silobridge.contract.wire_names import DEMAND_LOCAL_ONLY, DEMAND_NAIVE, RISK_LOCAL_ONLY
from silobridge.federation.coordinator import metrics_by_group
from silobridge.federation.efficiency_report import efficiency_markdown, efficiency_summary
from silobridge.federation.firm_source import pilot_risk_splits
from silobridge.federation.progress import OBSERVATION_NOTE, shows_observation_epsilon
from silobridge.federation.runner import FederationOutcome
from silobridge.federation.settings import RunSettings
from silobridge.federation.summary_schema import GROUP_ORDER, METHODS, METRICS, MIN_JUDGED_TEST_EVENTS, SIMULATION_ONLY


def _clean(value: Any) -> Any:
    """JSON has no NaN: an undefined metric (no positives in a group, say) becomes null."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else round(float(value), 6)
    return value


def _versions() -> dict[str, str]:
    out = {}
    for name in ("silobridge", "flwr", "torch", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def model_table(
    outcome: FederationOutcome, centralised: dict[str, np.ndarray]
) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """{model: {method: {group: {metric: value}}}} for every method that ran."""
    deployed = outcome.deployed
    both = "mlp" in outcome.families and "linear" in outcome.families  # the linear models get their own row
    vectors = {
        "demand": {
            "deployed": deployed.demand if deployed is not None else None,
            "federated_linear": deployed.global_demand if deployed is not None and both else None,
            "federated": outcome.federated.get("demand"),
            "local_only": outcome.baselines.get(DEMAND_LOCAL_ONLY),
            "centralised": centralised.get("demand"),
            "naive": outcome.baselines.get(DEMAND_NAIVE),
        },
        "risk": {
            "deployed": deployed.risk if deployed is not None else None,
            "federated_linear": deployed.global_risk if deployed is not None and both else None,
            "federated": outcome.federated.get("risk"),
            "local_only": outcome.baselines.get(RISK_LOCAL_ONLY),
            "centralised": centralised.get("risk"),
        },
    }
    table: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for kind, methods in vectors.items():
        table[kind] = {}
        for method, vector in methods.items():
            if vector is not None:
                # Groups a run without DP does not release on their own have no row, whichever method
                # (the harness's measurements of what firms deploy are shown as a real run would release them).
                released = outcome.released_groups.get(kind, GROUP_ORDER[1:])
                by_group = metrics_by_group(kind, vector, tuple(released))
                table[kind][method] = {g: by_group[g] for g in GROUP_ORDER if g in by_group}
    return table


def _get(table: dict, *path: str) -> float:
    node: Any = table
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return math.nan
        node = node[key]
    return float(node)


def _check(name: str, value: float, target: str, passed: bool) -> dict[str, Any]:
    return {"name": name, "value": value, "target": target, "passed": passed}


def acceptance_checks(
    table: dict,
    per_firm: dict[str, Any] | None = None,
    efficiency: dict[str, Any] | None = None,
    non_private_wape: float | None = None,
    over: str | None = None,
) -> list[dict[str, Any]]:
    """The promise to a firm: joining leaves it no worse off than going alone, and the chain better off.

    Deployed and per-firm figures are the simulation harness's measurements. That the private deployed
    WAPE is within 10% of the non-private one needs both runs (benchmarks/bench_joining_pays.py): one run
    cannot judge it, so its row says n/a unless `non_private_wape` (the other run's deployed WAPE) is given.
    `over`: where only some firms were baselined, what the comparisons with local-only cover (each check
    that uses local-only figures says it; `table`'s deployed rows must then be over the same firms).
    """
    demand_rows = (per_firm or {}).get("demand", {})
    worst = demand_rows.get("worst_ratio") if demand_rows else None
    worst_value = math.nan if worst is None else float(worst)
    small = 1 - _get(table, "demand", "deployed", "small", "wape") / _get(
        table, "demand", "local_only", "small", "wape"
    )
    risk_rows = (per_firm or {}).get("risk", {})
    worst_auc = risk_rows.get("worst_difference") if risk_rows else None
    worst_auc_value = math.nan if worst_auc is None else float(worst_auc)
    k_tfp = _get(efficiency or {}, "chain", "K", "K_TFP")
    private_ratio = (
        _get(table, "demand", "deployed", "all", "wape") / non_private_wape if non_private_wape else math.nan
    )
    checks = [
        _check(
            "demand: no firm's deployed WAPE above 1.02x its local-only", worst_value, "<= 1.02", worst_value <= 1.02
        ),
        _check("demand: small firms' deployed WAPE at least 30% below local-only", small, ">= 0.30", small >= 0.30),
        _check(
            f"risk: no firm with {MIN_JUDGED_TEST_EVENTS}+ test events has deployed ROC-AUC more than 0.01 below "
            "its local-only",
            worst_auc_value,
            ">= -0.01",
            worst_auc_value >= -0.01,
        ),
        _check(
            "demand: private deployed WAPE within 10% of the non-private deployed (all firms)",
            private_ratio,
            "<= 1.10",
            private_ratio <= 1.10,
        ),
        _check("efficiency: chain K_TFP at least 1 with what firms deploy", k_tfp, ">= 1", k_tfp >= 1),
    ]
    if over is not None:
        for check in checks[:3]:  # the three comparisons with local-only figures
            check["over"] = over
    for check in checks:
        if math.isnan(check["value"]):
            check["passed"] = None  # a method did not run, so the claim cannot be judged
        else:
            check["passed"] = bool(check["passed"])
    return checks


def per_firm_summary(outcome: FederationOutcome) -> dict[str, Any] | None:
    """Simulation only: each firm's deployed and local-only figures and its choice ("what joining gave me")."""
    deployed = outcome.deployed
    if deployed is None:
        return None
    out: dict[str, Any] = {}
    demand = deployed.per_firm.get("demand", [])
    if demand:
        ratios = [r["ratio"] for r in demand if not math.isnan(r["ratio"])]
        out["demand"] = {"firms": demand, "worst_ratio": max(ratios) if ratios else None}
    risk = deployed.per_firm.get("risk", [])
    if risk:
        out["risk"] = risk_per_firm(risk)
    return out


def risk_per_firm(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The risk rows with the worst difference over firms whose test rows hold MIN_JUDGED_TEST_EVENTS events
    (the promise's), the others' differences apart (`few_test_events`), and the mean over every firm."""
    scored = [r for r in rows if not math.isnan(r["difference"])]
    judged = [r["difference"] for r in scored if r.get("test_events", 0) >= MIN_JUDGED_TEST_EVENTS]
    differences = [r["difference"] for r in scored]
    return {
        "firms": rows,
        "min_test_events": MIN_JUDGED_TEST_EVENTS,
        "worst_difference": min(judged) if judged else None,
        "few_test_events": {
            r["firm"]: r["difference"] for r in scored if r.get("test_events", 0) < MIN_JUDGED_TEST_EVENTS
        },
        "mean_difference": float(np.mean(differences)) if differences else None,
    }


def build_summary(
    settings: RunSettings,
    outcome: FederationOutcome,
    centralised: dict[str, np.ndarray],
    *,
    privacy: dict[str, Any],
    seconds: float,
    stage_seconds: dict[str, float] | None = None,
) -> dict[str, Any]:
    scenario = settings.scenario
    private = settings.spec.privacy.enabled
    table = model_table(outcome, centralised)
    per_firm = per_firm_summary(outcome)
    efficiency = efficiency_summary(settings, outcome)
    selection = outcome.baselined
    partial = selection is not None and not selection.complete
    for kind in ("demand", "risk"):
        if per_firm and kind in per_firm:
            table[kind]["per_firm"] = per_firm[kind]
    summary = {
        "run_id": settings.run_id,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "scenario": {
            "name": scenario.name,
            "file": str(settings.scenario_path),
            "seed": scenario.seed,
            "overrides": list(settings.overrides),
        },
        "federation": {
            "firms": len(outcome.manifests),
            "groups": {g: sum(1 for m in outcome.manifests.values() if m.group == g) for g in ("small", "large")},
            "strategy": scenario.training.strategy,
            "rounds": scenario.training.rounds,
            "local_epochs": scenario.training.local_epochs,
            "aggregation": outcome.aggregation,
            "test_start": scenario.test_start.isoformat(),
            "test_periods": scenario.test_periods,
            "horizon": scenario.horizon,
        },
        "data": data_summary(settings),
        "privacy": privacy,
        "stopped": outcome.stopped,
        "models": table,
        "groups_withheld": dict(outcome.groups_withheld),
        "model_families": list(outcome.families),
        "simulation_only": [*SIMULATION_ONLY, "per_firm", *(["federated", "federated_linear"] if private else [])],
        "baselines": selection.describe() if selection is not None else None,
        "acceptance": acceptance_checks(
            table,
            per_firm,
            efficiency,
            over=selection.scope if partial and selection is not None else None,
        ),
        "efficiency": efficiency,
        "dropouts": outcome.dropped,
        "seconds": seconds,
        "stage_seconds": stage_seconds or {},
        "versions": _versions(),
    }
    return _clean(summary)


def data_summary(settings: RunSettings) -> dict[str, Any]:
    """Where the firms' data came from and, in a pilot, how each firm's risk rows were split."""
    if settings.data == "generated":
        return {"source": "generated"}
    if not isinstance(settings.data, Path):
        return {"source": "partners' own files"}
    splits = pilot_risk_splits(settings)
    return {
        "source": str(settings.data),
        "risk_split": splits,
        "risk_split_rules": {
            rule: describe_risk_split(rule, settings.spec.data) for rule in sorted(set(splits.values()))
        },
    }


def data_lines(data: dict[str, Any] | None) -> list[str]:
    """One line per way risk rows were split, naming the firms (a holdout is stated, never silent)."""
    if not data or not data.get("risk_split"):
        return []
    lines = []
    for rule, text in data["risk_split_rules"].items():
        firms = [firm for firm, used in data["risk_split"].items() if used == rule]
        lines.append(f"Risk train/test split of {', '.join(firms)}: {text}.")
    return lines


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def summary_markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"# SiloBridge run {summary['run_id']}",
        "",
        f"Scenario **{summary['scenario']['name']}** (seed {summary['scenario']['seed']}), "
        f"{summary['federation']['firms']} firms ({summary['federation']['groups']['small']} small, "
        f"{summary['federation']['groups']['large']} large), {summary['federation']['strategy']}, "
        f"{summary['federation']['rounds']} rounds, aggregation: {summary['federation']['aggregation']['mode']}. "
        f"Test periods from {summary['federation']['test_start']}.",
        "",
    ]
    baselines = summary.get("baselines")
    if baselines and baselines.get("baselined") != baselines.get("of"):
        lines += [f"Local-only baselines ({baselines['mode']}): {baselines['scope']}.", ""]
    data = data_lines(summary.get("data"))
    if data:
        lines += ["## Data", "", f"Pilot on the firms' files in `{summary['data']['source']}`.", ""]
        lines += [*(f"- {line}" for line in data), ""]
    for kind, methods in summary["models"].items():
        metrics = METRICS[kind]
        lines += [
            f"## {kind}",
            "",
            "| method | " + " | ".join(f"{m} ({g})" for m in metrics for g in GROUP_ORDER) + " |",
        ]
        lines.append("| --- " * (1 + len(metrics) * len(GROUP_ORDER)) + "|")
        for method in METHODS[kind]:
            if method in methods:
                cells = [_fmt(methods[method].get(g, {}).get(m)) for m in metrics for g in GROUP_ORDER]
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
        lines += _per_firm_lines(kind, methods.get("per_firm"))
        withheld = summary.get("groups_withheld", {}).get(kind)
        if withheld:
            lines += [f"Small and large firms not shown on their own: {withheld}.", ""]
    privacy = summary["privacy"]
    if privacy.get("enabled"):
        lines += [
            "## Differential privacy",
            "",
            f"Unit: **{privacy['unit']}** ({privacy['neighbouring']}); mechanism {privacy['mechanism']}, "
            f"noise multiplier {privacy['noise_multiplier']}, clip {privacy['clip_norm']}, sampling rate "
            f"{privacy['sample_rate']}. Budget epsilon {privacy['budget']['epsilon']:g} at delta "
            f"{privacy['budget']['delta']:g}; spent {_fmt(privacy['epsilon_overall'])} ({privacy['accountant']}, "
            f"recomputed from the verified ledger `{privacy['ledger']}`, public key `{privacy['ledger_public_key']}`).",
            "",
            *_adaptive_clipping_lines(privacy.get("adaptive_clipping")),
        ]
        observation = shows_observation_epsilon(privacy)
        if observation:
            lines += [
                "| firm | releases | epsilon (RDP) | epsilon (PLD) | one observation (group) |",
                "| --- | --- | --- | --- | --- |",
            ]
        else:
            lines += ["| firm | releases | epsilon (RDP) | epsilon (PLD) |", "| --- | --- | --- | --- |"]
        for firm, row in privacy["firms"].items():
            cells = [firm, str(row["releases"]), _fmt(row["epsilon_rdp"]), _fmt(row["epsilon_pld"])]
            if observation:
                value = row.get("observation_epsilon")
                cells.append("no bound" if value is None else _fmt(value))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        if observation:
            lines += [f"*{OBSERVATION_NOTE}.*", ""]
    else:
        lines += ["## Differential privacy", "", "Off: this run is the non-private comparison.", ""]
    if summary.get("stopped"):
        lines += [f"Training stopped early: {summary['stopped']}", ""]
    aggregation = summary["federation"]["aggregation"]
    if aggregation.get("mode") == "secure":
        lines += [
            "## Secure aggregation",
            "",
            f"SecAgg+ with {aggregation['resolved_num_neighbours']} neighbours per firm and threshold "
            f"{aggregation['resolved_threshold']} of {aggregation['share_holders']} share holders (tolerates "
            f"{aggregation['tolerated_dropouts_per_neighbourhood']} dropouts per neighbourhood); keys agreed every "
            f"{aggregation['rounds_per_session']} sums; {aggregation['value_bits']}-bit values in a "
            f"{aggregation['modulus_bits']}-bit ring; {aggregation['clipped_values']} values clipped to their bounds.",
            "",
        ]
    lines += efficiency_markdown(summary.get("efficiency"), private=bool(privacy.get("enabled")))
    lines += ["## Acceptance checks", "", "| check | value | target | passed |", "| --- | --- | --- | --- |"]
    for check in summary["acceptance"]:
        name = f"{check['name']} (over {check['over']})" if check.get("over") else check["name"]
        lines.append(f"| {name} | {_fmt(check['value'])} | {check['target']} | {_fmt(check['passed'])} |")
    lines.append("")
    if summary["dropouts"]:
        lines += ["## Dropouts", ""] + [f"- {d}" for d in summary["dropouts"]] + [""]
    return "\n".join(lines)


def _per_firm_lines(kind: str, per_firm: dict[str, Any] | None) -> list[str]:
    """What joining gave each firm (simulation only: the harness's measurements)."""
    if not per_firm:
        return []
    if kind == "demand":
        head = "| firm | group | deploys | WAPE deployed | WAPE local-only | ratio |"
        keys = ("deployed_wape", "local_only_wape", "ratio")
        worst = f"worst ratio {_fmt(per_firm.get('worst_ratio'))}"
    else:
        head = "| firm | group | deploys | ROC-AUC deployed | ROC-AUC local-only | difference | test events |"
        keys = ("deployed_roc_auc", "local_only_roc_auc", "difference", "test_events")
        few = per_firm.get("few_test_events") or {}
        worst = (
            f"worst difference {_fmt(per_firm.get('worst_difference'))} over firms with "
            f"{per_firm.get('min_test_events')}+ test events; {len(few)} firm(s) with fewer, not judged"
        )
    lines = [f"What joining gave each firm (simulation only; {worst}):", "", head, "| --- " * (3 + len(keys)) + "|"]
    for row in per_firm["firms"]:
        compared = [_fmt(row.get(k)) if "no_baseline" not in row else "no baseline" for k in keys[1:]]
        cells = [row["firm"], row["group"], row["choice"], _fmt(row.get(keys[0])), *compared]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _adaptive_clipping_lines(adaptive: dict[str, Any] | None) -> list[str]:
    """Under adaptive clipping: the clip norm of the first and last round, and what the count cost."""
    if not adaptive:
        return []
    return [
        f"Adaptive clipping (target quantile {adaptive['target_quantile']:g}, step {adaptive['learning_rate']:g}): "
        f"clip norm {adaptive['first_clip_norm']:.4g} in the first round, {adaptive['last_clip_norm']:.4g} in the "
        f"last ({len(adaptive['rounds'])} rounds). The unclipped count is released with noise std "
        f"{adaptive['count_noise_std']:.4g}; the update gets noise multiplier "
        f"{adaptive['update_noise_multiplier']:.4g} (the noise multiplier above is the two combined).",
        "",
    ]
