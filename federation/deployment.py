"""Simulation only: what each firm deploys, scored on its test split by the harness, which holds every
firm's data.

Each firm makes its own choice (`clients.deploy`) on its own training windows; the harness then
measures the deployed model's test statistics (summed by group, as every other method's), each firm's
deployed and local-only figures ("what joining gave me"), and the efficiency sums of ordering from
the deployed forecasts (the 'after' of the efficiency comparison). None of these figures is released
by a real federation: they are marked simulation-only in the summary.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from silobridge.clients.deploy import (
    Forecaster,
    demand_statistics,
    demand_test_stats,
    deploy_demand,
    deploy_risk,
    risk_predict_stats,
    risk_test_stats,
    risk_training,
)
from silobridge.clients.firm import FirmClient
from silobridge.clients.linear import demand_dim, linear_demand_forecasts, logistic_fit, ridge
from silobridge.clients.normaliser import Normaliser
from silobridge.contract.config import FederationSpec
from silobridge.contract.efficiency_sums import EfficiencyGroups, slot_by_tier
from silobridge.contract.messages import BaselineInstruction
from silobridge.contract.stats import demand_metrics_by_group, risk_metrics_by_group, slot_by_group
from silobridge.contract.sufficient import split_regression
from silobridge.contract.wire_names import DEMAND_LOCAL_ONLY, RISK_LOCAL_ONLY


@dataclass
class DeployedOutcome:
    """Group-slotted sums of the deployed models' test statistics, per-firm rows, efficiency 'after'."""

    demand: np.ndarray | None = None
    risk: np.ndarray | None = None
    global_demand: np.ndarray | None = None  # the global linear model itself over every firm (`global_linear_stats`)
    global_risk: np.ndarray | None = None
    efficiency_after: np.ndarray | None = None
    per_firm: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def linear_forecaster(coef: np.ndarray, spec: FederationSpec) -> Forecaster:
    """Forecasts in units of a linear demand model's coefficients."""
    return lambda windows: linear_demand_forecasts(windows, coef, spec)


def _add(total: np.ndarray | None, vector: np.ndarray) -> np.ndarray:
    return vector if total is None else total + vector


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator and not math.isnan(denominator) else math.nan


def _rounded(scores: dict[str, float]) -> dict[str, float]:
    """A firm's validation scores of its candidates (what it chose on), for the per-firm rows."""
    return {name: round(float(value), 6) for name, value in scores.items()}


def _own(vector: np.ndarray, group: str, kind: str) -> dict[str, float]:
    """A firm's own metrics from its group-slotted statistics vector."""
    by_group = (demand_metrics_by_group if kind == "demand" else risk_metrics_by_group)(vector, (group,))
    return by_group["all"]


NO_BASELINE = "no local-only baseline: the firm is not in the run's baselines selection (see summary 'baselines')"
"""A per-firm row's `no_baseline`: why its local-only figure and comparison are empty (never a claim)."""

PER_FIRM_METRIC = {"demand": ("wape", "ratio"), "risk": ("roc_auc", "difference")}
"""Each model's per-firm metric and how its row compares deployed with local-only (a ratio of WAPE, a
difference of ROC-AUC)."""


def per_firm_row(
    firm: FirmClient, kind: str, stats: np.ndarray, baselines: dict[str, np.ndarray], choice: Any
) -> dict[str, Any]:
    """ "What joining gave me": the firm's deployed and local-only test metric (local-only from its own
    baselines, nan without them), their comparison, what it chose (`choice`: a demand Deployment or a risk
    Choice, both with name, reason, shrinkage and validation scores) and why."""
    metric, comparison = PER_FIRM_METRIC[kind]
    deployed = _own(stats, firm.group, kind)[metric]
    key = DEMAND_LOCAL_ONLY if kind == "demand" else RISK_LOCAL_ONLY
    local = _own(baselines[key], firm.group, kind)[metric] if key in baselines else math.nan
    row: dict[str, Any] = {
        "firm": firm.firm_id,
        "group": firm.group,
        "choice": choice.name,
        "reason": choice.reason,
        "shrinkage": choice.shrinkage,
        f"deployed_{metric}": deployed,
        f"local_only_{metric}": local,
        comparison: _ratio(deployed, local) if comparison == "ratio" else deployed - local,
        "validation": _rounded(choice.validation),
    }
    if kind == "risk" and firm.risk_split is not None:
        row["test_events"] = int(np.sum(firm.risk_split[1].labels == 1.0))
    if getattr(choice, "recent", None):
        row["recent_validation"] = _rounded(choice.recent)
    if getattr(choice, "hedged_from", None) is not None:
        row["hedged_from"] = choice.hedged_from  # demand: the contender a hedged switch blended with its local-only MLP
    if getattr(choice, "hedge", None) is not None:
        row["hedge_weight"] = choice.hedge  # risk: the local-only model's log-odds weight in a hedged switch
    if getattr(choice, "blend_weight", None) is not None:
        row["blend_weight"] = choice.blend_weight  # on its local-only model; the rest on blend_partner
        row["blend_partner"] = choice.blend_partner
    if key not in baselines:
        row["no_baseline"] = NO_BASELINE
    return row


NO_GLOBAL_RISK = "no global linear risk model (its release was skipped or refused)"


def deploy_firm(
    firm: FirmClient,
    baselines: dict[str, np.ndarray],
    instruction: BaselineInstruction,
    groups: EfficiencyGroups | None,
    norm: Normaliser,
    linear: dict[str, np.ndarray | None],
    mlp: dict[str, dict[str, np.ndarray]] | None = None,
) -> DeployedOutcome:
    """One firm's deployed demand and (where the linear family ran: `linear` has a "risk" key) risk model,
    scored, with its rows; its local-only figures come from its own `baselines` (empty: its rows say so).
    Without a global model the firm still deploys (its own models or naive) and its row says why."""
    out = DeployedOutcome(per_firm={"demand": [], "risk": []})
    if firm.trains("demand"):
        deployment = deploy_demand(firm, instruction, linear.get("demand"), (mlp or {}).get("demand"))
        stats = slot_by_group(demand_test_stats(firm, deployment.forecaster).to_vector(), firm.group)
        out.demand = stats
        out.per_firm["demand"].append(per_firm_row(firm, "demand", stats, baselines, deployment))
        slot = firm.efficiency_slot(groups) if groups is not None else None
        if slot is not None:
            out.efficiency_after = slot_by_tier(firm.efficiency_sums(deployment.forecaster), slot)
    if firm.trains("risk") and "risk" in linear:  # the linear family ran (an MLP-only run has no risk choice)
        risk_coef = linear["risk"]
        deployed_risk = deploy_risk(firm, norm, risk_coef, instruction)
        choice = deployed_risk.choice
        if risk_coef is None:
            choice = replace(choice, reason=f"{NO_GLOBAL_RISK}: {choice.reason}")
        stats = slot_by_group(risk_predict_stats(firm, deployed_risk.predict).to_vector(), firm.group)
        out.risk = stats
        out.per_firm["risk"].append(per_firm_row(firm, "risk", stats, baselines, choice))
    return out


def global_linear_stats(
    firms: Iterable[FirmClient], norm: Normaliser, linear: dict[str, np.ndarray | None]
) -> dict[str, np.ndarray]:
    """The global linear models' own test statistics (group-slotted), summed over every firm that holds each
    model's data in the firms' order, whatever was baselined (a sample's or no firm's baselines must not shrink
    the federated figures): computed once per run, not per deployed firm."""
    totals: dict[str, np.ndarray | None] = {"demand": None, "risk": None}
    for firm in firms:
        coef = linear.get("demand")
        if coef is not None and firm.trains("demand"):
            glob = demand_test_stats(firm, linear_forecaster(coef, firm.spec)).to_vector()
            totals["demand"] = _add(totals["demand"], slot_by_group(glob, firm.group))
        risk_coef = linear.get("risk")
        if risk_coef is not None and firm.trains("risk"):
            stats = risk_test_stats(firm, norm, risk_coef).to_vector()
            totals["risk"] = _add(totals["risk"], slot_by_group(stats, firm.group))
    return {kind: vector for kind, vector in totals.items() if vector is not None}


def merge_outcomes(outcomes: Iterable[DeployedOutcome]) -> DeployedOutcome:
    """The firms' outcomes in one: their vectors summed and rows listed in the order given (the firms'
    order, so the sums are the same floating-point sums however the firms were deployed)."""
    out = DeployedOutcome(per_firm={"demand": [], "risk": []})
    for one in outcomes:
        for name in ("demand", "risk", "efficiency_after"):
            vector = getattr(one, name)
            if vector is not None:
                setattr(out, name, _add(getattr(out, name), vector))
        for kind, rows in one.per_firm.items():
            out.per_firm.setdefault(kind, []).extend(rows)
    return out


def deployed_firms(
    firms: list[FirmClient], baselines_of: dict[str, dict[str, np.ndarray]], *, over_baselined: bool = False
) -> list[FirmClient]:
    """The firms a deployment covers: all, or with `over_baselined` (only some firms were baselined) only
    those -- a firm's choice fits its own local-only models again, which would cost every firm what
    sampling the baselines saved -- so deployed, local-only and efficiency figures cover the same firms."""
    return [firm for firm in firms if not over_baselined or firm.firm_id in baselines_of]


def deploy_all(
    firms: list[FirmClient],
    baselines_of: dict[str, dict[str, np.ndarray]],
    instruction: BaselineInstruction,
    groups: EfficiencyGroups | None,
    norm: Normaliser,
    linear: dict[str, np.ndarray | None],
    mlp: dict[str, dict[str, np.ndarray]] | None = None,
    *,
    over_baselined: bool = False,
) -> DeployedOutcome:
    """Every firm's `deploy_firm`, one after another, merged in the firms' order (`deployed_firms`: all,
    or with `over_baselined` only the baselined ones); each firm's local-only figures come from its own
    baselines (`baselines_of`, by firm)."""
    return merge_outcomes(
        deploy_firm(firm, baselines_of.get(firm.firm_id, {}), instruction, groups, norm, linear, mlp)
        for firm in deployed_firms(firms, baselines_of, over_baselined=over_baselined)
    )


def centralised_linear(firms: list[FirmClient], norm: Normaliser) -> dict[str, np.ndarray]:
    """Pooled ridge and logistic regression without noise (the non-private upper bound of the linear
    family), scored on every firm's test split."""
    out: dict[str, np.ndarray] = {}
    demand_firms = [f for f in firms if f.trains("demand")]
    if demand_firms:
        spec = demand_firms[0].spec
        xtx, xty = split_regression(sum(demand_statistics(f) for f in demand_firms), demand_dim(spec), spec.horizon)
        coef = ridge(xtx, xty, spec.linear.ridge)
        for firm in demand_firms:
            stats = demand_test_stats(firm, linear_forecaster(coef, firm.spec)).to_vector()
            out["demand"] = _add(out.get("demand"), slot_by_group(stats, firm.group))
    risk_firms = [f for f in firms if f.trains("risk")]
    if risk_firms:
        rows = [risk_training(f, norm) for f in risk_firms]
        x, y = np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows])
        risk_coef = logistic_fit(x, y, risk_firms[0].spec.linear.risk_ridge)
        for firm in risk_firms:
            stats = risk_test_stats(firm, norm, risk_coef).to_vector()
            out["risk"] = _add(out.get("risk"), slot_by_group(stats, firm.group))
    return out
