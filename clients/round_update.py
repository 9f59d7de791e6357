"""A firm's training round: each model trained locally from the global weights, and what it releases.

Without DP a firm releases example-weighted changes with their weights, its training loss and the
test statistics of the received models. Under record-level DP (DP-SGD inside the firm) only the
changes and public weights leave; under firm-level DP the whole round goes through
`firm_release.firm_level_release` (clipped jointly, with noise shares when distributed).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace

import numpy as np
from torch import nn

from silobridge.clients.dpsgd import DpSgdSettings, fit_private
from silobridge.clients.evaluation import model_stats
from silobridge.clients.firm_release import firm_level_release, round_clip_norm
from silobridge.clients.holdings import FirmHoldings, StatSlots
from silobridge.clients.models import ModelKind, build_model, load_arrays, state_to_arrays
from silobridge.clients.normaliser import Normaliser
from silobridge.clients.training import FitSettings, LossName, fit
from silobridge.contract.arrays import flatten
from silobridge.contract.messages import TrainInstruction
from silobridge.contract.wire_names import eval_segment, loss_segment, update_segment, weight_segment
from silobridge.errors import ConfigError


@dataclass(frozen=True)
class TrainOutcome:
    """A firm's answer to one training round of one model."""

    weighted_delta: np.ndarray  # weight * (local weights - global weights), flat float64
    weight: float  # training examples
    loss: float  # mean training loss of the last local epoch
    evaluation: np.ndarray  # group-slotted statistics of the *received* global model on the test split


def dp_noise_seed(own_seed: int | None, firm_id: str, kind: str, instruction: TrainInstruction) -> int | None:
    """The DP-SGD seed of one model's round: None (fresh entropy) unless the firm fixed its own seed.

    Never derived from the instruction's seed alone: that is the coordinator's number, and a seed it
    knows would let it replay the firm's sampling and noise.
    """
    if own_seed is None:
        return None
    sequence = np.random.SeedSequence(
        [own_seed, instruction.round, zlib.crc32(firm_id.encode()), zlib.crc32(kind.encode())]
    )
    return int(sequence.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def train_settings(firm: FirmHoldings, instruction: TrainInstruction) -> FitSettings:
    """The coordinator's local-training settings, with this firm's own seed for the round."""
    return FitSettings(
        epochs=instruction.epochs,
        batch_size=instruction.batch_size,
        proximal_mu=instruction.proximal_mu,
        seed=firm.seed(instruction.seed + instruction.round),
        optimiser=instruction.optimiser,
    )


def local_change(
    firm: FirmHoldings,
    kind: ModelKind,
    arrays: dict[str, np.ndarray],
    instruction: TrainInstruction,
    norm: Normaliser | None,
    *,
    noise_seed: int | None = None,
    received: nn.Module | None = None,
) -> tuple[np.ndarray, float, int]:
    """Train from the global weights; the change of the weights, the last epoch's loss, the examples.

    `noise_seed` is the firm's own fixed seed (None: fresh entropy) for record-level DP-SGD. `received` is the
    model already built with `arrays` loaded (`train` scored it first), trained in place rather than built again.
    """
    if received is None:
        model = build_model(kind, firm.spec)
        load_arrays(model, arrays)
    else:
        model = received
    x, y = firm.xy(kind, 0, norm)
    settings = train_settings(firm, instruction)
    loss: LossName = "l1" if kind == "demand" else "bce"
    privacy = firm.spec.privacy
    if privacy.enabled and privacy.unit == "record":
        if privacy.noise_multiplier is None:
            raise ConfigError(
                f"firm '{firm.firm_id}': record-level DP needs the coordinator's calibrated noise multiplier",
                field="privacy.noise_multiplier",
            )
        dp = DpSgdSettings(privacy.noise_multiplier, privacy.max_grad_norm(kind), privacy.sample_rate)
        # The firm's own privacy settings, not the instruction, fix how much it trains: the steps it
        # takes are what the accountant charges, whatever the coordinator asks.
        step = settings.optimiser.model_copy(update={"learning_rate": privacy.learning_rate})
        settings = replace(settings, optimiser=step, epochs=privacy.local_epochs)
        report = fit_private(
            model,
            x,
            y,
            loss=loss,
            settings=settings,
            dp=dp,
            device=firm.device,
            noise_seed=dp_noise_seed(noise_seed, firm.firm_id, kind, instruction),
        )
    else:
        anchor = [p.detach().clone() for p in model.parameters()]
        report = fit(model, x, y, loss=loss, settings=settings, device=firm.device, anchor=anchor)
    delta = flatten(state_to_arrays(model)) - flatten(arrays)
    return delta, report.epoch_losses[-1] if report.epoch_losses else float("nan"), len(x)


def train(
    firm: FirmHoldings,
    kind: ModelKind,
    arrays: dict[str, np.ndarray],
    instruction: TrainInstruction,
    norm: Normaliser | None = None,
    groups: StatSlots | None = None,
    *,
    noise_seed: int | None = None,
) -> TrainOutcome:
    """Evaluate the received global model, then train it locally and return the weighted change."""
    firm.stat_slot(kind, groups)  # refuse a too-small slot before training
    model = build_model(kind, firm.spec)
    load_arrays(model, arrays)
    evaluation = firm.slotted(kind, model_stats(firm, kind, model, norm), groups)
    # scoring leaves the weights as received, so the same model trains (one build and load, not two)
    delta, loss, examples = local_change(firm, kind, arrays, instruction, norm, noise_seed=noise_seed, received=model)
    weight = float(min(examples, firm.spec.aggregation.max_examples))
    return TrainOutcome(weight * delta, weight, loss, evaluation)


def train_round(
    firm: FirmHoldings,
    weights: dict[str, dict[str, np.ndarray]],
    instruction: TrainInstruction,
    norm: Normaliser | None,
    groups: StatSlots | None = None,
    *,
    public_weight: float = 1.0,
    noise_seed: int | None = None,
) -> dict[str, np.ndarray]:
    """One round of every model the firm can train: the segments it releases into the sum.

    Without DP: example-weighted changes, their weights, the weighted training loss and the test
    statistics of the received models, in the slots `groups` assigns. Under DP only the changes and public
    weights leave: a record count, a loss or a test statistic would be a release the accountant does not cover.
    `public_weight` is the firm's FedAvg weight under DP, where its record count stays private.
    """
    privacy = firm.spec.privacy
    if not privacy.enabled:
        out: dict[str, np.ndarray] = {}
        for kind, arrays in weights.items():
            if not firm.trains(kind):
                continue  # its segments stay zero: the firm adds nothing to this model
            outcome = train(firm, kind, arrays, instruction, norm, groups, noise_seed=noise_seed)  # type: ignore[arg-type]
            out[update_segment(kind)] = outcome.weighted_delta
            out[weight_segment(kind)] = np.array([outcome.weight])
            out[loss_segment(kind)] = np.array([outcome.weight * outcome.loss])
            out[eval_segment(kind)] = outcome.evaluation
        return out
    if privacy.unit == "firm":
        round_clip_norm(privacy, instruction, firm=firm.firm_id)  # refuse a bad clip norm before training
    changes = {
        kind: local_change(firm, kind, arrays, instruction, norm, noise_seed=noise_seed)[0]  # type: ignore[arg-type]
        for kind, arrays in weights.items()
        if firm.trains(kind)
    }
    if privacy.unit == "record":
        weight = public_weight**privacy.weight_power
        return {
            **{update_segment(kind): weight * change for kind, change in changes.items()},
            **{weight_segment(kind): np.array([weight]) for kind in changes},
        }
    return firm_level_release(privacy, weights, changes, instruction, firm=firm.firm_id)
