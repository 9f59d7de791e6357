"""A firm's half of secure aggregation: its protocol state travels in Flower's context.state.

A firm's ClientApp may handle each message in a new process, so the SecAgg client is restored from
the stored state before each stage and stored again after it, also when it refused a message. The
state holds the firm's private keys and its neighbours' shares: it never leaves the firm.

A process that handles the firm's next message too (a simulation's worker, a warm executor) keeps the
live client beside the state it last stored, and reuses it when the stored state it is given is exactly
that one: a restore derives every pairwise key again (a third of a firm's secure-sum CPU). Any other
state (another process's, an older one) is restored and validated as before. What it keeps beside the
client is the state's SHA-256 digest, not a copy (the copy was half the table's memory), and at most
`LIVE_FIRMS` firms, least recently used dropped first.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from silobridge.contract.config import AggregationSpec
from silobridge.errors import ProtocolError
from silobridge.privacy.secagg import SecAggClient, default_threshold
from silobridge.privacy.secagg.layout import VectorLayout
from silobridge.privacy.secagg.messages import AdvertiseRequest, MaskedInputRequest, Roster, UnmaskRequest
from silobridge.privacy.secagg.state import StateDict
from silobridge.privacy.secagg.wire import WireDict

_LiveKey = tuple[str, str, str]
LIVE_FIRMS = 1024
"""Firms whose live client one process keeps: above the builder's 1,000-firm chain, so a simulation's worker
that plays every firm keeps the reuse; a longer roster costs a restore, never unbounded memory."""


def state_digest(state: Mapping[str, object]) -> bytes | None:
    """SHA-256 of a stored state's items, sorted by key and pickled (C speed; pickle keeps bool, int, float, str
    and bytes apart and decodes to the value, so two states share a digest only if equal key by key, type by
    type); None for a value outside the state's types (then nothing is reused)."""
    items = sorted(state.items())
    if not all(isinstance(value, _STATE_TYPES) for _, value in items):
        return None
    return hashlib.sha256(pickle.dumps(items, protocol=5)).digest()


_STATE_TYPES = (bool, int, float, str, bytes, list)


class LiveClients:
    """(firm, secagg run id, parameters' fingerprint) -> the client this process last stored and its state's
    digest; one run at a time, at most `capacity` firms (least recently used dropped)."""

    def __init__(self, capacity: int = LIVE_FIRMS):
        self.capacity = capacity
        self._table: OrderedDict[_LiveKey, tuple[SecAggClient, bytes]] = OrderedDict()

    def take(self, key: _LiveKey, stored: Mapping[str, object] | None) -> SecAggClient | None:
        """The live client if `stored` is the state it last stored; taken out either way (not shared)."""
        live = self._table.pop(key, None)
        if live is None or not stored:
            return None
        return live[0] if state_digest(stored) == live[1] else None

    def keep(self, key: _LiveKey, client: SecAggClient, state: StateDict) -> None:
        digest = state_digest(state)
        for stale in [k for k in self._table if k[1] != key[1]]:  # one run at a time per process
            del self._table[stale]
        self._table.pop(key, None)
        if digest is None or self.capacity <= 0:
            return
        self._table[key] = (client, digest)
        while len(self._table) > self.capacity:
            self._table.popitem(last=False)

    def digest_of(self, key: _LiveKey) -> bytes | None:
        live = self._table.get(key)
        return None if live is None else live[1]

    def clear(self) -> None:
        self._table.clear()

    def __len__(self) -> int:
        return len(self._table)


_live = LiveClients()


@dataclass(frozen=True)
class MaskedRelease:
    """What a firm sends for one secure sum: the protocol message and its masked vector."""

    message: WireDict
    vector: np.ndarray


def rounding_seed(own_seed: int | None, firm_id: str, release: str) -> int | None:
    """The seed of a firm's stochastic rounding into one release's secure sum: None (fresh entropy) unless
    the firm fixed its own noise seed, which then makes the release reproducible to the last bit.

    Why: the rounding moves each value by up to one quantisation step (about 1e-10 of a model change), enough
    to flip the last bit of a float32 weight; drawn afresh, a resumed run could not repeat an uninterrupted
    one exactly. Keyed by the release (e.g. 'round-3'), never by a secure-sum session, which a resumed run
    starts afresh. Like the DP-SGD seed it is the firm's own number, never the coordinator's.
    """
    if own_seed is None:
        return None
    key = hashlib.sha256(f"secure-sum rounding|{firm_id}|{release}".encode()).digest()
    sequence = np.random.SeedSequence([own_seed, int.from_bytes(key[:16], "big")])
    return int(sequence.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


class FirmSecureSum:
    """Restores the firm's SecAgg client from `stored`, answers one stage, exposes the state to store."""

    def __init__(self, firm_id: str, spec: AggregationSpec, *, run_id: str, stored: Mapping[str, object] | None):
        self.firm_id = firm_id
        params = spec.secagg_params()
        if params.threshold is not None and params.num_neighbours is not None:
            if params.threshold < default_threshold(params.num_neighbours):
                raise ProtocolError(
                    f"the coordinator asks for threshold {params.threshold} with {params.num_neighbours} neighbours; "
                    f"below a majority ({default_threshold(params.num_neighbours)}) a server could unmask this firm",
                    firm=firm_id,
                    stage="advertise_keys",
                )
        self._key: _LiveKey = (firm_id, run_id, params.fingerprint())
        live = _live.take(self._key, stored)  # taken, not shared: `state()` puts it back once stored
        if live is not None:
            self.client = live
        else:
            self.client = SecAggClient.restore_or_new(stored, firm_id, params, run_id=run_id, entropy=os.urandom)

    def state(self) -> StateDict:
        """The state to store; this process keeps the live client beside it (see the module's note)."""
        state = self.client.to_state()
        _live.keep(self._key, self.client, state)
        return state

    def advertise(self, wire: Mapping[str, object]) -> WireDict:
        return self.client.advertise(AdvertiseRequest.from_wire(wire, recipient=self.firm_id)).to_wire()

    def share_keys(self, wire: Mapping[str, object]) -> WireDict:
        return self.client.share_keys(Roster.from_wire(wire, recipient=self.firm_id)).to_wire()

    def masked_input(
        self,
        wire: Mapping[str, object],
        layout: VectorLayout,
        segments: Mapping[str, np.ndarray],
        *,
        rounding: int | None = None,
    ) -> MaskedRelease:
        """Quantise the firm's segments into the agreed layout and mask them; `rounding` seeds the
        stochastic rounding (`rounding_seed`; None: fresh entropy)."""
        request = MaskedInputRequest.from_wire(wire, expected_recipient=self.firm_id)
        if request.vector_length != layout.length:
            raise ProtocolError(
                f"masked input of {request.vector_length} values asked for a layout of {layout.length}",
                firm=self.firm_id,
                stage="masked_input",
            )
        integers, _ = layout.encode(segments, np.random.default_rng(rounding), firm=self.firm_id)
        masked = self.client.masked_input(request, integers)
        return MaskedRelease(message=masked.to_wire(include_vector=False), vector=masked.vector)

    def unmask(self, wire: Mapping[str, object]) -> WireDict:
        return self.client.unmask(UnmaskRequest.from_wire(wire, recipient=self.firm_id)).to_wire()
