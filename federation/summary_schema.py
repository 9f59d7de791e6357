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

MIN_JUDGED_TEST_EVENTS = 5
"""Fewest events a firm's risk test rows must hold for its ROC-AUC difference to be judged by the per-firm
promise. With k events against a few hundred non-events a ROC-AUC near 0.8 has a standard error of about
sqrt(0.071 / k) (Hanley and McNeil, 1982): 0.27 with one event (its ROC-AUC is that row's rank), 0.12 with
five; below five the difference says nothing about the firm's choice. Those firms are reported apart.
Five is also the evidence a firm needs to choose on its own (personalise.MIN_VALIDATION_EVENTS)."""
