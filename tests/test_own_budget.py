"""A firm's own budget, counted by the firm: record-level DP-SGD rounds past it are refused on the firm's side.

The coordinator's ledger already stops admitting a firm whose budget is spent; these tests check the
firm's side for a coordinator that does not: the firm's count agrees exactly with the coordinator's
accountant (so an honest coordinator never meets a refusal), and the ClientApp's train handler refuses
the first round over budget, keeping count in the run's node state.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from flwr.app import ConfigRecord, Context, RecordDict

from silobridge.clients.firm import FirmClient
from silobridge.clients.own_budget import check_round, own_epsilon
from silobridge.contract.arrays import flatten
from silobridge.errors import ProtocolError
from silobridge.federation.client_app import OWN_SPEND, Request, _train
from silobridge.federation.records import INSTRUCTION, LAYOUT, NORMALISER, arrays_record, layout_record, weights_key
from silobridge.federation.settings import settings_from_run_config
from silobridge.privacy.dp import epsilon
from silobridge.server.layouts import training_layout
from silobridge.server.privacy import accounting_spec
from tests.conftest import TINY
from tests.firm_support import tiny_firm

RECORD = "privacy.unit=record;privacy.epsilon=6"


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_the_firms_count_is_the_coordinators_accounting(accountant: str) -> None:
    """Same events, composed round by round with the same accountant: the same epsilon to the last bit."""
    settings = settings_from_run_config({"scenario": str(TINY), "set": f"{RECORD};privacy.accountant={accountant}"})
    plan = settings.privacy_plan()
    privacy = settings.spec.privacy
    assert own_epsilon(privacy, 0) == 0.0
    for rounds in (1, 2, plan.rounds):
        coordinator = epsilon([plan.record_event()] * rounds, privacy.delta, accounting_spec(privacy))
        assert own_epsilon(privacy, rounds) == coordinator
    assert own_epsilon(privacy, plan.rounds) == pytest.approx(privacy.epsilon, rel=1e-3)  # calibrated to spend it


def test_a_round_over_the_firms_own_budget_is_refused() -> None:
    privacy = settings_from_run_config({"scenario": str(TINY), "set": RECORD}).spec.privacy
    budget = (own_epsilon(privacy, 2) + own_epsilon(privacy, 3)) / 2  # room for two rounds, not three
    check_round(privacy, budget, {"demand": 1, "risk": 0}, ["demand", "risk"], firm="R1", stage="train round 2")
    with pytest.raises(ProtocolError, match=r"firm 'R1'.*train round 3.*demand data to epsilon.*own budget"):
        check_round(privacy, budget, {"demand": 2, "risk": 0}, ["demand", "risk"], firm="R1", stage="train round 3")
    check_round(privacy, budget, {"demand": 2, "risk": 0}, ["risk"], firm="R1", stage="train round 3")  # risk may
    check_round(privacy, None, {"demand": 99}, ["demand"], firm="R1", stage="x")  # no own budget: nothing to check
    firm_unit = privacy.model_copy(update={"unit": "firm"})
    check_round(firm_unit, budget, {"demand": 99}, ["demand"], firm="R1", stage="x")  # not countable by the firm


def test_the_train_handler_refuses_a_coordinator_that_ignores_the_firms_budget() -> None:
    """A coordinator that keeps asking: the firm trains twice, then refuses, and releases nothing more."""
    shared, weights, instruction, norm = tiny_firm(f"{RECORD};aggregation.mode=plain", noise_seed=5)
    spec = shared.spec
    budget = (own_epsilon(spec.privacy, 2) + own_epsilon(spec.privacy, 3)) / 2
    firm = FirmClient(shared.data, group=shared.group, spec=spec, tier=shared.tier, budget_epsilon=budget)
    kinds = [kind for kind in weights if firm.trains(kind)]
    layout = training_layout({kind: flatten(weights[kind]).size for kind in kinds}, spec.aggregation, statistics=False)
    arrays = {weights_key(kind): arrays_record(weights[kind]) for kind in kinds}
    arrays[NORMALISER] = arrays_record({"mean": norm.mean, "std": norm.std})
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})

    def ask(round_number: int) -> RecordDict:
        configs = {
            INSTRUCTION: ConfigRecord(instruction.model_copy(update={"round": round_number}).to_config()),
            LAYOUT: layout_record(layout),
        }
        content = SimpleNamespace(config_records=configs, array_records=arrays)
        message = SimpleNamespace(content=content, metadata=SimpleNamespace(message_type="train"))
        return _train(Request(firm, None, context, message))  # type: ignore[arg-type]

    for round_number in (1, 2):
        assert ask(round_number).array_records  # released
    assert dict(context.state.config_records[OWN_SPEND]) == dict.fromkeys(kinds, 2)
    with pytest.raises(ProtocolError, match=r"firm 'R1'.*train round 3.*over its own budget"):
        ask(3)
    assert dict(context.state.config_records[OWN_SPEND]) == dict.fromkeys(kinds, 2)  # the refusal spent nothing
