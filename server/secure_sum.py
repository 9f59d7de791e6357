"""The server's half of secure aggregation over a run: key sessions, rounds, and decoding the sum.

Every sum a run releases (feature moments, baselines, each training round, the final evaluation)
is one round of the SecAgg protocol, sequenced by `privacy.secagg.driver`. Keys are agreed once per
session of `rounds_per_session` sums (two exchanges), then each sum costs the exchange that carries
the masked inputs plus one unmask exchange. What comes back is the exact sum of the firms' quantised
vectors, decoded per segment, and a record of who took part and who dropped at which stage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from silobridge.contract.config import AggregationSpec
from silobridge.errors import ConfigError, ProtocolError
from silobridge.privacy.secagg import SecAggParams, default_num_neighbours, default_threshold
from silobridge.privacy.secagg.driver import SecureSumDriver, SecureSumTransport
from silobridge.privacy.secagg.dropout_record import DropoutRecord
from silobridge.privacy.secagg.layout import VectorLayout
from silobridge.privacy.secagg.quantise import choose_modulus_bits
from silobridge.privacy.secagg.server import SecAggServer


def resolve_aggregation(spec: AggregationSpec, num_firms: int) -> AggregationSpec:
    """Fill in neighbours, threshold and ring for a federation of `num_firms` firms, checking them.

    Neighbours default to SecAgg+'s ~log n sized for the expected dropout; the threshold to a strict
    majority of each neighbourhood (a lower one would let a server that lies about dropouts learn
    both secrets of a firm); the ring so that the sum of all firms cannot wrap.
    """
    if spec.mode == "plain":
        return spec
    if num_firms < 3:
        raise ConfigError(
            f"secure aggregation needs at least 3 firms, the federation has {num_firms}", field="aggregation"
        )
    k = min(spec.num_neighbours or default_num_neighbours(num_firms, spec.expected_dropout), num_firms - 1)
    t = spec.threshold or default_threshold(k)
    if not default_threshold(k) <= t <= k + 1:
        raise ConfigError(
            f"threshold {t} must be a majority of the {k + 1} share holders: "
            f"between {default_threshold(k)} and {k + 1}",
            field="aggregation.threshold",
        )
    bits = choose_modulus_bits(num_firms, spec.value_bits)
    if spec.modulus_bits is not None and spec.modulus_bits < bits:
        raise ConfigError(
            f"{spec.modulus_bits} bits cannot hold the sum of {num_firms} firms' values; at least {bits} are needed",
            field="aggregation.modulus_bits",
        )
    return spec.model_copy(update={"num_neighbours": k, "threshold": t, "modulus_bits": spec.modulus_bits or bits})


@dataclass(frozen=True)
class SecureSumResult:
    """The decoded sum per segment, who is in it, and the round's dropout record."""

    segments: dict[str, np.ndarray]
    contributors: tuple[str, ...]
    record: DropoutRecord


class SecureSumServer:
    """A run's secure sums, from its AggregationSpec: the protocol driver over one `SecAggServer`, each
    sum decoded per segment of its layout. The transport (how each stage's messages reach the firms)
    is the caller's: Flower messages in a run, anything else in a test or benchmark."""

    def __init__(self, spec: AggregationSpec, *, run_id: str):
        self.spec = spec
        self.params: SecAggParams = spec.secagg_params()
        self.protocol = SecAggServer(self.params, run_id=run_id, drop_faulty_firms=True)
        self.driver = SecureSumDriver(self.protocol)

    def sum(
        self,
        transport: SecureSumTransport,
        layout: VectorLayout,
        firms: Sequence[str],
        *,
        num_firms: int,
        leave_out: Iterable[str] = (),
        attempts: int = 1,
        on_abort: Callable[[int, ProtocolError], None] | None = None,
    ) -> SecureSumResult:
        """One secure sum over the session's `firms` less `leave_out` (a key session first when one is
        due), decoded for a federation of `num_firms`; an aborted attempt is retried under a new round
        number, up to `attempts` times (see `SecureSumDriver.secure_sum`)."""
        ring_sum = self.driver.secure_sum(
            transport, firms, layout.length, leave_out=leave_out, attempts=attempts, on_abort=on_abort
        )
        return self.decode(ring_sum, layout, num_firms)

    def decode(self, ring_sum: np.ndarray, layout: VectorLayout, num_firms: int) -> SecureSumResult:
        """The finished round's sum per segment, with who is in it."""
        record = self.protocol.record
        return SecureSumResult(layout.decode(ring_sum, num_firms), tuple(sorted(record.contributors)), record)

    def describe(self, num_firms: int) -> dict[str, object]:
        """The security and dropout parameters, for the run summary."""
        return {
            "mode": "secure",
            **self.params.describe(num_firms),
            "value_bits": self.spec.value_bits,
            "bounds": {
                "update_per_coordinate": self.spec.update_bound,
                "max_examples": self.spec.max_examples,
                "statistic": self.spec.stats_bound,
            },
        }
