"""The one sequencing of a secure sum: the protocol's four stages over a transport the caller plugs in.

`SecAggServer` is the state machine; this is the loop every caller used to write out by hand (the
coordinator over Flower messages, the benchmark's app, the in-memory simulation, the tests): agree
keys once per session of `rounds_per_session` sums (advertise, share), then per sum ask for masked
inputs and unmask. A transport carries one stage's requests to the firms and returns the replies
that came back, keyed by the firm it authenticated; what a missing reply means (a dropout) is the
protocol's business, not the transport's. Pure sequencing: no I/O and no clock of its own (the
named steps can be timed by the caller's `timer`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

import numpy as np

from silobridge.errors import ConfigError, ProtocolError
from silobridge.privacy.secagg.messages import AdvertiseRequest, MaskedInputRequest, Roster, UnmaskRequest
from silobridge.privacy.secagg.replies import Replies
from silobridge.privacy.secagg.server import SecAggServer

Timer = Callable[[str], AbstractContextManager[None]]
"""Times a named server step ("start_round", "receive_masked_inputs", "finish")."""


class SecureSumTransport(Protocol):
    """Carries one stage's requests to the firms and brings back their replies (message objects or wire
    dicts, keyed by firm). A firm that does not answer is simply absent from the replies."""

    def advertise(self, request: AdvertiseRequest, firms: Sequence[str]) -> Replies: ...

    def share_keys(self, roster: Roster) -> Replies: ...

    def masked_inputs(self, requests: dict[str, MaskedInputRequest]) -> Replies: ...

    def unmask(self, request: UnmaskRequest) -> Replies: ...


def _untimed(name: str) -> AbstractContextManager[None]:
    return nullcontext()


class SecureSumDriver:
    """Sessions and rounds of one run's secure sums over `server`; round numbers are never reused."""

    def __init__(self, server: SecAggServer):
        self.server = server
        self.next_round = 1
        self.session_end = 1  # first round not covered by the open session

    def needs_session(self) -> bool:
        """A new key session is due: none yet, its rounds are used up, or it was aborted."""
        return self.next_round >= self.session_end or not self.server.session_open

    def open_session(
        self, transport: SecureSumTransport, firms: Iterable[str], *, first_round: int | None = None
    ) -> Roster:
        """Key agreement for the sums from `first_round` (default: the next round) on: advertise, share."""
        firms = list(firms)
        first = self.next_round if first_round is None else first_round
        request = self.server.start_session(first, firms)
        self.session_end = first + self.server.params.rounds_per_session
        try:
            roster = self.server.receive_advertise(transport.advertise(request, firms))
            self.server.receive_shares(transport.share_keys(roster))
        except ProtocolError:
            # the server has recorded a session from `first`: a retry's session must start after it
            self.next_round = max(self.next_round, first + 1)
            raise
        return roster

    def run_round(
        self,
        transport: SecureSumTransport,
        length: int,
        *,
        leave_out: Iterable[str] = (),
        round_number: int | None = None,
        timer: Timer = _untimed,
    ) -> np.ndarray:
        """One sum of the open session: masked inputs, then unmask; the exact sum mod 2^m.

        The round number is used up even when the round aborts at once (too few firms): the protocol has
        recorded it, and a retry must run under a new one. Raises ProtocolError on abort.
        """
        number = self.next_round if round_number is None else round_number
        self.next_round = number + 1
        with timer("start_round"):
            requests = self.server.start_round(number, length, leave_out=leave_out)
        replies = transport.masked_inputs(requests)
        with timer("receive_masked_inputs"):
            unmask = self.server.receive_masked_inputs(replies)
        replies = transport.unmask(unmask)
        with timer("finish"):
            return self.server.finish(replies)

    def secure_sum(
        self,
        transport: SecureSumTransport,
        firms: Sequence[str],
        length: int,
        *,
        leave_out: Iterable[str] = (),
        attempts: int = 1,
        on_abort: Callable[[int, ProtocolError], None] | None = None,
    ) -> np.ndarray:
        """One sum over the session's `firms` (less `leave_out`), opening a session when one is due.

        An aborted attempt (too few survivors somewhere) is reported to `on_abort` and tried again under
        a new round number, up to `attempts` times; the last abort is raised.
        """
        if attempts < 1:
            raise ConfigError(f"must be at least 1, got {attempts}", field="attempts")
        attempt = 1
        while True:
            try:
                if self.needs_session():
                    self.open_session(transport, firms)
                return self.run_round(transport, length, leave_out=leave_out)
            except ProtocolError as err:
                if on_abort is not None:
                    on_abort(attempt, err)
                if attempt >= attempts:
                    raise
                attempt += 1
