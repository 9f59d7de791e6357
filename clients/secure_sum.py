"""A firm's half of secure aggregation: its protocol state travels in Flower's context.state.

A firm's ClientApp may handle each message in a new process, so the SecAgg client is restored from
the stored state before each stage and stored again after it, also when it refused a message. The
state holds the firm's private keys and its neighbours' shares: it never leaves the firm.

A process that handles the firm's next message too (a simulation's worker, a warm executor) keeps the
live client beside the state it last stored, and reuses it when the stored state it is given is exactly
that one: a restore derives every pairwise key again (a third of a firm's secure-sum CPU). Any other
state (another process's, an older one) is restored and validated as before.
"""

from __future__ import annotations

import hashlib
import os
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
_live: dict[_LiveKey, tuple[SecAggClient, StateDict]] = {}
"""(firm, secagg run id, parameters' fingerprint) -> the client this process last stored, and that state."""


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
        live = _live.pop(self._key, None)  # taken, not shared: `state()` puts it back once stored
        if live is not None and stored and live[1] == dict(stored):
            self.client = live[0]
        else:
            self.client = SecAggClient.restore_or_new(stored, firm_id, params, run_id=run_id, entropy=os.urandom)

    def state(self) -> StateDict:
        """The state to store; this process keeps the live client beside it (see the module's note)."""
        state = self.client.to_state()
        for stale in [k for k in _live if k[1] != self._key[1]]:  # one run at a time per process
            del _live[stale]
        _live[self._key] = (self.client, dict(state))
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
