"""The aggregator's side of the protocol: a state machine over batches of replies, no I/O.

Call order (each `receive_*` takes the replies of one exchange, keyed by the firm id that the
transport authenticated: a mapping or an iterable of (firm, reply) pairs, each reply a message
object or its wire dict):

    request = server.start_session(first_round, firms)        # -> AdvertiseRequest, to every firm
    roster  = server.receive_advertise(replies)                # -> Roster, to every firm in it
    server.receive_shares(replies)                             # shares are routed in the next step
    for each round of the session:
        requests = server.start_round(round_number, length)   # -> {firm: MaskedInputRequest}
        unmask   = server.receive_masked_inputs(replies)      # -> UnmaskRequest, to the survivors
        total    = server.finish(replies)                     # -> exact sum mod 2^m
    server.record                                              # who dropped at which stage, and why

Masked inputs are summed as they arrive, so memory stays at one vector however many firms answer.
With `drop_faulty_firms` (the default) a reply that fails validation counts as that firm dropping
(its error is kept in the record) and the round goes on if the thresholds still hold; without it,
the first bad reply aborts. Every abort raises ProtocolError naming the stage, and releases
nothing: the running sum is discarded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any, NoReturn

import numpy as np

from silobridge.errors import ConfigError, ProtocolError
from silobridge.privacy.secagg.aead import TAG_BYTES
from silobridge.privacy.secagg.dropout_record import DropoutRecord
from silobridge.privacy.secagg.graph import is_connected, neighbour_graph
from silobridge.privacy.secagg.keys import KeyPair, agree, check_public_key
from silobridge.privacy.secagg.masking import pairwise_seed, pairwise_sign, unmask_sum
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
from silobridge.privacy.secagg.params import Neighbourhood, SecAggParams
from silobridge.privacy.secagg.recovery import rebuild_mask_key, rebuild_self_seed
from silobridge.privacy.secagg.replies import FirmMessageT, Replies, Reply
from silobridge.privacy.secagg.ring import ring_dtype
from silobridge.privacy.secagg.shamir import SHARE_BYTES, decode_share
from silobridge.privacy.secagg.stages import Stage


class _Phase(Enum):
    IDLE = "idle"
    ADVERTISE = "waiting for AdvertiseKeys"
    SHARE = "waiting for ShareKeys"
    READY = "ready for a round"
    MASKING = "waiting for MaskedInput"
    UNMASKING = "waiting for UnmaskShares"


@dataclass
class _Round:
    number: int
    key_index: int
    vector_length: int
    active: frozenset[str]
    left_out: frozenset[str]
    retired: frozenset[str]
    total: np.ndarray | None
    contributors: set[str] = field(default_factory=set)
    dropped: dict[str, Stage] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    key_owners: frozenset[str] = frozenset()  # dropped firms whose mask key is being rebuilt
    recovered: frozenset[str] = frozenset()
    aborted: str | None = None


class SecAggServer:
    """The aggregator's protocol state for one run: one key session at a time."""

    def __init__(self, params: SecAggParams, *, run_id: str, drop_faulty_firms: bool = True):
        self.params = params
        self.run_id = run_id
        self.drop_faulty_firms = drop_faulty_firms
        self._phase = _Phase.IDLE
        self._last_round = -1
        self._start = -1
        self._reset_session()
        self._round: _Round | None = None

    def _reset_session(self) -> None:
        self._invited: tuple[str, ...] = ()
        self._keys: dict[str, AdvertiseKeys] = {}
        self._roster: Roster | None = None
        self._hood: Neighbourhood | None = None
        self._graph: dict[str, tuple[str, ...]] = {}
        self._shared: frozenset[str] = frozenset()
        self._inbox: dict[str, list[tuple[str, bytes, bytes]]] = {}
        self._confirmed: set[str] = set()  # answered a MaskedInputRequest, so holds its shares
        self._retired: dict[str, set[int]] = {}  # firm -> mask key indices rebuilt by the server
        self._self_revealed: dict[str, set[int]] = {}  # firm -> rounds whose self-mask was revealed
        self._session_dropped: dict[str, Stage] = {}
        self._session_errors: dict[str, str] = {}
        self._session_aborted: str | None = None

    # ---- read-only views -------------------------------------------------------------------

    @property
    def roster(self) -> tuple[str, ...]:
        return self._roster.firms if self._roster else ()

    @property
    def neighbourhood(self) -> Neighbourhood | None:
        return self._hood

    @property
    def graph(self) -> Mapping[str, tuple[str, ...]]:
        return MappingProxyType(self._graph)

    @property
    def _threshold(self) -> int:
        """Shares that rebuild a secret: agreed with the roster, before any stage that reads it."""
        assert self._hood is not None, "no neighbourhood before the roster is agreed"
        return self._hood.threshold

    def retired_firms(self, round_number: int) -> frozenset[str]:
        """Firms that may not take part in `round_number`: the key it uses was reconstructed."""
        key_index = self.params.mask_key_index(round_number - self._start)
        return frozenset(firm for firm, keys in self._retired.items() if key_index in keys)

    @property
    def record(self) -> DropoutRecord:
        """The dropout record of the current (or last) round, including the session's stages."""
        rnd = self._round
        dropped = dict(self._session_dropped)
        errors = dict(self._session_errors)
        if rnd is not None:
            dropped.update(rnd.dropped)
            errors.update(rnd.errors)
        return DropoutRecord(
            run_id=self.run_id,
            session=self._start,
            round_number=rnd.number if rnd else None,
            invited=self._invited,
            roster=self.roster,
            active=tuple(sorted(rnd.active)) if rnd else (),
            contributors=tuple(sorted(rnd.contributors)) if rnd and rnd.aborted is None else (),
            dropped=MappingProxyType(dropped),
            errors=MappingProxyType(errors),
            left_out=tuple(sorted(rnd.left_out)) if rnd else (),
            retired=tuple(sorted(rnd.retired)) if rnd else (),
            reconstructed_mask_keys=tuple(sorted(rnd.key_owners)) if rnd else (),
            recovered_self_masks=tuple(sorted(rnd.recovered)) if rnd else (),
            aborted=(rnd.aborted if rnd else None) or self._session_aborted,
        )

    # ---- plumbing --------------------------------------------------------------------------

    def _expect_phase(self, phase: _Phase, stage: Stage) -> None:
        if self._phase is not phase:
            raise ProtocolError(f"server is {self._phase.value}, not {phase.value}: call out of order", stage=stage)

    @property
    def session_open(self) -> bool:
        """Whether a key session is agreed and can take rounds (false after a session-level abort)."""
        return self._phase in (_Phase.READY, _Phase.MASKING, _Phase.UNMASKING)

    def _abort(self, stage: Stage, problem: str, *, firm: str | None = None) -> NoReturn:
        """Stop the round (or the session, in its key stages); release nothing."""
        self._raise_abort(ProtocolError(f"aborted, nothing released: {problem}", firm=firm, stage=stage))

    def _raise_abort(self, error: ProtocolError) -> NoReturn:
        if self._phase in (_Phase.MASKING, _Phase.UNMASKING) and self._round is not None:
            self._round.total = None
            self._round.aborted = str(error)
            self._phase = _Phase.READY
        else:
            self._session_aborted = str(error)
            self._phase = _Phase.IDLE
        raise error

    def _intake(
        self, stage: Stage, replies: Replies, handle: Callable[[str, Reply], None], errors: dict[str, str]
    ) -> None:
        items = replies.items() if isinstance(replies, Mapping) else replies
        seen: set[str] = set()
        for firm, reply in items:
            try:
                if not isinstance(firm, str):
                    raise ProtocolError(f"reply keyed by {firm!r}, not a firm id", stage=stage)
                if firm in seen:
                    raise ProtocolError("second reply in the same stage (replayed)", firm=firm, stage=stage)
                seen.add(firm)
                handle(firm, reply)
            except ProtocolError as err:
                if not self.drop_faulty_firms:
                    self._raise_abort(err)
                key = firm if isinstance(firm, str) else repr(firm)
                errors[key] = f"{errors[key]}; {err}" if key in errors else str(err)

    @staticmethod
    def _parse(message_type: type[FirmMessageT], firm: str, reply: Reply) -> FirmMessageT:
        kind, stage = message_type.MESSAGE, message_type.STAGE
        if isinstance(reply, message_type):
            if reply.sender != firm:
                raise ProtocolError(
                    f"{kind} claims to come from {reply.sender!r} but arrived from {firm!r}", firm=firm, stage=stage
                )
            return reply
        if isinstance(reply, Mapping):
            return message_type.from_wire(reply, expected_sender=firm)
        raise ProtocolError(f"expected a {kind} or its wire dict, got {type(reply).__name__}", firm=firm, stage=stage)

    def _check_context(self, msg: Any, firm: str, stage: Stage, round_number: int | None = None) -> None:
        if msg.run_id != self.run_id:
            raise ProtocolError(f"message is for run {msg.run_id!r}, not {self.run_id!r}", firm=firm, stage=stage)
        if msg.session != self._start:
            raise ProtocolError(
                f"message is for session {msg.session}, not {self._start} (replayed or stale)", firm=firm, stage=stage
            )
        if round_number is not None and msg.round_number != round_number:
            raise ProtocolError(
                f"message is for round {msg.round_number}, this is round {round_number} (replayed or delayed)",
                firm=firm,
                stage=stage,
            )

    def _short_neighbourhoods(self, members: frozenset[str]) -> list[str]:
        """Members with fewer than `threshold` share holders (themselves and neighbours) among `members`."""
        t = self._threshold
        return sorted(f for f in members if len(set(self._graph[f]) & members) + 1 < t)

    # ---- stage 1 ---------------------------------------------------------------------------

    def start_session(self, first_round: int, firms: Iterable[str]) -> AdvertiseRequest:
        """Open a key session of `params.rounds_per_session` rounds starting at `first_round`."""
        if self._phase in (_Phase.MASKING, _Phase.UNMASKING):
            raise ProtocolError(f"server is {self._phase.value}: finish the round first", stage=Stage.ADVERTISE_KEYS)
        invited = tuple(sorted(firms))
        if type(first_round) is not int or first_round <= self._last_round or first_round <= self._start:
            raise ConfigError(
                f"first round must exceed round {max(self._last_round, self._start)}, got {first_round!r}",
                field="first_round",
            )
        if len(set(invited)) != len(invited) or not all(isinstance(f, str) and f for f in invited):
            raise ConfigError("invited firms must be distinct non-empty strings", field="firms")
        if len(invited) < self.params.min_firms:
            raise ConfigError(f"{len(invited)} firms invited, at least {self.params.min_firms} needed", field="firms")
        self._reset_session()
        self._round = None
        self._start, self._invited = first_round, invited
        self._phase = _Phase.ADVERTISE
        return AdvertiseRequest(self.run_id, first_round, self.params.rounds_per_session, self.params.fingerprint())

    def receive_advertise(self, replies: Replies) -> Roster:
        """Check every firm's keys; the firms with valid, unique keys form the session's roster."""
        stage = Stage.ADVERTISE_KEYS
        self._expect_phase(_Phase.ADVERTISE, stage)
        invited = set(self._invited)

        def handle(firm: str, reply: Reply) -> None:
            if firm not in invited:
                raise ProtocolError("firm was not invited to this session", firm=firm, stage=stage)
            msg: AdvertiseKeys = self._parse(AdvertiseKeys, firm, reply)
            self._check_context(msg, firm, stage)
            if len(msg.mask_public_keys) != self.params.num_mask_keys:
                raise ProtocolError(
                    f"expected {self.params.num_mask_keys} mask keys, got {len(msg.mask_public_keys)}",
                    firm=firm,
                    stage=stage,
                )
            if len(msg.self_mask_commitments) != self.params.rounds_per_session:
                raise ProtocolError(
                    f"expected {self.params.rounds_per_session} self-mask commitments, "
                    f"got {len(msg.self_mask_commitments)}",
                    firm=firm,
                    stage=stage,
                )
            for key in (msg.channel_public_key, *msg.mask_public_keys):
                check_public_key(key, firm=firm, stage=stage)
            self._keys[firm] = msg

        self._intake(stage, replies, handle, self._session_errors)
        owners: dict[bytes, list[str]] = {}
        for firm, msg in self._keys.items():
            for key in (msg.channel_public_key, *msg.mask_public_keys):
                owners.setdefault(key, []).append(firm)
        reused = sorted({firm for firms in owners.values() if len(firms) > 1 for firm in firms})
        for firm in reused:  # a key seen twice was copied, replayed, or used for two purposes
            del self._keys[firm]
            error = ProtocolError(
                "advertised a public key that is not unique (copied or replayed)", firm=firm, stage=stage
            )
            if not self.drop_faulty_firms:
                self._raise_abort(error)
            self._session_errors[firm] = str(error)
        for firm in invited - set(self._keys):
            self._session_dropped[firm] = stage
        firms = tuple(sorted(self._keys))
        if len(firms) < self.params.min_firms:
            self._abort(stage, f"{len(firms)} firms advertised valid keys, at least {self.params.min_firms} needed")
        try:
            self._hood = self.params.neighbourhood(len(firms))
        except ConfigError as err:
            self._abort(stage, f"parameters do not fit a roster of {len(firms)} firms: {err}")
        self._graph = neighbour_graph(self.run_id, self._start, firms, self._hood.num_neighbours)
        self._roster = Roster(
            run_id=self.run_id,
            session=self._start,
            firms=firms,
            channel_public_keys=tuple(self._keys[f].channel_public_key for f in firms),
            mask_public_keys=tuple(self._keys[f].mask_public_keys for f in firms),
        )
        self._phase = _Phase.SHARE
        return self._roster

    # ---- stage 2 ---------------------------------------------------------------------------

    def receive_shares(self, replies: Replies) -> None:
        """Accept each firm's encrypted shares for its neighbours and queue them for routing."""
        stage = Stage.SHARE_KEYS
        self._expect_phase(_Phase.SHARE, stage)
        roster = set(self.roster)
        ciphertext_bytes = SHARE_BYTES * (self.params.num_mask_keys + self.params.rounds_per_session) + TAG_BYTES
        received: dict[str, ShareKeys] = {}

        def handle(firm: str, reply: Reply) -> None:
            if firm not in roster:
                raise ProtocolError("firm is not in this session's roster", firm=firm, stage=stage)
            msg: ShareKeys = self._parse(ShareKeys, firm, reply)
            self._check_context(msg, firm, stage)
            if msg.recipients != self._graph[firm]:
                raise ProtocolError("shares must go to exactly the firm's neighbours", firm=firm, stage=stage)
            if any(len(c) != ciphertext_bytes for c in msg.ciphertexts):
                raise ProtocolError(f"every share ciphertext must be {ciphertext_bytes} bytes", firm=firm, stage=stage)
            received[firm] = msg

        self._intake(stage, replies, handle, self._session_errors)
        shared = frozenset(received)
        for firm in roster - shared:
            self._session_dropped.setdefault(firm, stage)
        if len(shared) < self.params.min_firms:
            self._abort(stage, f"{len(shared)} firms shared keys, at least {self.params.min_firms} needed")
        short = self._short_neighbourhoods(shared)
        if short:
            self._abort(
                stage,
                f"{len(short)} firm(s), e.g. {short[0]!r}, have fewer than {self._threshold} share holders left",
                firm=short[0],
            )
        self._shared = shared
        self._inbox = {firm: [] for firm in shared}
        for sender in sorted(shared):
            msg = received[sender]
            for recipient, nonce, ciphertext in zip(msg.recipients, msg.nonces, msg.ciphertexts, strict=True):
                if recipient in shared:
                    self._inbox[recipient].append((sender, nonce, ciphertext))
        self._phase = _Phase.READY

    # ---- stage 3 ---------------------------------------------------------------------------

    def start_round(
        self, round_number: int, vector_length: int, *, leave_out: Iterable[str] = ()
    ) -> dict[str, MaskedInputRequest]:
        """Ask every eligible firm for its masked input; `leave_out` names firms known to be gone."""
        stage = Stage.MASKED_INPUT
        self._expect_phase(_Phase.READY, stage)
        offset = round_number - self._start if type(round_number) is int else -1
        if not 0 <= offset < self.params.rounds_per_session or round_number <= self._last_round:
            raise ConfigError(
                f"round {round_number!r} is not a new round of session {self._start} "
                f"(rounds {self._start}..{self._start + self.params.rounds_per_session - 1}, "
                f"last run {self._last_round})",
                field="round_number",
            )
        if type(vector_length) is not int or vector_length < 1:
            raise ConfigError(f"must be a positive integer, got {vector_length!r}", field="vector_length")
        leave_out = frozenset(leave_out)
        if not leave_out <= set(self.roster):
            raise ConfigError(
                f"firms to leave out are not in the roster: {sorted(leave_out - set(self.roster))}", field="leave_out"
            )
        retired = self.retired_firms(round_number) & self._shared
        active = self._shared - retired - leave_out
        self._last_round = round_number
        self._round = _Round(
            number=round_number,
            key_index=self.params.mask_key_index(offset),
            vector_length=vector_length,
            active=active,
            left_out=leave_out,
            retired=retired,
            total=np.zeros(vector_length, dtype=ring_dtype(self.params.modulus_bits)),
        )
        self._phase = _Phase.MASKING
        if len(active) < self.params.min_firms:
            self._abort(stage, f"{len(active)} firms can take part, at least {self.params.min_firms} needed")
        short = self._short_neighbourhoods(active)
        if short:
            self._abort(
                stage, f"{len(short)} firm(s), e.g. {short[0]!r}, have too few active neighbours", firm=short[0]
            )
        active_firms = tuple(sorted(active))
        requests = {}
        for firm in active_firms:
            inbox = self._inbox[firm] if firm not in self._confirmed else []
            requests[firm] = MaskedInputRequest(
                run_id=self.run_id,
                session=self._start,
                round_number=round_number,
                recipient=firm,
                vector_length=vector_length,
                active_firms=active_firms,
                share_senders=tuple(sender for sender, _, _ in inbox),
                share_nonces=tuple(nonce for _, nonce, _ in inbox),
                share_ciphertexts=tuple(ciphertext for _, _, ciphertext in inbox),
            )
        return requests

    def receive_masked_inputs(self, replies: Replies) -> UnmaskRequest:
        """Add up the masked inputs as they come; decide what must be unmasked or recovered."""
        stage = Stage.MASKED_INPUT
        self._expect_phase(_Phase.MASKING, stage)
        rnd = self._round
        assert rnd is not None and rnd.total is not None, "the masking phase has a round and its running sum"
        total = rnd.total
        dtype = ring_dtype(self.params.modulus_bits)

        def handle(firm: str, reply: Reply) -> None:
            if firm not in rnd.active:
                if firm in rnd.retired:
                    why = (
                        "its mask key was reconstructed in a recovery; "
                        "it must re-key (join the next session) before taking part again"
                    )
                elif firm in self.roster:
                    why = "firm was not asked for input in this round"
                else:
                    why = "firm is not in this session's roster"
                raise ProtocolError(why, firm=firm, stage=stage)
            msg: MaskedInput = self._parse(MaskedInput, firm, reply)
            self._check_context(msg, firm, stage, rnd.number)
            if msg.modulus_bits != self.params.modulus_bits:
                raise ProtocolError(
                    f"modulus of {msg.modulus_bits} bits, expected {self.params.modulus_bits}", firm=firm, stage=stage
                )
            vector = msg.vector
            if not isinstance(vector, np.ndarray) or vector.dtype != dtype or vector.shape != (rnd.vector_length,):
                raise ProtocolError(
                    f"vector must be {rnd.vector_length} values of {dtype}, "
                    f"got {getattr(vector, 'dtype', type(vector))} "
                    f"of shape {getattr(vector, 'shape', None)}",
                    firm=firm,
                    stage=stage,
                )
            if self.params.modulus_bits < 8 * dtype.itemsize and int(vector.max()) >> self.params.modulus_bits:
                raise ProtocolError(
                    f"vector holds values outside [0, 2^{self.params.modulus_bits})", firm=firm, stage=stage
                )
            np.add(total, vector, out=total)
            rnd.contributors.add(firm)
            self._confirmed.add(firm)

        self._intake(stage, replies, handle, rnd.errors)
        survivors = frozenset(rnd.contributors)
        dropped = rnd.active - survivors
        for firm in dropped:
            rnd.dropped[firm] = stage
        if len(survivors) < self.params.min_firms:
            self._abort(stage, f"{len(survivors)} masked inputs arrived, at least {self.params.min_firms} needed")
        short = self._short_neighbourhoods(survivors)
        if short:
            self._abort(
                stage,
                f"{len(short)} firm(s), e.g. {short[0]!r}, have fewer than {self._threshold} surviving share holders",
                firm=short[0],
            )
        key_owners = frozenset(d for d in dropped if set(self._graph[d]) & survivors)
        short = sorted(d for d in key_owners if len(set(self._graph[d]) & survivors) < self._threshold)
        if short:
            self._abort(
                stage,
                f"dropped firm {short[0]!r} has fewer than {self._threshold} surviving share holders",
                firm=short[0],
            )
        if not is_connected(survivors, self._graph):
            self._abort(stage, "the survivors' neighbour graph is disconnected; unmasking would expose partial sums")
        for d in sorted(key_owners):
            earlier = [
                q
                for q in self._self_revealed.get(d, ())
                if self.params.mask_key_index(q - self._start) == rnd.key_index
            ]
            if earlier:
                self._abort(
                    stage,
                    f"firm {d!r} dropped, but its self-mask for round {min(earlier)} was revealed under "
                    "the same mask key; rebuilding the key would expose that input, so the round cannot "
                    "be recovered: start a new key session",
                    firm=d,
                )
        for d in key_owners:
            self._retired.setdefault(d, set()).add(rnd.key_index)
        for firm in survivors:
            self._self_revealed.setdefault(firm, set()).add(rnd.number)
        rnd.key_owners = key_owners
        self._phase = _Phase.UNMASKING
        return UnmaskRequest(self.run_id, self._start, rnd.number, tuple(sorted(survivors)))

    # ---- stage 4 ---------------------------------------------------------------------------

    def finish(self, replies: Replies) -> np.ndarray:
        """Rebuild the secrets from the shares, remove every mask, return the exact sum mod 2^m (uint64)."""
        stage = Stage.UNMASK
        self._expect_phase(_Phase.UNMASKING, stage)
        rnd = self._round
        assert rnd is not None and rnd.total is not None, "the unmasking phase has a round and its masked sum"
        survivors = frozenset(rnd.contributors)
        dropped = rnd.active - survivors
        x_of = {firm: i + 1 for i, firm in enumerate(self.roster)}
        self_shares: dict[str, dict[int, int]] = {firm: {} for firm in survivors}
        key_shares: dict[str, dict[int, int]] = {firm: {} for firm in rnd.key_owners}
        responders: set[str] = set()

        def handle(firm: str, reply: Reply) -> None:
            if firm not in survivors:
                raise ProtocolError("firm did not send a masked input in this round", firm=firm, stage=stage)
            msg: UnmaskShares = self._parse(UnmaskShares, firm, reply)
            self._check_context(msg, firm, stage, rnd.number)
            neighbours = set(self._graph[firm])
            if msg.self_mask_owners != tuple(sorted((neighbours & survivors) | {firm})):
                raise ProtocolError(
                    "self-mask shares must cover exactly the firm and its surviving neighbours", firm=firm, stage=stage
                )
            if msg.mask_key_owners != tuple(sorted(neighbours & dropped)):
                raise ProtocolError(
                    "mask-key shares must cover exactly the firm's dropped neighbours", firm=firm, stage=stage
                )
            decoded_self = [decode_share(s, firm=firm, stage=stage) for s in msg.self_mask_shares]
            decoded_keys = [decode_share(s, firm=firm, stage=stage) for s in msg.mask_key_shares]
            for owner, value in zip(msg.self_mask_owners, decoded_self, strict=True):
                self_shares[owner][x_of[firm]] = value
            for owner, value in zip(msg.mask_key_owners, decoded_keys, strict=True):
                key_shares[owner][x_of[firm]] = value
            responders.add(firm)

        self._intake(stage, replies, handle, rnd.errors)
        for firm in survivors - responders:
            rnd.dropped[firm] = stage
        rnd.recovered = frozenset(survivors - responders)
        t = self._threshold
        short = sorted(f for f, shares in (*self_shares.items(), *key_shares.items()) if len(shares) < t)
        if short:
            self._abort(
                stage, f"fewer than {t} shares arrived for {len(short)} firm(s), e.g. {short[0]!r}", firm=short[0]
            )
        offset = rnd.number - self._start
        seeds = [self._rebuild_self_seed(firm, self_shares[firm], offset) for firm in sorted(survivors)]
        dangling = []
        for d in sorted(rnd.key_owners):
            key = self._rebuild_mask_key(d, key_shares[d], rnd.key_index)
            for j in sorted(set(self._graph[d]) & survivors):
                peer_key = self._keys[j].mask_public_keys[rnd.key_index]
                agreement = agree(key.private_key, peer_key, firm=j, stage=stage)
                seed = pairwise_seed(
                    agreement, run_id=self.run_id, session=self._start, round_number=rnd.number, firm_a=d, firm_b=j
                )
                dangling.append((seed, pairwise_sign(j, d)))
        total = unmask_sum(rnd.total, seeds, dangling, self.params.modulus_bits).astype(np.uint64)
        rnd.total = None
        self._phase = _Phase.READY
        return total

    def _rebuild_self_seed(self, firm: str, shares: dict[int, int], offset: int) -> bytes:
        commitment, session = self._keys[firm].self_mask_commitments[offset], (self.run_id, self._start)
        seed = rebuild_self_seed(shares, self._threshold, commitment, session, self._start + offset, firm)
        if seed is None:
            self._abort(
                Stage.UNMASK, "rebuilt self-mask seed does not match its commitment: a share is corrupt", firm=firm
            )
        return seed

    def _rebuild_mask_key(self, firm: str, shares: dict[int, int], key_index: int) -> KeyPair:
        key = rebuild_mask_key(shares, self._threshold, self._keys[firm].mask_public_keys[key_index])
        if key is None:
            self._abort(
                Stage.UNMASK, "rebuilt mask key does not match the advertised public key: a share is corrupt", firm=firm
            )
        return key
