"""Security and dropout parameters of a secure-aggregation run, validated once at the edge.

Defaults, and why:
- num_neighbours k: the smallest even k of at least about 3 * log2(n) for which, if each firm drops
  independently with probability `expected_dropout` (default 0.1), every one of the n neighbourhoods
  keeps `threshold` surviving share holders except with probability 1% per round (binomial tail,
  union bound); capped at n - 1 (the complete graph, i.e. classic SecAgg). The log2 n floor is the
  SecAgg+ scaling (Bell et al. 2020); the dropout term keeps rounds from aborting: a pure log n
  degree (k = 20 at n = 100) aborts most rounds at 30% dropout. Examples: n = 100 gives k = 20 at
  10% dropout, 34 at 20%, 84 at 30%; below about 16 firms the graph is complete.
- threshold t: the smallest strict majority of the k + 1 share holders (a firm's neighbours and
  itself). Each honest holder reveals, per firm and key, either a self-mask share or a mask-key
  share, never both; with 2t > k + 1 two disjoint groups of holders cannot both reach t, so a server
  that lies about who dropped still cannot rebuild both secrets of one firm. It also tolerates the
  most dropouts such a guarantee allows: k + 1 - t, about half of each neighbourhood.
- rounds_per_session 1: classic per-round keys (4 exchanges per round). A longer session runs the
  two key stages once for several rounds (2 exchanges per round after the first).
- rounds_per_mask_key 1: each round of a session masks with its own key pair, so recovering a firm
  that dropped in one round reveals nothing about its other rounds. With a longer key life (one key
  agreement serving several rounds) a reconstructed key is retired: its firm sits out the rest of
  the key's rounds and re-keys in the next session, and a firm whose self-mask was already revealed
  under that key cannot be recovered at all (the round aborts), or its earlier input would leak.
- min_firms 3: a roster, and a released sum, of two firms lets each learn the other's input.
- expected_dropout 0.1: only sizes the default k; the protocol itself tolerates any dropout that
  leaves `threshold` holders in every neighbourhood that needs one.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import Any

from silobridge.errors import ConfigError
from silobridge.privacy.secagg.ring import check_modulus_bits, ring_dtype

PROTOCOL_VERSION = "silobridge-secagg/1"


ABORT_BUDGET = 0.01  # accepted chance per round that some neighbourhood falls below threshold


def default_threshold(num_neighbours: int) -> int:
    """The smallest strict majority of the num_neighbours + 1 share holders."""
    return (num_neighbours + 1) // 2 + 1


def _fewer_than(k: int, p: float, t: int) -> float:
    """P(Binomial(k, p) < t)."""
    return sum(math.comb(k, i) * p**i * (1 - p) ** (k - i) for i in range(t))


def default_num_neighbours(num_firms: int, expected_dropout: float = 0.1) -> int:
    """Smallest even k >= ~3 log2 n keeping every neighbourhood above threshold (see module doc)."""
    if num_firms < 2:
        raise ConfigError(f"secure aggregation needs at least 2 firms, got {num_firms}", field="num_firms")
    floor = 2 * math.ceil(1.5 * math.log2(num_firms))
    for k in range(max(2, floor), num_firms - 1, 2):
        # The tightest neighbourhood is a dropped firm's: its k neighbours must supply t shares.
        if num_firms * _fewer_than(k, 1 - expected_dropout, default_threshold(k)) <= ABORT_BUDGET:
            return k
    return num_firms - 1


@dataclass(frozen=True)
class Neighbourhood:
    """The graph degree and threshold that apply to one roster."""

    num_firms: int
    num_neighbours: int
    threshold: int

    @property
    def share_holders(self) -> int:
        """Firms holding shares of one firm's secrets: its neighbours and itself."""
        return self.num_neighbours + 1

    @property
    def tolerated_dropouts(self) -> int:
        """Holders that may vanish from one neighbourhood before its secrets cannot be rebuilt."""
        return self.share_holders - self.threshold

    @property
    def is_complete(self) -> bool:
        """Whether every firm masks with every other one (classic SecAgg)."""
        return self.num_neighbours == self.num_firms - 1


def _positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if type(value) is not int or value < minimum:
        raise ConfigError(f"must be an integer >= {minimum}, got {value!r}", field=name)


@dataclass(frozen=True)
class SecAggParams:
    """What both sides must agree on; `fingerprint()` lets a firm check that they do.

    `num_neighbours` and `threshold` left as None take the defaults for the roster's size.
    """

    modulus_bits: int
    num_neighbours: int | None = None
    threshold: int | None = None
    rounds_per_session: int = 1
    rounds_per_mask_key: int = 1
    min_firms: int = 3
    expected_dropout: float = 0.1

    def __post_init__(self) -> None:
        check_modulus_bits(self.modulus_bits)
        if self.num_neighbours is not None:
            _positive_int("num_neighbours", self.num_neighbours)
        if self.threshold is not None:
            _positive_int("threshold", self.threshold)
        _positive_int("rounds_per_session", self.rounds_per_session)
        _positive_int("rounds_per_mask_key", self.rounds_per_mask_key)
        if self.rounds_per_mask_key > self.rounds_per_session:
            raise ConfigError(
                f"must not exceed rounds_per_session ({self.rounds_per_session}), got {self.rounds_per_mask_key}",
                field="rounds_per_mask_key",
            )
        _positive_int("min_firms", self.min_firms, minimum=2)
        if not (isinstance(self.expected_dropout, (int, float)) and 0 <= self.expected_dropout < 0.5):
            raise ConfigError(
                f"must lie in [0, 0.5) (a majority of each neighbourhood must survive), got {self.expected_dropout!r}",
                field="expected_dropout",
            )

    @classmethod
    def for_federation(
        cls, num_firms: int, value_bits: int, *, headroom_bits: int = 0, **overrides: Any
    ) -> SecAggParams:
        """Parameters whose modulus fits the sum of `num_firms` quantised values (see quantise)."""
        from silobridge.privacy.secagg.quantise import choose_modulus_bits

        return cls(modulus_bits=choose_modulus_bits(num_firms, value_bits, headroom_bits=headroom_bits), **overrides)

    @property
    def num_mask_keys(self) -> int:
        """Mask key pairs each firm advertises per session."""
        return -(-self.rounds_per_session // self.rounds_per_mask_key)

    def mask_key_index(self, round_offset: int) -> int:
        """Which of the session's mask keys masks the round `round_offset` rounds into the session."""
        return round_offset // self.rounds_per_mask_key

    def neighbourhood(self, num_firms: int) -> Neighbourhood:
        """Resolve degree and threshold for a roster of `num_firms`; ConfigError if they cannot work."""
        if type(num_firms) is not int or num_firms < 2:
            raise ConfigError(f"a roster needs at least 2 firms, got {num_firms!r}", field="num_firms")
        if self.num_neighbours is None:
            k = default_num_neighbours(num_firms, self.expected_dropout)
        else:
            k = min(self.num_neighbours, num_firms - 1)
            if k < num_firms - 1 and k % 2:
                raise ConfigError(
                    f"must be even when below n - 1 = {num_firms - 1} (k/2 links on each side of the ring), got {k}",
                    field="num_neighbours",
                )
        t = default_threshold(k) if self.threshold is None else self.threshold
        holders = k + 1
        if t > holders:
            raise ConfigError(
                f"threshold {t} exceeds the {holders} share holders of a {num_firms}-firm roster with {k} neighbours",
                field="threshold",
            )
        if 2 * t <= holders:
            raise ConfigError(
                f"threshold {t} is not a strict majority of the {holders} share holders (need > {holders / 2:g}): "
                "a server lying about dropouts could then rebuild both secrets of one firm",
                field="threshold",
            )
        return Neighbourhood(num_firms=num_firms, num_neighbours=k, threshold=t)

    def fingerprint(self) -> str:
        """SHA-256 over the protocol version and every field: equal iff both sides run the same protocol."""
        canonical = json.dumps({"protocol": PROTOCOL_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def describe(self, num_firms: int | None = None) -> dict[str, Any]:
        """A flat summary for the run report (resolved for a roster size when given)."""
        summary: dict[str, Any] = {
            "protocol": PROTOCOL_VERSION,
            **asdict(self),
            "ring_word_bytes": ring_dtype(self.modulus_bits).itemsize,
            "num_mask_keys_per_session": self.num_mask_keys,
            "exchanges_per_session_setup": 2,
            "exchanges_per_round": 2,
            "mean_exchanges_per_round": 2 + 2 / self.rounds_per_session,
            "fingerprint": self.fingerprint(),
        }
        if num_firms is not None:
            hood = self.neighbourhood(num_firms)
            summary.update(
                num_firms=num_firms,
                resolved_num_neighbours=hood.num_neighbours,
                resolved_threshold=hood.threshold,
                share_holders=hood.share_holders,
                tolerated_dropouts_per_neighbourhood=hood.tolerated_dropouts,
                complete_graph=hood.is_complete,
            )
        return summary
