"""A firm's privacy odometer: what each of its data sets has spent, across every run, in a folder it owns.

A run's ledger bounds one run; a firm's budget that matters ("epsilon 10 per year on this data") spans
runs and query sessions. The odometer is the firm's own record, kept by its node and signed with the
node's own Ed25519 key (`odometer.key`, mode 0600), so no coordinator can reset it:

- `odometer.jsonl`: append-only, hash-chained, signed JSON Lines (canonical form, as the run ledger):
  a `header` (firm, public key), `limit` entries (the lifetime budget per data set: epsilon at delta),
  and one `spend` per release the node took part in (data set, run, release, the DpEvent, and the data
  set's lifetime epsilon after it).
- `odometer.head`: the signed count and hash of the last entry, replaced atomically after each append,
  so that deleting entries at the end is detected too (the chain alone would only see gaps).

A spend is written (and fsync'ed) before the release leaves the node: a crash can over-count, never
under-count. A release asked again that is bit for bit the one already charged (a resumed run redoing a round
whose sum never completed, with the firm's own noise seed, on the same models) is charged once: `charge(...,
repeatable=True)` finds its spend by data set, run, release id and event, and writes nothing. The node names
such a release by what it was computed from (the models' digest), so a different release never matches.
Every open re-verifies chain, signatures, head and every stated total; any mismatch raises
`LedgerTampered`, and the node then refuses to take part. Epsilon per data set composes all its events by
RDP under add-or-remove-one (record level), at the lifetime delta. Deleting the whole folder resets
it, which no file can prevent: keep it with the firm's other records.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dp_accounting as dpa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from silobridge.errors import BudgetExhausted, ConfigError, LedgerTampered
from silobridge.privacy.dp.accounting import Account, AccountantKind, AccountingSpec, PrivacyUnit
from silobridge.privacy.dp.budget import Budget
from silobridge.privacy.dp.codec import event_from_json, event_to_json
from silobridge.privacy.ledger.keys import load_signing_key, raw_public
from silobridge.privacy.ledger.sealing import (
    GENESIS_HASH,
    canonical_bytes,
    load_public_key,
    sha256_hex,
    sign_entry,
    signature_valid,
)

FORMAT = "silobridge-odometer/1"
LOG_FILE = "odometer.jsonl"
HEAD_FILE = "odometer.head"
KEY_FILE = "odometer.key"
LOCK_FILE = "odometer.lock"
SPEC = AccountingSpec(kind=AccountantKind.RDP, unit=PrivacyUnit.RECORD)
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class DatasetSpend:
    """One data set's lifetime spend, recomputed from its recorded events."""

    dataset: str
    releases: int
    runs: tuple[str, ...]
    epsilon: float


@dataclass
class _State:
    entries: int
    prev: str
    limit: Budget | None
    accounts: dict[str, Account]
    releases: dict[str, int]
    runs: dict[str, list[str]]
    charged: set[tuple[str, str, str, str]] = field(default_factory=set)  # (data set, run, release, event JSON)
    run_events: dict[tuple[str, str], list[dpa.DpEvent]] = field(default_factory=dict)  # by (data set, run)


class Odometer:
    """The firm's lifetime record in `folder`; open with `Odometer.open` (verifies everything first)."""

    def __init__(self, folder: Path, firm: str, key: Ed25519PrivateKey, state: _State):
        self.folder = folder
        self.firm = firm
        self._key = key
        self._state = state

    # -- opening --------------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: str | Path, *, firm: str | None, lifetime: Budget | None = None) -> Odometer:
        """Open (or, given `firm`, create) the firm's odometer and verify it; `lifetime` sets or changes its budget.

        `firm` None reads an existing odometer whatever firm it belongs to (`silobridge budget`).
        Raises `LedgerTampered` if anything in the folder was altered, ConfigError if it belongs to
        another firm or no lifetime budget was ever set.
        """
        folder = Path(folder)
        if firm is None and not (folder / LOG_FILE).exists():
            raise ConfigError(f"no odometer here (no {LOG_FILE})", source=str(folder))
        folder.mkdir(parents=True, exist_ok=True)
        with _locked(folder):
            log = folder / LOG_FILE
            if not log.exists():
                if (folder / HEAD_FILE).exists() or (folder / KEY_FILE).exists():
                    raise LedgerTampered(f"{folder}: {LOG_FILE} is missing but the odometer's other files are not")
                odometer = cls._create(folder, str(firm))
            else:
                key = load_signing_key(folder / KEY_FILE)
                recorded_firm, state = _verify(folder, key)
                firm = recorded_firm if firm is None else firm
                if recorded_firm != firm:
                    raise ConfigError(
                        f"this odometer belongs to firm '{recorded_firm}', not '{firm}'", source=str(folder)
                    )
                odometer = cls(folder, firm, key, state)
            if lifetime is not None and lifetime != odometer._state.limit:
                odometer._append("limit", lifetime.to_dict())
                odometer._state.limit = lifetime
        if odometer._state.limit is None:
            raise ConfigError("no lifetime budget is set: give --lifetime-epsilon", source=str(folder))
        return odometer

    @classmethod
    def _create(cls, folder: Path, firm: str) -> Odometer:
        key = Ed25519PrivateKey.generate()
        fd = os.open(folder / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        odometer = cls(folder, firm, key, _State(0, GENESIS_HASH, None, {}, {}, {}))
        odometer._append("header", {"format": FORMAT, "firm": firm, "public_key": raw_public(key).hex()})
        return odometer

    # -- reading --------------------------------------------------------------------------------
    @property
    def lifetime(self) -> Budget:
        if self._state.limit is None:
            raise ConfigError("no lifetime budget is set", source=str(self.folder))
        return self._state.limit

    def spent(self, dataset: str) -> float:
        """The data set's lifetime epsilon so far, at the lifetime delta."""
        account = self._state.accounts.get(dataset)
        return 0.0 if account is None else account.epsilon(self.lifetime.delta)

    def preview(self, dataset: str, event: dpa.DpEvent) -> float:
        """The data set's lifetime epsilon if `event` were charged to it (nothing is written)."""
        account = self._state.accounts.get(dataset, Account.empty(SPEC)).compose(event)
        return account.epsilon(self.lifetime.delta)

    def releases_in_run(self, dataset: str, run_id: str) -> int:
        """How many releases of `dataset` the odometer charged to run `run_id`: a firm's own per-run count that
        outlives a Flower run (a resumed run keeps its run id)."""
        return self._state.runs.get(dataset, []).count(run_id)

    def holds(self, datasets: list[str], event: dpa.DpEvent, *, run_id: str, release_id: str) -> bool:
        """Whether every one of `datasets` already has this release (run, release id, event) charged."""
        key = _event_key(event)
        return bool(datasets) and all((d, run_id, release_id, key) in self._state.charged for d in datasets)

    def events_in_run(self, dataset: str, run_id: str) -> list[dpa.DpEvent]:
        """Every event charged to `dataset` for run `run_id` (rounds, linear releases, ...), in order: what the
        firm's own per-run budget composes, across Flower runs of one run of ours."""
        return list(self._state.run_events.get((dataset, run_id), []))

    def datasets(self) -> list[DatasetSpend]:
        state = self._state
        return [
            DatasetSpend(name, state.releases[name], tuple(dict.fromkeys(state.runs[name])), self.spent(name))
            for name in sorted(state.accounts)
        ]

    # -- spending -------------------------------------------------------------------------------
    def charge(
        self, datasets: list[str], event: dpa.DpEvent, *, run_id: str, release_id: str, repeatable: bool = False
    ) -> dict[str, float]:
        """Charge `event` to each of `datasets` before the release leaves; refuses (charging none) if any one
        would pass the lifetime budget. Returns each data set's lifetime epsilon after the charge.

        `repeatable`: the caller guarantees that a release under this run and release id is always the same
        bits (deterministic given what the id names); one already charged to every data set is then not
        charged again (releasing the same value twice reveals nothing more)."""
        with _locked(self.folder):
            _, self._state = _verify(self.folder, self._key)  # another process of this node may have charged
            if repeatable and self.holds(datasets, event, run_id=run_id, release_id=release_id):
                return {dataset: self.spent(dataset) for dataset in datasets}
            budget = self.lifetime
            after = {}
            for dataset in datasets:
                after[dataset] = self.preview(dataset, event)
                if after[dataset] > budget.epsilon:
                    raise BudgetExhausted(
                        f"firm '{self.firm}' refuses {release_id} of run {run_id}: its {dataset} data would reach "
                        f"lifetime epsilon {after[dataset]:.4g} (spent {self.spent(dataset):.4g} across runs), over "
                        f"its lifetime budget {budget.epsilon:g} at delta {budget.delta:g}"
                    )
            for dataset in datasets:
                self._append(
                    "spend",
                    {
                        "dataset": dataset,
                        "run_id": run_id,
                        "release_id": release_id,
                        "event": event_to_json(event),
                        "epsilon_after": after[dataset],
                    },
                )
                _apply(self._state, dataset, event, run_id, release_id)
            return after

    def _append(self, kind: str, body: dict[str, Any]) -> None:
        state = self._state
        entry = sign_entry(
            {**body, "index": state.entries, "kind": kind, "time": _now(), "prev": state.prev}, self._key
        )
        line = canonical_bytes(entry)
        with open(self.folder / LOG_FILE, "ab") as handle:
            handle.write(line + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        state.entries += 1
        state.prev = sha256_hex(line)
        _write_head(self.folder, self._key, state.entries, state.prev)


# -- verification -------------------------------------------------------------------------------


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def _event_key(event: dpa.DpEvent) -> str:
    return json.dumps(event_to_json(event), sort_keys=True)


def _apply(state: _State, dataset: str, event: dpa.DpEvent, run_id: str, release_id: str) -> None:
    state.accounts[dataset] = state.accounts.get(dataset, Account.empty(SPEC)).compose(event)
    state.releases[dataset] = state.releases.get(dataset, 0) + 1
    state.runs.setdefault(dataset, []).append(run_id)
    state.charged.add((dataset, run_id, release_id, _event_key(event)))
    state.run_events.setdefault((dataset, run_id), []).append(event)


def _write_head(folder: Path, key: Ed25519PrivateKey, entries: int, last: str) -> None:
    head = sign_entry({"format": FORMAT, "entries": entries, "last": last}, key)
    tmp = folder / (HEAD_FILE + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(canonical_bytes(head) + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, folder / HEAD_FILE)


def _verify(folder: Path, key: Ed25519PrivateKey) -> tuple[str, _State]:
    """Re-check every line, the head, and every stated total; returns the firm and the recomputed state."""
    public = load_public_key(raw_public(key).hex())
    data = (folder / LOG_FILE).read_bytes()
    if data and not data.endswith(b"\n"):
        raise LedgerTampered(f"{folder / LOG_FILE}: the last line is incomplete")
    state = _State(0, GENESIS_HASH, None, {}, {}, {})
    firm: str | None = None
    for index, line in enumerate(data.splitlines()):
        try:
            entry = json.loads(line)
        except ValueError:
            raise LedgerTampered(f"{folder / LOG_FILE}: not a JSON line", entry=index) from None
        if not isinstance(entry, dict) or canonical_bytes(entry) != line:
            raise LedgerTampered(f"{folder / LOG_FILE}: the line was rewritten", entry=index)
        if entry.get("index") != index or entry.get("prev") != state.prev:
            raise LedgerTampered(
                f"{folder / LOG_FILE}: entries were removed, inserted or reordered (index or chain)", entry=index
            )
        if not signature_valid(entry, public):
            raise LedgerTampered(f"{folder / LOG_FILE}: not signed by this node's odometer key", entry=index)
        firm = _replay(entry, index, state, firm, public_hex=raw_public(key).hex(), where=folder / LOG_FILE)
        state.entries += 1
        state.prev = sha256_hex(line)
    if firm is None:
        raise LedgerTampered(f"{folder / LOG_FILE}: no header entry", entry=0)
    _check_head(folder, public, state)
    return firm, state


def _replay(entry: dict[str, Any], index: int, state: _State, firm: str | None, *, public_hex: str, where: Path) -> str:
    kind = entry.get("kind")
    if (index == 0) != (kind == "header"):
        raise LedgerTampered(f"{where}: the header must be the first entry and only the first", entry=index)
    try:
        if kind == "header":
            if entry["format"] != FORMAT or entry["public_key"] != public_hex:
                raise LedgerTampered(f"{where}: header of another format or key", entry=index)
            return str(entry["firm"])
        if kind == "limit":
            state.limit = Budget(float(entry["epsilon"]), float(entry["delta"]))
        elif kind == "spend":
            event = event_from_json(entry["event"])
            dataset = str(entry["dataset"])
            _apply(state, dataset, event, str(entry["run_id"]), str(entry["release_id"]))
            recomputed = state.accounts[dataset].epsilon(state.limit.delta if state.limit else 1e-5)
            if abs(float(entry["epsilon_after"]) - recomputed) > _TOLERANCE * max(1.0, recomputed):
                raise LedgerTampered(
                    f"{where}: states epsilon {entry['epsilon_after']}, events give {recomputed}", entry=index
                )
        else:
            raise LedgerTampered(f"{where}: unknown entry kind {kind!r}", entry=index)
    except (KeyError, TypeError, ValueError, ConfigError) as err:
        raise LedgerTampered(f"{where}: malformed '{kind}' entry: {err}", entry=index) from None
    if firm is None:
        raise LedgerTampered(f"{where}: no header entry", entry=index)
    return firm


def _check_head(folder: Path, public: Any, state: _State) -> None:
    path = folder / HEAD_FILE
    try:
        head = json.loads(path.read_bytes())
    except (OSError, ValueError):
        raise LedgerTampered(f"{path}: missing or unreadable: entries may have been deleted") from None
    if not isinstance(head, dict) or not signature_valid(head, public):
        raise LedgerTampered(f"{path}: not signed by this node's odometer key")
    if head.get("entries") != state.entries or head.get("last") != state.prev:
        raise LedgerTampered(
            f"{path}: records {head.get('entries')} entries, {LOG_FILE} has {state.entries}: entries were deleted "
            "or the files were swapped"
        )


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One writer at a time (a node's requests may run in several processes)."""
    with open(folder / LOCK_FILE, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
