"""The server's half of secure aggregation over a run: key sessions, rounds, and decoding the sum.

Every sum a run releases (feature moments, baselines, each training round, the final evaluation)
is one round of the SecAgg protocol. Keys are agreed once per session of `rounds_per_session`
sums (two exchanges), then each sum costs the exchange that carries the masked inputs plus one
unmask exchange. What comes back is the exact sum of the firms' quantised vectors, decoded per
segment, and a record of who took part and who dropped at which stage.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from silobridge.contract.config import AggregationSpec
from silobridge.errors import ConfigError
from silobridge.privacy.secagg import SecAggParams, default_num_neighbours, default_threshold
from silobridge.privacy.secagg.layout import VectorLayout
from silobridge.privacy.secagg.messages import AdvertiseRequest, MaskedInputRequest, Roster, UnmaskRequest
from silobridge.privacy.secagg.quantise import choose_modulus_bits
from silobridge.privacy.secagg.server import DropoutRecord, SecAggServer


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
    """Drives one `SecAggServer` through the sessions and rounds of a run."""

    def __init__(self, spec: AggregationSpec, *, run_id: str):
        self.spec = spec
        self.params: SecAggParams = spec.secagg_params()
        self.protocol = SecAggServer(self.params, run_id=run_id, drop_faulty_firms=True)
        self.next_round = 1
        self.session_end = 1  # first round not covered by the open session

    def needs_session(self) -> bool:
        """A new key session is due: none yet, its rounds are used up, or it was aborted."""
        return self.next_round >= self.session_end or not self.protocol.session_open

    def open_session(self, firms: Iterable[str]) -> AdvertiseRequest:
        request = self.protocol.start_session(self.next_round, firms)
        self.session_end = self.next_round + self.params.rounds_per_session
        return request

    def receive_advertise(self, replies: Mapping[str, object]) -> Roster:
        return self.protocol.receive_advertise(replies)

    def receive_shares(self, replies: Mapping[str, object]) -> None:
        self.protocol.receive_shares(replies)

    def start_round(self, layout: VectorLayout, *, leave_out: Iterable[str] = ()) -> dict[str, MaskedInputRequest]:
        """The round number is used up even when the round aborts at once (too few firms): the protocol has
        recorded it, and a retry must run under a new one."""
        number = self.next_round
        self.next_round += 1
        return self.protocol.start_round(number, layout.length, leave_out=leave_out)

    def receive_masked_inputs(self, replies: Iterable[tuple[str, object]]) -> UnmaskRequest:
        return self.protocol.receive_masked_inputs(replies)

    def finish(self, replies: Mapping[str, object], layout: VectorLayout, num_firms: int) -> SecureSumResult:
        ring_sum = self.protocol.finish(replies)
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
