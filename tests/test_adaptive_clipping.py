"""Adaptive clipping under firm-level central DP (Andrew, Thakkar, McMahan, Ramaswamy 2021), end to end.

Each round releases two Gaussian queries on the same firms, the clipped update sum and the count of
unclipped firms; they are calibrated and accounted as one Gaussian. Checked here: the configuration
refusals, the calibration of the combined multiplier and the update's share of it, the firm's half
(the round's clip norm, its indicator, its refusals), the secure-sum segment, the budget guard's
preview against the ledger and the audit, and one tiny simulation whose clip norm must shrink.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import dp_accounting as dpa
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from silobridge.clients.firm import FirmClient
from silobridge.clients.models import MODEL_KINDS
from silobridge.clients.normaliser import Normaliser
from silobridge.contract.config import AggregationSpec, PrivacySpec
from silobridge.contract.messages import TrainInstruction
from silobridge.errors import ConfigError, ProtocolError
from silobridge.federation.firm_source import check_contract
from silobridge.federation.server_app import RunResult
from silobridge.federation.settings import settings_from_run_config
from silobridge.federation.simulation import simulate
from silobridge.privacy.dp import UNCLIPPED_SEGMENT, AccountingSpec, Budget, combine_gaussians, epsilon
from silobridge.privacy.ledger import PrivacyRun, Release, config_hash, verify_ledger
from silobridge.server.layouts import training_layout
from silobridge.server.privacy import PrivacyPlan, accounting_spec, resolve_privacy
from tests.conftest import TINY
from tests.firm_support import tiny_firm
from tests.test_cli import silobridge_in_process

ADAPTIVE = "privacy.unit=firm;privacy.adaptive_clipping=true;privacy.clip_count_noise_std=3"


def _settings(overrides: str):  # noqa: ANN202 - RunSettings
    return settings_from_run_config({"scenario": str(TINY), "set": overrides})


def _combined(update: float, count_std: float) -> float:
    """The accountant's multiplier of the update (multiplier `update`) and the count (std over 1/2) together."""
    return (update**-2 + (2 * count_std) ** -2) ** -0.5


def _recorded_multipliers(releases: list[dict]) -> list[float]:
    """Each ledger release's two queries, combined from what it records of them."""
    return [_combined(r["parameters"]["update_noise_multiplier"], r["parameters"]["count_noise_std"]) for r in releases]


def _dp_accounting_epsilon(multipliers: list[float], sample_rate: float, delta: float) -> float:
    """Straight from dp-accounting's RDP accountant, at the orders our accountant uses."""
    accountant = dpa.rdp.RdpAccountant(orders=list(AccountingSpec().rdp_orders))
    for z in multipliers:
        gaussian = dpa.GaussianDpEvent(z)
        accountant.compose(gaussian if sample_rate >= 1 else dpa.PoissonSampledDpEvent(sample_rate, gaussian))
    return accountant.get_epsilon(delta)


# -- configuration ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ("privacy.unit=firm;privacy.mechanism=distributed;privacy.adaptive_clipping=true", "noise shares"),
        ("privacy.unit=record;privacy.adaptive_clipping=true", "Opacus clips each example"),
    ],
)
def test_adaptive_clipping_is_refused_with_distributed_dp_or_record_level(overrides: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why) as err:
        _settings(overrides)
    assert err.value.field == "privacy.adaptive_clipping"
    assert str(TINY) in str(err.value)


def test_default_count_noise_is_expected_participants_over_twenty_and_the_combined_multiplier_is_calibrated() -> None:
    spec = PrivacySpec(unit="firm", adaptive_clipping=True, firm_sample_rate=0.5)
    plan = PrivacyPlan(spec=spec, rounds=30, local_epochs=1, num_firms=400, min_firms=1, model_dim=1)
    resolved = resolve_privacy(plan)
    assert resolved.clip_count_noise_std == pytest.approx(400 * 0.5 / 20)
    z = resolved.noise_multiplier
    # The combined multiplier spends the budget (to calibration's tolerance), never more.
    spent = _dp_accounting_epsilon([z] * 30, 0.5, spec.delta)
    assert 7.99 <= spent <= 8.0
    resolved_plan = PrivacyPlan(spec=resolved, rounds=30, local_epochs=1, num_firms=400, min_firms=1, model_dim=1)
    update = resolved_plan.update_noise_multiplier()
    assert update == pytest.approx((z**-2 - 20.0**-2) ** -0.5) and update > z
    event = resolved_plan.firm_event()
    assert event.sampling_probability == 0.5
    assert event.event.noise_multiplier == pytest.approx(z, rel=1e-12)
    # Without adaptive clipping the same budget calibrates the same combined multiplier.
    plain = resolve_privacy(PrivacyPlan(spec=spec.model_copy(update={"adaptive_clipping": False}), **_plan_shape()))
    assert plain.noise_multiplier == z


def _plan_shape() -> dict[str, int]:
    return {"rounds": 30, "local_epochs": 1, "num_firms": 400, "min_firms": 1, "model_dim": 1}


def test_a_count_noise_that_leaves_the_update_nothing_is_refused() -> None:
    # Five firms: the default count noise (5 / 20) is far below half the multiplier epsilon 8 needs.
    with pytest.raises(ConfigError, match=r"must exceed half the combined noise multiplier") as err:
        _settings("privacy.unit=firm;privacy.adaptive_clipping=true")
    assert err.value.field == "privacy.clip_count_noise_std"
    # A given multiplier too: 2 sigma_b = z is not enough, the update would need infinite noise.
    with pytest.raises(ConfigError) as err:
        _settings(ADAPTIVE.replace("=3", "=1") + ";privacy.noise_multiplier=2")
    assert err.value.field == "privacy.clip_count_noise_std"
    plan = _settings(ADAPTIVE.replace("=3", "=1.001") + ";privacy.noise_multiplier=2").privacy_plan()
    assert plan.update_noise_multiplier() == pytest.approx((2**-2 - 2.002**-2) ** -0.5)


def test_a_partner_refuses_adaptive_settings_that_differ_from_its_file() -> None:
    adaptive = _settings(ADAPTIVE).spec
    other_quantile = _settings(ADAPTIVE + ";privacy.clip_target_quantile=0.9").spec
    fixed = _settings("privacy.unit=firm;privacy.noise_multiplier=1.02").spec
    check_contract(adaptive, adaptive, "train", firm="R1")
    for local in (other_quantile, fixed):
        with pytest.raises(ProtocolError, match=r"firm 'R1', stage 'train'.*privacy"):
            check_contract(adaptive, local, "train", firm="R1")


# -- accounting: the guard's preview, the ledger and the audit ------------------------------------------------------


def test_guard_preview_ledger_and_audit_agree_on_the_combined_event(tmp_path: Path) -> None:
    settings = _settings(ADAPTIVE + ";privacy.firm_sample_rate=0.6")
    plan = settings.privacy_plan()
    spec = plan.spec
    path = tmp_path / "ledger.jsonl"
    run = PrivacyRun.start(
        path,
        run_id="adaptive",
        config_sha256=config_hash({"adaptive": True}),
        budget=Budget(spec.epsilon, spec.delta),
        signing_key=Ed25519PrivateKey.generate(),
        spec=accounting_spec(spec),
    )
    firms = list(settings.scenario.firm_ids)
    clipping = plan.clipping_state()
    update = plan.update_noise_multiplier()
    for round_number in range(1, plan.rounds + 1):
        admission = run.admit(f"round-{round_number}", plan.firm_event(), firms)
        totals = run.record(
            Release(
                f"round-{round_number}",
                "gaussian",
                plan.firm_event(),
                firms=admission.participants,
                sampling=plan.firm_sampling,
                noise_multiplier=spec.noise_multiplier,
                clip_norm=clipping.clip_norm,
                parameters={"update_noise_multiplier": update, "count_noise_std": clipping.count_noise_std},
            )
        )
        assert admission.epsilon_if_released == totals["overall"]  # the preview is what the ledger then charges
        clipping = clipping.step(float(round_number), 3.0)  # the clip norm moves; the event does not
    run.close()
    report = verify_ledger(path)
    assert report.within_budget and report.epsilon_overall <= spec.epsilon
    entries = [json.loads(line) for line in path.read_text().splitlines() if '"release"' in line]
    assert len({entry["clip_norm"] for entry in entries}) == plan.rounds
    recorded = _recorded_multipliers(entries)
    expected = _dp_accounting_epsilon(recorded, 0.6, spec.delta)
    assert report.epsilon_overall == pytest.approx(expected, rel=1e-9)
    # The calibrated budget is spent, to the calibration's rounding, and the combined multiplier is the spec's.
    assert recorded[0] == pytest.approx(spec.noise_multiplier, rel=1e-12)
    assert spec.epsilon * 0.99 <= report.epsilon_overall <= spec.epsilon
    assert plan.firm_event().event == combine_gaussians(dpa.GaussianDpEvent(update), plan.count_event())
    assert epsilon([plan.planned_run_event(spec.noise_multiplier)], spec.delta, accounting_spec(spec)) == (
        pytest.approx(report.epsilon_overall, rel=1e-9)
    )


# -- the firm's half and the secure sum -----------------------------------------------------------------------------


def _firm(overrides: str) -> tuple[FirmClient, dict[str, dict[str, np.ndarray]], TrainInstruction, Normaliser]:
    return tiny_firm(overrides, round_number=2)


def _joint(released: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([released[f"{kind}/update"] for kind in MODEL_KINDS])


def test_firm_clips_to_the_round_clip_norm_and_adds_its_unclipped_indicator() -> None:
    firm, weights, instruction, norm = _firm(ADAPTIVE)
    wide = firm.train_round(weights, instruction.model_copy(update={"clip_norm": 1e6}), norm)
    assert wide[UNCLIPPED_SEGMENT].tolist() == [1.0]
    raw = np.linalg.norm(_joint(wide))
    assert 0 < raw < 1e6
    tight = firm.train_round(weights, instruction.model_copy(update={"clip_norm": raw / 4}), norm)
    assert tight[UNCLIPPED_SEGMENT].tolist() == [0.0]
    assert np.linalg.norm(_joint(tight)) == pytest.approx(raw / 4, rel=1e-9)  # the round's norm, not the spec's
    np.testing.assert_allclose(_joint(tight), _joint(wide) / 4, rtol=1e-9)
    # Without adaptive clipping nothing but the update and the weight leaves.
    fixed, weights, instruction, norm = _firm("privacy.unit=firm;privacy.noise_multiplier=1.0")
    assert UNCLIPPED_SEGMENT not in fixed.train_round(weights, instruction, norm)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0.0, -1.0, None])
def test_firm_refuses_a_clip_norm_that_is_not_finite_and_positive(bad: float | None) -> None:
    firm, weights, instruction, norm = _firm(ADAPTIVE)
    with pytest.raises(ProtocolError, match=rf"firm '{firm.firm_id}', stage 'train round 2'.*clip norm"):
        firm.train_round(weights, instruction.model_copy(update={"clip_norm": bad}), norm)


def test_firm_refuses_a_clip_norm_its_federation_file_does_not_let_the_coordinator_set() -> None:
    firm, weights, instruction, norm = _firm("privacy.unit=firm;privacy.noise_multiplier=1.0")
    with pytest.raises(ProtocolError, match=r"stage 'train round 2'.*adaptive clipping is off"):
        firm.train_round(weights, instruction.model_copy(update={"clip_norm": 0.3}), norm)


def test_the_indicators_sum_exactly_in_the_secure_sum_layout() -> None:
    agg = AggregationSpec()
    layout = training_layout({"demand": 3}, agg, statistics=False, unclipped_count=True)
    assert layout.segments[-2].name == UNCLIPPED_SEGMENT and layout.segments[-2].bound == 1.0
    rng = np.random.default_rng(4)
    indicators = [1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0]
    encoded = [
        layout.encode({"demand/update": rng.normal(size=3), UNCLIPPED_SEGMENT: np.array([b])}, rng)[0]
        for b in indicators
    ]
    modulus = 1 << layout.modulus_bits(len(indicators))
    ring_sum = np.zeros(layout.length, dtype=object)
    for vector in encoded:
        ring_sum = (ring_sum + vector.astype(object)) % modulus
    decoded = layout.decode(ring_sum.astype(np.uint64), len(indicators))
    assert decoded[UNCLIPPED_SEGMENT].tolist() == [pytest.approx(5.0, abs=1e-9)]


# -- one tiny simulation --------------------------------------------------------------------------------------------

SIMULATION = (
    "training.rounds=3;privacy.unit=firm;privacy.adaptive_clipping=true;privacy.epsilon=1000;"
    "privacy.clip_count_noise_std=0.05;privacy.clip_norm=5;"
    "training.baselines=none"  # under DP the harness measures baselines (no release): none are asserted here
)


@pytest.fixture(scope="module")
def adaptive_run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    out = tmp_path_factory.mktemp("adaptive-run")
    return simulate({"scenario": str(TINY), "out-dir": str(out), "run-id": "adaptive", "set": SIMULATION})


def test_the_clip_norm_shrinks_from_far_too_large(adaptive_run: RunResult) -> None:
    """Round changes are 0.5 to 2.5 long: from 5, most firms are unclipped and the norm must come down."""
    lines = (adaptive_run.path / "privacy_ledger.jsonl").read_text().splitlines()
    releases = [entry for entry in map(json.loads, lines) if entry["kind"] == "release"]
    assert [r["release_id"] for r in releases] == ["round-1", "round-2", "round-3"]
    norms = [r["clip_norm"] for r in releases]
    assert norms[0] == 5.0 and norms[0] > norms[1] > norms[2]
    for before, after in zip(releases, releases[1:], strict=False):
        assert after["clip_norm"] == before["parameters"]["next_clip_norm"]  # the norm sent is the one computed
    for release in releases:
        params = release["parameters"]
        assert params["count_noise_std"] == 0.05 and params["target_quantile"] == 0.5
        # Undo the geometric step: the noised count of unclipped firms, within six noise stds of a whole number.
        ratio = params["next_clip_norm"] / release["clip_norm"]
        fraction = params["target_quantile"] - math.log(ratio) / params["clip_learning_rate"]
        unclipped = (fraction - 0.5) * 5 + 5 / 2  # five firms, all sampled: expected participants 5
        assert abs(unclipped - round(unclipped)) < 6 * 0.05 and 3 <= round(unclipped) <= 5
    # The round records carry the norm each round's firms were sent.
    records = [json.loads(line) for line in (adaptive_run.path / "metrics.jsonl").read_text().splitlines()]
    assert {(r["round"], r["clip_norm"]) for r in records} == {(i + 1, n) for i, n in enumerate(norms)}
    adaptive = adaptive_run.summary["privacy"]["adaptive_clipping"]
    assert adaptive["first_clip_norm"] == norms[0]
    assert adaptive["last_clip_norm"] == pytest.approx(norms[-1], rel=1e-6)  # the summary keeps six digits
    assert "Adaptive clipping (target quantile 0.5" in (adaptive_run.path / "summary.md").read_text()


def test_the_run_is_accounted_as_the_combined_gaussian_and_audits_clean(adaptive_run: RunResult) -> None:
    privacy = adaptive_run.summary["privacy"]
    assert privacy["mechanism"] == "dp_fedavg_central" and privacy["within_budget"]
    z = privacy["noise_multiplier"]
    lines = (adaptive_run.path / "privacy_ledger.jsonl").read_text().splitlines()
    releases = [entry for entry in map(json.loads, lines) if entry["kind"] == "release"]
    recorded = _recorded_multipliers(releases)
    for release, combined in zip(releases, recorded, strict=True):
        assert release["event"]["noise_multiplier"] == pytest.approx(combined, rel=1e-12)
    assert recorded[0] == pytest.approx(z, rel=1e-12)
    expected = _dp_accounting_epsilon(recorded, 1.0, 1e-5)
    result = silobridge_in_process(
        *("audit", str(adaptive_run.path), "--json"),
        *("--public-key", privacy["ledger_public_key"]),  # the run's own key: audited as published
        cwd=adaptive_run.path,
    )
    assert result.returncode == 0, result.stderr
    audit = json.loads(result.stdout)
    assert audit["verified"] and audit["within_budget"]
    assert audit["epsilon_overall"] == pytest.approx(expected, rel=1e-9)
    assert privacy["epsilon_overall"] == pytest.approx(expected, rel=1e-6)
    # The budget guard never overspends: the calibrated run spends the budget, to calibration's rounding.
    assert 990 <= audit["epsilon_overall"] <= 1000
