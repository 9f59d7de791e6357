"""The run summary's vocabulary: which methods, metrics and firm groups it reports, in display order.

Shared by the summary (`federation.summary`) and the live display (`federation.progress`), so that
neither has to import the other.
"""

from __future__ import annotations

METHODS = {
    "demand": ("deployed", "federated", "federated_linear", "local_only", "centralised", "naive"),
    "risk": ("deployed", "federated", "federated_linear", "local_only", "centralised"),
}
SIMULATION_ONLY = ("deployed", "centralised")
"""Methods only the simulation harness measures (it holds every firm's data); a real federation has none."""
METRICS = {"demand": ("wape", "mae"), "risk": ("roc_auc", "pr_auc", "brier")}
GROUP_ORDER = ("all", "small", "large")
