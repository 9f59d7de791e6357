"""A run's checkpoint: what the coordinator needs to continue after its last completed round.

One `.npz` file (numpy arrays only, no pickle) holds the global models bit for bit (and the linear
family's released vectors) and, as one JSON string, the round, the history records written so far, the
firms dropped, adaptive clipping's next clip norm, and a pointer into the privacy ledger (entries
written, SHA-256 of the last). It is written atomically (temporary file, fsync, `os.replace`, fsync of
the folder): a crash leaves the previous checkpoint or the new one, never half of one.

Under DP a round is committed by its ledger entries, so its checkpoint is written twice: as
`checkpoint.pending.npz` (with the round's releases, as the ledger will record them) before the first
entry, and as `checkpoint.npz` once every entry is written. A crash between the two leaves a pending
round that the resumed run finishes by recording whichever of its releases the ledger lacks
(`federation.resume`): the round's release is charged once, and the models it charged are the ones
the run continues from. The linear family's releases are checkpointed the same way, each with its released
vector and the noise generator's state (`federation.linear_resume`), and so are a query session's steps
(`federation.query_resume`) and the DP efficiency release (`federation.efficiency_resume`). Nothing else
random needs saving: the firms' DP-SGD noise and their stochastic rounding into the secure sum are derived
from their own seed and the round (`clients.secure_sum.rounding_seed`), the secure sum's result does not
depend on its masks (a resumed run starts a fresh key-agreement session), and the central mechanism's noise
is fresh OS entropy by design. With the firms' seeds fixed (`--noise-seed`) a resumed run's models equal an
uninterrupted run's bit for bit.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from silobridge.errors import ConfigError
from silobridge.privacy.dp import Sampling
from silobridge.privacy.dp.codec import event_from_json, event_to_json
from silobridge.privacy.dp.sampling import SamplingMethod
from silobridge.privacy.ledger import Release

CHECKPOINT_FILE = "checkpoint.npz"
PENDING_FILE = "checkpoint.pending.npz"
FORMAT = "silobridge-checkpoint/1"
_META = "meta"

Weights = dict[str, OrderedDict[str, np.ndarray]]


@dataclass
class Checkpoint:
    """The state after `round` completed rounds (0: before the first)."""

    round: int
    config_sha256: str
    weights: Weights
    history: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    clipped_total: int = 0
    clip_norm: float | None = None  # adaptive clipping's clip norm for the next round
    ledger_entries: int | None = None  # under DP: ledger entries written when the round completed
    ledger_hash: str | None = None  # ... and the SHA-256 of the last of them
    releases: list[dict[str, Any]] = field(default_factory=list)  # pending only: the round's releases
    # the linear family's progress (`federation.linear_resume`): its history records and noise generator's
    # state (JSON), and each completed release's released vector, by release id
    linear: dict[str, Any] | None = None
    released: dict[str, np.ndarray] = field(default_factory=dict)
    # a query session's progress (`federation.query_resume`): each completed step's report, in the order of
    # `released` (its released vector, by release id), and the noise generator's state after the last
    queries: dict[str, Any] | None = None
    # the DP efficiency release, the run's last (`federation.efficiency_resume`): which firms' sums it holds
    # (JSON), and its released (noised) vectors, 'before' and 'after'
    efficiency: dict[str, Any] | None = None
    efficiency_released: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def position(self) -> tuple[int, int, int]:
        """Where the run stands: FedAvg rounds done, then linear-family releases done, then the efficiency
        release (1 once done)."""
        return self.round, len(self.released), int(self.efficiency is not None)


def write_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Write `checkpoint` at `path` atomically and durably."""
    arrays: dict[str, np.ndarray] = {}
    order: dict[str, list[str]] = {}
    for kind, state in checkpoint.weights.items():
        order[kind] = list(state)
        for index, value in enumerate(state.values()):
            arrays[f"{kind}.{index}"] = np.asarray(value)
    for index, value in enumerate(checkpoint.released.values()):
        arrays[f"released.{index}"] = np.asarray(value)
    for name, value in checkpoint.efficiency_released.items():
        arrays[f"efficiency.{name}"] = np.asarray(value)
    meta = {
        "format": FORMAT,
        "round": checkpoint.round,
        "config_sha256": checkpoint.config_sha256,
        "parameters": order,
        "history": checkpoint.history,
        "dropped": checkpoint.dropped,
        "clipped_total": checkpoint.clipped_total,
        "clip_norm": checkpoint.clip_norm,
        "ledger_entries": checkpoint.ledger_entries,
        "ledger_hash": checkpoint.ledger_hash,
        "releases": checkpoint.releases,
        "linear": checkpoint.linear,
        "released": list(checkpoint.released),
        "queries": checkpoint.queries,
        "efficiency": checkpoint.efficiency,
        "efficiency_released": list(checkpoint.efficiency_released),
    }
    arrays[_META] = np.array(json.dumps(meta, default=_json_default))
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as handle:
        np.savez(handle, **arrays)  # type: ignore[arg-type]
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    _fsync_directory(path.parent)


def read_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint written by `write_checkpoint`; a damaged one is a ConfigError naming the file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data[_META]))
            if meta.get("format") != FORMAT:
                raise ConfigError(f"not a checkpoint of format {FORMAT}", source=str(path))
            weights = {
                kind: OrderedDict((name, data[f"{kind}.{index}"].copy()) for index, name in enumerate(names))
                for kind, names in meta["parameters"].items()
            }
            released = {name: data[f"released.{index}"].copy() for index, name in enumerate(meta["released"])}
            efficiency_released = {
                name: data[f"efficiency.{name}"].copy() for name in meta.get("efficiency_released", [])
            }
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(f"unreadable checkpoint: {err}", source=str(path)) from None
    return Checkpoint(
        round=int(meta["round"]),
        config_sha256=str(meta["config_sha256"]),
        weights=weights,
        history=list(meta["history"]),
        dropped=list(meta["dropped"]),
        clipped_total=int(meta["clipped_total"]),
        clip_norm=meta["clip_norm"],
        ledger_entries=meta["ledger_entries"],
        ledger_hash=meta["ledger_hash"],
        releases=list(meta["releases"]),
        linear=meta["linear"],
        released=released,
        queries=meta.get("queries"),
        efficiency=meta.get("efficiency"),
        efficiency_released=efficiency_released,
    )


def release_to_dict(release: Release) -> dict[str, Any]:
    """A release as a pending checkpoint keeps it, to be recorded by a resumed run if the ledger lacks it."""
    return {
        "release_id": release.release_id,
        "mechanism": release.mechanism,
        "event": event_to_json(release.event),
        "firms": list(release.firms),
        "sampling": release.sampling.to_dict(),
        "noise_multiplier": release.noise_multiplier,
        "clip_norm": release.clip_norm,
        "excluded_firms": list(release.excluded_firms),
        "parameters": dict(release.parameters),
    }


def release_from_dict(data: Mapping[str, Any]) -> Release:
    sampling = data["sampling"]
    return Release(
        release_id=data["release_id"],
        mechanism=data["mechanism"],
        event=event_from_json(data["event"]),
        firms=list(data["firms"]),
        sampling=Sampling(
            SamplingMethod(sampling["method"]),
            float(sampling["rate"]),
            sampling.get("population"),
            sampling.get("sample_size"),
        ),
        noise_multiplier=data["noise_multiplier"],
        clip_norm=data["clip_norm"],
        excluded_firms=list(data["excluded_firms"]),
        parameters=dict(data["parameters"]),
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
