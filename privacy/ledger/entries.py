"""The shape of each ledger entry, checked strictly on write and on read.

Every entry has an envelope (`index`, `kind`, `time`, `prev` = SHA-256 of the previous line,
`signature`) and a body by kind:

- `header` (index 0 only): run id, configuration hash, accountant specification, run budget,
  per-firm budgets, the Ed25519 public key, and the format version.
- `release`: one release (round or query) with its mechanism, noise multiplier, clip norm, sampling,
  the firms accounted in it, the firms left out because their budget was spent, the serialised
  DpEvent, free-form scalar parameters, and epsilon spent so far (overall and per accounted firm).
- `refusal`: a release that was refused before anything was released, and why.
- `end`: the run finished; epsilon spent by every firm and overall.
- `resume`: the run continued from its checkpoint after a crash or an interrupt: the checkpoint's
  round and its pointer into the ledger (entries before it, SHA-256 of the last), the torn last line
  moved aside (if any), and the end entry it reopens after (an interrupt closes the ledger). May follow
  an end entry; the resumed run closes the ledger again.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

FORMAT = "silobridge-privacy-ledger/1"

Hex64 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Hex128 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{128}$")]
NonEmpty = Annotated[str, StringConstraints(min_length=1)]
Scalar = str | int | float | bool | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class BudgetModel(_Strict):
    epsilon: float
    delta: float


class SamplingModel(_Strict):
    method: Literal["none", "poisson", "fixed"]
    rate: float
    population: int | None = None
    sample_size: int | None = None


class EpsilonTotals(_Strict):
    """Epsilon spent so far: overall (at the run's delta) and per firm (each at its own delta)."""

    overall: float
    firms: dict[NonEmpty, float]


class _Envelope(_Strict):
    index: int = Field(ge=0)
    time: NonEmpty
    prev: Hex64
    signature: Hex128


class HeaderEntry(_Envelope):
    kind: Literal["header"]
    format: Literal["silobridge-privacy-ledger/1"]
    run_id: NonEmpty
    config_sha256: Hex64
    accountant: dict[str, Any]
    budget: BudgetModel
    firm_budgets: dict[NonEmpty, BudgetModel]
    public_key: Hex64
    key_kind: Literal["long-term", "per-run"] | None = None  # which key signed: the federation's, or one made per run


class ReleaseEntry(_Envelope):
    kind: Literal["release"]
    release_id: NonEmpty
    mechanism: NonEmpty
    noise_multiplier: float | None
    clip_norm: float | None
    sampling: SamplingModel
    firms: list[NonEmpty]
    excluded_firms: list[NonEmpty]
    event: dict[str, Any]
    parameters: dict[str, Scalar]
    epsilon: EpsilonTotals


class RefusalEntry(_Envelope):
    kind: Literal["refusal"]
    release_id: NonEmpty
    firms: list[NonEmpty]
    event: dict[str, Any]
    reason: NonEmpty


class EndEntry(_Envelope):
    kind: Literal["end"]
    reason: NonEmpty
    epsilon: EpsilonTotals


class TornTailModel(_Strict):
    entry: int = Field(ge=1)
    length: int = Field(ge=1)
    sha256: Hex64
    kept_as: NonEmpty


class ResumeEntry(_Envelope):
    kind: Literal["resume"]
    checkpoint_round: int = Field(ge=0)  # 0: no round had completed
    checkpoint_entries: int = Field(ge=1)  # ledger entries the checkpoint had seen
    checkpoint_hash: Hex64  # SHA-256 of the last of them
    torn_tail: TornTailModel | None
    reopened_after: str | None  # the reason of the end entry this resume follows, if the ledger was closed


Entry = HeaderEntry | ReleaseEntry | RefusalEntry | EndEntry | ResumeEntry
ENTRY_MODELS: dict[str, type[_Envelope]] = {
    "header": HeaderEntry,
    "release": ReleaseEntry,
    "refusal": RefusalEntry,
    "end": EndEntry,
    "resume": ResumeEntry,
}
ENVELOPE_FIELDS = frozenset({"index", "kind", "time", "prev", "signature"})
