"""Append-only, hash-chained, signed JSON Lines writer for one run's privacy ledger.

Each entry is checked against its schema, chained to the previous line by SHA-256, signed with
Ed25519, written as one canonical line, flushed and fsync'ed before `append` returns: a crash
leaves a valid prefix (at worst with a torn last line, which the verifier reports).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from silobridge.errors import ConfigError
from silobridge.privacy.ledger.entries import ENTRY_MODELS, ENVELOPE_FIELDS, FORMAT
from silobridge.privacy.ledger.sealing import GENESIS_HASH, canonical_bytes, public_key_hex, sha256_hex, sign_entry


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


class LedgerWriter:
    """Writes a new ledger at `path` (refusing to overwrite one) and appends entries to it."""

    def __init__(self, path: str | Path, signing_key: Ed25519PrivateKey, header: Mapping[str, Any]):
        self.path = Path(path)
        self._key = signing_key
        self._prev = GENESIS_HASH
        self._index = 0
        try:
            self._file: BinaryIO | None = open(self.path, "xb")  # noqa: SIM115 - kept open for appends
        except FileExistsError as err:
            raise ConfigError(
                "a ledger already exists here; a run never overwrites one", source=str(self.path)
            ) from err
        _fsync_directory(self.path.parent)
        self.append("header", {**header, "format": FORMAT, "public_key": public_key_hex(signing_key)})

    @property
    def entries_written(self) -> int:
        return self._index

    @property
    def closed(self) -> bool:
        return self._file is None

    def append(self, kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Validate, chain, sign and durably write one entry; returns the entry as written."""
        if self._file is None:
            raise ConfigError("the ledger is closed", source=str(self.path))
        clash = ENVELOPE_FIELDS & set(body)
        if clash:
            raise ConfigError(f"body fields {sorted(clash)} are reserved for the envelope", field="ledger entry")
        entry = sign_entry({**body, "index": self._index, "kind": kind, "time": _now(), "prev": self._prev}, self._key)
        try:
            ENTRY_MODELS[kind].model_validate(entry)
        except (KeyError, ValidationError) as err:
            raise ConfigError(f"not a valid '{kind}' ledger entry: {err}", field="ledger entry") from err
        line = canonical_bytes(entry)
        self._file.write(line + b"\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._prev = sha256_hex(line)
        self._index += 1
        return entry

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _fsync_directory(directory: Path) -> None:
    """Make the new file's directory entry durable too, so a crash cannot lose the whole file."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
