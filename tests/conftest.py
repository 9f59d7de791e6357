"""Shared fixtures: the tiny test scenario, its generated chain and the simulations several test files read,
each built once per session; the order and grouping that keep the two xdist workers evenly loaded."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch

from silobridge.scenarios.generator import ChainData, generate_chain
from silobridge.scenarios.schema import Scenario, load_scenario

if TYPE_CHECKING:
    from silobridge.federation.server_app import RunResult

os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
torch.set_num_threads(1)
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    # xdist's workers already keep every core busy: a run's second Ray actor and its harness pool's second
    # process only contend with the other worker. One size for every launch also keeps the worker's one Ray.
    os.environ.setdefault("SILOBRIDGE_SIMULATION_CPUS", "1")

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "scenarios" / "tiny.toml"
DEFAULT = ROOT / "scenarios" / "default.toml"
LARGE = ROOT / "scenarios" / "large.toml"


@pytest.fixture(scope="session", autouse=True)
def one_ray_per_worker() -> Iterator[None]:
    """Every in-process simulation of this pytest worker runs on one Ray instance, each with a fresh actor pool
    (`federation.launch.one_ray_for_many_launches`): Ray starts once per worker instead of once per run. Ray
    is imported only by the first simulation; a worker that runs none never starts it."""
    from silobridge.federation.launch import one_ray_for_many_launches

    with one_ray_for_many_launches():
        yield


@pytest.fixture(scope="session")
def tiny_scenario() -> Scenario:
    return load_scenario(TINY)


@pytest.fixture(scope="session")
def tiny_chain(tiny_scenario: Scenario) -> ChainData:
    return generate_chain(tiny_scenario)


@pytest.fixture(scope="session")
def default_scenario() -> Scenario:
    return load_scenario(DEFAULT)


@pytest.fixture(scope="session")
def default_chain(default_scenario: Scenario) -> ChainData:
    return generate_chain(default_scenario)


# ---- Simulations shared between test files -------------------------------------------------------
# A tiny simulation costs about 40 s on 2 cores, most of it Ray's start-up: where two files asserted on
# runs of the same configuration, they now read one run. Their files are one unit of xdist's work (below), so
# the run is made once, on one worker. Neither the runs nor the tests change what is asserted.
OPEN_RUN = {"run-id": "open", "dp": "off"}
"""Tiny without DP, its 4 rounds, secure aggregation: test_simulation's secure run (its models compared with
the plain and dropout runs', its metrics with round 0's), test_report's non-private page and
test_efficiency_run's recomputation of the efficiency section."""
OPEN_RUN_SECURE_SUMS: list[tuple[str, dict[str, np.ndarray]]] = []
"""(stage, decoded segments) of every secure sum of the open run, as the server saw them (test_simulation)."""
REFUSED_RUN = {
    "run-id": "dp",
    "set": "training.model=mlp;training.rounds=3;privacy.noise_multiplier=1.0;privacy.epsilon=4.5;"
    "firms.S1.budget_epsilon=3.5",
}
"""Record-level DP-SGD whose round 3 would overspend epsilon 4.5 (rounds 1 and 2 spend 4.22), and S1's own
budget of 3.5 pays for round 1 only: a refusal, a firm left out and an uneven spend. test_report's private
page and its refused-round test."""
SHARED_RUN_MODULES = frozenset({"test_report", "test_efficiency_run", "test_simulation"})
"""One unit of xdist's work. test_private_runs (four runs of its own) is not in it: its refused-round test moved to
test_report, so the two workers share the nine runs (five here, four there) instead of one worker making all."""


def _simulate_tiny(tmp_path_factory: pytest.TempPathFactory, config: dict[str, str]) -> RunResult:
    from silobridge.federation.simulation import simulate  # Flower and Ray: only where a run is made

    out = tmp_path_factory.mktemp("shared-runs")
    return simulate({"scenario": str(TINY), "out-dir": str(out), **config})


@pytest.fixture(scope="session")
def tiny_open_run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    from silobridge.federation.coordinator import Federation, SumOutcome

    original = Federation._sum

    def recording(self: Federation, *args: object, **kwargs: object) -> SumOutcome:
        outcome = original(self, *args, **kwargs)
        OPEN_RUN_SECURE_SUMS.append((str(args[-1]), dict(outcome.segments)))
        return outcome

    with pytest.MonkeyPatch.context() as patch:  # the ServerApp runs in a thread of this process
        patch.setattr(Federation, "_sum", recording)
        return _simulate_tiny(tmp_path_factory, OPEN_RUN)


@pytest.fixture(scope="session")
def tiny_refused_run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    return _simulate_tiny(tmp_path_factory, REFUSED_RUN)


# ---- Test tiers -------------------------------------------------------------------------------------
# `python -m pytest -m "not slow and not network and not browser"` is the fast tier (unit tests, about a
# minute or two on 2 cores); CI runs every tier. "slow": runs simulations (Ray, Flower) or long
# statistical checks, measured at 5 s or more on 2 cores; a whole module is slow where a module-scoped
# fixture runs a simulation. "network": starts a SuperLink and SuperNodes on loopback. "browser":
# opens headless Chromium.
SLOW_MODULES = frozenset(
    {
        "test_dp_canary_audit",
        "test_adaptive_clipping",
        "test_analytics_cli",
        "test_bench_secure_aggregation",
        "test_efficiency_run",
        "test_flwr_run",
        "test_interrupt",
        "test_joining",
        "test_launch_ray",
        "test_network_federation",
        "test_odometer_run",
        "test_pilot_end_to_end",
        "test_preflight",
        "test_private_runs",
        "test_report",
        "test_rundir",
        "test_simulation",
    }
)
SLOW_TESTS = frozenset(
    {
        "tests/privacy/test_dp_accounting.py::test_fixed_size_sampling_needs_replace_one",
        "tests/privacy/test_dp_accounting.py::test_pld_matches_dp_accounting_at_its_default_discretisation",
        "tests/privacy/test_secagg_protocol.py::test_neighbourhoods_sized_for_30_percent_dropout_recover_such_a_round",
        "tests/privacy/test_secagg_state.py::test_restoring_every_firm_before_every_message_changes_nothing",
        "tests/test_analytics_bad_input.py::test_command_line_noise_multiplier_zero",
        "tests/test_analytics_own_spend.py::test_the_analytics_handler_refuses_a_coordinator_that_ignores_the_firms_budget",
        "tests/test_deploy.py::test_without_global_models_every_firm_still_deploys_and_says_why",
        "tests/test_deploy.py::test_a_switch_won_on_last_years_season_must_hold_on_the_recent_tail",
        "tests/test_deploy.py::test_a_switch_confirmed_on_the_recent_tail_is_deployed",
        "tests/test_light_stages.py::test_light_stages_still_hold_the_partner_to_its_federation_file",
        "tests/privacy/test_dp_calibration.py::test_rounds_round_trip",
        "tests/test_cli.py::test_calibrate_finds_the_noise_that_spends_the_budget",
        "tests/test_cli.py::test_simulate_no_dp_is_the_non_private_comparison",
        "tests/test_cli.py::test_simulate_prints_the_comparison_and_writes_the_run",
        "tests/test_efficiency.py::test_a_firms_forecast_totals_match_its_test_statistics",
        "tests/test_efficiency.py::test_calibration_leaves_room_for_the_efficiency_release",
        "tests/test_network_setup.py::test_a_partner_refuses_settings_that_differ_from_its_federation_file",
        "tests/test_network_setup.py::test_a_partners_node_builds_its_firm_from_its_own_node_config_never_the_run_config",
        "tests/test_network_setup.py::test_only_the_partner_can_seed_its_own_dp_noise",
        "tests/test_own_budget.py::test_a_round_over_the_firms_own_budget_is_refused",
        "tests/test_own_budget.py::test_the_firms_count_is_the_coordinators_accounting",
        "tests/test_own_budget.py::test_the_train_handler_refuses_a_coordinator_that_ignores_the_firms_budget",
        "tests/test_personalise.py::test_a_long_history_also_validates_on_last_years_season",
        "tests/test_personalise.py::test_a_useless_global_model_is_not_deployed",
        "tests/test_personalise.py::test_no_windows_deploys_naive_and_too_few_falls_back_with_a_reason",
        "tests/test_personalise.py::test_the_choice_is_the_lowest_validation_wape_and_refits_on_all_windows",
        "tests/test_personalise.py::test_validation_split_leaves_a_gap_of_one_horizon",
        "tests/test_secure_sum.py::test_secure_sums_equal_plain_sums_through_stored_state",
    }
)
NETWORK_MODULES = frozenset({"test_network_federation", "test_flwr_run"})
BROWSER_TESTS = frozenset({"test_report_in_headless_chromium"})


# ---- Two workers, evenly loaded -----------------------------------------------------------------------
# With `--dist loadfile` xdist hands out whole files (module fixtures run once) in collection order, each
# worker taking the next file when it is nearly done. The files that take longest (simulations, a
# loopback federation, CLI runs) go first, so that no long file starts last while the other worker idles;
# the rest keep pytest's order (`--no-loadscope-reorder`: xdist would otherwise put the files with the
# most tests first, the long files last). The files that read the shared runs are one unit of work, so
# the runs are made once, on one worker.
HEAVY_FIRST = (
    "test_network_federation",  # a SuperLink, three warm SuperNodes (one executor killed), a run, a query, a pilot,
    # then the coordinator and its SuperLink killed mid-run, restarted, resumed
    "test_report",  # with test_efficiency_run, test_simulation one unit (SHARED_RUN_MODULES): 5 runs
    "test_efficiency_run",
    "test_simulation",
    "test_private_runs",  # four runs of its own
    "test_resume_run",  # four simulations: straight, killed twice, resumed
    "test_query_resume_run",  # three query sessions: straight, killed, resumed (it started late, in name order)
    "test_cli",
    "test_analytics_cli",
    "test_adaptive_clipping",
    "test_flwr_run",
    "test_pilot_end_to_end",
    "test_rundir",
    "test_interrupt",
    "test_odometer_run",
    "test_dp_canary_audit",
    "test_scale",
    "test_harness_pool",  # spawns a pool and fits every tiny firm twice (pooled and sequential)
    "test_launch_ray",  # two simulations on one Ray
)
SHARED_RUNS_UNIT = "tests/shared-runs"


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """loadfile's scheduler, with the files of SHARED_RUN_MODULES as one unit of work.

    (xdist's own `--dist loadgroup` cannot do this here: its group marks rename node ids through an
    attribute pytest 9 no longer reads, so every test would be scheduled on its own.)
    """
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedRunsScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return SHARED_RUNS_UNIT if Path(path).stem in SHARED_RUN_MODULES else path

    return SharedRunsScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {module: i for i, module in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).stem, len(rank)))  # stable: files stay whole
    for item in items:
        path = Path(str(item.fspath)).relative_to(ROOT).as_posix()
        module = Path(path).stem
        name = getattr(item, "originalname", item.name)
        if module in SLOW_MODULES or f"{path}::{name}" in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
        if module in NETWORK_MODULES:
            item.add_marker(pytest.mark.network)
        if name in BROWSER_TESTS:
            item.add_marker(pytest.mark.browser)
