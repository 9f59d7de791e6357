"""The bytes a ledger entry is hashed and signed over, and the Ed25519 signing itself.

Canonical JSON: keys sorted, no spaces, UTF-8, no NaN or infinity (Python's `json` with
`sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False`; floats in their
shortest round-trip form). Every line of a ledger is exactly the canonical bytes of its entry, so
the verifier can re-derive them and refuse a line that was rewritten in another form.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from silobridge.errors import ConfigError

GENESIS_HASH = "0" * 64  # the `prev` of the header: there is no entry before it
SIGNATURE_FIELD = "signature"


def canonical_bytes(obj: Any) -> bytes:
    """Canonical JSON of `obj` as UTF-8 bytes."""
    try:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as err:
        raise ConfigError(f"ledger values must be finite JSON numbers: {err}", field="ledger entry") from err
    return text.encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def config_hash(config: Any) -> str:
    """SHA-256 of a run configuration's canonical JSON (for the header's `config_sha256`)."""
    return sha256_hex(canonical_bytes(config))


def public_key_hex(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The raw 32-byte Ed25519 public key, hex-encoded."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def load_public_key(hex_key: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(hex_key))
    except ValueError as err:
        raise ConfigError(f"not a hex-encoded 32-byte Ed25519 public key: {hex_key!r}", field="public_key") from err


def unsigned(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The entry without its signature: what the signature covers."""
    return {key: value for key, value in entry.items() if key != SIGNATURE_FIELD}


def sign_entry(entry: Mapping[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """`entry` with an Ed25519 signature over its canonical bytes added."""
    if SIGNATURE_FIELD in entry:
        raise ConfigError("entry is already signed", field=SIGNATURE_FIELD)
    return {**entry, SIGNATURE_FIELD: key.sign(canonical_bytes(entry)).hex()}


def signature_valid(entry: Mapping[str, Any], key: Ed25519PublicKey) -> bool:
    """Whether `entry`'s signature is valid for its other fields under `key`."""
    try:
        signature = bytes.fromhex(entry[SIGNATURE_FIELD])
        key.verify(signature, canonical_bytes(unsigned(entry)))
    except (KeyError, TypeError, ValueError, InvalidSignature):
        return False
    return True
