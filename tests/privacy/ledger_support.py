"""Helpers for the ledger tests: a sample run's ledger, and raw access to its lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dp_accounting as dpa
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from silobridge.errors import BudgetExhausted
from silobridge.privacy.dp import AccountingSpec, Budget, Sampling, central_round_event
from silobridge.privacy.ledger import PrivacyRun, Release, canonical_bytes, config_hash, public_key_hex
from silobridge.privacy.ledger.sealing import GENESIS_HASH, sha256_hex, sign_entry, unsigned

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
FIRMS = ["acme", "bolt", "cargo", "strict"]
# Few RDP orders keep the header short, so tampering with each of its fields stays quick to test.
SPEC = AccountingSpec(rdp_orders=(2.0, 4.0, 8.0, 16.0, 32.0, 64.0))
ROUND_EVENT = central_round_event(3.0, 1.0, Sampling.poisson(0.5))


def write_sample_ledger(path: Path) -> Path:
    """Four Poisson-sampled rounds (the strict firm drops out after two), one refusal, and the end."""
    run = PrivacyRun.start(
        path,
        run_id="sample-run",
        config_sha256=config_hash({"rounds": 4, "noise_multiplier": 3.0}),
        budget=Budget(2.5, 1e-5),
        signing_key=KEY,
        spec=SPEC,
        firm_budgets={"strict": Budget(1.5, 1e-6)},
    )
    for round_number in range(4):
        release_id = f"round-{round_number}"
        admission = run.admit(release_id, ROUND_EVENT, FIRMS)
        run.record(
            Release(
                release_id,
                "central_gaussian",
                ROUND_EVENT,
                firms=admission.participants,
                sampling=Sampling.poisson(0.5),
                noise_multiplier=3.0,
                clip_norm=1.0,
                excluded_firms=admission.excluded,
                parameters={"model": "demand", "learning_rate": 0.1, "secure_aggregation": True},
            )
        )
    with pytest.raises(BudgetExhausted):
        run.admit("greedy-query", dpa.GaussianDpEvent(0.1), FIRMS)
    run.close()
    return path


def read_entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def write_entries(path: Path, entries: list[dict[str, Any]]) -> None:
    """Write entries as canonical lines, as an attacker without the key would (no re-signing)."""
    path.write_bytes(b"".join(canonical_bytes(entry) + b"\n" for entry in entries))


def reseal(entries: list[dict[str, Any]], key: Ed25519PrivateKey) -> list[dict[str, Any]]:
    """Re-chain and re-sign every entry with `key`, as someone holding that key could."""
    sealed, prev = [], GENESIS_HASH
    for index, entry in enumerate(entries):
        body = {**unsigned(entry), "index": index, "prev": prev}
        if body["kind"] == "header":
            body["public_key"] = public_key_hex(key)
        signed = sign_entry(body, key)
        sealed.append(signed)
        prev = sha256_hex(canonical_bytes(signed))
    return sealed
