"""How a release picks its participants (firms per round, records per step), and the event it implies.

Poisson sampling (each unit in with probability q) amplifies privacy under add/remove neighbouring
and is accounted by both RDP and PLD. Fixed-size sampling without replacement is accounted only by
dp-accounting's RDP accountant and only under REPLACE_ONE (Wang, Balle, Kasiviswanathan 2019), so a
fixed-size run must use that relation, whose sensitivity is twice the clip norm.

Amplification holds only while the sample stays secret from whoever sees the output: a release that
lists which firms were sampled (to the auditor, say) must not claim it. The ledger therefore lists
the eligible population of a sampled release, never the sample.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import dp_accounting as dpa
from dp_accounting import NeighboringRelation

from silobridge.errors import ConfigError


class SamplingMethod(str, enum.Enum):
    """How participants are drawn."""

    NONE = "none"  # every eligible unit takes part: no amplification
    POISSON = "poisson"  # each unit independently with probability `rate`
    FIXED = "fixed"  # `sample_size` units uniformly without replacement out of `population`


@dataclass(frozen=True)
class Sampling:
    """A sampling scheme; build with `Sampling.none()`, `.poisson(rate)` or `.fixed(population, size)`."""

    method: SamplingMethod
    rate: float = 1.0
    population: int | None = None
    sample_size: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.rate <= 1:
            raise ConfigError(f"must be in (0, 1], got {self.rate!r}", field="sampling.rate")
        if self.method is SamplingMethod.FIXED:
            if self.population is None or self.sample_size is None or not 0 < self.sample_size <= self.population:
                raise ConfigError(
                    f"fixed-size sampling needs 0 < sample_size <= population, got "
                    f"sample_size={self.sample_size!r}, population={self.population!r}",
                    field="sampling.sample_size",
                )
            if abs(self.rate - self.sample_size / self.population) > 1e-12:
                raise ConfigError("rate must equal sample_size / population", field="sampling.rate")
        elif self.population is not None or self.sample_size is not None:
            raise ConfigError("population and sample_size apply to fixed-size sampling only", field="sampling")
        if self.method is SamplingMethod.NONE and self.rate != 1.0:
            raise ConfigError("no sampling means rate 1", field="sampling.rate")

    @classmethod
    def none(cls) -> Sampling:
        return cls(SamplingMethod.NONE)

    @classmethod
    def poisson(cls, rate: float) -> Sampling:
        return cls(SamplingMethod.POISSON, rate=float(rate))

    @classmethod
    def fixed(cls, population: int, sample_size: int) -> Sampling:
        if population < 1:
            raise ConfigError(f"must be positive, got {population!r}", field="sampling.population")
        return cls(SamplingMethod.FIXED, sample_size / population, population, sample_size)

    def check_relation(self, relation: NeighboringRelation) -> None:
        """Refuse a sampling/relation pair that dp-accounting cannot account soundly."""
        if self.method is SamplingMethod.FIXED and relation is not NeighboringRelation.REPLACE_ONE:
            raise ConfigError(
                f"fixed-size sampling is accountable only under REPLACE_ONE neighbouring, got {relation.name}; "
                "use Poisson sampling for add/remove",
                field="sampling.method",
            )
        if self.method is SamplingMethod.POISSON and relation is NeighboringRelation.REPLACE_ONE:
            raise ConfigError(
                "Poisson sampling is accounted under ADD_OR_REMOVE_ONE or REPLACE_SPECIAL, not REPLACE_ONE",
                field="sampling.method",
            )

    def wrap(self, event: dpa.DpEvent) -> dpa.DpEvent:
        """The event of running `event` on a sample drawn by this scheme."""
        if self.method is SamplingMethod.POISSON and self.rate < 1.0:
            return dpa.PoissonSampledDpEvent(sampling_probability=self.rate, event=event)
        if (
            self.method is SamplingMethod.FIXED
            and self.population is not None  # always set for FIXED (checked on construction)
            and self.sample_size is not None
            and self.sample_size != self.population
        ):
            return dpa.SampledWithoutReplacementDpEvent(
                source_dataset_size=self.population, sample_size=self.sample_size, event=event
            )
        return event

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form for the ledger."""
        out: dict[str, object] = {"method": self.method.value, "rate": self.rate}
        if self.method is SamplingMethod.FIXED:
            out.update(population=self.population, sample_size=self.sample_size)
        return out


def poisson_steps_per_epoch(sample_rate: float) -> int:
    """A Poisson loader (Opacus') runs 1 / sample_rate steps per epoch, whatever the data set's size:
    the firm trains and the server accounts with this one count."""
    if not 0 < sample_rate <= 1:
        raise ConfigError(f"must lie in (0, 1], got {sample_rate}", field="privacy.sample_rate")
    return int(1 / sample_rate)
