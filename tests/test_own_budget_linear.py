"""A firm's own per-run budget (`budget_epsilon`) counts the linear family's releases at its node, as it counts
DP-SGD rounds and query steps: a Newton step past it is refused by the firm itself, whatever the coordinator's
admission did; with a lifetime odometer the count is by our run id, across Flower runs (a resumed run)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import dp_accounting as dpa
import numpy as np
import pytest
from dp_accounting import NeighboringRelation
from flwr.app import ConfigRecord, Context, RecordDict

from silobridge.clients.firm import FirmClient
from silobridge.clients.own_budget import check_release
from silobridge.contract.sufficient import LINEAR_COEF, LINEAR_REQUEST, newton_size
from silobridge.errors import ProtocolError
from silobridge.federation.client_app import Request, _linear
from silobridge.federation.odometer_glue import NODE_LIFETIME_EPSILON, NODE_STATE_DIR
from silobridge.federation.records import LAYOUT, NORMALISER, RUN, arrays_record, layout_record
from silobridge.privacy.dp import AccountantKind, AccountingSpec, PrivacyUnit, epsilon
from silobridge.privacy.odometer import Odometer
from silobridge.server.layouts import linear_layout
from silobridge.server.linear import linear_noise_multipliers
from tests.firm_support import tiny_firm

LINEAR = "training.model=linear;privacy.unit=record;privacy.epsilon=8;aggregation.mode=plain"
RDP = AccountingSpec(kind=AccountantKind.RDP, relation=NeighboringRelation.ADD_OR_REMOVE_ONE, unit=PrivacyUnit.RECORD)


def _firm(noise_seed: int | None = None) -> tuple[FirmClient, object, float]:
    """The tiny scenario's first firm under the linear family, with an own budget that holds two of the risk
    model's three Newton steps, not three."""
    shared, _, _, norm = tiny_firm(LINEAR)
    spec = shared.spec
    z = linear_noise_multipliers(spec)["risk"]
    two, three = (epsilon([dpa.GaussianDpEvent(z)] * k, spec.privacy.delta, RDP) for k in (2, 3))
    budget = (two + three) / 2
    firm = FirmClient(
        shared.data, group=shared.group, spec=spec, tier=shared.tier, budget_epsilon=budget, noise_seed=noise_seed
    )
    return firm, norm, budget


def _asker(firm: FirmClient, norm: object, node: dict[str, object]):
    spec = firm.spec
    dim = len(spec.data.risk_features) + 1
    layout = linear_layout(newton_size(dim), spec.aggregation)
    contexts: dict[int, Context] = {}

    def ask(flower_run: int, step: int) -> RecordDict:
        configs = {
            RUN: ConfigRecord({"run_id": "lin"}),
            LINEAR_REQUEST: ConfigRecord({"model": "risk"}),
            LAYOUT: layout_record(layout),
        }
        arrays = {
            LINEAR_COEF: arrays_record({"coef": np.full(dim, 0.01 * step)}),  # each Newton step stands elsewhere
            NORMALISER: arrays_record({"mean": norm.mean, "std": norm.std}),  # type: ignore[attr-defined]
        }
        context = contexts.setdefault(
            flower_run, Context(run_id=flower_run, node_id=1, node_config=node, state=RecordDict(), run_config={})
        )
        message = SimpleNamespace(
            content=SimpleNamespace(config_records=configs, array_records=arrays),
            metadata=SimpleNamespace(message_type="train.linear"),
        )
        return _linear(Request(firm, None, context, message))  # type: ignore[arg-type]

    return ask


def test_a_newton_step_past_the_firms_own_budget_is_refused_by_the_firm(tmp_path: Path) -> None:
    firm, norm, budget = _firm()
    ask = _asker(firm, norm, {})  # no odometer: this Flower run's node state counts
    assert ask(1, 0).array_records and ask(1, 1).array_records
    with pytest.raises(ProtocolError, match=rf"firm 'R1'.*linear/risk@.*over its own budget {budget:g}"):
        ask(1, 2)


def test_with_an_odometer_the_count_follows_our_run_across_flower_runs(tmp_path: Path) -> None:
    firm, norm, _ = _firm()
    ask = _asker(firm, norm, {NODE_STATE_DIR: str(tmp_path / "state"), NODE_LIFETIME_EPSILON: 1000.0})
    ask(1, 0)  # step 1, then the coordinator is killed
    ask(2, 1)  # `run --resume`: a new Flower run (fresh node state), our run 'lin'
    with pytest.raises(ProtocolError, match="over its own budget"):
        ask(2, 2)
    assert Odometer.open(tmp_path / "state", firm="R1").releases_in_run("risk", "lin") == 2  # the refusal: none


def test_a_release_within_budget_passes_and_none_is_checked_without_an_own_budget() -> None:
    firm, _, budget = _firm()
    privacy = firm.spec.privacy
    event = dpa.GaussianDpEvent(linear_noise_multipliers(firm.spec)["risk"])
    check_release(privacy, budget, [event], event, dataset="risk", firm="R1", stage="release linear/risk@x")
    check_release(privacy, None, [event] * 10, event, dataset="risk", firm="R1", stage="release linear/risk@x")
    with pytest.raises(ProtocolError, match=r"risk data to epsilon .* \(spent .* in 2 releases of this run\)"):
        check_release(privacy, budget, [event] * 2, event, dataset="risk", firm="R1", stage="release linear/risk@x")
