"""HKDF-SHA256 derivations and SHA-256 digests over unambiguous, domain-separated context.

Every derived key binds its purpose and the run, session, round and firms it belongs to, so a key
made for one place can never be mistaken for, or replayed as, a key for another.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

DOMAIN = b"silobridge-secagg-v1"

Field = str | int | bytes


def encode_fields(*fields: Field) -> bytes:
    """Type-tagged, length-prefixed concatenation: different field tuples never encode alike.

    Plain concatenation would let ("ab", "c") collide with ("a", "bc"); the tag and the 4-byte length
    rule that out.
    """
    out = bytearray()
    for value in fields:
        if isinstance(value, bool):  # bool is an int subclass: refuse it rather than encode 0/1
            raise TypeError("encode_fields: bool is not a valid field")
        if isinstance(value, bytes):
            tag, data = b"b", value
        elif isinstance(value, str):
            tag, data = b"s", value.encode("utf-8")
        elif isinstance(value, int):
            tag, data = b"i", value.to_bytes(8, "big", signed=True)
        else:
            raise TypeError(f"encode_fields: unsupported field type {type(value).__name__}")
        out += tag + len(data).to_bytes(4, "big") + data
    return bytes(out)


def hkdf_sha256(secret: bytes, *, salt: bytes | None, info: bytes, length: int) -> bytes:
    """HKDF with SHA-256 (RFC 5869), the one place the protocol calls `cryptography`'s HKDF."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(secret)


def derive_key(secret: bytes, purpose: str, *context: Field, length: int = 32) -> bytes:
    """HKDF-SHA256 of `secret`, with `info` binding the purpose and the context fields (no salt)."""
    return hkdf_sha256(secret, salt=None, info=encode_fields(DOMAIN, purpose, *context), length=length)


def digest(purpose: str, *fields: Field) -> bytes:
    """SHA-256 of the domain-separated fields (used for commitments and the neighbour graph)."""
    return hashlib.sha256(encode_fields(DOMAIN, purpose, *fields)).digest()
