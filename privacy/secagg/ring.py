"""Integers modulo 2^modulus_bits held in numpy words that wrap for free.

Masked vectors live in Z/2^m. numpy's unsigned arithmetic wraps modulo 2^32 or 2^64, and 2^m divides
both, so sums may run in the word and be reduced once at the end. A ring of at most 32 bits uses
uint32 words: half the PRG output, half the memory traffic and half the bytes on the wire.
"""

from __future__ import annotations

import numpy as np

from silobridge.errors import ConfigError, ProtocolError

MAX_MODULUS_BITS = 64


def check_modulus_bits(modulus_bits: int) -> int:
    """Return `modulus_bits` if it is an int in [2, 64], else raise ConfigError."""
    if type(modulus_bits) is not int or not 2 <= modulus_bits <= MAX_MODULUS_BITS:
        raise ConfigError(f"must be an integer in [2, {MAX_MODULUS_BITS}], got {modulus_bits!r}", field="modulus_bits")
    return modulus_bits


def ring_dtype(modulus_bits: int) -> np.dtype:
    """Little-endian word type for the ring: uint32 up to 32 bits, uint64 above."""
    check_modulus_bits(modulus_bits)
    return np.dtype("<u4") if modulus_bits <= 32 else np.dtype("<u8")


def ring_mask(modulus_bits: int) -> int:
    """2^modulus_bits - 1: AND with it reduces a word modulo 2^modulus_bits."""
    return (1 << check_modulus_bits(modulus_bits)) - 1


def to_ring(values: np.ndarray, modulus_bits: int, *, firm: str | None = None, stage: str | None = None) -> np.ndarray:
    """Map a 1-D integer vector into Z/2^m (negative values by two's complement).

    Accepts values in [-2^(m-1), 2^m): signed inputs from `quantise` and ring elements alike. Anything
    outside, or a non-integer dtype, raises instead of wrapping silently.
    """
    array = np.asarray(values)
    if array.ndim != 1:
        raise ProtocolError(f"vector must be 1-D, got shape {array.shape}", firm=firm, stage=stage)
    if array.dtype.kind not in "iu":
        raise ProtocolError(f"vector must have an integer dtype, got {array.dtype}", firm=firm, stage=stage)
    if array.size:
        low, high = int(array.min()), int(array.max())
        if low < -(1 << (modulus_bits - 1)) or high >= (1 << modulus_bits):
            raise ProtocolError(
                f"vector values must lie in [-2^{modulus_bits - 1}, 2^{modulus_bits}), got [{low}, {high}]",
                firm=firm,
                stage=stage,
            )
    dtype = ring_dtype(modulus_bits)
    # An integer astype wraps negatives modulo 2^32 / 2^64 (two's complement); then reduce mod 2^m.
    ring = array.astype(dtype)
    np.bitwise_and(ring, dtype.type(ring_mask(modulus_bits)), out=ring)
    return ring


def to_signed(ring_values: np.ndarray, modulus_bits: int) -> np.ndarray:
    """Read ring elements as signed integers in [-2^(m-1), 2^(m-1)) (int64)."""
    words = np.asarray(ring_values).astype(np.uint64) & np.uint64(ring_mask(modulus_bits))
    signed = words.view(np.int64).copy()
    if modulus_bits < 64:
        half, modulus = 1 << (modulus_bits - 1), 1 << modulus_bits
        signed[signed >= half] -= modulus
    return signed
