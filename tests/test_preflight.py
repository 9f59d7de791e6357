"""Refusals before any firm is contacted: a budget no round fits, own budgets that leave too few firms.

`simulate` raises these before Ray starts (no simulation runs here).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from federation.preflight import preflight, round_epsilon
from federation.settings import settings_from_run_config
from federation.simulation import simulate
from silobridge.errors import ConfigError
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
