"""Mask expansion: a 32-byte seed becomes a vector of ring words by AES-256-CTR.

The PRG is AES-256 in counter mode, keyed with the full seed, zero initial counter block; its
keystream is read as little-endian words (`ring_dtype`) and reduced modulo 2^m. A zero nonce is safe
because every seed keys exactly one stream: seeds are derived per run, session, round and pair.
Expansion is one call into OpenSSL plus one numpy view: never a Python loop over elements.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from silobridge.errors import ConfigError
from silobridge.privacy.secagg.ring import ring_dtype, ring_mask

SEED_BYTES = 32
_ZERO_COUNTER = bytes(16)
_BLOCK_BYTES = 16


def _keystream(seed: bytes) -> CipherContext:
    if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
        raise ConfigError(
            f"PRG seed must be {SEED_BYTES} bytes, got {len(seed) if isinstance(seed, bytes) else seed!r}"
        )
    return Cipher(algorithms.AES(seed), modes.CTR(_ZERO_COUNTER)).encryptor()


def expand_seed(seed: bytes, length: int, modulus_bits: int) -> np.ndarray:
    """The mask stream of `seed`: `length` ring elements (a fresh array)."""
    dtype = ring_dtype(modulus_bits)
    raw = _keystream(seed).update(bytes(length * dtype.itemsize))
    stream: np.ndarray = np.frombuffer(raw, dtype=dtype) & dtype.type(ring_mask(modulus_bits))
    return stream


class StreamAccumulator:
    """Adds and subtracts many mask streams into one vector, reusing one keystream buffer.

    Masking a 1M-element update with 20 neighbours expands 21 streams; writing each into the same
    scratch buffer (`update_into`) instead of allocating 21 fresh ones roughly halves the time.
    """

    def __init__(self, initial: np.ndarray, modulus_bits: int):
        self._dtype = ring_dtype(modulus_bits)
        self._modulus_bits = modulus_bits
        self._total = np.array(initial, dtype=self._dtype, copy=True)
        if self._total.ndim != 1 or self._total.size == 0:
            raise ConfigError(f"mask accumulator needs a non-empty 1-D vector, got shape {self._total.shape}")
        nbytes = self._total.size * self._dtype.itemsize
        self._zeros = bytes(nbytes)
        # update_into needs room for one extra block beyond the input.
        self._scratch = np.empty(nbytes + _BLOCK_BYTES, dtype=np.uint8)
        self._words = self._scratch[:nbytes].view(self._dtype)
        self._done = False

    def add_stream(self, seed: bytes, sign: int) -> None:
        """total += sign * PRG(seed) (mod the word; reduced mod 2^m by `result`)."""
        if self._done:
            raise ConfigError("mask accumulator already produced its result")
        # cryptography's stub admits bytes, bytearray and memoryview only; OpenSSL writes into any buffer.
        _keystream(seed).update_into(self._zeros, self._scratch)  # type: ignore[arg-type]
        if sign == 1:
            np.add(self._total, self._words, out=self._total)
        elif sign == -1:
            np.subtract(self._total, self._words, out=self._total)
        else:
            raise ConfigError(f"stream sign must be +1 or -1, got {sign!r}")

    def add_streams(self, streams: Iterable[tuple[bytes, int]]) -> None:
        """Apply `add_stream` to every (seed, sign) pair."""
        for seed, sign in streams:
            self.add_stream(seed, sign)

    def result(self) -> np.ndarray:
        """The accumulated vector reduced modulo 2^m (the accumulator is spent afterwards)."""
        self._done = True
        np.bitwise_and(self._total, self._dtype.type(ring_mask(self._modulus_bits)), out=self._total)
        return self._total
