"""X25519 key pairs and key agreement, with failures turned into errors that name the firm."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from silobridge.errors import ProtocolError
from silobridge.privacy.secagg.kdf import digest

KEY_BYTES = 32

Entropy = Callable[[int], bytes]
"""A source of random bytes: `os.urandom` in production, a seeded source in tests."""

# A fixed scalar for probing advertised keys: X25519 with a low-order point gives the all-zero
# secret, which `cryptography` refuses, so one trial exchange tells a bad key from a good one.
_PROBE_KEY = X25519PrivateKey.from_private_bytes(digest("public-key-probe"))


@dataclass(frozen=True, eq=False)
class KeyPair:
    """An X25519 key pair; `public_bytes` is what travels, the private key never leaves the firm."""

    private_key: X25519PrivateKey
    public_bytes: bytes

    @classmethod
    def generate(cls, entropy: Entropy) -> KeyPair:
        """A fresh key pair from 32 bytes of `entropy` (X25519 clamps the scalar itself)."""
        return cls.from_private_bytes(entropy(KEY_BYTES))

    @classmethod
    def from_private_bytes(cls, data: bytes) -> KeyPair:
        private_key = X25519PrivateKey.from_private_bytes(data)
        return cls(private_key, private_key.public_key().public_bytes_raw())

    def private_bytes(self) -> bytes:
        return self.private_key.private_bytes_raw()


def check_public_key(data: bytes, *, firm: str, stage: str) -> None:
    """Refuse a public key that is not 32 bytes or lies in the small subgroup (zero shared secret)."""
    if not isinstance(data, bytes) or len(data) != KEY_BYTES:
        raise ProtocolError(f"public key must be {KEY_BYTES} bytes", firm=firm, stage=stage)
    agree(_PROBE_KEY, data, firm=firm, stage=stage)


AGREEMENT_CACHE_SIZE = 1 << 14
"""Agreements a process remembers: every neighbour's, for each mask key and the share channel, of
the few firms one process serves (a simulation worker serves many in turn)."""


@functools.lru_cache(maxsize=AGREEMENT_CACHE_SIZE)
def _exchange(private_raw: bytes, peer_public: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private_raw).exchange(X25519PublicKey.from_public_bytes(peer_public))


def agree(private_key: X25519PrivateKey, peer_public: bytes, *, firm: str, stage: str) -> bytes:
    """X25519(private_key, peer_public); `firm` is the peer, named if its key is unusable.

    Memoised per process on the key bytes: a firm restored from `context.state` for every message
    would otherwise redo the same agreements with all its neighbours twice a round. The cache holds
    only what the process that holds the private keys can compute anyway.
    """
    try:
        return _exchange(private_key.private_bytes_raw(), peer_public)
    except ValueError as err:
        raise ProtocolError(
            f"key agreement failed (low-order or malformed public key): {err}", firm=firm, stage=stage
        ) from err
