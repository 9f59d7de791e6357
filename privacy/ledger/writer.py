"""Append-only, hash-chained, signed JSON Lines writer for one run's privacy ledger.

Each entry is checked against its schema, chained to the previous line by SHA-256, signed with
Ed25519, written as one canonical line, flushed and fsync'ed before `append` returns: a crash
leaves a valid prefix (at worst with a torn last line, which the verifier reports). `reopen`
continues such a prefix for a resumed run: a torn last line is moved, byte for byte, to a file of its
own beside the ledger (never deleted) and the chain continues after the last whole entry.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from silobridge.errors import ConfigError
from silobridge.privacy.ledger.entries import ENTRY_MODELS, ENVELOPE_FIELDS, FORMAT
from silobridge.privacy.ledger.sealing import GENESIS_HASH, canonical_bytes, public_key_hex, sha256_hex, sign_entry


@dataclass(frozen=True)
class TornTail:
    """A last line a crash cut short, moved out of the ledger when the run resumed."""

    entry: int  # the index the torn entry would have had
    length: int
    sha256: str
    kept_as: str  # file name beside the ledger

    def to_dict(self) -> dict[str, int | str]:
        return {"entry": self.entry, "length": self.length, "sha256": self.sha256, "kept_as": self.kept_as}


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

    @classmethod
    def reopen(cls, path: str | Path, signing_key: Ed25519PrivateKey) -> tuple[LedgerWriter, TornTail | None]:
        """Continue the ledger at `path` after its last whole entry (the caller verified it first).

        A torn last line (a write cut by a crash) is kept as `<ledger>.torn-<entry>` and cut from the
        ledger, so that the next entry chains to the last whole one; returns what was moved, if anything.
        """
        path = Path(path)
        data = path.read_bytes()
        cut = data.rfind(b"\n") + 1  # the bytes after the last newline are a torn write
        torn: TornTail | None = None
        whole = data[:cut].split(b"\n")[:-1]
        if cut < len(data):
            kept = path.with_name(f"{path.name}.torn-{len(whole)}")
            with open(kept, "xb") as handle:  # never over an earlier one
                handle.write(data[cut:])
                handle.flush()
                os.fsync(handle.fileno())
            torn = TornTail(entry=len(whole), length=len(data) - cut, sha256=sha256_hex(data[cut:]), kept_as=kept.name)
            with open(path, "r+b") as handle:
                handle.truncate(cut)
                os.fsync(handle.fileno())
            _fsync_directory(path.parent)
        if not whole:
            raise ConfigError("the ledger has no whole entry to continue after", source=str(path))
        writer = cls.__new__(cls)
        writer.path = path
        writer._key = signing_key
        writer._prev = sha256_hex(whole[-1])
        writer._index = len(whole)
        writer._file = open(path, "ab")  # noqa: SIM115 - kept open for appends
        return writer, torn

    @property
    def entries_written(self) -> int:
        return self._index

    @property
    def last_hash(self) -> str:
        """SHA-256 of the last line written: with `entries_written`, a pointer a checkpoint keeps."""
        return self._prev

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
