"""The optimiser settings, one value from the scenario to the firm's torch optimiser.

The scenario's `[training]` table holds the only defaults; the coordinator builds one `OptimiserSpec`
from it, the strategy puts it in each instruction, and a firm hands it to its optimiser unchanged.
No field has a default here, so no second default can disagree with the scenario's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

OptimiserName = Literal["sgd", "adamw"]

WIRE_KEYS = ("optimiser", "learning_rate", "momentum", "weight_decay")
"""The flat keys an instruction carries the spec under (ConfigRecords hold no nesting); `optimiser` is the name."""


class OptimiserSpec(BaseModel):
    """Which optimiser and its step: SGD with momentum, or AdamW (which ignores `momentum`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: OptimiserName
    learning_rate: float = Field(gt=0)
    momentum: float = Field(ge=0, lt=1)
    weight_decay: float = Field(ge=0)

    def to_wire(self) -> dict[str, Any]:
        """The flat keys and values an instruction's ConfigRecord carries."""
        return dict(zip(WIRE_KEYS, (self.name, self.learning_rate, self.momentum, self.weight_decay), strict=True))


def nest_wire_keys(values: Any, field: str) -> Any:
    """A flat payload's optimiser keys gathered under `field` (a mapping that already nests them is left alone)."""
    if not isinstance(values, Mapping) or not isinstance(values.get(field, ""), str):
        return values
    flat = dict(values)
    spec = {key: flat.pop(key) for key in WIRE_KEYS if key in flat}
    if "optimiser" in spec:
        spec["name"] = spec.pop("optimiser")
    flat[field] = spec
    return flat


def flatten_wire_keys(values: dict[str, Any], field: str) -> dict[str, Any]:
    """The inverse of `nest_wire_keys` on a dumped payload: the spec's keys back at the top level."""
    spec = values.pop(field)
    values.update(OptimiserSpec.model_validate(spec).to_wire())
    return values
