"""AES-256-GCM for the encrypted secret shares that the server routes between firms.

The associated data binds run, session, sender and recipient (and the stage), so the server cannot
replay a ciphertext into another run or session, or hand one firm's shares to a different firm.
"""

from __future__ import annotations

import functools

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from silobridge.errors import ProtocolError
from silobridge.privacy.secagg.kdf import DOMAIN, derive_key, encode_fields
from silobridge.privacy.secagg.stages import Stage

NONCE_BYTES = 12
TAG_BYTES = 16


def channel_key(agreement: bytes, *, run_id: str, session: int, sender: str, recipient: str) -> bytes:
    """The AES-256 key for shares from `sender` to `recipient` (one key per direction)."""
    return _channel_key(agreement, run_id, session, sender, recipient)


@functools.lru_cache(maxsize=1 << 14)
def _channel_key(agreement: bytes, run_id: str, session: int, sender: str, recipient: str) -> bytes:
    """Memoised: a firm restored for every message derives the same keys with all its neighbours."""
    return derive_key(agreement, "share-channel", run_id, session, sender, recipient)


def share_associated_data(*, run_id: str, session: int, sender: str, recipient: str) -> bytes:
    """What each share ciphertext is bound to, besides its key."""
    return encode_fields(DOMAIN, "share-keys", Stage.SHARE_KEYS.value, run_id, session, sender, recipient)


def seal(key: bytes, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """AES-GCM encryption; the caller supplies a fresh random 96-bit nonce per message."""
    return AESGCM(key).encrypt(nonce, plaintext, associated_data)


def open_sealed(key: bytes, nonce: bytes, ciphertext: bytes, associated_data: bytes, *, firm: str, stage: str) -> bytes:
    """AES-GCM decryption; a forged, altered or misrouted ciphertext raises naming the sender."""
    if len(nonce) != NONCE_BYTES:
        raise ProtocolError(f"share nonce must be {NONCE_BYTES} bytes, got {len(nonce)}", firm=firm, stage=stage)
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, associated_data)
    except InvalidTag as err:
        raise ProtocolError(
            "encrypted shares failed authentication (tampered, forged or sent to the wrong firm)",
            firm=firm,
            stage=stage,
        ) from err
