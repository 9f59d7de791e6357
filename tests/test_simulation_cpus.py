"""The simulation's CPU count: an explicit number, else SILOBRIDGE_SIMULATION_CPUS, else the machine's."""

from __future__ import annotations

import os

import pytest

from silobridge.errors import ConfigError
from silobridge.federation.simulation_cpus import CPUS_ENV, simulation_cpus


def test_an_explicit_number_wins_over_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CPUS_ENV, "3")
    assert simulation_cpus(5) == 5


def test_the_setting_caps_a_run_that_names_no_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CPUS_ENV, " 1 ")
    assert simulation_cpus() == 1


def test_without_the_setting_a_run_uses_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CPUS_ENV, raising=False)
    assert simulation_cpus() == (os.cpu_count() or 1)


@pytest.mark.parametrize(
    ("raw", "says"), [("two", "is not a whole number"), ("0", "must be at least 1"), ("1.5", "is not")]
)
def test_a_bad_setting_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, raw: str, says: str) -> None:
    monkeypatch.setenv(CPUS_ENV, raw)
    with pytest.raises(ConfigError, match=f"{CPUS_ENV}.*{says}"):
        simulation_cpus()


def test_an_explicit_number_below_one_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least 1 CPU, got 0"):
        simulation_cpus(0)
