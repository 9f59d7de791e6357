"""One private simulation signed by the federation's long-term ledger key, with every firm's lifetime odometer.

Covers end to end what the unit tests cover piecewise: the ledger verifies against the federation file's
key (and only says "verified" then), the firms' odometers hold the run's rounds, and a second run that
would take the firms past their lifetime budget is refused before anything starts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from silobridge.clients.own_budget import own_epsilon
from silobridge.errors import ConfigError
from silobridge.federation.cli import app
from silobridge.federation.settings import settings_from_run_config
from silobridge.federation.simulation import simulate
from silobridge.privacy.ledger import verify_ledger
from silobridge.privacy.ledger.keys import write_signing_key
from silobridge.privacy.odometer import Odometer
from tests.conftest import ROOT

TRIO = ROOT / "tests" / "scenarios" / "trio.toml"


def test_a_long_term_key_and_lifetime_odometers_across_runs(tmp_path: Path) -> None:
    key = tmp_path / "ledger.key"
    _, public = write_signing_key(key)
    federation = tmp_path / "trio.toml"
    federation.write_text(TRIO.read_text() + f'\n[privacy]\nledger_public_key = "{public.upper()}"\n')
    state = tmp_path / "state"
    # what is read is the ledger and the odometers: no local-only baselines (under DP the harness fits them
    # outside the federation, nothing spent changes)
    config = {
        "scenario": str(federation),
        "out-dir": str(tmp_path / "runs"),
        "num-rounds": 2,
        "set": "training.baselines=none",
    }
    privacy = settings_from_run_config(config).spec.privacy
    lifetime = own_epsilon(privacy, 2) * 1.0001  # this run's two rounds fit; not one more
    keyed = {**config, "ledger-key": str(key), "state-dir": str(state), "lifetime-epsilon": lifetime}

    with pytest.raises(ConfigError, match="pass its private key file with --ledger-key"):
        simulate({**config, "run-id": "nokey"})  # the federation names a key: no per-run key
    run = simulate({**keyed, "run-id": "first"})

    assert run.summary["privacy"]["ledger_key_kind"] == "long-term"
    result = CliRunner().invoke(app, ["audit", str(run.path), "--config", str(federation)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "verified: chain and signatures intact under the trusted key" in " ".join(result.output.split())
    for firm in ("R1", "D1", "M1"):
        odometer = Odometer.open(state / firm, firm=firm)
        spent = {row.dataset: (row.releases, row.runs) for row in odometer.datasets()}
        assert spent and all(value == (2, ("first",)) for value in spent.values()), (firm, spent)
        assert max(row.epsilon for row in odometer.datasets()) == pytest.approx(own_epsilon(privacy, 2), rel=1e-9)
    shown = CliRunner().invoke(app, ["budget", str(state), "--json"])
    assert shown.exit_code == 0 and {row["firm"] for row in json.loads(shown.output)["datasets"]} == {"R1", "D1", "M1"}

    # A second run of the same firms would pass their lifetime budgets: refused before any firm is asked.
    with pytest.raises(ConfigError, match="lifetime odometer at epsilon"):
        simulate({**keyed, "run-id": "second", "lifetime-epsilon": 0})
    assert not (tmp_path / "runs" / "second").exists()


def test_a_linear_run_charges_each_firms_odometer_what_its_ledger_charges(tmp_path: Path) -> None:
    """The default private family (linear: sufficient statistics noised once by the coordinator): each firm's
    node charges its own odometer, from the federation's spec, exactly what the coordinator's ledger charges it."""
    state = tmp_path / "state"
    config = {
        "scenario": str(TRIO),
        "out-dir": str(tmp_path / "runs"),
        "set": "training.model=linear;training.baselines=none",
        "state-dir": str(state),
        "lifetime-epsilon": 100.0,
        "run-id": "linear",
    }
    run = simulate(config)
    report = verify_ledger(run.path / "privacy_ledger.jsonl")
    assert report.ended and report.accountant.kind.value == "rdp"
    charged = 0
    for firm in ("R1", "D1", "M1"):
        for row in Odometer.open(state / firm, firm=firm).datasets():
            party = report.firms[f"{firm}/{row.dataset}"]
            assert (row.releases, row.runs) == (party.releases, ("linear",)), (firm, row)
            assert row.epsilon == pytest.approx(party.epsilon, rel=1e-9), (firm, row.dataset)
            charged += 1
    assert charged == sum(1 for party in report.firms if party.partition("/")[0] in {"R1", "D1", "M1"}) > 0
