"""Explicit JSON form of the DpEvents SiloBridge emits, so a ledger can be re-accounted later.

Only the event types listed in `_SCHEMA` are written or read; anything else is refused rather than
guessed, since an auditor must recompute exactly what was spent. The form is
`{"type": "<ClassName>", <field>: <value>, ...}` with nested events as nested objects.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import dp_accounting as dpa

from silobridge.errors import ConfigError
from silobridge.privacy.dp.events import SkellamDpEvent

_FLOAT, _INT, _EVENT, _EVENTS = "float", "int", "event", "events"

_SCHEMA: dict[str, tuple[type[dpa.DpEvent], tuple[tuple[str, str], ...]]] = {
    "NoOpDpEvent": (dpa.NoOpDpEvent, ()),
    "NonPrivateDpEvent": (dpa.NonPrivateDpEvent, ()),
    "GaussianDpEvent": (dpa.GaussianDpEvent, (("noise_multiplier", _FLOAT),)),
    "LaplaceDpEvent": (dpa.LaplaceDpEvent, (("noise_multiplier", _FLOAT),)),
    "PoissonSampledDpEvent": (dpa.PoissonSampledDpEvent, (("sampling_probability", _FLOAT), ("event", _EVENT))),
    "SampledWithoutReplacementDpEvent": (
        dpa.SampledWithoutReplacementDpEvent,
        (("source_dataset_size", _INT), ("sample_size", _INT), ("event", _EVENT)),
    ),
    "SelfComposedDpEvent": (dpa.SelfComposedDpEvent, (("event", _EVENT), ("count", _INT))),
    "ComposedDpEvent": (dpa.ComposedDpEvent, (("events", _EVENTS),)),
    "SkellamDpEvent": (
        SkellamDpEvent,
        (("variance", _FLOAT), ("l1_sensitivity", _FLOAT), ("l2_sensitivity", _FLOAT)),
    ),
}
_NAME_OF = {cls: name for name, (cls, _) in _SCHEMA.items()}

_SOURCE = "DpEvent JSON"


def event_to_json(event: dpa.DpEvent, *, path: str = "event") -> dict[str, Any]:
    """The JSON-ready dict of `event`; refuses event types outside the schema."""
    name = _NAME_OF.get(type(event))
    if name is None:
        raise ConfigError(
            f"cannot serialise {type(event).__name__}: not a supported event type", source=_SOURCE, field=path
        )
    out: dict[str, Any] = {"type": name}
    for field, kind in _SCHEMA[name][1]:
        value = getattr(event, field)
        where = f"{path}.{field}"
        if kind == _EVENT:
            out[field] = event_to_json(value, path=where)
        elif kind == _EVENTS:
            out[field] = [event_to_json(e, path=f"{where}[{i}]") for i, e in enumerate(value)]
        elif kind == _INT:
            out[field] = _check_int(value, where)
        else:
            out[field] = _check_float(value, where)
    return out


def event_from_json(data: Any, *, path: str = "event") -> dpa.DpEvent:
    """The DpEvent described by `data`; refuses unknown types, unknown or missing fields, wrong types."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected an object, got {type(data).__name__}", source=_SOURCE, field=path)
    name = data.get("type")
    if name not in _SCHEMA:
        raise ConfigError(f"unknown event type {name!r}", source=_SOURCE, field=f"{path}.type")
    cls, fields = _SCHEMA[name]
    expected = {"type", *(field for field, _ in fields)}
    if set(data) != expected:
        raise ConfigError(f"{name} takes fields {sorted(expected)}, got {sorted(data)}", source=_SOURCE, field=path)
    values: dict[str, Any] = {}
    for field, kind in fields:
        value = data[field]
        where = f"{path}.{field}"
        if kind == _EVENT:
            values[field] = event_from_json(value, path=where)
        elif kind == _EVENTS:
            if not isinstance(value, list):
                raise ConfigError("expected a list of events", source=_SOURCE, field=where)
            values[field] = [event_from_json(e, path=f"{where}[{i}]") for i, e in enumerate(value)]
        elif kind == _INT:
            values[field] = _check_int(value, where)
        else:
            values[field] = _check_float(value, where)
    return cls(**values)


def event_key(event: dpa.DpEvent) -> str:
    """A canonical string for `event`: equal events give equal keys (used to cache their accounting)."""
    return json.dumps(event_to_json(event), sort_keys=True, separators=(",", ":"), allow_nan=False)


def _check_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"expected an integer, got {value!r}", source=_SOURCE, field=where)
    return value


def _check_float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"expected a finite number, got {value!r}", source=_SOURCE, field=where)
    return float(value)
