"""DP-FedAvg on a firm's side: its whole round (every model) clipped to one L2 norm, and under
distributed DP quantised with its own share of Skellam noise, so no un-noised change leaves it."""

from __future__ import annotations

import math

import numpy as np

from silobridge.contract.arrays import flatten
from silobridge.contract.config import PrivacySpec
from silobridge.contract.messages import TrainInstruction
from silobridge.contract.wire_names import update_segment, weight_segment
from silobridge.errors import ConfigError, ProtocolError
from silobridge.privacy.dp import UNCLIPPED_SEGMENT, DistributedSkellam, clip_l2


def round_clip_norm(privacy: PrivacySpec, instruction: TrainInstruction, *, firm: str) -> float:
    """The L2 bound of this round's change: the spec's, or under adaptive clipping the coordinator's C_t.

    A clip norm that is not finite and positive (or one sent when the federation file fixes the norm)
    is refused before anything is released: it would void the sensitivity the noise is scaled to.
    """
    stage = f"train round {instruction.round}"
    value = instruction.clip_norm
    if not privacy.adaptive_clipping:
        if value is not None:
            raise ProtocolError(
                f"the instruction sets clip norm {value!r}, but the federation fixes it at {privacy.clip_norm:g} "
                "(adaptive clipping is off)",
                firm=firm,
                stage=stage,
            )
        return privacy.clip_norm
    if value is None:
        raise ProtocolError("adaptive clipping is on but the instruction carries no clip norm", firm=firm, stage=stage)
    if isinstance(value, bool) or not (math.isfinite(value) and value > 0):
        raise ProtocolError(
            f"the round's clip norm must be a finite positive number, got {value!r}", firm=firm, stage=stage
        )
    return float(value)


def firm_level_release(
    privacy: PrivacySpec,
    weights: dict[str, dict[str, np.ndarray]],
    changes: dict[str, np.ndarray],
    instruction: TrainInstruction,
    *,
    firm: str,
) -> dict[str, np.ndarray]:
    """DP-FedAvg: the firm's whole round (all models) clipped to one L2 norm; noise shares if distributed.

    Under adaptive clipping the firm also adds its unclipped indicator (1 if its change was within the
    round's clip norm) to the sum: the server releases only the noised count over firms.
    """
    clip_norm = round_clip_norm(privacy, instruction, firm=firm)
    sizes = {kind: flatten(arrays).size for kind, arrays in weights.items()}
    joint = np.concatenate([changes.get(kind, np.zeros(size)) for kind, size in sizes.items()])
    result = clip_l2(joint, clip_norm, firm=firm)
    clipped = result.vector
    if privacy.mechanism == "distributed":
        if privacy.noise_multiplier is None or privacy.expected_shares is None:
            raise ConfigError(
                f"firm '{firm}': distributed DP needs the coordinator's noise multiplier and expected shares",
                field="privacy.noise_multiplier",
            )
        skellam = DistributedSkellam(
            clip_norm=privacy.clip_norm,
            scale=privacy.distributed_scale,
            dim=joint.size,
            noise_multiplier=privacy.noise_multiplier,
            expected_shares=privacy.expected_shares,
        )
        rng = np.random.default_rng()  # fresh OS entropy: noise the coordinator cannot predict
        released = (skellam.quantise(clipped, rng, firm=firm) + skellam.noise_share(rng)).astype(float)
    else:
        released = clipped
    out: dict[str, np.ndarray] = {}
    offset = 0
    for kind, size in sizes.items():
        out[update_segment(kind)] = released[offset : offset + size]
        out[weight_segment(kind)] = np.array([1.0])
        offset += size
    if privacy.adaptive_clipping:
        out[UNCLIPPED_SEGMENT] = np.array([0.0 if result.clipped else 1.0])
    return out
