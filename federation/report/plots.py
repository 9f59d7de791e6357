"""The report's figures, drawn with matplotlib's Agg renderer into PNG bytes (no display, no pyplot state).

Each function takes the checked run data and returns one PNG, or None when the run has nothing to draw.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from silobridge.federation.report.data import Efficiency, PrivacyAudit, RoundRecord, Summary

GROUPS = ("all", "small", "large")
# The metric each model's curve shows, and whether lower is better (for the axis label).
CURVE_METRIC = {"demand": ("wape", "WAPE (lower is better)"), "risk": ("roc_auc", "ROC-AUC (higher is better)")}
BASELINE_STYLE = {
    "local_only": ("tab:orange", "--"),
    "centralised": ("tab:green", ":"),
    "naive": ("tab:gray", "-."),
}
DPI = 96


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _value(value: float | None) -> float:
    return math.nan if value is None else float(value)


def training_curves(kind: str, rounds: Sequence[RoundRecord], summary: Summary | None) -> bytes | None:
    """One model's test metric after each round per firm group, with the baselines' final values as lines."""
    metric, label = CURVE_METRIC.get(kind, (None, None))
    records = sorted((r for r in rounds if r.model == kind and r.metrics is not None), key=lambda r: r.evaluated_round)
    if metric is None or not records:
        return None
    methods = summary.models.get(kind, {}) if summary is not None else {}
    final_round = max(r.round for r in records)  # the summary scores the model after the last round trained
    figure = Figure(figsize=(10, 3.4), layout="constrained")
    axes = figure.subplots(1, len(GROUPS), sharey=True)
    for ax, group in zip(axes, GROUPS, strict=True):
        xs = [r.evaluated_round for r in records]
        ys = [_value((r.metrics or {}).get(group, {}).get(metric)) for r in records]
        federated_final = methods.get("federated", {}).get(group, {}).get(metric)
        if federated_final is not None and xs[-1] < final_round:
            xs, ys = [*xs, final_round], [*ys, float(federated_final)]  # the final model, scored after the last round
        ax.plot(xs, ys, marker="o", color="tab:blue", label="federated")
        for method, (colour, style) in BASELINE_STYLE.items():
            value = methods.get(method, {}).get(group, {}).get(metric)
            if value is not None:
                ax.axhline(float(value), color=colour, linestyle=style, label=method.replace("_", "-"))
        ax.set_title(f"{group} firms")
        ax.set_xlabel("model after round (0: initial)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(label)
    axes[-1].legend(loc="best", fontsize="small")
    figure.suptitle(f"{kind}: federated per round against the baselines (final values)")
    return _png(figure)


def training_loss(rounds: Sequence[RoundRecord]) -> bytes | None:
    """Weighted training loss per round (only runs without DP release it)."""
    kinds = sorted({r.model for r in rounds if r.train_loss is not None})
    if not kinds:
        return None
    figure = Figure(figsize=(6, 3.2), layout="constrained")
    ax = figure.subplots()
    for kind in kinds:
        points = sorted((r.round, r.train_loss) for r in rounds if r.model == kind and r.train_loss is not None)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=kind)
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("weighted training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(figure)


def privacy_spent(audit: PrivacyAudit) -> bytes | None:
    """Epsilon after each round, recomputed from the verified ledger, against the run's budget."""
    report = audit.report
    if report is None or not audit.steps:
        return None
    steps = audit.steps
    xs = list(range(1, len(steps) + 1))
    figure = Figure(figsize=(8, 3.6), layout="constrained")
    ax = figure.subplots()
    ax.plot(xs, [s.epsilon_overall for s in steps], marker="o", color="tab:purple", label="epsilon spent (overall)")
    low, high = [s.epsilon_min for s in steps], [s.epsilon_max for s in steps]
    if any(h - lo > 1e-9 for lo, h in zip(low, high, strict=True)):
        ax.fill_between(xs, low, high, color="tab:purple", alpha=0.15, label="range over firms")
    ax.axhline(report.budget.epsilon, color="tab:red", linestyle="--", label=f"budget {report.budget.epsilon:g}")
    for offset in range(1, len(report.refusals) + 1):  # a refused release spends nothing: marked at the last spend
        ax.plot(len(steps) + offset, steps[-1].epsilon_overall, marker="x", color="tab:red", markersize=10)
    labels = [s.label for s in steps] + [f"{r} (refused)" for r in report.refusals]
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=45 if len(labels) > 6 else 0, ha="right")
    finite = [v for v in (*high, *(s.epsilon_overall for s in steps)) if math.isfinite(v)]
    ax.set_ylim(bottom=0, top=max([report.budget.epsilon, *finite]) * 1.1)
    ax.set_ylabel(f"epsilon at delta {report.budget.delta:g}")
    ax.set_title(f"privacy spent ({report.accountant.kind.value.upper()}, unit {report.accountant.unit.value})")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return _png(figure)


def participation(rounds: Sequence[RoundRecord], total_firms: int | None) -> bytes | None:
    """Firms whose update entered each round's sum, against the federation's size."""
    per_round = sorted({r.round: r.firms for r in rounds}.items())
    if not per_round:
        return None
    figure = Figure(figsize=(7.5, 3), layout="constrained")
    ax = figure.subplots()
    ax.bar([p[0] for p in per_round], [p[1] for p in per_round], color="tab:blue", label="firms in the sum")
    if total_firms:
        ax.axhline(total_firms, color="black", linestyle="--", label=f"federation ({total_firms} firms)")
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("firms")
    ax.set_ylim(bottom=0, top=max([p[1] for p in per_round] + [total_firms or 0]) * 1.15)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    return _png(figure)


def efficiency_rates(efficiency: Efficiency) -> bytes:
    """K_E, K_O, K_I and K_TFP for the chain and each tier; 1 is no change."""
    blocks = {"chain": efficiency.chain, **efficiency.tiers}
    rates = ("K_E", "K_O", "K_I", "K_TFP")
    figure = Figure(figsize=(max(6, 1.6 * len(blocks)), 3.6), layout="constrained")
    ax = figure.subplots()
    width = 0.8 / len(rates)
    for i, rate in enumerate(rates):
        xs = [j + (i - (len(rates) - 1) / 2) * width for j in range(len(blocks))]
        ax.bar(xs, [_value(getattr(b.K, rate)) for b in blocks.values()], width, label=rate)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(blocks)), list(blocks))
    ax.set_ylabel("after / before")
    ax.set_title("efficiency: improvement rates with federated forecasts")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return _png(figure)


def efficiency_tfp(efficiency: Efficiency) -> bytes:
    """TFP before and after, for the chain and each tier."""
    blocks = {"chain": efficiency.chain, **efficiency.tiers}
    figure = Figure(figsize=(max(6, 1.4 * len(blocks)), 3.4), layout="constrained")
    ax = figure.subplots()
    xs = range(len(blocks))
    ax.bar([x - 0.2 for x in xs], [_value(b.before.TFP) for b in blocks.values()], 0.4, label="before (local-only)")
    ax.bar([x + 0.2 for x in xs], [_value(b.after.TFP) for b in blocks.values()], 0.4, label="after (federated)")
    ax.set_xticks(list(xs), list(blocks))
    ax.set_ylabel("TFP = E x O x I")
    ax.set_title("efficiency: total factor productivity before and after")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return _png(figure)
