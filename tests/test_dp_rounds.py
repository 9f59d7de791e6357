"""The DP round policy without any transport (`server.dp_rounds`): who the ledger accounts, who a round
admits, and the record-level update on known values, with what the ledger records of it."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from silobridge.federation.coordinator import fedavg_strategy
from silobridge.federation.settings import RunSettings, settings_from_run_config
from silobridge.privacy.dp import Budget
from silobridge.privacy.ledger import PrivacyRun, config_hash
from silobridge.server.dp_rounds import DpRounds, accounted_parties, dataset_party
from silobridge.server.privacy import accounting_spec
from tests.conftest import TINY

KINDS = ("demand", "risk")


def test_the_ledger_accounts_firms_or_each_firms_data_sets() -> None:
    trains = {"R1": ["demand", "risk"], "S1": ["risk"]}
    assert accounted_parties("firm", trains) == {"R1": "R1", "S1": "S1"}
    assert accounted_parties("record", trains) == {"R1/demand": "R1", "R1/risk": "R1", "S1/risk": "S1"}
    assert dataset_party("R1", "demand") == "R1/demand"


@pytest.fixture(scope="module")
def settings() -> RunSettings:
    """The tiny scenario's record-level DP-SGD, with a fixed noise multiplier (no calibration to wait for)."""
    return settings_from_run_config({"scenario": str(TINY), "set": "training.model=mlp;privacy.noise_multiplier=1.0"})


def _record_level(
    settings: RunSettings, tmp_path: Path, firm_budgets: dict[str, Budget]
) -> tuple[DpRounds, PrivacyRun, dict[str, str]]:
    plan = settings.privacy_plan()
    assert plan.spec.unit == "record"
    ledger = PrivacyRun.start(
        tmp_path / "ledger.jsonl",
        run_id="dp-rounds",
        config_sha256=config_hash({"dp_rounds": True}),
        budget=Budget(plan.spec.epsilon, plan.spec.delta),
        signing_key=Ed25519PrivateKey.generate(),
        spec=accounting_spec(plan.spec),
        firm_budgets=firm_budgets,
    )
    parties = accounted_parties("record", {"R1": list(KINDS), "R2": list(KINDS), "S1": ["risk"]})
    return DpRounds(plan, fedavg_strategy(settings)), ledger, parties


def test_a_firm_takes_part_only_while_every_data_set_it_trains_can_pay(settings: RunSettings, tmp_path: Path) -> None:
    policy, ledger, parties = _record_level(settings, tmp_path, {"R2/risk": Budget(1e-6, 1e-9)})
    admission = policy.admit(ledger, 1, ["R1", "R2", "S1"], parties, KINDS)
    assert admission.participants == ["R1", "S1"] and admission.refused == ["R2"]


def test_record_level_update_is_fedavg_on_the_sums_and_charges_the_contributors_data_sets(
    settings: RunSettings, tmp_path: Path
) -> None:
    policy, ledger, parties = _record_level(settings, tmp_path, {})
    weights = {"demand": OrderedDict(w=np.array([1.0, 2.0])), "risk": OrderedDict(w=np.array([0.5]))}
    segments = {
        "demand/update": np.array([4.0, -8.0]),  # sum of weight x change
        "demand/weight": np.array([4.0]),
        "risk/update": np.array([3.0]),
        "risk/weight": np.array([0.0]),  # nobody trained risk: unchanged
    }
    for release in policy.release(ledger, 1, weights, segments, ["R1", "S1"], parties):
        ledger.record(release)  # as the training loop does, after the checkpoint holds the releases
    np.testing.assert_allclose(weights["demand"]["w"], [2.0, 0.0])
    np.testing.assert_allclose(weights["risk"]["w"], [0.5])
    assert ledger.overall_epsilon > 0
    ledger.close()
    releases = [json.loads(line) for line in (tmp_path / "ledger.jsonl").read_text().splitlines()]
    releases = [r for r in releases if r.get("kind") == "release" or "release_id" in r]
    charged = {r["release_id"]: r["firms"] for r in releases if "firms" in r and r.get("mechanism") == "dpsgd"}
    assert charged == {"round-1/demand": ["R1/demand"], "round-1/risk": ["R1/risk", "S1/risk"]}
