"""Federated optimisation over flat weight vectors, in the shape of Flower's strategies.

`configure_train` says what each firm should do this round; `aggregate_train` turns the summed
weighted updates into the next global weights. The strategy never sees one firm's update, only
sum(w_i * delta_i) and sum(w_i), which is all FedAvg and FedProx need.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from silobridge.contract.messages import TrainInstruction
from silobridge.contract.optimiser import OptimiserSpec


@dataclass(frozen=True)
class FedAvg:
    """FedAvg (McMahan et al. 2017), weighted by training examples; FedProx when proximal_mu > 0."""

    local_epochs: int
    batch_size: int
    optimiser: OptimiserSpec
    proximal_mu: float = 0.0
    seed: int = 0

    @property
    def name(self) -> str:
        return "fedprox" if self.proximal_mu > 0 else "fedavg"

    def configure_train(self, server_round: int) -> TrainInstruction:
        return TrainInstruction(
            round=server_round,
            epochs=self.local_epochs,
            batch_size=self.batch_size,
            optimiser=self.optimiser,
            proximal_mu=self.proximal_mu,
            seed=self.seed,
        )

    def aggregate_train(self, weights: np.ndarray, update_sum: np.ndarray, weight_sum: float) -> np.ndarray:
        """new = old + sum(w_i delta_i) / sum(w_i): the example-weighted mean of the firms' local models."""
        if weight_sum <= 0:
            raise ValueError("no training examples behind this round's updates")
        if update_sum.shape != weights.shape:
            raise ValueError(f"update has {update_sum.size} values, the model {weights.size}")
        return weights + update_sum / weight_sum
