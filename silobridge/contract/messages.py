"""Payloads the server and the firms exchange, validated on both ends.

They travel in Flower `ConfigRecord`s, which hold only flat scalars, so each model converts to and
from a flat mapping. Parsing a payload that is missing a field or has a wrong type raises a
`ProtocolError` naming the message, never a bare KeyError deep inside training.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from silobridge.contract.optimiser import OptimiserSpec, flatten_wire_keys, nest_wire_keys
from silobridge.errors import ProtocolError

M = TypeVar("M", bound="Payload")


class Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_config(self) -> dict[str, Any]:
        """Flat values for a ConfigRecord, which has no null: an unset optional field is left out."""
        return self.model_dump(mode="json", exclude_none=True)

    @classmethod
    def from_config(cls: type[M], values: Mapping[str, Any], *, firm: str | None = None) -> M:
        try:
            return cls.model_validate(dict(values))
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(map(str, first["loc"])) or "?"
            raise ProtocolError(f"malformed {cls.__name__}: field '{field}': {first['msg']}", firm=firm) from None


class _CarriesOptimiser(Payload):
    """A payload with an `OptimiserSpec`, which travels as flat keys (ConfigRecords hold no nesting)."""

    optimiser: OptimiserSpec

    @model_validator(mode="before")
    @classmethod
    def _nest_optimiser(cls, values: Any) -> Any:
        return nest_wire_keys(values, "optimiser")

    def to_config(self) -> dict[str, Any]:
        return flatten_wire_keys(super().to_config(), "optimiser")


class TrainInstruction(_CarriesOptimiser):
    """What one federated round asks of a firm for one model."""

    round: int = Field(ge=1)
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    proximal_mu: float = Field(ge=0)
    seed: int = Field(ge=0)
    clip_norm: float | None = Field(
        default=None,
        description="firm-level DP with adaptive clipping: the round's clip norm C_t (the firm checks it is finite "
        "and positive); absent otherwise",
    )


class BaselineInstruction(_CarriesOptimiser):
    """How a firm fits its local-only baselines: the same optimiser, its own data, early stopping."""

    max_epochs: int = Field(ge=1)
    patience: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    seed: int = Field(ge=0)


class FirmManifest(Payload):
    """What a firm tells the server when a run starts: who it is and which models it can train."""

    firm_id: str
    group: Literal["small", "large"]
    tier: str = "unknown"
    has_demand: bool
    has_risk: bool
    public_weight: float = Field(default=1.0, gt=0, description="FedAvg weight under DP (declared, public)")
    budget_epsilon: float | None = Field(default=None, gt=0, description="the firm's own privacy limit")

    def trains(self, kind: str) -> bool:
        return self.has_demand if kind == "demand" else self.has_risk
