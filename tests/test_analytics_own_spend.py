"""A partner's node counts its own record-level spend across a session's query steps and refuses past it.

The same events as the coordinator's ledger (Gaussian releases at the stated noise multiplier, one
per step the firm released), composed by the same accountant, so the firm's count equals the
ledger's charge to it.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import ConfigRecord, Context, RecordDict

from silobridge.clients.firm import FirmClient
from silobridge.clients.query_answers.own_spend import OWN_QUERY_SPEND, check_step, own_query_epsilon
from silobridge.contract.query_protocol import QueryStep
from silobridge.errors import ProtocolError
from silobridge.federation.client_app import Request, _analytics
from silobridge.federation.query_run import StepSum
from silobridge.federation.records import ANALYTICS, LAYOUT, layout_record
from silobridge.federation.settings import GENERATED_SCHEMA
from silobridge.privacy.dp import Budget
from silobridge.privacy.ledger import PrivacyRun
from silobridge.server.layouts import query_layout
from silobridge.server.query_plans import build_plan
from silobridge.server.query_plans.engine import QueryEngine, QueryPrivacy, calibrate_query_noise, query_accounting
from tests.firm_support import tiny_firm


def _dp_step(z: float, unit: str = "record") -> QueryStep:
    step = build_plan("count", {}, GENERATED_SCHEMA).first()
    return step.model_copy(update={"noise_multiplier": z, "unit": unit, "delta": 1e-5, "accountant": "rdp"})


def test_check_step_refuses_past_the_own_budget_only_at_record_level() -> None:
    z = 3.0
    budget = (own_query_epsilon([z, z], 1e-5, "rdp") + own_query_epsilon([z] * 3, 1e-5, "rdp")) / 2
    check_step(_dp_step(z), budget, [z], firm="R1")  # the second step fits
    with pytest.raises(ProtocolError, match=r"firm 'R1'.*spent .* in 2 query steps.*over its own budget"):
        check_step(_dp_step(z), budget, [z, z], firm="R1")
    check_step(_dp_step(z, unit="firm"), budget, [z] * 10, firm="R1")  # firm level: not the firm's to count
    check_step(_dp_step(z), None, [z] * 10, firm="R1")  # no own budget
    check_step(build_plan("count", {}, GENERATED_SCHEMA).first(), budget, [z] * 10, firm="R1")  # no DP


def test_the_firms_count_equals_the_ledgers_charge(tmp_path: Path) -> None:
    """The engine states its noise on every step; composing what a firm saw equals the ledger's epsilon for it."""
    seen: list[QueryStep] = []

    def sum_step(step: QueryStep) -> StepSum:
        seen.append(step)
        return StepSum(np.zeros(step.length), ("F1", "F2"))

    budget = Budget(2.0, 1e-5)
    z = calibrate_query_noise(3, budget)
    ledger = PrivacyRun.start(
        tmp_path / "ledger.jsonl",
        run_id="own",
        config_sha256="0" * 64,
        budget=budget,
        signing_key=Ed25519PrivateKey.generate(),
        spec=query_accounting(),
    )
    engine = QueryEngine(sum_step, ["F1", "F2"], privacy=QueryPrivacy(ledger, z))
    engine.run(build_plan("count", {}, GENERATED_SCHEMA))
    engine.run(build_plan("autoregression", {"high": 5000}, GENERATED_SCHEMA))
    assert [s.noise_multiplier for s in seen] == [z, z, z] and {s.unit for s in seen} == {"record"}
    counted = own_query_epsilon([s.noise_multiplier for s in seen], 1e-5, "rdp")
    assert counted == pytest.approx(ledger.firm_epsilon("F1"), rel=1e-12)
    ledger.close()


def test_the_analytics_handler_refuses_a_coordinator_that_ignores_the_firms_budget() -> None:
    """Two steps released, the third refused; the refusal spends nothing."""
    shared, *_ = tiny_firm("aggregation.mode=plain")
    z = 3.0
    budget = (own_query_epsilon([z, z], 1e-5, "rdp") + own_query_epsilon([z] * 3, 1e-5, "rdp")) / 2
    firm = FirmClient(shared.data, group=shared.group, spec=shared.spec, tier=shared.tier, budget_epsilon=budget)
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    step = _dp_step(z)
    layout = query_layout(step.length, step.value_bound, shared.spec.aggregation)

    def ask() -> RecordDict:
        configs = {ANALYTICS: ConfigRecord(step.to_config()), LAYOUT: layout_record(layout)}
        content = SimpleNamespace(config_records=configs, array_records={})
        message = SimpleNamespace(content=content, metadata=SimpleNamespace(message_type="query.analytics"))
        return _analytics(Request(firm, None, context, message))  # type: ignore[arg-type]

    for _ in range(2):
        assert ask().array_records  # released
    assert list(context.state.config_records[OWN_QUERY_SPEND]["multipliers"]) == [z, z]
    with pytest.raises(ProtocolError, match=r"firm 'R1'.*query 'count' step 0.*over its own budget"):
        ask()
    assert list(context.state.config_records[OWN_QUERY_SPEND]["multipliers"]) == [z, z]
