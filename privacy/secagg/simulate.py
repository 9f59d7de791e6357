"""All stages run in memory, sequenced by the same driver the coordinator uses: for tests and benchmarks.

Every message goes through `to_wire` and `from_wire`, as it would over the network, so validation
is exercised and the bytes of each stage are counted. A firm "dropping at a stage" sends no reply
from that stage on (for the rest of the session for key stages, for the rest of the round for round
stages). A client that refuses a request (ProtocolError) is treated the same way, as a Flower error
reply would be, and its error is kept in `client_errors`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from silobridge.errors import ConfigError, ProtocolError
from silobridge.privacy.secagg.client import SecAggClient
from silobridge.privacy.secagg.driver import SecureSumDriver
from silobridge.privacy.secagg.dropout_record import DropoutRecord
from silobridge.privacy.secagg.keys import Entropy
from silobridge.privacy.secagg.messages import AdvertiseRequest, MaskedInputRequest, Roster, UnmaskRequest
from silobridge.privacy.secagg.params import SecAggParams
from silobridge.privacy.secagg.server import SecAggServer
from silobridge.privacy.secagg.stages import ROUND_STAGES, SESSION_STAGES, Stage
from silobridge.privacy.secagg.wire import WireDict, wire_size


@dataclass
class Traffic:
    """Payload bytes and message counts per stage, summed over firms (see `wire.wire_size`)."""

    upload_bytes: dict[Stage, int] = field(default_factory=lambda: dict.fromkeys(Stage, 0))
    download_bytes: dict[Stage, int] = field(default_factory=lambda: dict.fromkeys(Stage, 0))
    uploads: dict[Stage, int] = field(default_factory=lambda: dict.fromkeys(Stage, 0))
    downloads: dict[Stage, int] = field(default_factory=lambda: dict.fromkeys(Stage, 0))

    def up(self, stage: Stage, wire: WireDict) -> WireDict:
        self.upload_bytes[stage] += wire_size(wire)
        self.uploads[stage] += 1
        return wire

    def down(self, stage: Stage, wire: WireDict) -> WireDict:
        self.download_bytes[stage] += wire_size(wire)
        self.downloads[stage] += 1
        return wire

    def copy(self) -> Traffic:
        return Traffic(dict(self.upload_bytes), dict(self.download_bytes), dict(self.uploads), dict(self.downloads))


@dataclass(frozen=True)
class SecureSum:
    """The exact sum mod 2^m (uint64), who took part, and what it cost on the wire."""

    total: np.ndarray
    record: DropoutRecord
    traffic: Traffic
    client_errors: Mapping[str, str]


def _check_schedule(dropouts: Mapping[str, Stage], firms: Iterable[str], stages: tuple[Stage, ...]) -> dict[str, Stage]:
    schedule = {firm: Stage(stage) for firm, stage in dropouts.items()}
    unknown = set(schedule) - set(firms)
    if unknown:
        raise ConfigError(f"dropout schedule names unknown firms {sorted(unknown)}", field="dropouts")
    wrong = {firm: str(stage) for firm, stage in schedule.items() if stage not in stages}
    if wrong:
        raise ConfigError(f"dropouts {wrong} are not at one of the stages {[str(s) for s in stages]}", field="dropouts")
    return schedule


class _InMemoryTransport:
    """Hands each stage's requests to the clients through their wire form, counting the bytes; a firm
    scheduled to drop at a stage (or that refuses a request) sends nothing from then on."""

    def __init__(
        self,
        federation: InMemoryFederation,
        schedule: Mapping[str, Stage],
        vectors: Mapping[str, np.ndarray] | None = None,
    ):
        self.federation = federation
        self.clients = federation.clients
        self.traffic = federation.traffic
        self.schedule = schedule
        self.vectors = vectors or {}

    def advertise(self, request: AdvertiseRequest, firms: Sequence[str]) -> dict[str, WireDict]:
        wire = request.to_wire()
        replies: dict[str, WireDict] = {}
        for firm in firms:
            self.traffic.down(Stage.ADVERTISE_KEYS, wire)
            if self.schedule.get(firm) == Stage.ADVERTISE_KEYS:
                continue
            with self.federation._may_refuse(firm, Stage.ADVERTISE_KEYS):
                keys = self.clients[firm].advertise(AdvertiseRequest.from_wire(wire, recipient=firm))
                replies[firm] = self.traffic.up(Stage.ADVERTISE_KEYS, keys.to_wire())
        return replies

    def share_keys(self, roster: Roster) -> dict[str, WireDict]:
        roster_wire = roster.to_wire()
        replies: dict[str, WireDict] = {}
        for firm in roster.firms:
            self.traffic.down(Stage.SHARE_KEYS, roster_wire)
            if firm in self.schedule:
                continue
            with self.federation._may_refuse(firm, Stage.SHARE_KEYS):
                shares = self.clients[firm].share_keys(Roster.from_wire(roster_wire, recipient=firm))
                replies[firm] = self.traffic.up(Stage.SHARE_KEYS, shares.to_wire())
        return replies

    def masked_inputs(self, requests: dict[str, MaskedInputRequest]) -> Iterator[tuple[str, WireDict]]:
        """A generator: the server adds each masked input before the next one is made."""
        for firm, request in requests.items():
            wire = self.traffic.down(Stage.MASKED_INPUT, request.to_wire())
            if self.schedule.get(firm) == Stage.MASKED_INPUT:
                continue
            if firm not in self.vectors:
                raise ConfigError(f"no vector for active firm {firm!r}", field="vectors")
            masked = None
            with self.federation._may_refuse(firm, Stage.MASKED_INPUT):
                parsed = MaskedInputRequest.from_wire(wire, expected_recipient=firm)
                masked = self.clients[firm].masked_input(parsed, self.vectors[firm])
            if masked is not None:
                yield firm, self.traffic.up(Stage.MASKED_INPUT, masked.to_wire())

    def unmask(self, request: UnmaskRequest) -> dict[str, WireDict]:
        unmask_wire = request.to_wire()
        replies: dict[str, WireDict] = {}
        for firm in request.survivors:
            self.traffic.down(Stage.UNMASK, unmask_wire)
            if self.schedule.get(firm) == Stage.UNMASK:
                continue
            with self.federation._may_refuse(firm, Stage.UNMASK):
                revealed = self.clients[firm].unmask(UnmaskRequest.from_wire(unmask_wire, recipient=firm))
                replies[firm] = self.traffic.up(Stage.UNMASK, revealed.to_wire())
        return replies


class InMemoryFederation:
    """A server and one client per firm, driven stage by stage (`SecureSumDriver`) over an in-memory transport."""

    def __init__(
        self,
        firms: Iterable[str],
        params: SecAggParams,
        *,
        run_id: str = "in-memory",
        entropy_for: Callable[[str], Entropy] | None = None,
        drop_faulty_firms: bool = True,
    ):
        self.params = params
        self.clients = {
            firm: SecAggClient(firm, params, run_id=run_id, entropy=entropy_for(firm) if entropy_for else os.urandom)
            for firm in sorted(firms)
        }
        self.server = SecAggServer(params, run_id=run_id, drop_faulty_firms=drop_faulty_firms)
        self.driver = SecureSumDriver(self.server)
        self.traffic = Traffic()
        self.client_errors: dict[str, str] = {}

    @contextmanager
    def _may_refuse(self, firm: str, stage: Stage) -> Iterator[None]:
        """A client's ProtocolError becomes an error reply: recorded, and the firm sends nothing."""
        try:
            yield
        except ProtocolError as err:
            self.client_errors[firm] = f"{stage}: {err}"

    def open_session(self, first_round: int, *, dropouts: Mapping[str, Stage] | None = None) -> Roster:
        """ADVERTISE_KEYS and SHARE_KEYS for a session starting at `first_round`."""
        schedule = _check_schedule(dropouts or {}, self.clients, SESSION_STAGES)
        transport = _InMemoryTransport(self, schedule)
        return self.driver.open_session(transport, self.clients, first_round=first_round)

    def run_round(
        self,
        round_number: int,
        vectors: Mapping[str, np.ndarray],
        *,
        dropouts: Mapping[str, Stage] | None = None,
        leave_out: Iterable[str] = (),
    ) -> SecureSum:
        """MASKED_INPUT and UNMASK for one round of the open session; raises ProtocolError on abort."""
        schedule = _check_schedule(dropouts or {}, self.clients, ROUND_STAGES)
        lengths = {np.asarray(v).size for v in vectors.values()}
        if len(lengths) != 1:
            raise ConfigError(f"all vectors must have one length, got {sorted(lengths)}", field="vectors")
        transport = _InMemoryTransport(self, schedule, vectors)
        total = self.driver.run_round(transport, lengths.pop(), leave_out=leave_out, round_number=round_number)
        return SecureSum(total, self.server.record, self.traffic.copy(), MappingProxyType(dict(self.client_errors)))


def secure_vector_sum(
    vectors: Mapping[str, np.ndarray],
    params: SecAggParams,
    *,
    dropouts: Mapping[str, Stage] | None = None,
    run_id: str = "in-memory",
    round_number: int = 1,
    entropy_for: Callable[[str], Entropy] | None = None,
    drop_faulty_firms: bool = True,
) -> SecureSum:
    """One key session and one round over `vectors` (firm -> integer vector); raises on abort.

    `dropouts` maps a firm to the stage at which it vanishes (any of the four stages).
    """
    schedule = {firm: Stage(stage) for firm, stage in (dropouts or {}).items()}
    federation = InMemoryFederation(
        vectors, params, run_id=run_id, entropy_for=entropy_for, drop_faulty_firms=drop_faulty_firms
    )
    federation.open_session(round_number, dropouts={f: s for f, s in schedule.items() if s in SESSION_STAGES})
    return federation.run_round(
        round_number, vectors, dropouts={f: s for f, s in schedule.items() if s in ROUND_STAGES}
    )
