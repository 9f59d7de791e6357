"""Refusals before any firm is contacted: a budget no round fits, own budgets that leave too few firms.

`simulate` raises these before Ray starts (no simulation runs here).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from silobridge.errors import ConfigError
from silobridge.federation.ledger_signer import ledger_signer
from silobridge.federation.preflight import check_firm_budgets, preflight, round_epsilon
from silobridge.federation.settings import settings_from_run_config
from silobridge.federation.simulation import simulate
from silobridge.privacy.ledger import public_key_hex
from silobridge.privacy.ledger.keys import write_signing_key
from tests.conftest import ROOT

TRIO = ROOT / "tests" / "scenarios" / "trio.toml"


def _config(tmp_path: Path, overrides: str) -> dict[str, object]:
    return {"scenario": str(TRIO), "out-dir": str(tmp_path), "run-id": "pre", "set": overrides, "num-rounds": 2}


def test_a_fixed_noise_multiplier_that_cannot_fit_one_round_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"noise_multiplier'.*first round alone, over the run's budget 0.5"):
        simulate(_config(tmp_path, "privacy.epsilon=0.5;privacy.noise_multiplier=0.5"), cpus=1)
    assert not any(tmp_path.iterdir())  # nothing was started or written


def test_a_firm_whose_budget_leaves_too_few_firms_for_secure_aggregation_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'D1' \(budget_epsilon 0.01\).*leaving 2 firm\(s\), fewer than the 3"):
        simulate(_config(tmp_path, "firms.D1.budget_epsilon=0.01"), cpus=1)
    assert not any(tmp_path.iterdir())


def test_a_budget_that_pays_for_a_round_is_accepted(tmp_path: Path) -> None:
    settings = settings_from_run_config(_config(tmp_path, ""))
    enough = round_epsilon(settings) * 1.01
    preflight(settings_from_run_config(_config(tmp_path, f"firms.D1.budget_epsilon={enough}")))


def test_budgets_a_real_federations_firms_declare_are_checked_before_round_1(tmp_path: Path) -> None:
    """Over the network the budgets arrive in the manifests, per data set: the same refusal, before the ledger opens."""
    settings = settings_from_run_config(_config(tmp_path, ""))
    parties = {"R1/demand": None, "R1/risk": None, "D1/demand": 0.01, "D1/risk": None, "M1/demand": None}
    with pytest.raises(ConfigError, match=r"'D1' \(budget_epsilon 0.01\)"):
        check_firm_budgets(settings, parties)
    check_firm_budgets(settings, {**parties, "D1/demand": None})


def test_a_federation_file_that_names_a_ledger_key_binds_the_run_to_it(tmp_path: Path) -> None:
    key, other = tmp_path / "ledger.key", tmp_path / "other.key"
    _, public = write_signing_key(key)
    write_signing_key(other)
    federation = tmp_path / "federation.toml"
    federation.write_text(TRIO.read_text() + f'\n[privacy]\nledger_public_key = "{public}"\n')
    config = {**_config(tmp_path, ""), "scenario": str(federation)}
    with pytest.raises(ConfigError, match="pass its private key file with --ledger-key"):
        ledger_signer(settings_from_run_config(config))
    with pytest.raises(ConfigError, match="partners would reject this run's ledger"):
        ledger_signer(settings_from_run_config({**config, "ledger-key": str(other)}))
    signing, kind = ledger_signer(settings_from_run_config({**config, "ledger-key": str(key)}))
    assert kind == "long-term" and public_key_hex(signing) == public
    # Without a declared key a simulation signs with a key of its own, labelled per-run.
    assert ledger_signer(settings_from_run_config(_config(tmp_path, "")))[1] == "per-run"
