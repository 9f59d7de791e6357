"""Conversions between our payloads and Flower records: the only place that knows record keys."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from silobridge.config import FederationSpec
from silobridge.errors import ProtocolError

RUN = "run"  # ConfigRecord: the federation spec every message carries
INSTRUCTION = "instruction"  # ConfigRecord: what to do this round
WEIGHTS = "weights"  # ArrayRecord: named model weights
NORMALISER = "normaliser"  # ArrayRecord: mean and std of the risk features
VECTORS = "vectors"  # ArrayRecord: named float64 vectors a firm releases (updates, statistics)
REPLY = "reply"  # ConfigRecord: scalars a firm reports (manifest, weight, loss)


def arrays_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({name: Array(np.ascontiguousarray(value)) for name, value in arrays.items()})


def record_arrays(record: ArrayRecord) -> OrderedDict[str, np.ndarray]:
    return OrderedDict((name, array.numpy()) for name, array in record.items())


def request_content(spec: FederationSpec, **records: ArrayRecord | ConfigRecord) -> RecordDict:
    return RecordDict({RUN: ConfigRecord({"spec": spec.model_dump_json()}), **records})


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
