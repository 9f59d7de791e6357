"""The coordinator's long-term ledger key: an Ed25519 key pair with an identity every partner holds.

The private key lives in a PEM (PKCS#8) file readable by its owner only (mode 0600); its raw public
key, hex-encoded, goes into the federation file (`[privacy] ledger_public_key`). A ledger signed by
that key can be checked by anyone holding the federation file, whatever the run directory says.
Public keys are compared as bytes, so the case of their hex does not matter.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from silobridge.errors import ConfigError

PUBLIC_SUFFIX = ".pub"


def public_key_bytes(hex_key: str, *, source: str = "public key") -> bytes:
    """The 32 raw bytes of a hex-encoded Ed25519 public key (either case); ConfigError otherwise."""
    text = hex_key.strip()
    try:
        raw = bytes.fromhex(text)
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise ConfigError(f"not a hex-encoded 32-byte Ed25519 public key: {hex_key!r}", field=source) from None
    return raw


def raw_public(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def same_key(a: str | bytes, b: str | bytes) -> bool:
    """Whether two public keys (hex in any case, or raw bytes) are the same key."""
    raw_a = a if isinstance(a, bytes) else public_key_bytes(a)
    raw_b = b if isinstance(b, bytes) else public_key_bytes(b)
    return raw_a == raw_b


def write_signing_key(path: Path, *, overwrite: bool = False) -> tuple[Path, str]:
    """Make a new key pair: PEM private key at `path` (0600) and its public hex at `path`.pub."""
    public_path = path.with_name(path.name + PUBLIC_SUFFIX)
    if not overwrite and (path.exists() or public_path.exists()):
        raise ConfigError(f"{path} or {public_path} already exists; pass --overwrite to replace it", field="--out")
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    if overwrite and path.exists():
        path.unlink()
    save_signing_key(key, path)
    public_hex = raw_public(key).hex()
    public_path.write_text(public_hex + "\n", encoding="ascii")
    return public_path, public_hex


def save_signing_key(key: Ed25519PrivateKey, path: Path) -> None:
    """Write `key` as PEM at a new `path`, readable by its owner only (from the moment it exists)."""
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others, not even briefly
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """Read a PEM Ed25519 private key; refuses a file others can read, or anything that is not such a key."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read the ledger key: {err.strerror}", source=str(path)) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"the ledger's private key is accessible to other users (mode {stat.S_IMODE(mode):04o}); chmod 600 it",
            source=str(path),
        )
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"not an unencrypted PEM private key: {err}", source=str(path)) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"an Ed25519 key is needed, this is a {type(key).__name__}", source=str(path))
    return key
