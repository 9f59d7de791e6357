"""Speed changes on the simulation's hot paths (issue 20, scale) that must not change a single bit: DP-SGD's
Poisson batches sliced from the tensors (against Opacus' DPDataLoader, which drew them before), and the run's
settings parsed once per ClientApp process (against a fresh parse, and parsed again once the file changes),
without resolving the spec (the DP calibration) there."""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from opacus import GradSampleModule
from opacus.data_loader import DPDataLoader
from opacus.optimizers import DPOptimizer
from torch.utils.data import TensorDataset

from silobridge.clients.dpsgd import DpSgdSettings, fit_private, poisson_batches
from silobridge.clients.training import FitSettings, loss_function, make_optimiser
from silobridge.contract.optimiser import OptimiserSpec
from silobridge.federation import client_app
from tests.conftest import TINY


def _opacus_fit(
    model: torch.nn.Module, x: np.ndarray, y: np.ndarray, settings: FitSettings, dp: DpSgdSettings, seed: int
) -> None:
    """fit_private as it was before: Opacus' own DPDataLoader over a TensorDataset (the reference)."""
    private = GradSampleModule(model.train())
    generator = torch.Generator().manual_seed(seed)
    optimiser = DPOptimizer(
        make_optimiser(private, settings),
        noise_multiplier=dp.noise_multiplier,
        max_grad_norm=dp.max_grad_norm,
        expected_batch_size=max(1, round(dp.sample_rate * len(x))),
        generator=generator,
    )
    dataset = TensorDataset(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32))
    loader = DPDataLoader(dataset, sample_rate=dp.sample_rate, generator=generator)
    criterion = loss_function("l1")
    logging.getLogger("opacus.data_loader").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        for _ in range(settings.epochs):
            for xb, yb in loader:
                optimiser.zero_grad(set_to_none=True)
                criterion(private(xb), yb).backward()
                optimiser.step()
    private._close()


@pytest.mark.parametrize("rows, rate", [(40, 0.25), (7, 0.1)])  # (7, 0.1): empty batches, the first one included
def test_poisson_batches_are_opacus_batches_bit_for_bit(rows: int, rate: float) -> None:
    rng = np.random.default_rng(3)
    x = torch.as_tensor(rng.normal(size=(rows, 5)), dtype=torch.float32)
    y = torch.as_tensor(rng.normal(size=(rows, 2)), dtype=torch.float32)
    ours, theirs = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    loader = DPDataLoader(TensorDataset(x, y), sample_rate=rate, generator=theirs)
    logging.getLogger("opacus.data_loader").setLevel(logging.ERROR)
    empty = 0
    for _ in range(3):  # epochs: each draws DataLoader's base seed first
        mine = list(_interleaved(poisson_batches(x, y, rate, ours), ours))
        reference = list(_interleaved(iter(loader), theirs))
        assert len(mine) == len(reference) == int(1 / rate)
        for (xa, ya, na), (xb, yb, nb) in zip(mine, reference, strict=True):
            assert xa.shape == xb.shape and ya.shape == yb.shape and xa.dtype == xb.dtype
            assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(na, nb)
            empty += len(xa) == 0
    if rows == 7:
        assert empty > 0  # the case of an empty Poisson batch was exercised


def _interleaved(batches, generator: torch.Generator):
    """Each batch with a noise draw after it, as the DPOptimizer's step draws from the same generator."""
    for xb, yb in batches:
        yield xb, yb, torch.normal(0.0, 1.0, size=(3,), generator=generator)


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def test_fit_private_trains_the_model_opacus_loader_trained_bit_for_bit() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(50, 6)).astype(np.float32)
    y = rng.normal(size=(50, 2)).astype(np.float32)
    optimiser = OptimiserSpec(name="sgd", learning_rate=0.05, momentum=0.9, weight_decay=0.0)
    settings = FitSettings(epochs=2, batch_size=16, optimiser=optimiser)
    dp = DpSgdSettings(noise_multiplier=1.1, max_grad_norm=1.0, sample_rate=0.2)
    ours, reference = _model(1), _model(1)
    fit_private(ours, x, y, loss="l1", settings=settings, dp=dp, device=torch.device("cpu"), noise_seed=7)
    _opacus_fit(reference, x, y, settings, dp, seed=7)
    for a, b in zip(ours.state_dict().values(), reference.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(ours.state_dict()["0.weight"], _model(1).state_dict()["0.weight"])  # it trained


def test_run_settings_are_parsed_once_per_process_and_again_when_the_scenario_changes(tmp_path: Path) -> None:
    scenario = tmp_path / "tiny.toml"
    shutil.copy(TINY, scenario)
    config = {"scenario": str(scenario), "dp": "off", "aggregation": "plain", "run-id": "cached"}
    first = client_app.run_settings(config)
    assert client_app.run_settings(dict(config)) is first  # the same run config: no second parse
    assert first == client_app.settings_from_run_config(config)  # what a fresh parse gives
    other = client_app.run_settings({**config, "run-id": "other"})
    assert other is not first and other.run_id == "other"
    scenario.write_text(scenario.read_text() + "\n")
    stat = scenario.stat()
    os.utime(scenario, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    again = client_app.run_settings({**config, "run-id": "other"})
    assert again is not other  # a changed file is parsed again


def test_a_firms_worker_parses_the_settings_without_resolving_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under DP, resolving the spec calibrates the noise (seconds per process); a firm's worker takes the spec
    from each message, so its settings are parsed without it, and equal a full parse otherwise."""
    from silobridge.federation import settings as settings_module

    config = {"scenario": str(TINY), "dp": "on", "aggregation": "secure", "run-id": "unresolved"}
    calls: list[object] = []
    resolve = settings_module.federation_spec
    monkeypatch.setattr(settings_module, "federation_spec", lambda s: calls.append(s) or resolve(s))
    worker = client_app.run_settings(config)
    assert calls == []  # nothing calibrated
    full = settings_module.settings_from_run_config(config)
    assert len(calls) == 1  # the coordinator's parse resolves it
    assert worker == full and worker.spec == full.spec


def test_the_harness_scores_every_firm_with_one_model_as_each_firm_scores_itself() -> None:
    from silobridge.clients.models import MODEL_KINDS, build_model, state_to_arrays
    from silobridge.clients.normaliser import Normaliser
    from silobridge.federation.harness import SimulationHarness
    from silobridge.federation.settings import settings_from_run_config

    settings = settings_from_run_config({"scenario": str(TINY), "dp": "off", "aggregation": "plain"})
    harness = SimulationHarness(settings, workers=1)
    data = settings.spec.data
    norm = Normaliser.from_ranges(data.risk_feature_ranges, data.risk_features)
    weights = {kind: state_to_arrays(build_model(kind, settings.spec, seed=4)) for kind in MODEL_KINDS}
    scored = harness.evaluate(weights, norm)
    for kind in MODEL_KINDS:
        holders = [f for f in harness.firms if f.trains(kind)]
        assert holders
        each = np.sum([f.evaluate(kind, weights[kind], norm) for f in holders], axis=0)  # type: ignore[arg-type]
        assert np.array_equal(scored[kind], each)
