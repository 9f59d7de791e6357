"""What a run spent: the privacy section of the summary, recomputed from the signed ledger.

The figures come from verifying the ledger written during the run (chain, signatures, epsilon
replayed through the accountant), so the summary states what an auditor would find. Both RDP and
PLD are reported where PLD applies. Under record-level DP each of a firm's data sets is accounted on
its own and the firm's figure is the larger; the group-privacy epsilon of one demand observation
(it sits in up to lags + horizon training windows) is given too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import dp_accounting as dpa

from silobridge.errors import ConfigError
from silobridge.privacy.dp import Account, AccountantKind, group_epsilon
from silobridge.privacy.dp.codec import event_from_json
from silobridge.privacy.ledger import verify_ledger
from silobridge.server.privacy import PrivacyPlan, accounting_spec

LEDGER_FILE = "privacy_ledger.jsonl"


def _events_by_party(path: Path) -> dict[str, list[dpa.DpEvent]]:
    """Every accounted party's events, in order: a firm, or (record unit) one data set of a firm."""
    events: dict[str, list[dpa.DpEvent]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if entry.get("kind") == "release":
            event = event_from_json(entry["event"])
            for party in entry["firms"]:
                events.setdefault(party, []).append(event)
    return events


def adaptive_clipping_report(path: Path) -> dict[str, Any] | None:
    """The clip norm of every training round, as the signed ledger records it (None without adaptive clipping)."""
    rounds: list[dict[str, Any]] = []
    last: dict[str, Any] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if entry.get("kind") == "release" and entry.get("parameters", {}).get("adaptive_clipping"):
            last = entry["parameters"]
            rounds.append({"release": entry["release_id"], "clip_norm": entry["clip_norm"]})
    if not rounds:
        return None
    return {
        "target_quantile": last["target_quantile"],
        "learning_rate": last["clip_learning_rate"],
        "count_noise_std": last["count_noise_std"],
        "update_noise_multiplier": last["update_noise_multiplier"],
        "first_clip_norm": rounds[0]["clip_norm"],
        "last_clip_norm": rounds[-1]["clip_norm"],
        "next_clip_norm": last["next_clip_norm"],
        "rounds": rounds,
    }


def _worst(a: float | None, b: float | None) -> float | None:
    """The larger spend; None (unbounded, or not accountable by this accountant) wins."""
    return None if a is None or b is None else max(a, b)


def _no_spend() -> dict[str, Any]:
    """A firm's row before any release is charged to it."""
    return {"releases": 0, "epsilon_rdp": 0.0, "epsilon_pld": 0.0, "datasets": {}}


def _finite(value: float) -> float | None:
    return None if math.isinf(value) or math.isnan(value) else round(value, 6)


def privacy_summary(
    plan: PrivacyPlan,
    ledger_path: Path,
    public_key: str,
    *,
    group_size: int,
    firms: Iterable[str] = (),
    key_kind: str | None = None,
) -> dict[str, Any]:
    """Budget, mechanism, and epsilon per firm and overall by RDP and PLD, from the verified ledger.

    `key_kind` says which key signed the ledger: "long-term" (the federation's) or "per-run".
    """
    spec = plan.spec
    report = verify_ledger(ledger_path, public_key=public_key)
    accounting = accounting_spec(spec)
    parties: dict[str, dict[str, Any]] = {}
    for party, events in sorted(_events_by_party(ledger_path).items()):
        rdp_account = Account.empty(accounting.with_kind(AccountantKind.RDP)).compose_all(events)
        entry: dict[str, Any] = {"releases": len(events), "epsilon_rdp": _finite(rdp_account.epsilon(spec.delta))}
        try:
            pld = Account.empty(accounting.with_kind(AccountantKind.PLD)).compose_all(events).epsilon(spec.delta)
            entry["epsilon_pld"] = _finite(pld)
        except ConfigError:
            entry["epsilon_pld"] = None  # PLD cannot account this mechanism (Skellam): RDP only
        if party.endswith("/demand") and group_size > 1:
            try:
                entry["observation_epsilon"] = _finite(group_epsilon(rdp_account, group_size, spec.delta).epsilon)
            except ConfigError:
                entry["observation_epsilon"] = None  # too large a spend for group privacy to bound anything
        parties[party] = entry
    by_firm: dict[str, dict[str, Any]] = {}
    for party, entry in parties.items():
        firm, _, dataset = party.partition("/")
        row = by_firm.setdefault(firm, _no_spend())
        row["datasets"][dataset or "all"] = entry
        row["releases"] = max(row["releases"], entry["releases"])
        row["epsilon_rdp"] = _worst(row["epsilon_rdp"], entry["epsilon_rdp"])
        row["epsilon_pld"] = _worst(row["epsilon_pld"], entry["epsilon_pld"])
        if "observation_epsilon" in entry:
            row["observation_epsilon"] = entry["observation_epsilon"]
    for firm in firms:  # a firm never admitted (its own budget too small for one round) spent nothing
        by_firm.setdefault(firm, _no_spend())
    by_firm = dict(sorted(by_firm.items()))
    in_no_round = [firm for firm, row in by_firm.items() if row["releases"] == 0]
    neighbours = {"record": "add or remove one training example of one firm", "firm": "add or remove one firm"}
    if accounting.relation is dpa.NeighboringRelation.REPLACE_SPECIAL:
        neighbours["firm"] = "one firm's round contribution replaced by zero (it is seen to take part)"
    return {
        "enabled": True,
        "unit": spec.unit,
        "neighbouring": neighbours[spec.unit],
        "mechanism": plan.mechanism,
        "budget": {"epsilon": spec.epsilon, "delta": spec.delta},
        "accountant": spec.accountant,
        "noise_multiplier": spec.noise_multiplier,
        "clip_norm": (
            {"demand": spec.demand_max_grad_norm, "risk": spec.risk_max_grad_norm}
            if spec.unit == "record"
            else spec.clip_norm
        ),
        "adaptive_clipping": adaptive_clipping_report(ledger_path) if plan.adaptive else None,
        "sample_rate": spec.sample_rate if spec.unit == "record" else spec.firm_sample_rate,
        "steps_per_round": plan.dpsgd_steps if spec.unit == "record" else None,
        "epsilon_overall": _finite(report.epsilon_overall),
        "within_budget": report.within_budget,
        "firms": by_firm,
        "group_size": group_size if spec.unit == "record" else None,
        "refusals": list(report.refusals),
        "firms_in_no_round": in_no_round,
        "ledger": LEDGER_FILE,
        "ledger_public_key": public_key,
        "ledger_key_kind": key_kind,
        "ledger_entries": report.entries,
    }
