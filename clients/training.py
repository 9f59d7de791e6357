"""Local training and prediction, shared by federated rounds and by every baseline.

One routine trains whatever data it is given: a firm's own (federated round or local-only
baseline) or everybody's pooled (centralised baseline), so the methods differ only in the data
and the aggregation, never in the optimiser.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

from silobridge.contract.optimiser import OptimiserSpec

LossName = Literal["l1", "bce"]


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' takes CUDA when it is there; the code never needs it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but no CUDA device is available")
    return torch.device(name)


def loss_function(name: LossName) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if name == "l1":
        return nn.functional.l1_loss
    if name == "bce":
        return nn.functional.binary_cross_entropy_with_logits
    raise ValueError(f"unknown loss '{name}'")


@dataclass(frozen=True)
class FitSettings:
    """One training call: the optimiser as instructed, how long, and the proximal term (FedProx) towards `anchor`."""

    epochs: int
    batch_size: int
    optimiser: OptimiserSpec
    proximal_mu: float = 0.0
    seed: int = 0


def make_optimiser(model: nn.Module, settings: FitSettings) -> torch.optim.Optimizer:
    """SGD with momentum by default: stateless between rounds, so FedAvg averages like with like."""
    spec = settings.optimiser
    if spec.name == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=spec.learning_rate,
            momentum=spec.momentum,
            weight_decay=spec.weight_decay,
        )
    if spec.name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, weight_decay=spec.weight_decay)
    raise ValueError(f"unknown optimiser '{spec.name}'")


@dataclass
class FitReport:
    epoch_losses: list[float] = field(default_factory=list)
    steps: int = 0
    best_epoch: int | None = None


def fit(
    model: nn.Module,
    features: np.ndarray,
    targets: np.ndarray,
    *,
    loss: LossName,
    settings: FitSettings,
    device: torch.device,
    anchor: list[torch.Tensor] | None = None,
) -> FitReport:
    """Mini-batch training (`settings.optimiser.name`) for `settings.epochs` epochs; the mean loss of each epoch."""
    report = FitReport()
    if len(features) == 0:
        return report
    model.to(device).train()
    x = torch.as_tensor(features, dtype=torch.float32, device=device)
    y = torch.as_tensor(targets, dtype=torch.float32, device=device)
    criterion = loss_function(loss)
    optimiser = make_optimiser(model, settings)
    generator = torch.Generator().manual_seed(settings.seed)
    anchor_params = [a.to(device) for a in anchor] if anchor is not None and settings.proximal_mu > 0 else None
    n = x.shape[0]
    for _ in range(settings.epochs):
        order = torch.randperm(n, generator=generator).to(device)
        total, batches = 0.0, 0
        for start in range(0, n, settings.batch_size):
            index = order[start : start + settings.batch_size]
            optimiser.zero_grad(set_to_none=True)
            value = criterion(model(x[index]), y[index])
            objective = value
            if anchor_params is not None:
                proximal = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor_params, strict=True))
                objective = value + 0.5 * settings.proximal_mu * proximal
            objective.backward()
            optimiser.step()
            total += float(value.detach())
            batches += 1
            report.steps += 1
        report.epoch_losses.append(total / batches)
    return report


@torch.no_grad()
def evaluate_loss(
    model: nn.Module, features: np.ndarray, targets: np.ndarray, *, loss: LossName, device: torch.device
) -> float:
    model.to(device).eval()
    x = torch.as_tensor(features, dtype=torch.float32, device=device)
    y = torch.as_tensor(targets, dtype=torch.float32, device=device)
    return float(loss_function(loss)(model(x), y))


def fit_early_stopping(
    model: nn.Module,
    features: np.ndarray,
    targets: np.ndarray,
    *,
    loss: LossName,
    settings: FitSettings,
    device: torch.device,
    validation_fraction: float = 0.2,
    patience: int = 10,
    min_validation: int = 4,
) -> FitReport:
    """Train up to `settings.epochs` epochs, keeping the weights that did best on the latest examples.

    The honest way for a firm alone to fit: its most recent training examples (inputs are in time
    order) serve as validation; too few of them and it trains for the full budget instead.
    """
    n = len(features)
    n_val = int(round(n * validation_fraction))
    if n_val < min_validation or n - n_val < min_validation:
        return fit(model, features, targets, loss=loss, settings=settings, device=device)
    x_fit, y_fit = features[: n - n_val], targets[: n - n_val]
    x_val, y_val = features[n - n_val :], targets[n - n_val :]
    report = FitReport()
    best = (float("inf"), copy.deepcopy(model.state_dict()), 0)
    since_best = 0
    for epoch in range(settings.epochs):
        step = dataclasses.replace(settings, epochs=1, proximal_mu=0.0, seed=settings.seed + epoch)
        epoch_report = fit(model, x_fit, y_fit, loss=loss, settings=step, device=device)
        report.epoch_losses += epoch_report.epoch_losses
        report.steps += epoch_report.steps
        value = evaluate_loss(model, x_val, y_val, loss=loss, device=device)
        if value < best[0] - 1e-6:
            best, since_best = (value, copy.deepcopy(model.state_dict()), epoch), 0
        else:
            since_best += 1
            if since_best >= patience:
                break
    model.load_state_dict(best[1])
    report.best_epoch = best[2]
    return report


@torch.no_grad()
def predict(model: nn.Module, features: np.ndarray, *, device: torch.device, batch_size: int = 8192) -> np.ndarray:
    """Raw model outputs (scaled forecasts or log-odds) as float64."""
    model.to(device).eval()
    outputs = []
    for start in range(0, len(features), batch_size):
        x = torch.as_tensor(features[start : start + batch_size], dtype=torch.float32, device=device)
        outputs.append(model(x).cpu().numpy())
    if not outputs:
        return np.zeros((0,), dtype=float)
    return np.concatenate(outputs).astype(np.float64)
