"""End to end: a Flower simulation of the tiny scenario (no DP, secure aggregation, 4 rounds; conftest's
OPEN_RUN, which test_report and test_simulation read too), and one of the trio scenario (three firms, the fewest a
published group may have) with record-level DP and the efficiency release.

The efficiency section of summary.json must equal what the firms' own numbers give when computed
directly, outside the federation: each firm's local-only baseline and what each firm deploys (chosen
from the saved global models), run through the same inventory simulation by the harness, summed and
turned into ratios.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from silobridge.clients.models import MODEL_KINDS
from silobridge.clients.normaliser import Normaliser
from silobridge.contract.efficiency_sums import EFFICIENCY_BEFORE
from silobridge.federation.coordinator import baseline_instruction
from silobridge.federation.harness import SimulationHarness
from silobridge.federation.server_app import RunResult
from silobridge.federation.settings import settings_from_run_config
from silobridge.federation.simulation import simulate
from silobridge.server.efficiency import efficiency_table, group_tiers
from tests.conftest import OPEN_RUN, ROOT, TINY

TRIO = ROOT / "tests" / "scenarios" / "trio.toml"


def _close(got: dict, want: dict) -> None:
    """summary.json rounds to 6 decimals."""
    assert set(got) == set(want)
    for key, value in want.items():
        if isinstance(value, dict):
            _close(got[key], value)
        else:
            assert got[key] == pytest.approx(value, abs=2e-6), key


def test_summary_efficiency_equals_the_firms_numbers_recomputed(tiny_open_run: RunResult) -> None:
    result = tiny_open_run
    config = {"scenario": str(TINY), "out-dir": str(result.path.parent), **OPEN_RUN}
    section = result.summary["efficiency"]
    assert json.loads((result.path / "summary.json").read_text())["efficiency"] == section
    assert "## Cross-firm efficiency" in (result.path / "summary.md").read_text()

    assert section["horizon"] == 13 - 4 + 1
    assert section["policy"] == {
        "review_period": 1,
        "service_level": 0.95,
        "lead_time": 1,
        "holding_cost": 1.0,
        "shortage_cost": 4.0,
        "order_cost": 10.0,
    }
    assert section["dp"] is None
    # One firm per tier but two retailers: no tier reaches 3 firms, so only the chain is published.
    assert section["tiers"] == {} and section["groups"] == {}
    assert section["min_firms_per_group"] == 3 and section["chain_firms"] == 5
    assert set(section["suppressed_tiers"]) == {"supplier", "manufacturer", "distributor", "retailer"}
    assert section["suppressed_tiers"]["retailer"] == "2 firm(s), fewer than the minimum 3; counted in the chain only"
    for row in (section["chain"], *section["tiers"].values()):
        assert set(row) == {"before", "after", "K"}
        assert set(row["before"]) == set(row["after"]) == {"E", "O", "I", "TFP"}
        assert set(row["K"]) == {"K_E", "K_O", "K_I", "K_TFP"}

    settings = settings_from_run_config(config)
    instruction = baseline_instruction(settings)  # what the run's firms were asked
    harness = SimulationHarness(settings)
    grouping = group_tiers([f.tier for f in harness.firms if f.trains("demand")], 3)
    before = harness.local_baselines(instruction, grouping.assignment)[EFFICIENCY_BEFORE]
    # 'after' is what each firm deploys (its own choice among naive, local, the global MLP and the global
    # linear model, adapted or not), recomputed here from the saved models.
    state = torch.load(result.path / "models" / "demand.pt")
    weights = {"demand": {k: v.numpy() for k, v in state.items()}}
    linear = {kind: torch.load(result.path / "models" / f"{kind}_linear.pt")["coef"].numpy() for kind in MODEL_KINDS}
    norm = Normaliser.from_arrays(
        {k: np.asarray(v) for k, v in json.loads((result.path / "models" / "risk_normaliser.json").read_text()).items()}
    )
    deployed = harness.deploy(instruction, grouping.assignment, norm, linear, weights)
    after = deployed.efficiency_after
    expected = efficiency_table(before, after, section["tiers"])
    _close({"chain": section["chain"], "tiers": section["tiers"]}, expected)
    markdown = (result.path / "summary.md").read_text()
    assert "Only groups of at least 3 firms are published (chain: 5 firms)." in markdown
    assert "- supplier not published on its own: 1 firm(s), fewer than the minimum 3" in markdown

    # I is forecast skill on the held-out forecasts: 1 - WAPE of the same model over all firms.
    wape = result.summary["models"]["demand"]
    assert section["chain"]["after"]["I"] == pytest.approx(1 - wape["deployed"]["all"]["wape"], abs=2e-6)
    assert section["chain"]["before"]["I"] == pytest.approx(1 - wape["local_only"]["all"]["wape"], abs=2e-6)


def test_a_dp_efficiency_release_is_charged_and_recorded(tmp_path) -> None:
    """Record-level DP with `efficiency.dp`: the noised sums are one more ledger release, within budget. On trio
    (three firms of three tiers: the chain is published, no tier is): what is asserted is the release, not the
    figures, and trio's firms are fewer and smaller than tiny's."""
    from silobridge.server.efficiency_release import release_epsilon

    config = {
        "scenario": str(TRIO),
        "out-dir": str(tmp_path),
        "run-id": "trio-efficiency-dp",
        "set": "training.model=mlp;training.rounds=2;efficiency.dp=true",
    }
    result = simulate(config)
    settings = settings_from_run_config(config)
    section = result.summary["efficiency"]
    assert section["dp"] == {
        "epsilon": pytest.approx(release_epsilon(settings.spec.privacy, settings.spec.efficiency), abs=1e-6),
        "delta": 1e-5,
        "noise_multiplier": 2.0,
    }
    assert set(section["chain"]) == {"before", "after", "K"} and section["chain_firms"] == 3
    assert section["tiers"] == {} and set(section["suppressed_tiers"]) == {f.tier for f in settings.scenario.firms}
    entries = [json.loads(line) for line in (result.path / "privacy_ledger.jsonl").read_text().splitlines()]
    releases = [e for e in entries if e["kind"] == "release" and e["release_id"] == "efficiency"]
    assert len(releases) == 1
    release = releases[0]
    assert release["firms"] == sorted(f"{firm.id}/demand" for firm in settings.scenario.firms)
    assert release["mechanism"] == "gaussian" and release["clip_norm"] == 1e5 and release["noise_multiplier"] == 2.0
    privacy = result.summary["privacy"]
    assert privacy["within_budget"] and privacy["epsilon_overall"] <= 8.0
    assert privacy["firms"]["R1"]["datasets"]["demand"]["releases"] == 3  # two rounds and the efficiency sums
    assert privacy["firms"]["R1"]["datasets"]["risk"]["releases"] == 2
