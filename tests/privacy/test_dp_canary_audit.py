"""Empirical privacy audit: a canary's presence, seen from the server, bounds epsilon from below.

For each unit of privacy a canary (a firm, or a record) is present in half of many repeated small
runs of the project's own mechanism code and absent from the other half. The server's view of each
run (the noised sum of the firms' clipped updates, or the model a firm trained with DP-SGD) is
projected on the canary's direction; a threshold, chosen on separate calibration runs, calls the
canary present or absent, and Clopper-Pearson bounds on the two error rates give a lower bound on
epsilon (`privacy.dp.empirical`). It must stay below what the accountant certifies for one such
release; and the same audit of the same pipeline without noise must exceed it, so the check could
fail if the noise went missing.

The neighbouring inputs are fixed (the other firms' updates, the other records, the initial model),
as the DP guarantee is for any fixed pair: only the mechanism's noise varies between runs. A simple
projection test is not the optimal attack, so the bound is below the accounted epsilon with room to
spare; it is a check that noise of the accounted scale is really there, not a tight audit.

Record level runs Opacus once per trial (a few milliseconds each), so it uses fewer trials than
firm level (800 a side instead of 5,000), which caps what it can measure at about 5.4 (firm level:
about 7.2); its noised configuration (z = 1, accounted 4.4) is chosen to sit below that cap.
"""

from __future__ import annotations

import copy
import functools
import math

import numpy as np
import pytest
import torch
from scipy.stats import binomtest, norm
from torch import nn

from silobridge.clients.dpsgd import DpSgdSettings, fit_private
from silobridge.clients.linear import clip_rows, demand_sensitivity, sufficient_statistics
from silobridge.clients.training import FitSettings
from silobridge.contract.config import PrivacySpec
from silobridge.contract.optimiser import OptimiserSpec
from silobridge.errors import ConfigError
from silobridge.privacy.dp import EpsilonReport, clip_l2, epsilon_report
from silobridge.privacy.dp.empirical import (
    AuditResult,
    audit,
    best_threshold,
    clopper_pearson,
    clopper_pearson_upper,
    epsilon_lower_bound,
    max_auditable_epsilon,
)
from silobridge.server.linear import add_noise, release_event
from silobridge.server.privacy import PrivacyPlan, accounting_spec

DELTA = 1e-5
CONFIDENCE = 0.95

# -- Clopper-Pearson and the epsilon bound --------------------------------------------------------


@pytest.mark.parametrize(("successes", "trials"), [(0, 100), (50, 100), (3, 20), (100, 100), (1, 5000)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_clopper_pearson_matches_scipy_exact_interval(successes: int, trials: int, confidence: float) -> None:
    expected = binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="exact")
    low, high = clopper_pearson(successes, trials, confidence)
    assert low == pytest.approx(expected.low, abs=1e-12) and high == pytest.approx(expected.high, abs=1e-12)


@pytest.mark.parametrize(("successes", "trials"), [(0, 100), (50, 100), (3, 20), (100, 100)])
def test_one_sided_upper_bound_matches_scipy(successes: int, trials: int) -> None:
    expected = binomtest(successes, trials, alternative="less").proportion_ci(confidence_level=0.975, method="exact")
    assert clopper_pearson_upper(successes, trials, 0.975) == pytest.approx(expected.high, abs=1e-12)
    # One-sided at c is the upper end of the two-sided interval at 2c - 1.
    assert clopper_pearson_upper(successes, trials, 0.975) == pytest.approx(clopper_pearson(successes, trials, 0.95)[1])


def test_known_clopper_pearson_values() -> None:
    # 0/100: the one-sided bound is 1 - alpha^(1/n); 50/100 at 95%: the textbook (0.3983, 0.6017).
    assert clopper_pearson_upper(0, 100, 0.95) == pytest.approx(1 - 0.05 ** (1 / 100), rel=1e-12)
    assert clopper_pearson(0, 100, 0.95) == pytest.approx((0.0, 0.036217), abs=1e-6)
    assert clopper_pearson(50, 100, 0.95) == pytest.approx((0.398321, 0.601679), abs=1e-6)


def test_epsilon_lower_bound_by_hand() -> None:
    # 10/1000 false positives, 500/1000 false negatives, each rate bounded at 97.5% (Bonferroni).
    fpr = clopper_pearson_upper(10, 1000, 0.975)
    fnr = clopper_pearson_upper(500, 1000, 0.975)
    expected = max(math.log((1 - DELTA - fnr) / fpr), math.log((1 - DELTA - fpr) / fnr))
    assert epsilon_lower_bound(10, 1000, 500, 1000, delta=DELTA, confidence=0.95) == pytest.approx(expected)
    assert (fpr, fnr) == pytest.approx((0.018313, 0.531451), abs=1e-6)
    assert expected == pytest.approx(3.2420, abs=1e-4)


def test_epsilon_lower_bound_is_symmetric_in_the_two_errors() -> None:
    assert epsilon_lower_bound(10, 1000, 500, 1000, delta=DELTA) == epsilon_lower_bound(
        500, 1000, 10, 1000, delta=DELTA
    )


def test_a_useless_test_bounds_nothing() -> None:
    assert epsilon_lower_bound(500, 1000, 500, 1000, delta=DELTA) == 0.0
    assert epsilon_lower_bound(1000, 1000, 0, 1000, delta=DELTA) == 0.0  # always "present"


def test_a_perfect_test_is_capped_by_the_number_of_trials() -> None:
    cap = max_auditable_epsilon(1000, delta=DELTA)
    upper = 1 - 0.025 ** (1 / 1000)
    assert cap == pytest.approx(math.log((1 - DELTA - upper) / upper))
    assert cap == pytest.approx(math.log(1000 / 3.69), abs=0.01)
    assert max_auditable_epsilon(10_000, delta=DELTA) > cap


def test_the_bound_holds_for_a_gaussian_at_its_exact_rates() -> None:
    # Gaussian mechanism, sensitivity 1, noise 1: the rates at threshold t are known exactly, and the
    # bound from the expected counts must stay below the mechanism's true epsilon (4.38 at 1e-5).
    n = 100_000
    for t in (0.5, 2.0, 3.0):
        fpr, fnr = norm.sf(t), norm.cdf(t - 1.0)
        bound = epsilon_lower_bound(round(fpr * n), n, round(fnr * n), n, delta=DELTA)
        assert 0 < bound < 4.38


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ConfigError, match="trials"):
        clopper_pearson(0, 0, 0.95)
    with pytest.raises(ConfigError, match="successes"):
        clopper_pearson_upper(5, 4, 0.95)
    with pytest.raises(ConfigError, match="confidence"):
        clopper_pearson(1, 4, 1.0)
    with pytest.raises(ConfigError, match="scores"):
        audit(np.array([]), np.array([1.0]), 0.0, delta=DELTA)


def test_best_threshold_separates_separable_scores() -> None:
    absent, present = np.linspace(0.0, 0.3, 50), np.linspace(0.9, 1.1, 40)
    threshold = best_threshold(absent, present, delta=DELTA)
    assert 0.3 < threshold < 0.9
    result = audit(absent, present, threshold, delta=DELTA)
    assert (result.false_positives, result.false_negatives) == (0, 0)
    assert result.epsilon_lower_bound == pytest.approx(epsilon_lower_bound(0, 50, 0, 40, delta=DELTA))
    assert result.epsilon_lower_bound > 2.0


def test_best_threshold_prefers_a_tail_to_the_midpoint() -> None:
    # Two unit-variance normals two apart: the midpoint errs 16% each way; a tail threshold gives a
    # larger bound, and whichever the search picks, no other observed score does better.
    rng = np.random.default_rng(0)
    absent, present = rng.normal(0.0, 1.0, 5000), rng.normal(2.0, 1.0, 5000)
    threshold = best_threshold(absent, present, delta=DELTA)
    chosen = audit(absent, present, threshold, delta=DELTA).epsilon_lower_bound
    assert chosen > audit(absent, present, 1.0, delta=DELTA).epsilon_lower_bound
    assert all(audit(absent, present, t, delta=DELTA).epsilon_lower_bound <= chosen for t in absent[::50])
    assert not 0.5 < threshold < 1.5


# -- firm level: the central Gaussian release of the clipped update sum ----------------------------

CLIP = 0.5
DIM = 50
ORDINARY_FIRMS = 5
FIRM_CALIBRATION = 2_000  # trials a side to choose the threshold
FIRM_TRIALS = 5_000  # fresh trials a side that are counted
NOISE_MULTIPLIERS = (0.5, 1.0, 2.0)


def firm_plan(noise_multiplier: float) -> PrivacyPlan:
    spec = PrivacySpec(
        unit="firm", mechanism="central", clip_norm=CLIP, noise_multiplier=noise_multiplier, firm_sample_rate=1.0
    )
    return PrivacyPlan(spec=spec, rounds=1, local_epochs=1, num_firms=ORDINARY_FIRMS + 1, min_firms=1, model_dim=DIM)


def accounted(plan: PrivacyPlan, event_kind: str) -> EpsilonReport:
    """What the ledger would certify for one release of this plan (RDP and PLD)."""
    event = plan.firm_event() if event_kind == "firm" else plan.record_event()
    return epsilon_report([event], DELTA, accounting_spec(plan.spec))


def firm_updates(present: bool) -> tuple[list[np.ndarray], np.ndarray]:
    """The round's raw updates (fixed: only the noise varies between trials) and the canary's direction."""
    rng = np.random.default_rng(20240611)
    ordinary = [rng.normal(0.0, 0.1, DIM) for _ in range(ORDINARY_FIRMS)]  # norms about 0.7 > CLIP: clipped too
    direction = rng.normal(size=DIM)
    direction /= np.linalg.norm(direction)
    canary = 25.0 * CLIP * direction  # far beyond the clip norm: clipping must bring it to CLIP
    return ([*ordinary, canary] if present else ordinary), direction


def server_view(plan: PrivacyPlan, updates: list[np.ndarray], rng: np.random.Generator, *, noised: bool) -> np.ndarray:
    """Each firm clips its update (`clip_l2`, as `clients.firm` does); the server noises the sum."""
    clipped = np.sum(
        [clip_l2(update, plan.spec.clip_norm, firm=f"firm-{i}").vector for i, update in enumerate(updates)], axis=0
    )
    return plan.add_central_noise(clipped, rng) if noised else clipped


def firm_scores(plan: PrivacyPlan, present: bool, trials: int, seed: int, *, noised: bool) -> np.ndarray:
    updates, direction = firm_updates(present)
    rng = np.random.default_rng(seed)
    return np.array([server_view(plan, updates, rng, noised=noised) @ direction for _ in range(trials)])


@functools.cache
def firm_audit(noise_multiplier: float, noised: bool = True) -> AuditResult:
    """Calibrate the threshold on one set of trials, count it on fresh ones."""
    plan = firm_plan(noise_multiplier)
    threshold = best_threshold(
        firm_scores(plan, False, FIRM_CALIBRATION, 1, noised=noised),
        firm_scores(plan, True, FIRM_CALIBRATION, 2, noised=noised),
        delta=DELTA,
        confidence=CONFIDENCE,
    )
    return audit(
        firm_scores(plan, False, FIRM_TRIALS, 3, noised=noised),
        firm_scores(plan, True, FIRM_TRIALS, 4, noised=noised),
        threshold,
        delta=DELTA,
        confidence=CONFIDENCE,
    )


def test_the_canary_is_clipped_to_the_clip_norm() -> None:
    updates, direction = firm_updates(True)
    contribution = server_view(firm_plan(1.0), updates, np.random.default_rng(0), noised=False) - server_view(
        firm_plan(1.0), updates[:-1], np.random.default_rng(0), noised=False
    )
    np.testing.assert_allclose(contribution, CLIP * direction, atol=1e-12)


@pytest.mark.parametrize("noise_multiplier", NOISE_MULTIPLIERS)
def test_firm_canary_stays_within_the_accounted_epsilon(noise_multiplier: float) -> None:
    result = firm_audit(noise_multiplier)
    report = accounted(firm_plan(noise_multiplier), "firm")
    assert result.epsilon_lower_bound <= report.best  # the tighter of PLD and RDP


def test_firm_canary_audit_has_power_under_weak_noise() -> None:
    # A real signal, not a test that passes because it never detects anything.
    assert firm_audit(0.5).epsilon_lower_bound > 2.0
    assert firm_audit(1.0).epsilon_lower_bound > 1.0


@pytest.mark.parametrize("noise_multiplier", [z for z in NOISE_MULTIPLIERS if z >= 1.0])
def test_firm_canary_without_noise_exceeds_the_accounted_epsilon(noise_multiplier: float) -> None:
    # The same pipeline with the server's noise left out: the audit must trip against what the
    # ledger would have certified. (z = 0.5 certifies about 10, beyond what 5,000 trials can show.)
    result = firm_audit(1.0, noised=False)  # without noise the plan's z is never used: one audit for all
    assert (result.false_positives, result.false_negatives) == (0, 0)
    assert result.epsilon_lower_bound > accounted(firm_plan(noise_multiplier), "firm").rdp


# -- record level: DP-SGD inside a firm (Opacus), the trained model as the server's view -----------

RECORDS = 20
FEATURES = 5
MAX_GRAD_NORM = 1.0
LEARNING_RATE = 0.5
SGD_WITHOUT_MOMENTUM = OptimiserSpec(name="sgd", learning_rate=LEARNING_RATE, momentum=0.0, weight_decay=0.0)
RECORD_CALIBRATION = 150
RECORD_TRIALS = 800
RECORD_NOISE = 1.0
NO_NOISE = 1e-6  # DpSgdSettings refuses 0; this is far below float32 resolution of the update


def record_plan(noise_multiplier: float) -> PrivacyPlan:
    # sample_rate 1: every record in the one step of the epoch, so the canary is always used. Opacus
    # divides the noised sum by its expected batch size, round(rate * records): 20 without the canary,
    # 21 with it. That scaling is part of the mechanism, and so of what is audited.
    spec = PrivacySpec(
        unit="record", noise_multiplier=noise_multiplier, sample_rate=1.0, demand_max_grad_norm=MAX_GRAD_NORM
    )
    return PrivacyPlan(spec=spec, rounds=1, local_epochs=1, num_firms=1, min_firms=1, model_dim=FEATURES + 1)


@functools.cache
def record_setting() -> tuple[nn.Module, np.ndarray, np.ndarray, np.ndarray]:
    """Initial model, the ordinary records, the canary record and its gradient's direction."""
    rng = np.random.default_rng(7)
    features = rng.normal(size=(RECORDS, FEATURES))
    targets = features @ rng.normal(size=FEATURES) + 0.1 * rng.normal(size=RECORDS)
    direction = rng.normal(size=FEATURES)
    direction /= np.linalg.norm(direction)
    # Far out along `direction` with a target far below any prediction: under L1 loss its gradient
    # is +(x, 1), norm about 50, clipped to MAX_GRAD_NORM, and it pushes the weights along -(x, 1).
    canary_x, canary_y = 50.0 * direction, -1_000.0
    gradient = np.append(canary_x, 1.0)
    torch.manual_seed(11)
    model = nn.Linear(FEATURES, 1)
    data = np.column_stack([features, targets])
    return model, data, np.append(canary_x, canary_y), gradient / np.linalg.norm(gradient)


def parameters(model: nn.Module) -> np.ndarray:
    return np.concatenate([model.weight.detach().numpy().ravel(), model.bias.detach().numpy().ravel()])


def record_scores(noise_multiplier: float, present: bool, trials: int, seed: int) -> np.ndarray:
    """How far each trained model moved against the canary's gradient (larger: canary more likely)."""
    initial, data, canary, gradient = record_setting()
    rows = np.vstack([data, canary]) if present else data
    features, targets = rows[:, :FEATURES], rows[:, FEATURES:]
    plan = record_plan(noise_multiplier)
    dp = DpSgdSettings(noise_multiplier, MAX_GRAD_NORM, plan.spec.sample_rate)
    start = parameters(initial)
    scores = np.empty(trials)
    for trial in range(trials):
        model = copy.deepcopy(initial)
        settings = FitSettings(epochs=1, batch_size=RECORDS, optimiser=SGD_WITHOUT_MOMENTUM, seed=seed + trial)
        report = fit_private(
            model,
            features,
            targets,
            loss="l1",
            settings=settings,
            dp=dp,
            device=torch.device("cpu"),
            noise_seed=seed + trial,  # the audit replays its own trials; a real firm's noise is unseeded
        )
        assert report.steps == plan.dpsgd_steps  # what was run is what is accounted
        scores[trial] = -(parameters(model) - start) @ gradient
    return scores


@functools.cache
def record_audit(noise_multiplier: float) -> AuditResult:
    threshold = best_threshold(
        record_scores(noise_multiplier, False, RECORD_CALIBRATION, 1_000_000),
        record_scores(noise_multiplier, True, RECORD_CALIBRATION, 2_000_000),
        delta=DELTA,
        confidence=CONFIDENCE,
    )
    return audit(
        record_scores(noise_multiplier, False, RECORD_TRIALS, 3_000_000),
        record_scores(noise_multiplier, True, RECORD_TRIALS, 4_000_000),
        threshold,
        delta=DELTA,
        confidence=CONFIDENCE,
    )


def test_record_canary_stays_within_the_accounted_epsilon() -> None:
    result = record_audit(RECORD_NOISE)
    report = accounted(record_plan(RECORD_NOISE), "record")
    assert result.epsilon_lower_bound <= report.best
    assert result.epsilon_lower_bound > 0.5  # and the test does see the canary


def test_record_canary_without_noise_exceeds_the_accounted_epsilon() -> None:
    result = record_audit(NO_NOISE)
    assert (result.false_positives, result.false_negatives) == (0, 0)
    assert result.epsilon_lower_bound > accounted(record_plan(RECORD_NOISE), "record").rdp


# -- record level, linear family: one noised release of the summed sufficient statistics --------------

LINEAR_DIM, LINEAR_OUTPUTS = 6, 2
LINEAR_ROW, LINEAR_TARGET = 3.0, 2.0


def linear_windows(present: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed windows of the pooled data (a canary window far beyond the public bounds, or not), and the
    direction of the canary's clipped contribution to [triu(X^T X), X^T Y]."""
    rng = np.random.default_rng(20261206)
    x = clip_rows(rng.normal(0.0, 1.0, (40, LINEAR_DIM)), LINEAR_ROW)
    y = clip_rows(np.abs(rng.normal(0.0, 1.0, (40, LINEAR_OUTPUTS))), LINEAR_TARGET)
    canary_x = clip_rows(np.full((1, LINEAR_DIM), 50.0), LINEAR_ROW)  # clipping must bring it to the bound
    canary_y = clip_rows(np.full((1, LINEAR_OUTPUTS), 50.0), LINEAR_TARGET)
    direction = sufficient_statistics(canary_x, canary_y)
    direction /= np.linalg.norm(direction)
    if present:
        x, y = np.vstack([x, canary_x]), np.vstack([y, canary_y])
    return x, y, direction


def linear_scores(multiplier: float, present: bool, trials: int, seed: int, *, noised: bool) -> np.ndarray:
    """The coordinator's view (the secure sum of the firms' statistics, noised once) on the canary's direction."""
    x, y, direction = linear_windows(present)
    summed = sufficient_statistics(x, y)
    std = multiplier * demand_sensitivity(LINEAR_ROW, LINEAR_TARGET) if noised else 0.0
    rng = np.random.default_rng(seed)
    return np.array([add_noise(summed, std, rng) @ direction for _ in range(trials)])


@functools.cache
def linear_audit(multiplier: float, noised: bool = True) -> AuditResult:
    threshold = best_threshold(
        linear_scores(multiplier, False, FIRM_CALIBRATION, 11, noised=noised),
        linear_scores(multiplier, True, FIRM_CALIBRATION, 12, noised=noised),
        delta=DELTA,
    )
    return audit(
        linear_scores(multiplier, False, FIRM_TRIALS, 13, noised=noised),
        linear_scores(multiplier, True, FIRM_TRIALS, 14, noised=noised),
        threshold,
        delta=DELTA,
    )


def test_linear_release_audit_stays_below_the_accounted_epsilon() -> None:
    """One release at multiplier 1 is accounted at about 4.4 (the ledger's event, the run's accountant);
    the canary audit of the same code path measures less, and without noise it measures more."""
    privacy = PrivacySpec(enabled=True, unit="record")
    accounted_epsilon = epsilon_report([release_event(1.0)], DELTA, accounting_spec(privacy)).best
    assert 4.0 < accounted_epsilon < 4.6
    assert linear_audit(1.0).epsilon_lower_bound < accounted_epsilon
    assert linear_audit(1.0, noised=False).epsilon_lower_bound > accounted_epsilon
