"""Federated analytics: the contract between a query's server half and its firm half.

A query is a short conversation. The server half (in `server/query_plans/`) sends a `QueryStep`; each
firm's half (in `clients/query_answers/`) answers with one vector of local statistics, clipped to the
step's public bounds; the federation releases only the (securely summed, DP-noised) sum of those
vectors, and the server half either asks the next step or gives the answer. Keeping the contract
here lets both halves be tested without Flower and carried over Flower messages unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import Field, field_validator

from silobridge.contract.config import DataSchema
from silobridge.contract.messages import Payload
from silobridge.errors import ConfigError, ProtocolError

QUERY_SEGMENT = "answer"
"""Name of the one segment a query step's secure sum carries."""

Unit = Literal["record", "firm"]
"""The unit of privacy of a query: one record of a firm's table (default), or a firm's whole contribution."""
UNITS: tuple[Unit, ...] = ("record", "firm")
FIRM_NEIGHBOURS = "add or remove one firm's whole contribution (every vector it sends)"
"""The neighbouring relation of every query under firm-level DP."""


class QueryStep(Payload):
    """One step of a query: what every firm computes locally, and the bounds its vector must respect.

    `value_bound` bounds each entry (sets the secure sum's quantisation range); `l2_bound` bounds the
    L2 norm of a firm's whole vector, which is the firm-level sensitivity the DP noise is scaled to.
    A firm clips to both and reports how many entries it clipped; it never sends more than `length`.
    `record_l2_bound` bounds how far one record (as the query defines it, after the firm's per-record
    clipping and caps) moves the L2 norm of the summed vector: the record-level sensitivity.
    """

    query: str = Field(min_length=1)
    step: int = Field(ge=0)
    length: int = Field(ge=1)
    value_bound: float = Field(gt=0)
    l2_bound: float = Field(gt=0)
    record_l2_bound: float | None = Field(default=None, gt=0)
    # Under DP the engine states how it will noise this step, so a firm can count its own spend:
    noise_multiplier: float | None = Field(default=None, gt=0)
    unit: Unit | None = None
    delta: float | None = Field(default=None, gt=0, lt=1)
    accountant: Literal["rdp", "pld"] | None = None
    params_json: str = "{}"  # ConfigRecords hold flat scalars: parameters travel as one JSON string

    @field_validator("params_json")
    @classmethod
    def _is_json_object(cls, value: str) -> str:
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"not JSON: {err}") from None
        if not isinstance(decoded, dict):
            raise ValueError("must be a JSON object")
        return value

    @property
    def params(self) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self.params_json)  # a JSON object: checked on construction
        return decoded

    def sensitivity(self, unit: Unit) -> float:
        """The L2 sensitivity the noise is scaled to: one firm's whole vector, or one record's share of it."""
        if unit == "firm":
            return self.l2_bound
        if self.record_l2_bound is None:
            raise ConfigError(
                f"query '{self.query}' step {self.step} states no record-level bound: use unit 'firm'", field="unit"
            )
        return self.record_l2_bound

    @classmethod
    def build(
        cls,
        query: str,
        step: int,
        *,
        length: int,
        value_bound: float,
        l2_bound: float,
        params: Mapping[str, Any],
        record_l2_bound: float | None = None,
    ) -> QueryStep:
        return cls(
            query=query,
            step=step,
            length=length,
            value_bound=value_bound,
            l2_bound=l2_bound,
            record_l2_bound=record_l2_bound,
            params_json=json.dumps(dict(params), sort_keys=True),
        )


@dataclass(frozen=True)
class LocalAnswer:
    """A firm's clipped vector for one step, and how many entries clipping changed (never silent)."""

    vector: np.ndarray
    clipped: int


def clip_answer(step: QueryStep, vector: np.ndarray, *, firm: str) -> LocalAnswer:
    """Enforce a step's public bounds on a firm's raw statistics: entry-wise, then on the L2 norm."""
    values = np.asarray(vector, dtype=np.float64).reshape(-1)
    if values.shape != (step.length,):
        raise ProtocolError(
            f"query '{step.query}' step {step.step}: local vector has {values.size} entries, expected {step.length}",
            firm=firm,
        )
    if not np.all(np.isfinite(values)):
        raise ProtocolError(f"query '{step.query}' step {step.step}: local vector has NaN or inf", firm=firm)
    bounded = np.clip(values, -step.value_bound, step.value_bound)
    clipped = int(np.count_nonzero(bounded != values))
    norm = float(np.linalg.norm(bounded))
    if norm > step.l2_bound:
        bounded = bounded * (step.l2_bound / norm)
        clipped = max(clipped, 1)
    return LocalAnswer(bounded, clipped)


class QueryPlan(Protocol):
    """The server half of one query: asks steps, reads released sums, and finally answers.

    `planned_steps` is the most steps (releases) the plan will ask: the engine calibrates the DP noise
    for it and checks the whole query against the budget before any firm is contacted. Steps are
    numbered 0, 1, ... and each must stay below `planned_steps`; a plan that asks more is stopped
    with a `FederationError`. Each release is accounted at the step's own `l2_bound`.
    """

    name: str

    @property
    def planned_steps(self) -> int: ...  # read only: a class constant or a property of the plan

    neighbours: str
    """The neighbouring relation under the plan's unit (for record level: what one record is, and how it changes)."""

    def first(self) -> QueryStep: ...

    def next(self, total: np.ndarray, contributors: int) -> QueryStep | None:
        """Take the released sum of the last step (over `contributors` firms); the next step, or None when done."""
        ...

    def result(self) -> dict[str, Any]:
        """The answer, JSON-ready."""
        ...


class PlanFactory(Protocol):
    """How a query's server half is made: raw parameters (validated at the edge) and the federation's schema.

    `noise_multiplier` is the noise std per unit of sensitivity the engine adds to every step (0 without
    DP) and `unit` says which sensitivity (`QueryStep.sensitivity`): plans that threshold noisy counts
    (frequent itemsets, K-means) scale their thresholds with both, and every plan states its noise std.
    """

    def __call__(
        self, raw: Mapping[str, Any], schema: DataSchema, /, *, noise_multiplier: float = 0.0, unit: Unit = "record"
    ) -> QueryPlan: ...
