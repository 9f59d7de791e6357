"""Checkpoint and resume: a run killed or interrupted continues from its last completed round.

`Checkpoints` writes a run's checkpoints (`federation.checkpoint`) and, in a resumed run, hands the
training loop the state it continues from. Under DP the privacy ledger is the commit point of a round:

- the round's models are written as a pending checkpoint, holding the round's releases, before its
  first ledger entry; then the entries; then the checkpoint proper (which points at the last entry);
- on resume the ledger is reopened (verified under the run's key, a torn last line moved aside), every
  entry up to the checkpoint's pointer must be the checkpoint's (same SHA-256), and a `resume` entry is
  written; the only releases allowed beyond the pointer are those of the pending round, whose missing
  entries are then recorded. The pending round is thereby complete, charged once, and the run continues
  from exactly the models the ledger charged for. A round whose sum never completed left no pending
  checkpoint and no entry: it is redone, and charged when it completes.

Why this design: a release is charged when its entry is written, and a run never continues from models
the ledger has not charged (or charged for other models). Redoing a charged round instead would, under
the central mechanism's fresh noise, release a second draw charged once. `silobridge audit` checks the
result: the resume entry's pointer, and that no firm is charged twice for one release id.

Scope: the FedAvg rounds of the MLP family, each release of the linear family (`federation.linear_resume`:
a completed release is replayed from its checkpoint, never summed or charged again) and the DP efficiency
release after them (`federation.efficiency_resume`, the same way). Any other release beyond the checkpoint is
refused, naming it, rather than charged again. Query sessions (`silobridge query --plan`) are checkpointed after every
step the same way (`federation.query_resume`), a step's release standing where a round's does.
`silobridge run --resume` (the network path) resumes through the same ServerApp code in a new Flower run
(`RESUME_KEY` in its run config); secure aggregation starts afresh with it, and a partner's own per-run budget
is counted by our run id in its lifetime odometer where it keeps one (`join --state`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from silobridge.errors import ConfigError
from silobridge.federation.checkpoint import (
    CHECKPOINT_FILE,
    PENDING_FILE,
    Checkpoint,
    read_checkpoint,
    release_from_dict,
    release_to_dict,
    write_checkpoint,
)
from silobridge.federation.ledger_signer import PER_RUN
from silobridge.federation.privacy_report import LEDGER_FILE
from silobridge.federation.rundir import CONFIG_FILE, RunDirectory, live_runs
from silobridge.federation.settings import NODES
from silobridge.privacy.ledger import PrivacyRun, Release
from silobridge.privacy.ledger.keys import load_signing_key, save_signing_key

RUN_KEY_FILE = "ledger_signing_key.pem"  # a per-run ledger key, owner-only, for a resumed run to continue the chain

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from silobridge.federation.settings import RunSettings
    from silobridge.privacy.ledger.run import LedgerState


class Checkpoints:
    """One run's checkpoints: written after every round; read back, and reconciled with the ledger, on resume."""

    def __init__(self, rundir: RunDirectory, config_sha256: str, *, resuming: bool):
        self.rundir = rundir
        self.config_sha256 = config_sha256
        self.resuming = resuming
        self.start: Checkpoint | None = None  # what a resumed run continues from (after `reconcile`, under DP)
        self.last: Checkpoint | None = None  # the latest checkpoint committed (or resumed from) in this run
        if resuming:
            path = rundir.partial / CHECKPOINT_FILE
            self.start = read_checkpoint(path) if path.exists() else None
            if self.start is not None and self.start.config_sha256 != config_sha256:
                raise ConfigError(
                    "the checkpoint was written under another configuration than the run directory's config.json",
                    source=str(path),
                )
            self.last = self.start

    def latest_with(self, ledger: PrivacyRun | None, dropped: list[dict[str, Any]], **fields: Any) -> Checkpoint:
        """The latest checkpoint (or round 0's) moved to the ledger's current entry, with `fields` replaced:
        what the linear family's and the efficiency release's checkpoints add to the rounds'."""
        entries, last_hash = ledger.pointer if ledger is not None else (None, None)
        base = self.last or Checkpoint(round=0, config_sha256=self.config_sha256, weights={})
        return replace(
            base,
            history=list(base.history),
            dropped=list(dropped),
            ledger_entries=entries,
            ledger_hash=last_hash,
            releases=[],
            **fields,
        )

    def _path(self, name: str) -> Path:
        return self.rundir.partial / name

    def pending(self, checkpoint: Checkpoint, releases: list[Release]) -> None:
        """Before a round's first ledger entry: its models, records and releases."""
        checkpoint.releases = [release_to_dict(release) for release in releases]
        write_checkpoint(self._path(PENDING_FILE), checkpoint)

    def commit(self, checkpoint: Checkpoint) -> None:
        """The round is complete (its entries written): the checkpoint proper, then the pending one goes."""
        checkpoint.releases = []
        write_checkpoint(self._path(CHECKPOINT_FILE), checkpoint)
        self._path(PENDING_FILE).unlink(missing_ok=True)
        self.last = checkpoint
        if checkpoint.round > 0 or checkpoint.released:
            self.rundir.keep_on_failure = True  # completed rounds can be resumed: never delete them

    def signing_key(self, key: Ed25519PrivateKey, key_kind: str) -> Ed25519PrivateKey:
        """The key that continues the ledger's chain: a resumed run's per-run key, kept in its folder
        (owner-only), or else `key`. A per-run key proves nothing against whoever can edit the folder; the
        audit says so of any per-run key."""
        run_key = self._path(RUN_KEY_FILE)
        if self.resuming and key_kind == PER_RUN and run_key.exists():
            return load_signing_key(run_key)
        return key

    def open_ledger(self, key: Ed25519PrivateKey, key_kind: str, start: Callable[[Path], PrivacyRun]) -> PrivacyRun:
        """The run's ledger (training and query sessions alike): a resumed run's reopened, verified and
        reconciled with the checkpoint; otherwise `start(path)`, its per-run key kept for a later resume.
        From here privacy may be spent, so the run's folder survives a failure; Ctrl-C closes the ledger."""
        self.rundir.keep_on_failure = True
        path = self._path(LEDGER_FILE)
        if self.resuming and path.exists():
            ledger, state = PrivacyRun.reopen(path, key)
            live_runs.ledger_opened(self.rundir, ledger)
            self.reconcile(ledger, state)
            return ledger
        if self.start is not None:
            raise ConfigError(
                f"the checkpoint records releases charged in {LEDGER_FILE}, which the folder no longer holds",
                source=str(self.rundir.partial),
            )
        if key_kind == PER_RUN:
            save_signing_key(key, self._path(RUN_KEY_FILE))
        ledger = start(path)
        live_runs.ledger_opened(self.rundir, ledger)
        return ledger

    def reconcile(self, ledger: PrivacyRun, state: LedgerState) -> None:
        """A resumed private run's ledger against its checkpoint: write the resume entry, finish a pending
        round (record whichever of its releases the ledger lacks) and make it the starting point."""
        ledger_path = str(ledger.path)
        header = state.entries[0]
        if header.get("config_sha256") != self.config_sha256:
            raise ConfigError(
                "the ledger was opened under another configuration than config.json records", source=ledger_path
            )
        start = self.start
        entries, last_hash = (1, state.hashes[0]) if start is None else (start.ledger_entries, start.ledger_hash)
        if entries is None or last_hash is None:
            raise ConfigError(
                "the checkpoint holds no pointer into the ledger", source=str(self._path(CHECKPOINT_FILE))
            )
        if entries > len(state.entries) or state.hashes[entries - 1] != last_hash:
            raise ConfigError(
                f"the checkpoint points at ledger entry {entries - 1}, which the ledger does not hold as written: "
                "the ledger and the checkpoint are not of the same run",
                source=ledger_path,
            )
        done = start.round if start is not None else 0
        pending = self._pending(start.position if start is not None else (0, 0, 0))
        planned = {
            (item["release_id"], tuple(item["firms"])) for item in (pending.releases if pending is not None else [])
        }
        recorded: set[str] = set()
        for index, entry in enumerate(state.entries[entries:], start=entries):
            if entry["kind"] != "release":
                continue
            if (entry["release_id"], tuple(entry["firms"])) not in planned:
                raise ConfigError(
                    f"entry {index} records release '{entry['release_id']}' after the checkpoint of round {done}, "
                    "which the checkpoint cannot account for: resuming would charge it twice. Audit the run "
                    "(silobridge audit) and start a new one",
                    source=ledger_path,
                )
            recorded.add(entry["release_id"])
        last = state.entries[-1]
        ledger.resumed(
            checkpoint_round=done,
            entries=entries,
            last_hash=last_hash,
            torn=state.torn,
            after_end=last["reason"] if last["kind"] == "end" else None,
        )
        if pending is None:
            return
        for item in pending.releases:
            if item["release_id"] not in recorded:
                ledger.record(release_from_dict(item))
        finished = len(pending.released) > (len(start.released) if start is not None else 0)
        # the efficiency release just finished carries its spend in the ledger only: no record to update
        efficiency = pending.efficiency is not None and (start is None or start.efficiency is None)
        if pending.linear is not None and finished:
            pending.linear["history"][-1]["epsilon"] = ledger.overall_epsilon  # the linear release just finished
        elif pending.queries is not None and finished:
            pending.queries["steps"][-1]["epsilon_after"] = ledger.overall_epsilon  # the query step just finished
        elif not efficiency:
            for record in pending.history:
                if record.get("round") == pending.round and "epsilon" in record:
                    record["epsilon"] = ledger.overall_epsilon
        pending.ledger_entries, pending.ledger_hash = ledger.pointer
        self.commit(pending)
        self.start = pending

    def _pending(self, committed: tuple[int, int, int]) -> Checkpoint | None:
        """The pending checkpoint of the round (or linear release) after the last complete one, whose position
        is `committed`; one not beyond it is stale."""
        path = self._path(PENDING_FILE)
        if not path.exists():
            return None
        pending = read_checkpoint(path)
        if pending.position <= committed or pending.config_sha256 != self.config_sha256:
            path.unlink()  # written before a checkpoint that followed it: nothing in it is needed
            return None
        return pending


def resume_command(folder: Path) -> str | None:
    """The command that resumes the run kept in `folder` (a query session, a simulation or a run over the
    real federation); None if it holds no checkpoint to resume from."""
    if not (folder / CHECKPOINT_FILE).exists():
        return None
    try:
        recorded = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict):
        return None
    network = (recorded.get("run_config") or {}).get("data") == NODES
    if "queries" in recorded:
        command = "query --network" if network else "query"
    else:
        command = "run" if network else "simulate"
    return f"silobridge {command} --resume {folder}"


def network_resume_config(run_dir: Path, given: Mapping[str, object]) -> dict[str, Any]:
    """The run config `silobridge run --resume` sends: the recorded one, with the scenario's own rounds and
    seed left to the federation file (the network run was started without overrides: parsed again as
    overrides they would change 'set', and the run would differ from itself). `given` as for
    `resume_run_config`; a folder that is not a run over the real federation is refused."""
    run_config = resume_run_config(run_dir, given)
    if run_config.get("data") != NODES:
        raise ConfigError(
            f"{run_dir} holds a simulation (data {run_config.get('data')!r}), not a run over the federation's "
            "nodes: resume it with `silobridge simulate --resume`",
            field="--resume",
        )
    return {**run_config, "num-rounds": 0, "seed": -1}


def check_scenario_unchanged(run_dir: Path, settings: RunSettings) -> None:
    """Refuse to resume when the scenario (or federation file) resolves differently now, naming the field."""
    recorded = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8")).get("scenario")
    changed = changed_scenario_field(recorded, settings.scenario.model_dump(mode="json"))
    if changed is not None:
        raise ConfigError(
            f"the scenario's '{changed}' differs from the one the run started with (the scenario file or its "
            "data changed since): a resumed run keeps every setting",
            source=str(settings.scenario_path),
            field=changed,
        )


def resume_run_config(run_dir: Path, given: Mapping[str, object]) -> dict[str, Any]:
    """The run config a resumed run uses: the one its run directory recorded. `given` holds the settings
    asked for on the command line; any that differs from the recorded one is refused, by name."""
    config_path = run_dir / CONFIG_FILE
    if not run_dir.is_dir() or not config_path.exists():
        raise ConfigError(f"{run_dir} is not a run directory that can be resumed (no {CONFIG_FILE})", field="--resume")
    try:
        recorded = json.loads(config_path.read_text(encoding="utf-8"))
        run_config = dict(recorded["run_config"])
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"unreadable run configuration: {err}", source=str(config_path)) from None
    for key, value in given.items():
        if key == "set":  # the recorded overrides also hold --rounds and --seed as overrides
            recorded_parts = set(str(run_config.get(key) or "").split(";"))
            if set(str(value).split(";")) - {""} <= recorded_parts:
                continue
        if str(run_config.get(key)) != str(value):
            raise ConfigError(
                f"the run was started with {key}={run_config.get(key)!r}, and --resume was given {value!r}: "
                "a resumed run keeps every setting (omit it, or start a new run)",
                source=str(config_path),
                field=key,
            )
    return run_config


def changed_scenario_field(recorded: Any, now: Any, prefix: str = "") -> str | None:
    """The first field (dotted path) where the scenario as recorded and as resolved now differ; None if equal."""
    if isinstance(recorded, dict) and isinstance(now, dict):
        for key in sorted(set(recorded) | set(now)):
            found = changed_scenario_field(recorded.get(key), now.get(key), f"{prefix}{key}.")
            if found is not None:
                return found
        return None
    if isinstance(recorded, list) and isinstance(now, list) and len(recorded) == len(now):
        for index, (a, b) in enumerate(zip(recorded, now, strict=True)):
            found = changed_scenario_field(a, b, f"{prefix}{index}.")
            if found is not None:
                return found
        return None
    return None if recorded == now else prefix.rstrip(".") or "scenario"
