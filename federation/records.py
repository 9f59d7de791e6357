"""Conversions between our payloads and Flower records: the only place that knows record keys."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from silobridge.contract.config import FederationSpec
from silobridge.errors import ConfigError, ProtocolError
from silobridge.federation.array_pack import PACKED_STYPE, PackError, pack_arrays, unpack_arrays
from silobridge.privacy.secagg.layout import Segment, VectorLayout

RUN = "run"  # ConfigRecord: the federation spec every request carries
INSTRUCTION = "instruction"  # ConfigRecord: what to do this round
NORMALISER = "normaliser"  # ArrayRecord: mean and std of the risk features
LAYOUT = "layout"  # ConfigRecord: the segments of the sum this request asks for
SEGMENTS = "segments"  # ArrayRecord: a firm's float segments (plain aggregation only)
SECAGG = "secagg"  # ConfigRecord: a secure-aggregation protocol message
MASKED = "masked"  # ArrayRecord: a firm's masked vector (secure aggregation)
REPLY = "reply"  # ConfigRecord: scalars a firm reports (its manifest)
ANALYTICS = "analytics"  # ConfigRecord: one analytics query step (silobridge.contract.query_protocol.QueryStep)
EFFICIENCY_GROUPS = "efficiency_groups"  # ConfigRecord: the server's efficiency slot assignment (EfficiencyGroups)
STAT_GROUPS = "stat_groups"  # ConfigRecord: the server's test-statistics slots per model (StatGroups)


def secagg_run_id(flower_run_id: int) -> str:
    """The run identity both halves bind secure aggregation to: Flower's own run id."""
    return f"flwr-run-{flower_run_id}"


def weights_key(kind: str) -> str:
    """ArrayRecord key of one model's weights."""
    return f"weights.{kind}"


PACKED = "packed"
"""The one key of a packed ArrayRecord (`arrays_record(..., pack=True)`)."""
PACK_ENV = "SILOBRIDGE_PACK_ARRAYS"
"""'0': our records keep one Array per name, as before session 10 (the network benchmark runs both side by side).
Readers take either form, so a sender's choice never breaks its receivers."""


def arrays_record(arrays: Mapping[str, np.ndarray], *, pack: bool | None = None) -> ArrayRecord:
    """The arrays as a record: packed into one Array by default (federation/array_pack.py: one Flower object
    per record instead of two per array, so a message costs a networked run fewer requests each way); `pack=False`
    keeps one Array per name, for Flower's own strategies, which average the record's arrays themselves."""
    if pack is None:
        pack = os.environ.get(PACK_ENV, "1") != "0"
    if not pack:
        return ArrayRecord({name: Array(np.ascontiguousarray(value)) for name, value in arrays.items()})
    blob = pack_arrays(arrays)
    return ArrayRecord({PACKED: Array(dtype="uint8", shape=(len(blob),), stype=PACKED_STYPE, data=blob)})


def record_arrays(record: ArrayRecord) -> OrderedDict[str, np.ndarray]:
    """The record's arrays by name, packed or not; a packed record that does not unpack is a ProtocolError."""
    if any(array.stype == PACKED_STYPE for array in record.values()):
        if list(record) != [PACKED]:
            raise ProtocolError(f"a packed array record holds {sorted(record)}, expected only '{PACKED}'")
        try:
            return _unpack_recent(record[PACKED].data)
        except PackError as err:
            raise ProtocolError(f"a packed array record does not unpack: {err}") from None
    return OrderedDict((name, array.numpy()) for name, array in record.items())


def _unpack_recent(blob: bytes) -> OrderedDict[str, np.ndarray]:
    """`unpack_arrays`, decoding bytes seen lately once: a round sends every firm the same global weights (one
    packed record per model, and the normaliser's), and a process that serves many firms (a simulation's worker)
    decoded them once per firm. Each caller gets its own copies, writable, as from `unpack_arrays`."""
    with _recent_lock:
        arrays = _recent_unpacked.get(blob)
        if arrays is not None:
            _recent_unpacked.move_to_end(blob)
    if arrays is None:
        arrays = unpack_arrays(blob)
        with _recent_lock:
            _recent_unpacked[blob] = arrays
            while len(_recent_unpacked) > RECENT_UNPACKED:
                _recent_unpacked.popitem(last=False)
    return OrderedDict((name, array.copy()) for name, array in arrays.items())


RECENT_UNPACKED = 4
"""Packed payloads a process keeps decoded: a training request holds three (two models' weights, the normaliser)."""
_recent_unpacked: OrderedDict[bytes, OrderedDict[str, np.ndarray]] = OrderedDict()
_recent_lock = threading.Lock()


def request_content(spec: FederationSpec, *, run_id: str = "", **records: ArrayRecord | ConfigRecord) -> RecordDict:
    """A request: the federation spec, our run id (the ledger's, which a resumed run keeps while Flower's changes;
    empty where none is named) and the stage's records."""
    run = {"spec": spec.model_dump_json(), **({"run_id": run_id} if run_id else {})}
    return RecordDict({RUN: ConfigRecord(run), **records})


def read_run_id(message: Message) -> str | None:
    """Our run id as the request names it (`request_content`); None if it names none."""
    run = message.content.config_records.get(RUN)
    text = str(run.get("run_id") or "") if run is not None else ""
    return text or None


def layout_record(layout: VectorLayout) -> ConfigRecord:
    return ConfigRecord(
        {
            "names": [s.name for s in layout.segments],
            "lengths": [s.length for s in layout.segments],
            "bounds": [float(s.bound) for s in layout.segments],
            "precisions": [s.precision for s in layout.segments],
            "value_bits": layout.value_bits,
        }
    )


def read_layout(message: Message) -> VectorLayout:
    record = config_of(message, LAYOUT)
    try:
        names, lengths, bounds = list(record["names"]), list(record["lengths"]), list(record["bounds"])
        precisions = list(record["precisions"])
        if not len(names) == len(lengths) == len(bounds) == len(precisions):
            raise ValueError("names, lengths, bounds and precisions differ in length")
        segments = tuple(
            Segment(str(n), int(k), float(b), p)  # type: ignore[arg-type]
            for n, k, b, p in zip(names, lengths, bounds, precisions, strict=True)
        )
        return VectorLayout(segments, int(record["value_bits"]))
    except (KeyError, TypeError, ValueError, ConfigError) as err:
        raise ProtocolError(f"malformed layout: {err}", stage=message.metadata.message_type) from None


def read_spec(message: Message) -> FederationSpec:
    try:
        text = message.content.config_records[RUN]["spec"]
        return FederationSpec.model_validate_json(str(text))
    except (KeyError, ValueError) as err:
        raise ProtocolError(
            f"request carries no valid federation spec: {err}", stage=message.metadata.message_type
        ) from None


def config_of(message: Message, key: str) -> dict:
    try:
        return dict(message.content.config_records[key])
    except KeyError:
        raise ProtocolError(f"message has no '{key}' record", stage=message.metadata.message_type) from None


def arrays_of(message: Message, key: str) -> OrderedDict[str, np.ndarray]:
    try:
        return record_arrays(message.content.array_records[key])
    except KeyError:
        raise ProtocolError(f"message has no '{key}' record", stage=message.metadata.message_type) from None
