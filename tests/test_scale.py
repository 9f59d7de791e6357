"""Simulations at scale (issue 20): local-only baselines for all, a seeded sample or none of the firms (the
selection, what a firm without a baseline shows, a run compared over its sample) and the exchange timeout."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tomli_w

from silobridge.contract.config import BASELINES_ALL_UP_TO, BaselinesSpec, select_baselines
from silobridge.contract.stats import DemandErrorStats, slot_by_group
from silobridge.contract.wire_names import DEMAND_LOCAL_ONLY
from silobridge.errors import ConfigError
from silobridge.federation.deployment import NO_BASELINE, deploy_all, per_firm_row
from silobridge.federation.summary import acceptance_checks
from silobridge.scenarios.schema import load_scenario
from tests.conftest import ROOT, TINY

TRIO = ROOT / "tests" / "scenarios" / "trio.toml"


def _ids(n: int) -> list[str]:
    return [f"F{i:04d}" for i in range(n)]


def test_auto_baselines_every_firm_up_to_the_threshold_and_a_sample_above() -> None:
    every = select_baselines(BaselinesSpec(), _ids(BASELINES_ALL_UP_TO), seed=1)
    assert every.mode == "all" and every.complete and len(every.firms) == BASELINES_ALL_UP_TO
    above = select_baselines(BaselinesSpec(sample_size=50), _ids(BASELINES_ALL_UP_TO + 1), seed=1)
    assert above.mode == "sample" and not above.complete
    assert len(above.firms) == 50 and above.of == BASELINES_ALL_UP_TO + 1 and above.seed == 1
    assert set(above.firms) <= set(_ids(BASELINES_ALL_UP_TO + 1)) and list(above.firms) == sorted(above.firms)


def test_a_sample_depends_on_the_seed_not_on_the_order_firms_connected_in() -> None:
    spec = BaselinesSpec(mode="sample", sample_size=10)
    ids = _ids(300)
    first = select_baselines(spec, ids, seed=7)
    assert select_baselines(spec, list(reversed(ids)), seed=7).firms == first.firms
    assert select_baselines(spec, ids, seed=8).firms != first.firms


def test_none_all_and_a_sample_as_large_as_the_federation() -> None:
    none = select_baselines(BaselinesSpec(mode="none"), _ids(5), seed=1)
    assert none.firms == () and not none.complete and none.of == 5
    assert "no firm" in str(none.describe()["scope"])
    assert select_baselines(BaselinesSpec(mode="all"), _ids(1000), seed=1).complete
    assert select_baselines(BaselinesSpec(mode="sample", sample_size=5), _ids(5), seed=1).mode == "all"
    sample = select_baselines(BaselinesSpec(mode="sample", sample_size=2), _ids(5), seed=3)
    assert sample.describe()["scope"].startswith("a seeded sample of 2 of 5 firms (seed 3)")


def test_the_scenario_setting_is_validated_with_its_field(tmp_path: Path) -> None:
    raw = tomllib.loads(TINY.read_text())
    raw["training"]["baselines"] = "some"
    path = tmp_path / "s.toml"
    path.write_text(tomli_w.dumps(raw))
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    assert info.value.field == "training.baselines"
    raw["training"].update(baselines="sample", baseline_sample=3)
    path.write_text(tomli_w.dumps(raw))
    assert load_scenario(path).training.baselines_spec == BaselinesSpec(mode="sample", sample_size=3)


def _choice() -> SimpleNamespace:
    return SimpleNamespace(name="global", reason="best on validation", shrinkage=0.0, validation={"global": 0.2})


def _demand_stats(abs_error: float, actual: float, group: str) -> np.ndarray:
    """A firm's group-slotted demand statistics with the given error and demand totals."""
    return slot_by_group(DemandErrorStats(abs_error=abs_error, actual=actual, count=10).to_vector(), group)


def test_a_firm_without_a_baseline_says_so_and_claims_no_comparison() -> None:
    firm = SimpleNamespace(firm_id="R2", group="small")
    row = per_firm_row(firm, "demand", _demand_stats(2.0, 10.0, "small"), {}, _choice())  # type: ignore[arg-type]
    assert row["deployed_wape"] == pytest.approx(0.2)
    assert math.isnan(row["local_only_wape"]) and math.isnan(row["ratio"])
    assert row["no_baseline"] == NO_BASELINE
    baselines = {DEMAND_LOCAL_ONLY: _demand_stats(4.0, 10.0, "small")}
    compared = per_firm_row(firm, "demand", _demand_stats(2.0, 10.0, "small"), baselines, _choice())  # type: ignore[arg-type]
    assert compared["ratio"] == pytest.approx(0.5) and "no_baseline" not in compared


def test_checks_against_local_only_say_what_they_cover() -> None:
    table = {"demand": {"deployed": {"small": {"wape": 0.5}}, "local_only": {"small": {"wape": 1.0}}}}
    per_firm = {"demand": {"worst_ratio": 0.9}, "risk": {"worst_difference": 0.0}}
    checks = acceptance_checks(table, per_firm, over="a seeded sample of 2 of 5 firms")
    assert [c["passed"] for c in checks[:3]] == [True, True, True]
    assert all(c["over"] == "a seeded sample of 2 of 5 firms" for c in checks[:3])
    assert all("over" not in c for c in checks[3:])
    unjudged = acceptance_checks({"demand": {"deployed": {"small": {"wape": 0.5}}}}, {})
    assert [c["passed"] for c in unjudged[:3]] == [None, None, None]  # no baselines: nothing is claimed


@pytest.mark.slow
def test_a_sampled_run_compares_local_only_over_the_sample(tmp_path: Path) -> None:
    from silobridge.federation.simulation import simulate

    result = simulate(
        {
            "scenario": str(TRIO),
            "out-dir": str(tmp_path),
            "run-id": "sampled",
            "dp": "off",
            "aggregation": "plain",
            "num-rounds": 2,
            "set": "training.baselines=sample;training.baseline_sample=2",
        },
    )
    summary = json.loads((result.path / "summary.json").read_text())
    baselines = summary["baselines"]
    assert baselines["mode"] == "sample" and baselines["baselined"] == 2 and baselines["of"] == 3
    sampled = set(baselines["firms"])
    rows = summary["models"]["demand"]["per_firm"]["firms"]
    assert rows and {r["firm"] for r in rows} <= sampled  # only the sample is deployed and scored beside its own
    assert all(r["local_only_wape"] is not None and "no_baseline" not in r for r in rows)
    assert "local_only" in summary["models"]["demand"]
    assert all(c["over"] == baselines["scope"] for c in summary["acceptance"][:3])
    markdown = (result.path / "summary.md").read_text()
    assert (
        "Local-only baselines (sample): a seeded sample of 2 of 3 firms (seed 7): local-only and deployed" in markdown
    )


@pytest.mark.slow
def test_the_linear_familys_federated_figures_cover_every_firm_whatever_was_baselined(tmp_path: Path) -> None:
    """The linear family alone has no final-evaluation stage: its global models are scored by the harness. With
    no firm baselined (the 1,000-firm bench's `--baselines none`) the summary held no federated figures; they
    are now every firm's, the same as with every firm baselined."""
    from silobridge.federation.simulation import simulate

    federated = {}
    for baselines in ("none", "all"):
        result = simulate(
            {
                "scenario": str(TRIO),
                "out-dir": str(tmp_path),
                "run-id": f"linear-{baselines}",
                "dp": "off",
                "aggregation": "plain",
                "set": f"training.model=linear;training.baselines={baselines}",
            },
            cpus=2,
        )
        models = json.loads((result.path / "summary.json").read_text())["models"]
        federated[baselines] = {kind: models[kind]["federated"]["all"] for kind in ("demand", "risk")}
    assert federated["none"]["demand"]["wape"] > 0 and federated["none"]["risk"]["roc_auc"] > 0
    assert federated["none"] == federated["all"]


def test_only_baselined_firms_are_deployed_when_the_baselines_were_sampled() -> None:
    class Untouchable:
        firm_id = "R2"

        def __getattr__(self, name: str) -> object:
            raise AssertionError(f"a firm outside the baselines selection was asked for {name}")

    outcome = deploy_all([Untouchable()], {}, None, None, None, {}, over_baselined=True)  # type: ignore[list-item, arg-type]
    assert outcome.demand is None and outcome.risk is None and outcome.efficiency_after is None
    assert outcome.per_firm == {"demand": [], "risk": []}


def test_a_simulations_exchange_timeout_grows_with_the_firms_each_cpu_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    from silobridge.federation.settings import SIMULATED_SECONDS_PER_TURN, settings_from_run_config

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    simulated = settings_from_run_config({"scenario": str(TINY)})  # 5 firms: 3 turns on 2 CPUs
    assert simulated.exchange_timeout_s == simulated.round_timeout_s + 3 * SIMULATED_SECONDS_PER_TURN
    real = simulated.model_copy(update={"data": "nodes"})
    assert real.exchange_timeout_s == real.round_timeout_s
