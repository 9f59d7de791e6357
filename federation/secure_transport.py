"""Our secure sum's four stages as Flower messages over the coordinator's Grid: a transport for the driver.

`privacy.secagg.driver` sequences the protocol; this carries each stage: key advertisement and
sharing as `query.secagg_advertise` / `query.secagg_share`, the masked-input request riding on the
sum's own message (`train`, `evaluate`, a query step) with the sum's records, and the unmask
request as `query.secagg_unmask`. A failed or missing reply is logged as a dropout by `send`; a
reply without a protocol message (or a malformed masked input) is logged here and left out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flwr.app import ConfigRecord, RecordDict

from silobridge.contract.config import FederationSpec
from silobridge.contract.wire_names import QUERY_SECAGG_ADVERTISE, QUERY_SECAGG_SHARE, QUERY_SECAGG_UNMASK
from silobridge.errors import ProtocolError
from silobridge.federation.crash_points import crash_point
from silobridge.federation.exchange import Replies
from silobridge.federation.records import MASKED, SECAGG, record_arrays, request_content
from silobridge.privacy.secagg.messages import (
    AdvertiseRequest,
    MaskedInput,
    MaskedInputRequest,
    Roster,
    UnmaskRequest,
)

Requests = list[tuple[int, str, RecordDict]]

ADVERTISE = QUERY_SECAGG_ADVERTISE
SHARE = QUERY_SECAGG_SHARE
UNMASK = QUERY_SECAGG_UNMASK


@dataclass
class GridSecureTransport:
    """One secure sum's messages: `send` exchanges them (logging failures), `content` builds the sum's own
    request around the masked-input request, `drop` logs a firm left out of the sum."""

    spec: FederationSpec
    node_of: Mapping[str, int]
    firm_of: Callable[[int], str]
    send: Callable[[Requests, str], Replies]
    drop: Callable[[str, str, str], None]
    message_type: str
    content: Callable[[ConfigRecord], RecordDict]
    stage: str

    def _protocol_replies(self, replies: Replies, stage: str) -> dict[str, dict[str, Any]]:
        """The protocol message in each reply, by firm; a reply without one counts as a dropout."""
        out = {}
        for (node, _), content in replies.ok.items():
            if SECAGG in content.config_records:
                out[self.firm_of(node)] = dict(content.config_records[SECAGG])
            else:
                self.drop(self.firm_of(node), stage, "reply carries no secure-aggregation message")
        return out

    def _session_request(self, wire: dict[str, Any]) -> RecordDict:
        """A stage's own message: the run's spec and the protocol message (one RecordDict per firm)."""
        return request_content(self.spec, **{SECAGG: ConfigRecord(wire)})

    def advertise(self, request: AdvertiseRequest, firms: Sequence[str]) -> dict[str, dict[str, Any]]:
        stage = "secagg: advertise keys"
        wire = request.to_wire()
        replies = self.send([(self.node_of[f], ADVERTISE, self._session_request(wire)) for f in firms], stage)
        return self._protocol_replies(replies, stage)

    def share_keys(self, roster: Roster) -> dict[str, dict[str, Any]]:
        stage = "secagg: share keys"
        wire = roster.to_wire()
        replies = self.send([(self.node_of[f], SHARE, self._session_request(wire)) for f in roster.firms], stage)
        return self._protocol_replies(replies, stage)

    def masked_inputs(self, requests: dict[str, MaskedInputRequest]) -> list[tuple[str, MaskedInput]]:
        messages = [
            (self.node_of[firm], self.message_type, self.content(ConfigRecord(request.to_wire())))
            for firm, request in requests.items()
        ]
        replies = self.send(messages, self.stage)
        masked: list[tuple[str, MaskedInput]] = []
        for (node, _), content in replies.ok.items():
            firm = self.firm_of(node)
            try:
                vector = record_arrays(content.array_records[MASKED])["vector"]
                message = dict(content.config_records[SECAGG])
                masked.append((firm, MaskedInput.from_wire(message, expected_sender=firm, vector=vector)))
            except (KeyError, ProtocolError) as err:
                self.drop(firm, self.stage, f"malformed masked input: {err}")
        return masked

    def unmask(self, request: UnmaskRequest) -> dict[str, dict[str, Any]]:
        crash_point(f"unmask:{self.stage}")  # crash tests: mid-exchange, the masked inputs in hand
        stage = f"{self.stage}: unmask"
        wire = request.to_wire()
        replies = self.send([(self.node_of[f], UNMASK, self._session_request(wire)) for f in request.survivors], stage)
        return self._protocol_replies(replies, stage)
