"""A firm's SuperNode key pair: what authenticates its node to the SuperLink.

Flower's node authentication takes an EC key on a NIST curve in OpenSSH format (the private key
for `flower-supernode --auth-supernode-private-key`, the public key for `flwr supernode
register`). A firm makes its pair locally and sends only the public half to the coordinator.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from silobridge.errors import ConfigError


@dataclass(frozen=True)
class NodeKeyFiles:
    private_key: Path
    public_key: Path
    fingerprint: str  # SHA-256 of the public key's OpenSSH line: read it to the coordinator out of band


def fingerprint(public_line: bytes) -> str:
    """The SHA-256 fingerprint of an OpenSSH public key line, as `ssh-keygen -l` prints it (base64)."""
    import base64

    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def make_node_keys(private_path: str | Path, *, overwrite: bool = False, comment: str = "") -> NodeKeyFiles:
    """Write a P-384 key pair: `<private_path>` (0600) and `<private_path>.pub` (OpenSSH)."""
    private = Path(private_path)
    public = private.with_name(private.name + ".pub")
    existing = [p.name for p in (private, public) if p.exists()]
    if existing and not overwrite:
        raise ConfigError(f"{', '.join(existing)} already exist; pass --overwrite to replace them (a key rotation)")
    private.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public_line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    if comment:
        public_line += b" " + comment.encode()
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_bytes)
    public.write_bytes(public_line + b"\n")
    return NodeKeyFiles(private, public, fingerprint(public_line))
