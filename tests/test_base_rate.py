"""A firm whose risk training rows hold one class fits no local-only risk MLP: it predicts its smoothed base
rate, (events + 0.5) / (rows + 1), for every row (early stopping could not choose an epoch, and there is
nothing to rank by)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import expit

import silobridge.clients.baselines as baselines
from silobridge.clients.baselines import BaseRate, one_class
from silobridge.clients.evaluation import risk_stats
from silobridge.clients.training import predict
from silobridge.federation.coordinator import baseline_instruction
from silobridge.federation.firm_source import simulated_firm
from silobridge.federation.settings import settings_from_run_config
from tests.conftest import TINY


@pytest.mark.parametrize(
    ("labels", "rate"),
    [([0.0, 0.0, 0.0], 0.5 / 4), ([1.0, 1.0], 2.5 / 3), ([], 0.5), ([0.0] * 199, 0.5 / 200)],
)
def test_base_rate_is_the_smoothed_event_rate_for_every_row(labels: list[float], rate: float) -> None:
    model = BaseRate(np.array(labels))
    logits = model(torch.zeros((5, 3)))
    assert logits.shape == (5,) and torch.all(logits == logits[0])
    assert float(logits[0]) == pytest.approx(math.log(rate / (1 - rate)), rel=1e-6)


def test_one_class() -> None:
    assert one_class(np.array([0.0, 0.0])) and one_class(np.array([1.0])) and one_class(np.array([]))
    assert not one_class(np.array([0.0, 1.0, 0.0]))


def _fits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the local-only MLP fits (and let them run)."""
    calls: list[int] = []
    real = baselines.fit_early_stopping

    def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(baselines, "fit_early_stopping", counted)
    return calls


def test_a_firm_without_training_events_fits_no_local_risk_mlp(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from_run_config({"scenario": str(TINY)})
    index = [firm.id for firm in settings.scenario.firms].index("R2")  # 162 training rows, no event; 19 in test
    firm = simulated_firm(settings, settings.spec, index, run_id=-11)
    train, test = firm.risk_split
    assert train.labels.sum() == 0 and test.labels.sum() > 0
    fits = _fits(monkeypatch)
    model, norm = firm.local_risk_model(baseline_instruction(settings))
    assert fits == [] and isinstance(model, BaseRate)
    probabilities = expit(predict(model, norm.apply(test.features), device=firm.device))
    assert np.allclose(probabilities, 0.5 / (len(train.labels) + 1), rtol=1e-6)
    assert risk_stats(model, norm.apply(test.features), test.labels, firm.device).metrics()["roc_auc"] == 0.5


def test_rows_of_both_classes_still_fit_the_mlp(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from_run_config({"scenario": str(TINY)})
    firms = [simulated_firm(settings, settings.spec, i, run_id=-12) for i in range(len(settings.scenario.firms))]
    firm = next(f for f in firms if f.risk_split is not None and not one_class(f.risk_split[0].labels))
    train = firm.risk_split[0]
    fits = _fits(monkeypatch)
    quick = baseline_instruction(settings).model_copy(update={"max_epochs": 2})
    model, _ = firm.fit_local_risk(train.features, train.labels, quick, train.features)
    assert fits == [1] and not isinstance(model, BaseRate)
