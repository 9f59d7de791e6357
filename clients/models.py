"""The two models every firm trains: a global demand forecaster and a supply-risk classifier.

Small multilayer perceptrons: the federation's gain comes from pooled data, not from model size,
and small models keep rounds fast on a firm's laptop as on a GPU.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import numpy as np
import torch
from torch import nn

from silobridge.clients.features import demand_input_dim, risk_input_dim
from silobridge.contract.config import FederationSpec

ModelKind = Literal["demand", "risk"]
MODEL_KINDS: tuple[ModelKind, ...] = ("demand", "risk")


class DemandNet(nn.Module):
    """Scaled lags and future calendar/covariates -> the next `horizon` periods, scaled."""

    def __init__(self, input_dim: int, horizon: int, hidden: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(input_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, horizon)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class RiskNet(nn.Module):
    """Standardised supplier and order features -> log-odds of a disruption next period."""

    def __init__(self, input_dim: int, hidden: int):
        super().__init__()
        width = max(8, hidden // 2)
        self.body = nn.Sequential(
            nn.Linear(input_dim, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).squeeze(-1)


def build_model(kind: ModelKind, spec: FederationSpec, *, seed: int | None = None) -> nn.Module:
    """A fresh model of the federation's architecture; `seed` fixes its initial weights."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        if kind == "demand":
            return DemandNet(demand_input_dim(spec), spec.horizon, spec.hidden)
        if kind == "risk":
            return RiskNet(risk_input_dim(spec), spec.hidden)
    raise ValueError(f"unknown model kind '{kind}'")


def state_to_arrays(model: nn.Module) -> OrderedDict[str, np.ndarray]:
    """Model weights as float32 numpy arrays, in the model's own order."""
    return OrderedDict(
        (k, v.detach().cpu().numpy().astype(np.float32, copy=True)) for k, v in model.state_dict().items()
    )


def load_arrays(model: nn.Module, arrays: dict[str, np.ndarray]) -> None:
    """Load weights; names and shapes must match exactly (strict), so a wrong update fails loudly."""
    expected = model.state_dict()
    if list(arrays) != list(expected):
        raise ValueError(f"weights do not match the model: got {list(arrays)}, expected {list(expected)}")
    for name, value in arrays.items():
        if tuple(value.shape) != tuple(expected[name].shape):
            raise ValueError(f"weight '{name}' has shape {tuple(value.shape)}, expected {tuple(expected[name].shape)}")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"weight '{name}' holds NaN or infinite values")
    model.load_state_dict(
        OrderedDict((k, torch.from_numpy(np.asarray(v, dtype=np.float32))) for k, v in arrays.items())
    )
