"""The masking arithmetic of SecAgg, as pure functions of seeds and vectors.

A firm i sends y_i = x_i + PRG(b_i) + sum over neighbours j of sign(i, j) * PRG(s_ij)  (mod 2^m),
with sign(i, j) = +1 if i < j else -1, so each pairwise mask enters once with each sign and cancels
in the sum. The server removes the self masks PRG(b_i) of the firms whose input is in the sum, and
the pairwise masks that survivors share with firms that dropped before sending their input.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from silobridge.errors import ConfigError
from silobridge.privacy.secagg.kdf import derive_key, digest
from silobridge.privacy.secagg.prg import StreamAccumulator


def pairwise_sign(own: str, other: str) -> int:
    """+1 if `own` sorts before `other` (Python string order), else -1."""
    if own == other:
        raise ConfigError("a firm has no pairwise mask with itself", field="firm")
    return 1 if own < other else -1


def pairwise_seed(agreement: bytes, *, run_id: str, session: int, round_number: int, firm_a: str, firm_b: str) -> bytes:
    """The round's pairwise mask seed: HKDF of the pair's X25519 secret, bound to the ordered pair.

    The agreement is computed once per key; each round gets its own seed by binding the round number.
    """
    low, high = sorted((firm_a, firm_b))
    return derive_key(agreement, "pairwise-mask", run_id, session, round_number, low, high)


def self_mask_commitment(seed: bytes, *, run_id: str, session: int, round_number: int, firm: str) -> bytes:
    """SHA-256 commitment to a self-mask seed, advertised up front so a rebuilt seed can be checked."""
    return digest("self-mask-commitment", run_id, session, round_number, firm, seed)


def apply_streams(base: np.ndarray, streams: Iterable[tuple[bytes, int]], modulus_bits: int) -> np.ndarray:
    """base + sum(sign * PRG(seed)) mod 2^m, as a new ring vector."""
    accumulator = StreamAccumulator(base, modulus_bits)
    accumulator.add_streams(streams)
    return accumulator.result()


def mask_vector(
    vector: np.ndarray, self_seed: bytes, pairwise: Iterable[tuple[bytes, int]], modulus_bits: int
) -> np.ndarray:
    """y = x + PRG(self_seed) + sum(sign * PRG(pair_seed)): what a firm sends in MASKED_INPUT."""
    return apply_streams(vector, [(self_seed, 1), *pairwise], modulus_bits)


def unmask_sum(
    masked_sum: np.ndarray,
    self_seeds: Iterable[bytes],
    dangling_pairwise: Iterable[tuple[bytes, int]],
    modulus_bits: int,
) -> np.ndarray:
    """Remove the contributors' self masks and the pairwise masks left over by dropped firms.

    `dangling_pairwise` holds (seed, sign the surviving firm applied); each is subtracted again.
    """
    streams = [(seed, -1) for seed in self_seeds]
    streams += [(seed, -sign) for seed, sign in dangling_pairwise]
    return apply_streams(masked_sum, streams, modulus_bits)
