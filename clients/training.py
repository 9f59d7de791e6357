"""Local training and prediction, shared by federated rounds and by every baseline.

One routine trains whatever data it is given: a firm's own (federated round or local-only
baseline) or everybody's pooled (centralised baseline), so the methods differ only in the data
and the aggregation, never in the optimiser.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.optim.sgd import sgd

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
            foreach=True,  # one call per step for all tensors (CPU defaults to a loop); the same updates bit for bit
        )
    if spec.name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, weight_decay=spec.weight_decay)
    raise ValueError(f"unknown optimiser '{spec.name}'")


class _SgdSteps:
    """torch's SGD update through its public functional form (`torch.optim.sgd.sgd`, the function
    `torch.optim.SGD.step` calls; momentum and weight decay, no dampening, Nesterov or maximise: what
    `OptimiserSpec` offers), without the Optimizer's per-step bookkeeping (hooks, profiler records, grouping
    tensors by device): the same weights bit for bit, and a local-only baseline's epochs are a few batches of a
    small MLP, where that bookkeeping was about a quarter of a step."""

    def __init__(self, model: nn.Module, spec: OptimiserSpec):
        self.params: list[torch.Tensor] = [p for p in model.parameters() if p.requires_grad]
        self.spec = spec
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for param in self.params:
            param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        grads: list[torch.Tensor] = [self.params[i].grad for i in live]  # type: ignore[misc]
        buffers = [self.buffers[i] for i in live]
        sgd(
            [self.params[i] for i in live],
            grads,
            buffers,  # filled in place where None (the first step), as SGD.step's state is
            foreach=True,
            weight_decay=self.spec.weight_decay,
            momentum=self.spec.momentum,
            lr=self.spec.learning_rate,
            dampening=0.0,
            nesterov=False,
            maximize=False,
        )
        for i, buffer in zip(live, buffers, strict=True):
            self.buffers[i] = buffer


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
    model.to(device)
    x = torch.as_tensor(features, dtype=torch.float32, device=device)
    y = torch.as_tensor(targets, dtype=torch.float32, device=device)
    anchor_params = [a.to(device) for a in anchor] if anchor is not None and settings.proximal_mu > 0 else None
    _train_epochs(model, x, y, loss_function(loss), settings, settings.seed, settings.epochs, anchor_params, report)
    return report


def _train_epochs(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    settings: FitSettings,
    seed: int,
    epochs: int,
    anchor_params: list[torch.Tensor] | None,
    report: FitReport,
) -> None:
    """`epochs` epochs of mini-batches on tensors already on the model's device (a fresh optimiser and a
    generator seeded `seed`): the loop `fit` and each epoch of `fit_early_stopping` share."""
    model.train()
    optimiser = (
        _SgdSteps(model, settings.optimiser) if settings.optimiser.name == "sgd" else make_optimiser(model, settings)
    )
    generator = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    device = x.device
    for _ in range(epochs):
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
    order) serve as validation; too few of them and it trains for the full budget instead. Each epoch
    is `fit` of one epoch (a fresh optimiser, seed + epoch); the data go to tensors and the model to
    its device once, not every epoch (the local-only baselines' epochs are a few batches each).
    """
    n = len(features)
    n_val = int(round(n * validation_fraction))
    if n_val < min_validation or n - n_val < min_validation:
        return fit(model, features, targets, loss=loss, settings=settings, device=device)
    model.to(device)
    x = torch.as_tensor(features, dtype=torch.float32, device=device)
    y = torch.as_tensor(targets, dtype=torch.float32, device=device)
    x_fit, y_fit = x[: n - n_val], y[: n - n_val]
    x_val, y_val = x[n - n_val :], y[n - n_val :]
    criterion = loss_function(loss)
    report = FitReport()
    best_value, best_epoch = float("inf"), 0
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    since_best = 0
    for epoch in range(settings.epochs):
        _train_epochs(model, x_fit, y_fit, criterion, settings, settings.seed + epoch, 1, None, report)
        model.eval()
        with torch.no_grad():
            value = float(criterion(model(x_val), y_val))
        if value < best_value - 1e-6:
            best_value, best_epoch, since_best = value, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since_best += 1
            if since_best >= patience:
                break
    model.load_state_dict(best_state)
    report.best_epoch = best_epoch
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
