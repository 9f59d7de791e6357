"""Issue 19's odometer case in one piece: two training runs and a query session of the same firm compose on its
lifetime odometer, and a third run is refused by the node before anything is released (charging nothing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from silobridge.clients.own_budget import charge_lifetime
from silobridge.contract.config import PrivacySpec
from silobridge.contract.query_protocol import QueryStep
from silobridge.errors import BudgetExhausted
from silobridge.federation.odometer_charges import charge_query_step
from silobridge.federation.odometer_glue import NODE_LIFETIME_EPSILON, NODE_STATE_DIR, node_odometer

PRIVACY = PrivacySpec(unit="record", epsilon=8.0, noise_multiplier=1.5, sample_rate=0.1)
STEP = QueryStep(
    query="mean",
    step=0,
    length=4,
    value_bound=1.0,
    l2_bound=2.0,
    params_json=json.dumps({"column": "units"}),
    noise_multiplier=2.0,
    unit="record",
    delta=1e-5,
    accountant="rdp",
)


def _spend(folder: Path, lifetime: float) -> tuple[float, float]:
    """Run 1 (two rounds), run 2 (one round), then a query session's step on the demand table: the demand data's
    lifetime epsilon after the two runs, and after the session."""
    odometer = node_odometer("R1", None, {NODE_STATE_DIR: str(folder), NODE_LIFETIME_EPSILON: lifetime})
    assert odometer is not None
    for run, rounds in (("run-1", 2), ("run-2", 1)):
        for number in range(1, rounds + 1):
            charge_lifetime(odometer, PRIVACY, ["demand"], run_id=run, release_id=f"round-{number}", firm="R1")
    runs = odometer.spent("demand")
    charge_query_step(odometer, STEP, run_id="session-1", firm="R1")
    return runs, odometer.spent("demand")


def test_two_runs_and_a_query_session_compose_and_the_third_run_is_refused(tmp_path: Path) -> None:
    runs, spent = _spend(tmp_path / "measure", 1000.0)
    assert 0 < runs < spent  # the session's step composes with the two runs' rounds on the same data set
    folder = tmp_path / "state"
    assert _spend(folder, spent * 1.0001)[1] == pytest.approx(spent, rel=1e-12)  # all three fit the lifetime budget
    odometer = node_odometer("R1", None, {NODE_STATE_DIR: str(folder)})
    assert odometer is not None
    with pytest.raises(BudgetExhausted, match="firm 'R1' refuses round-1 of run run-3: its demand data"):
        charge_lifetime(odometer, PRIVACY, ["demand"], run_id="run-3", release_id="round-1", firm="R1")
    rows = {row.dataset: row for row in node_odometer("R1", None, {NODE_STATE_DIR: str(folder)}).datasets()}
    assert rows["demand"].releases == 4 and rows["demand"].runs == ("run-1", "run-2", "session-1")  # none charged
