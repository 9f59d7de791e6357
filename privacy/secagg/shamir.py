"""Shamir secret sharing over the Mersenne prime field p = 2^521 - 1.

The field is larger than any 32-byte secret (X25519 private keys, self-mask seeds), so a secret is
shared as one field element. Pure functions: pass `coefficients` to reproduce known vectors.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache

from silobridge.errors import ConfigError, ProtocolError

PRIME = (1 << 521) - 1
SHARE_BYTES = 66  # ceil(521 / 8)


def random_field_element(entropy: Callable[[int], bytes] = os.urandom) -> int:
    """Uniform in [0, PRIME): 521 random bits, redrawn in the (2^-521) case that they equal PRIME."""
    while True:
        value = int.from_bytes(entropy(SHARE_BYTES), "big") & ((1 << 521) - 1)
        if value < PRIME:
            return value


def evaluate_polynomial(coefficients: Sequence[int], x: int) -> int:
    """sum(c_i * x^i) mod PRIME by Horner's rule; coefficients[0] is the secret."""
    result = 0
    for coefficient in reversed(coefficients):
        result = (result * x + coefficient) % PRIME
    return result


def split_secret(
    secret: int,
    threshold: int,
    xs: Sequence[int],
    *,
    coefficients: Sequence[int] | None = None,
    entropy: Callable[[int], bytes] = os.urandom,
) -> dict[int, int]:
    """Shares {x: f(x)} of `secret` for the given x-coordinates; any `threshold` of them rebuild it.

    f has degree threshold - 1, f(0) = secret and random higher coefficients (or the given ones).
    """
    if not 0 <= secret < PRIME:
        raise ConfigError("secret must lie in [0, PRIME)", field="secret")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ConfigError("x-coordinates must be distinct and in (0, PRIME)", field="xs")
    if not 1 <= threshold <= len(xs):
        raise ConfigError(f"threshold must lie in [1, {len(xs)}], got {threshold}", field="threshold")
    if coefficients is None:
        coefficients = [random_field_element(entropy) for _ in range(threshold - 1)]
    elif len(coefficients) != threshold - 1 or any(not 0 <= c < PRIME for c in coefficients):
        raise ConfigError(f"need {threshold - 1} coefficients in [0, PRIME)", field="coefficients")
    polynomial = [secret, *coefficients]
    return {x: evaluate_polynomial(polynomial, x) for x in xs}


@lru_cache(maxsize=4096)
def lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """Weights l_i with f(0) = sum(l_i * f(x_i)) for any f of degree < len(xs).

    l_i = prod_{j != i} x_j / (x_j - x_i). Holders' x-coordinates are small (roster positions), so
    the products stay small integers until one batched modular inversion; the weights depend only
    on which holders answered, so they are cached across the secrets of a round.
    """
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ProtocolError("share x-coordinates must be distinct and in (0, PRIME)")
    numerators, denominators = [], []
    for i, x_i in enumerate(xs):
        numerator, denominator = 1, 1
        for j, x_j in enumerate(xs):
            if j != i:
                numerator *= x_j
                denominator *= x_j - x_i
        numerators.append(numerator % PRIME)
        denominators.append(denominator % PRIME)
    # Montgomery's trick: invert all denominators with one modular inversion.
    prefix = [1]
    for d in denominators:
        prefix.append(prefix[-1] * d % PRIME)
    inverse = pow(prefix[-1], -1, PRIME)
    weights = [0] * len(xs)
    for i in range(len(xs) - 1, -1, -1):
        weights[i] = numerators[i] * inverse * prefix[i] % PRIME
        inverse = inverse * denominators[i] % PRIME
    return tuple(weights)


def reconstruct_secret(shares: Mapping[int, int], threshold: int) -> int:
    """f(0) by Lagrange interpolation through `threshold` of the shares (the lowest x first).

    Fewer than `threshold` shares raise: t - 1 shares are consistent with every secret.
    """
    if len(shares) < threshold:
        raise ProtocolError(f"need {threshold} shares to reconstruct a secret, have {len(shares)}")
    points = sorted(shares.items())[:threshold]
    weights = lagrange_at_zero(tuple(x for x, _ in points))
    return sum(weight * y for weight, (_, y) in zip(weights, points, strict=True)) % PRIME


def encode_share(value: int) -> bytes:
    """A field element as 66 big-endian bytes (the wire form of one share)."""
    return value.to_bytes(SHARE_BYTES, "big")


def decode_share(data: bytes, *, firm: str | None = None, stage: str | None = None) -> int:
    """Inverse of `encode_share`; refuses wrong lengths and values outside the field."""
    if len(data) != SHARE_BYTES:
        raise ProtocolError(f"a share must be {SHARE_BYTES} bytes, got {len(data)}", firm=firm, stage=stage)
    value = int.from_bytes(data, "big")
    if value >= PRIME:
        raise ProtocolError("share value lies outside the field", firm=firm, stage=stage)
    return value
