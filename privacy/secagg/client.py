"""A firm's side of the protocol: a state machine that takes requests and returns replies, no I/O.

Call order per key session (`params.rounds_per_session` rounds starting at `session`):

    keys   = client.advertise(AdvertiseRequest)            # stage ADVERTISE_KEYS
    shares = client.share_keys(Roster)                     # stage SHARE_KEYS
    for each round in the session:
        masked = client.masked_input(MaskedInputRequest, vector)   # stage MASKED_INPUT
        reveal = client.unmask(UnmaskRequest)                      # stage UNMASK (if asked)

Besides checking every message, the client enforces the rules that keep its own and its
neighbours' inputs hidden even from a server that lies: rounds only move forward and each is
masked and unmasked at most once; it never reveals both a firm's self-mask share and its mask-key
share under the same key; it refuses to mask with a firm whose key it helped reconstruct (that
firm must re-key in a new session); and it reveals nothing when too few neighbours survive or the
survivors' graph falls apart (the server could then unmask a partial sum).

Nothing here needs the object to live across messages: `to_state()` writes everything the firm
must remember as a flat ConfigRecord-compatible dict and `from_state` / `restore_or_new` rebuild the
client from it, with every rule above intact (see `state`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NoReturn

import numpy as np

from silobridge.errors import ConfigError, ProtocolError
from silobridge.privacy.secagg.aead import NONCE_BYTES, open_sealed, seal, share_associated_data
from silobridge.privacy.secagg.graph import is_connected
from silobridge.privacy.secagg.keys import Entropy, KeyPair
from silobridge.privacy.secagg.masking import mask_vector, pairwise_seed, pairwise_sign, self_mask_commitment
from silobridge.privacy.secagg.messages import (
    AdvertiseKeys,
    AdvertiseRequest,
    MaskedInput,
    MaskedInputRequest,
    Roster,
    ShareKeys,
    UnmaskRequest,
    UnmaskShares,
)
from silobridge.privacy.secagg.params import SecAggParams
from silobridge.privacy.secagg.prg import SEED_BYTES
from silobridge.privacy.secagg.ring import to_ring
from silobridge.privacy.secagg.shamir import SHARE_BYTES, decode_share, encode_share, split_secret
from silobridge.privacy.secagg.stages import Stage
from silobridge.privacy.secagg.state import (
    PHASE_NONE,
    PHASES,
    STATE_FORMAT,
    STATE_STAGE,
    Fail,
    HeldShares,
    KeySession,
    StateDict,
    ciphertext_digest,
    state_keys,
)
from silobridge.privacy.secagg.wire import FlatReader


class SecAggClient:
    """One firm's protocol state for a run.

    `entropy` supplies every random byte (keys, seeds, share polynomials, nonces): keep the default
    `os.urandom` outside tests.
    """

    def __init__(self, firm_id: str, params: SecAggParams, *, run_id: str, entropy: Entropy = os.urandom):
        if not isinstance(firm_id, str) or not firm_id or not firm_id.isprintable():
            raise ConfigError(f"firm id must be a non-empty printable string, got {firm_id!r}", field="firm_id")
        self.firm_id = firm_id
        self.params = params
        self.run_id = run_id
        self._entropy = entropy
        self._session: KeySession | None = None
        self._last_masked_round = -1

    # ---- helpers ---------------------------------------------------------------------------

    def _fail(self, stage: Stage, problem: str, *, firm: str | None = None) -> ProtocolError:
        return ProtocolError(problem, firm=firm or self.firm_id, stage=stage)

    def _require_session(self, stage: Stage, run_id: str, session: int, *, shared: bool) -> KeySession:
        if run_id != self.run_id:
            raise self._fail(stage, f"message is for run {run_id!r}, this firm is in run {self.run_id!r}")
        s = self._session
        if s is None:
            raise self._fail(stage, "no key session open: AdvertiseRequest must come first (out of order)")
        if session != s.start:
            raise self._fail(
                stage, f"message is for session {session}, the open session is {s.start} (replayed or stale)"
            )
        if shared and s.roster is None:
            raise self._fail(stage, "keys not yet shared in this session: stage out of order")
        return s

    def _round_offset(self, stage: Stage, s: KeySession, round_number: int) -> int:
        offset = round_number - s.start
        if not 0 <= offset < self.params.rounds_per_session:
            raise self._fail(
                stage,
                f"round {round_number} is outside session {s.start} "
                f"(rounds {s.start}..{s.start + self.params.rounds_per_session - 1})",
            )
        return offset

    @property
    def neighbours(self) -> tuple[str, ...]:
        """This firm's neighbours in the open session (empty before SHARE_KEYS)."""
        s = self._session
        return s.graph.get(self.firm_id, ()) if s else ()

    # ---- stage 1 ---------------------------------------------------------------------------

    def advertise(self, request: AdvertiseRequest) -> AdvertiseKeys:
        """Make fresh keys and self-mask seeds for the session and advertise the public parts."""
        stage = Stage.ADVERTISE_KEYS
        if request.run_id != self.run_id:
            raise self._fail(stage, f"request is for run {request.run_id!r}, this firm is in run {self.run_id!r}")
        if request.params_fingerprint != self.params.fingerprint():
            raise self._fail(stage, "server runs different secure-aggregation parameters (fingerprint mismatch)")
        if request.num_rounds != self.params.rounds_per_session:
            raise self._fail(
                stage, f"session of {request.num_rounds} rounds, expected {self.params.rounds_per_session}"
            )
        if self._session is not None and request.session <= self._session.start:
            raise self._fail(
                stage, f"session {request.session} does not follow session {self._session.start} (replayed)"
            )
        if request.session <= self._last_masked_round:
            raise self._fail(
                stage, f"session {request.session} would reuse round numbers up to {self._last_masked_round}"
            )
        channel = KeyPair.generate(self._entropy)
        mask_keys = tuple(KeyPair.generate(self._entropy) for _ in range(self.params.num_mask_keys))
        seeds = tuple(self._entropy(SEED_BYTES) for _ in range(self.params.rounds_per_session))
        self._session = KeySession(start=request.session, channel_key=channel, mask_keys=mask_keys, self_seeds=seeds)
        commitments = tuple(
            self_mask_commitment(
                seed, run_id=self.run_id, session=request.session, round_number=request.session + i, firm=self.firm_id
            )
            for i, seed in enumerate(seeds)
        )
        return AdvertiseKeys(
            run_id=self.run_id,
            session=request.session,
            sender=self.firm_id,
            channel_public_key=channel.public_bytes,
            mask_public_keys=tuple(key.public_bytes for key in mask_keys),
            self_mask_commitments=commitments,
        )

    # ---- stage 2 ---------------------------------------------------------------------------

    def _raiser(self, stage: Stage) -> Fail:
        """A `fail(problem)` that raises this firm's ProtocolError at `stage`."""

        def fail(problem: str) -> NoReturn:
            raise self._fail(stage, problem)

        return fail

    def share_keys(self, roster: Roster) -> ShareKeys:
        """Agree keys with each neighbour and send it encrypted shares of this firm's secrets."""
        stage = Stage.SHARE_KEYS
        s = self._require_session(stage, roster.run_id, roster.session, shared=False)
        if s.roster is not None:
            raise self._fail(stage, "keys already shared in this session (replayed roster)")
        hood = s.check_roster(roster, self.params, self.firm_id, self._raiser(stage))
        links = s.derive_links(roster, hood, run_id=self.run_id, firm_id=self.firm_id, stage=stage)
        neighbours = links.graph[self.firm_id]
        x_of = {firm: i + 1 for i, firm in enumerate(roster.firms)}
        holders_x = [x_of[firm] for firm in sorted((*neighbours, self.firm_id))]
        secrets = [int.from_bytes(key.private_bytes(), "big") for key in s.mask_keys]
        secrets += [int.from_bytes(seed, "big") for seed in s.self_seeds]
        tables = [split_secret(secret, hood.threshold, holders_x, entropy=self._entropy) for secret in secrets]
        num_keys = len(s.mask_keys)
        nonces, ciphertexts = [], []
        for j in neighbours:
            plaintext = b"".join(encode_share(table[x_of[j]]) for table in tables)
            nonce = self._entropy(NONCE_BYTES)
            ad = share_associated_data(run_id=self.run_id, session=s.start, sender=self.firm_id, recipient=j)
            nonces.append(nonce)
            ciphertexts.append(seal(links.send_keys[j], nonce, plaintext, ad))
        mine = [table[x_of[self.firm_id]] for table in tables]
        s.held[self.firm_id] = HeldShares(tuple(mine[:num_keys]), tuple(mine[num_keys:]), None)
        s.adopt(roster, hood, links)
        return ShareKeys(self.run_id, s.start, self.firm_id, neighbours, tuple(nonces), tuple(ciphertexts))

    # ---- stage 3 ---------------------------------------------------------------------------

    def _receive_shares(self, s: KeySession, request: MaskedInputRequest) -> None:
        stage = Stage.SHARE_KEYS  # the shares belong to SHARE_KEYS even though they arrive now
        neighbours = set(s.graph[self.firm_id])
        num_keys, num_rounds = len(s.mask_keys), len(s.self_seeds)
        for sender, nonce, ciphertext in zip(
            request.share_senders, request.share_nonces, request.share_ciphertexts, strict=True
        ):
            if sender not in neighbours:
                raise self._fail(stage, "server routed shares from a firm that is not a neighbour", firm=sender)
            known = s.held.get(sender)
            if known is not None:
                if known.ciphertext_digest != ciphertext_digest(ciphertext):
                    raise self._fail(
                        stage, "server delivered different shares from this firm a second time", firm=sender
                    )
                continue
            ad = share_associated_data(run_id=self.run_id, session=s.start, sender=sender, recipient=self.firm_id)
            plaintext = open_sealed(s.receive_keys[sender], nonce, ciphertext, ad, firm=sender, stage=stage)
            if len(plaintext) != SHARE_BYTES * (num_keys + num_rounds):
                raise self._fail(stage, f"decrypted shares have {len(plaintext)} bytes", firm=sender)
            values = [
                decode_share(plaintext[i : i + SHARE_BYTES], firm=sender, stage=stage)
                for i in range(0, len(plaintext), SHARE_BYTES)
            ]
            s.held[sender] = HeldShares(
                tuple(values[:num_keys]), tuple(values[num_keys:]), ciphertext_digest(ciphertext)
            )

    def masked_input(self, request: MaskedInputRequest, vector: np.ndarray) -> MaskedInput:
        """Mask `vector` (integers in [-2^(m-1), 2^m), e.g. from `quantise`) for this round."""
        stage = Stage.MASKED_INPUT
        s = self._require_session(stage, request.run_id, request.session, shared=True)
        assert s.roster is not None and s.neighbourhood is not None, "a shared session has adopted its roster"
        if request.recipient != self.firm_id:
            raise self._fail(stage, f"request is addressed to {request.recipient!r}")
        r = request.round_number
        offset = self._round_offset(stage, s, r)
        if s.masked_round is not None and r <= s.masked_round:
            raise self._fail(stage, f"round {r} comes after round {s.masked_round} was masked (replayed or reordered)")
        self._receive_shares(s, request)
        active = set(request.active_firms)
        if not active <= set(s.roster.firms) or self.firm_id not in active:
            raise self._fail(stage, "active firms must be roster members and include this firm")
        key_index = self.params.mask_key_index(offset)
        partners = sorted(active & set(s.graph[self.firm_id]))
        for j in partners:
            if j not in s.held:
                raise self._fail(stage, f"firm is active in round {r} but its shares never reached this firm", firm=j)
            if key_index in s.revealed_key_indices.get(j, ()):
                raise self._fail(
                    stage, f"its mask key was reconstructed in a recovery; it must re-key before round {r}", firm=j
                )
        if len(partners) + 1 < s.neighbourhood.threshold:
            raise self._fail(
                stage, f"only {len(partners)} active neighbours; threshold {s.neighbourhood.threshold} cannot be met"
            )
        if request.vector_length != np.asarray(vector).size:
            raise self._fail(
                stage, f"vector has {np.asarray(vector).size} values, the round expects {request.vector_length}"
            )
        ring_vector = to_ring(vector, self.params.modulus_bits, firm=self.firm_id, stage=stage)
        pairwise = [
            (
                pairwise_seed(
                    s.mask_agreement(j, key_index, stage=stage),
                    run_id=self.run_id,
                    session=s.start,
                    round_number=r,
                    firm_a=self.firm_id,
                    firm_b=j,
                ),
                pairwise_sign(self.firm_id, j),
            )
            for j in partners
        ]
        masked = mask_vector(ring_vector, s.self_seeds[offset], pairwise, self.params.modulus_bits)
        s.masked_round, s.masked_active = r, frozenset(active)
        self._last_masked_round = r
        return MaskedInput(self.run_id, s.start, r, self.firm_id, self.params.modulus_bits, masked)

    # ---- stage 4 ---------------------------------------------------------------------------

    def unmask(self, request: UnmaskRequest) -> UnmaskShares:
        """Reveal self-mask shares of the survivors and mask-key shares of dropped neighbours."""
        stage = Stage.UNMASK
        s = self._require_session(stage, request.run_id, request.session, shared=True)
        assert s.neighbourhood is not None, "a shared session has adopted its roster"
        r = request.round_number
        if s.masked_round != r:
            raise self._fail(
                stage, f"unmask for round {r}, but the last masked round is {s.masked_round} (out of order)"
            )
        if s.unmasked_round == r:
            raise self._fail(stage, f"round {r} was already unmasked (replayed request)")
        survivors = set(request.survivors)
        if not survivors <= s.masked_active or self.firm_id not in survivors:
            raise self._fail(stage, "survivors must be active firms of this round and include this firm")
        neighbours = set(s.graph[self.firm_id])
        surviving = survivors & neighbours
        dropped = (s.masked_active - survivors) & neighbours
        if len(surviving) + 1 < s.neighbourhood.threshold:
            raise self._fail(
                stage,
                f"only {len(surviving)} neighbours survived; below threshold {s.neighbourhood.threshold}, "
                "nothing is revealed",
            )
        if not is_connected(survivors, s.graph):
            raise self._fail(
                stage, "the survivors' neighbour graph is disconnected: the server could unmask partial sums"
            )
        offset = r - s.start
        key_index = self.params.mask_key_index(offset)
        self_owners = sorted(surviving | {self.firm_id})
        key_owners = sorted(dropped)
        for owner in self_owners:
            if key_index in s.revealed_key_indices.get(owner, ()):
                raise self._fail(
                    stage, "its mask key was revealed; revealing its self-mask too would expose its input", firm=owner
                )
        for owner in key_owners:
            earlier = [
                q for q in s.revealed_self_rounds.get(owner, ()) if self.params.mask_key_index(q - s.start) == key_index
            ]
            if earlier:
                raise self._fail(
                    stage,
                    f"its self-mask for round {min(earlier)} was revealed under the same mask key; revealing the key "
                    "would expose that input (it must re-key instead)",
                    firm=owner,
                )
        for owner in self_owners:
            s.revealed_self_rounds.setdefault(owner, set()).add(r)
        for owner in key_owners:
            s.revealed_key_indices.setdefault(owner, set()).add(key_index)
        s.unmasked_round = r
        return UnmaskShares(
            run_id=self.run_id,
            session=s.start,
            round_number=r,
            sender=self.firm_id,
            self_mask_owners=tuple(self_owners),
            self_mask_shares=tuple(encode_share(s.held[o].self_mask_shares[offset]) for o in self_owners),
            mask_key_owners=tuple(key_owners),
            mask_key_shares=tuple(encode_share(s.held[o].mask_key_shares[key_index]) for o in key_owners),
        )

    # ---- stored state (Flower's context.state) ------------------------------------------------

    def to_state(self) -> StateDict:
        """Everything this firm must remember until its next message, as a flat ConfigRecord dict.

        Save it after every call that returned or raised ProtocolError, and restore with
        `restore_or_new` before the next: a Flower ClientApp may run each message in a new process.
        It holds private keys, self-mask seeds and neighbours' shares: keep it on the firm's side
        (see `privacy.secagg.state` for the layout and why derived keys are not stored).
        """
        state: StateDict = {
            "format": STATE_FORMAT,
            "run_id": self.run_id,
            "params_fingerprint": self.params.fingerprint(),
            "firm_id": self.firm_id,
            "last_masked_round": self._last_masked_round,
            "session_phase": PHASE_NONE if self._session is None else self._session.phase,
        }
        if self._session is not None:
            state.update(self._session.to_state())
        return state

    @classmethod
    def from_state(
        cls, state: Mapping[str, object], params: SecAggParams, *, run_id: str, entropy: Entropy = os.urandom
    ) -> SecAggClient:
        """The client that `to_state` described, rebuilt exactly and validated field by field.

        ProtocolError (stage "state") for a malformed, truncated or inconsistent state, or an empty
        one (a firm's first message has none: use `restore_or_new`); ConfigError when the state
        belongs to another run or was written under other parameters.
        """
        return cls._load(state, params, run_id=run_id, entropy=entropy, expected_firm=None)

    @classmethod
    def restore_or_new(
        cls,
        state: Mapping[str, object] | None,
        firm_id: str,
        params: SecAggParams,
        *,
        run_id: str,
        entropy: Entropy = os.urandom,
    ) -> SecAggClient:
        """A fresh client when nothing is stored yet (None or empty), else `firm_id`'s restored one.

        ConfigError if the stored state belongs to another firm.
        """
        if state is None or (isinstance(state, Mapping) and not state):
            return cls(firm_id, params, run_id=run_id, entropy=entropy)
        return cls._load(state, params, run_id=run_id, entropy=entropy, expected_firm=firm_id)

    @classmethod
    def _load(
        cls, state: object, params: SecAggParams, *, run_id: str, entropy: Entropy, expected_firm: str | None
    ) -> SecAggClient:
        reader = FlatReader(state, label="SecAggClient state", firm=expected_firm, stage=STATE_STAGE)
        firm_id = _read_identity(reader, params, run_id=run_id, expected_firm=expected_firm)
        phase = reader.text("session_phase")
        if phase not in PHASES:
            reader.fail(f"session_phase must be one of {list(PHASES)}, got {phase!r}")
        reader.check_keys(*state_keys(phase))
        client = cls(firm_id, params, run_id=run_id, entropy=entropy)
        client._last_masked_round = reader.integer("last_masked_round", minimum=-1)
        if phase != PHASE_NONE:
            client._session = KeySession.from_state(reader, params, run_id=run_id, firm_id=firm_id)
        client._check_last_masked_round(reader.fail)
        return client

    def _check_last_masked_round(self, fail: Fail) -> None:
        """The round-replay guard agrees with the session: it is the masked round, or precedes the session."""
        last, s = self._last_masked_round, self._session
        if s is None:
            consistent = last == -1
        elif s.masked_round is None:
            consistent = last < s.start
        else:
            consistent = last == s.masked_round
        if not consistent:
            fail(f"last_masked_round {last} contradicts the session's masked rounds")


def _read_identity(reader: FlatReader, params: SecAggParams, *, run_id: str, expected_firm: str | None) -> str:
    """Check format, firm, run and parameters before anything else is read; returns the firm id.

    From here on `reader` names the firm in its errors.
    """
    if not reader.has("format"):
        reader.fail("empty or unformatted: nothing was stored yet (a firm's first message: use restore_or_new)")
    found = reader.text("format")
    if found != STATE_FORMAT:
        reader.fail(f"format {found!r} is not {STATE_FORMAT!r} (written by another version)")
    firm_id = reader.firm_id("firm_id")
    if expected_firm is not None and firm_id != expected_firm:
        raise ConfigError(f"stored state belongs to firm {firm_id!r}, not {expected_firm!r}", field="firm_id")
    reader.firm = firm_id
    stored_run = reader.text("run_id")
    if stored_run != run_id:
        raise ConfigError(f"stored state is for run {stored_run!r}, not {run_id!r}", field="run_id")
    if reader.text("params_fingerprint") != params.fingerprint():
        raise ConfigError("stored state was written under other secure-aggregation parameters", field="params")
    return firm_id
