"""What a firm keeps between protocol messages, and its flat form for Flower's `context.state`.

In Flower a firm's ClientApp is not a long-lived object: a SuperNode may start a fresh process for
every message, and a simulation may hand any node's message to any worker. What survives between
one node's messages is `context.state`, whose ConfigRecords hold only int, float, str, bytes, bool
and homogeneous lists of these. `KeySession.to_state` / `from_state` map one key session to and
from such a flat dict; `SecAggClient.to_state` / `from_state` add the client-level fields.

Only what cannot be recomputed is stored: private keys, self-mask seeds, the roster, the shares
the firm holds, and which rounds it masked and unmasked and what it revealed. The neighbourhood,
neighbour graph, x-coordinates, share channel keys and pairwise mask agreements follow from the
roster and the private keys, so a restore derives them again with the code that derived them in
SHARE_KEYS: they cannot be stored inconsistent, and the state stays small.

The state holds the firm's private keys, its self-mask seeds and its neighbours' shares: it must
stay on the firm's side (`context.state` stays on the SuperNode; never copy it into a Message).
Keeping an old state from being replayed (which would let the firm mask a round twice) is the
job of the firm's storage; the client enforces the protocol's rules on the state it is given.

Layout `STATE_FORMAT` (K mask keys and R rounds per session, n roster firms; sets are sorted):

    always      format, run_id, params_fingerprint, firm_id, last_masked_round (-1: none yet),
                session_phase ("none", "advertised" or "shared")
    advertised  session_start, channel_private_key (32 B), mask_private_keys (K x 32 B),
                self_mask_seeds (R x 32 B)
    shared      all of advertised, and
                roster_firms, roster_channel_public_keys (n x 32 B),
                roster_mask_public_keys (n K x 32 B, firm-major),
                held_owners, held_mask_key_shares (K per owner, 66 B each, owner-major),
                held_self_mask_shares (R per owner, 66 B each), held_ciphertext_digests (SHA-256
                of each owner's ciphertext as delivered, b"" for the firm's own shares),
                masked_round (absent: none masked in this session), masked_active,
                unmasked_round (absent: none unmasked),
                revealed_self_mask_owners + revealed_self_mask_rounds (parallel: one pair each),
                revealed_mask_key_owners + revealed_mask_key_indices (parallel: one pair each)
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NoReturn

from silobridge.errors import ConfigError, ProtocolError
from silobridge.privacy.secagg.aead import channel_key
from silobridge.privacy.secagg.graph import neighbour_graph
from silobridge.privacy.secagg.keys import KEY_BYTES, KeyPair, agree
from silobridge.privacy.secagg.messages import Roster
from silobridge.privacy.secagg.params import Neighbourhood, SecAggParams
from silobridge.privacy.secagg.prg import SEED_BYTES
from silobridge.privacy.secagg.shamir import SHARE_BYTES, decode_share, encode_share
from silobridge.privacy.secagg.wire import FlatReader

STATE_FORMAT = "silobridge-secagg-client-state/2"
CIPHERTEXT_DIGEST_BYTES = 32
STATE_STAGE = "state"  # the `stage` of every error about a stored state

PHASE_NONE, PHASE_ADVERTISED, PHASE_SHARED = "none", "advertised", "shared"
PHASES = (PHASE_NONE, PHASE_ADVERTISED, PHASE_SHARED)

CLIENT_KEYS = ("format", "run_id", "params_fingerprint", "firm_id", "last_masked_round", "session_phase")
ADVERTISED_KEYS = ("session_start", "channel_private_key", "mask_private_keys", "self_mask_seeds")
SHARED_KEYS = (
    "roster_firms",
    "roster_channel_public_keys",
    "roster_mask_public_keys",
    "held_owners",
    "held_mask_key_shares",
    "held_self_mask_shares",
    "held_ciphertext_digests",
    "masked_active",
    "revealed_self_mask_owners",
    "revealed_self_mask_rounds",
    "revealed_mask_key_owners",
    "revealed_mask_key_indices",
)
SHARED_OPTIONAL_KEYS = ("masked_round", "unmasked_round")

StateValue = int | float | str | bytes | bool | list[int] | list[str] | list[bytes]
StateDict = dict[str, StateValue]
Fail = Callable[[str], NoReturn]


def state_keys(phase: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(required, optional) keys of a state in `phase` (one of the PHASE_* names)."""
    if phase == PHASE_SHARED:
        return CLIENT_KEYS + ADVERTISED_KEYS + SHARED_KEYS, SHARED_OPTIONAL_KEYS
    if phase == PHASE_ADVERTISED:
        return CLIENT_KEYS + ADVERTISED_KEYS, ()
    return CLIENT_KEYS, ()


@dataclass(frozen=True)
class HeldShares:
    """One owner's shares held by this firm: one per mask key, one per round's self-mask seed."""

    mask_key_shares: tuple[int, ...]
    self_mask_shares: tuple[int, ...]
    ciphertext_digest: bytes | None  # SHA-256 of the ciphertext as delivered, to recognise an identical re-delivery


@dataclass(frozen=True)
class Links:
    """What the roster and this firm's private keys imply: derived, never stored."""

    graph: dict[str, tuple[str, ...]]
    send_keys: dict[str, bytes]  # used once in SHARE_KEYS to encrypt the outgoing shares
    receive_keys: dict[str, bytes]


@dataclass
class KeySession:
    """Everything a firm keeps for one key session; dropped wholesale when it re-keys."""

    start: int
    channel_key: KeyPair
    mask_keys: tuple[KeyPair, ...]
    self_seeds: tuple[bytes, ...]
    roster: Roster | None = None
    neighbourhood: Neighbourhood | None = None
    graph: dict[str, tuple[str, ...]] = field(default_factory=dict)
    x_coordinate: dict[str, int] = field(default_factory=dict)
    receive_keys: dict[str, bytes] = field(default_factory=dict)
    _mask_agreements: dict[tuple[str, int], bytes] = field(default_factory=dict, repr=False, compare=False)
    held: dict[str, HeldShares] = field(default_factory=dict)
    masked_round: int | None = None
    masked_active: frozenset[str] = frozenset()
    unmasked_round: int | None = None
    revealed_self_rounds: dict[str, set[int]] = field(default_factory=dict)
    revealed_key_indices: dict[str, set[int]] = field(default_factory=dict)

    @property
    def phase(self) -> str:
        return PHASE_ADVERTISED if self.roster is None else PHASE_SHARED

    # ---- the roster and what follows from it ---------------------------------------------------

    def check_roster(self, roster: Roster, params: SecAggParams, firm_id: str, fail: Fail) -> Neighbourhood:
        """The roster's shape, this firm's own keys in it, and that the parameters fit its size."""
        firms = roster.firms
        if list(firms) != sorted(set(firms)):
            fail("roster must list distinct firms in sorted order")
        if firm_id not in firms:
            fail("this firm is missing from the roster")
        if len(roster.channel_public_keys) != len(firms) or len(roster.mask_public_keys) != len(firms):
            fail("roster lists a different number of keys than firms")
        if any(len(keys) != params.num_mask_keys for keys in roster.mask_public_keys):
            fail(f"roster must give {params.num_mask_keys} mask keys per firm")
        me = roster.index(firm_id)
        if roster.channel_public_keys[me] != self.channel_key.public_bytes or roster.mask_public_keys[me] != tuple(
            key.public_bytes for key in self.mask_keys
        ):
            fail("roster carries public keys for this firm that it did not advertise")
        all_keys = list(roster.channel_public_keys) + [key for keys in roster.mask_public_keys for key in keys]
        if len(set(all_keys)) != len(all_keys):
            fail("roster repeats a public key (copied or replayed keys)")
        if len(firms) < params.min_firms:
            fail(f"roster of {len(firms)} firms is below the minimum of {params.min_firms}")
        try:
            return params.neighbourhood(len(firms))
        except ConfigError as err:
            fail(f"parameters do not fit the roster: {err}")

    def derive_links(self, roster: Roster, hood: Neighbourhood, *, run_id: str, firm_id: str, stage: str) -> Links:
        """The neighbour graph, and per neighbour the share channel keys (which also vets their keys)."""
        graph = neighbour_graph(run_id, self.start, roster.firms, hood.num_neighbours)
        send_keys: dict[str, bytes] = {}
        receive_keys: dict[str, bytes] = {}
        for j in graph[firm_id]:
            peer = roster.index(j)
            shared = agree(self.channel_key.private_key, roster.channel_public_keys[peer], firm=j, stage=stage)
            send_keys[j] = channel_key(shared, run_id=run_id, session=self.start, sender=firm_id, recipient=j)
            receive_keys[j] = channel_key(shared, run_id=run_id, session=self.start, sender=j, recipient=firm_id)
        return Links(graph, send_keys, receive_keys)

    def adopt(self, roster: Roster, hood: Neighbourhood, links: Links) -> None:
        """Enter the shared phase (the last step of SHARE_KEYS, and of restoring such a state)."""
        self.roster, self.neighbourhood, self.graph = roster, hood, links.graph
        self.x_coordinate = {firm: i + 1 for i, firm in enumerate(roster.firms)}
        self.receive_keys = links.receive_keys
        self._mask_agreements = {}

    def mask_agreement(self, neighbour: str, key_index: int, *, stage: str) -> bytes:
        """X25519 of this firm's mask key `key_index` with the neighbour's, computed when first needed.

        A session holds one mask key per round; deriving all of them on every restore of the stored
        state (one per message) cost most of a firm's time per round, and a round needs only its own.
        """
        cached = self._mask_agreements.get((neighbour, key_index))
        if cached is None:
            if self.roster is None:
                raise ProtocolError("keys not yet shared in this session", stage=stage)
            peer_key = self.roster.mask_public_keys[self.roster.index(neighbour)][key_index]
            cached = agree(self.mask_keys[key_index].private_key, peer_key, firm=neighbour, stage=stage)
            self._mask_agreements[(neighbour, key_index)] = cached
        return cached

    # ---- flat form --------------------------------------------------------------------------------

    def to_state(self) -> StateDict:
        """The session's keys of the flat state (see the module docstring for the layout)."""
        state: StateDict = {
            "session_start": self.start,
            "channel_private_key": self.channel_key.private_bytes(),
            "mask_private_keys": [key.private_bytes() for key in self.mask_keys],
            "self_mask_seeds": list(self.self_seeds),
        }
        if self.roster is None:
            return state
        owners = sorted(self.held)
        state.update(
            roster_firms=list(self.roster.firms),
            roster_channel_public_keys=list(self.roster.channel_public_keys),
            roster_mask_public_keys=[key for keys in self.roster.mask_public_keys for key in keys],
            held_owners=owners,
            held_mask_key_shares=[encode_share(v) for o in owners for v in self.held[o].mask_key_shares],
            held_self_mask_shares=[encode_share(v) for o in owners for v in self.held[o].self_mask_shares],
            held_ciphertext_digests=[self.held[o].ciphertext_digest or b"" for o in owners],
            masked_active=sorted(self.masked_active),
        )
        if self.masked_round is not None:
            state["masked_round"] = self.masked_round
        if self.unmasked_round is not None:
            state["unmasked_round"] = self.unmasked_round
        state["revealed_self_mask_owners"], state["revealed_self_mask_rounds"] = _flat_pairs(self.revealed_self_rounds)
        state["revealed_mask_key_owners"], state["revealed_mask_key_indices"] = _flat_pairs(self.revealed_key_indices)
        return state

    @classmethod
    def from_state(cls, reader: FlatReader, params: SecAggParams, *, run_id: str, firm_id: str) -> KeySession:
        """Rebuild a session from `reader` (keys already checked against its phase), validating all."""
        session = cls(
            start=reader.integer("session_start"),
            channel_key=KeyPair.from_private_bytes(reader.blob("channel_private_key", size=KEY_BYTES)),
            mask_keys=tuple(
                KeyPair.from_private_bytes(data)
                for data in reader.blobs("mask_private_keys", size=KEY_BYTES, count=params.num_mask_keys)
            ),
            self_seeds=reader.blobs("self_mask_seeds", size=SEED_BYTES, count=params.rounds_per_session),
        )
        if reader.text("session_phase") == PHASE_SHARED:
            session._restore_shared(reader, params, run_id=run_id, firm_id=firm_id)
        return session

    def _restore_shared(self, reader: FlatReader, params: SecAggParams, *, run_id: str, firm_id: str) -> None:
        roster = _read_roster(reader, params, run_id=run_id, session=self.start)
        hood = self.check_roster(roster, params, firm_id, reader.fail)
        try:
            links = self.derive_links(roster, hood, run_id=run_id, firm_id=firm_id, stage=STATE_STAGE)
        except ProtocolError as err:
            reader.fail(f"stored roster key of firm {err.firm!r} is unusable: {err}")
        self.adopt(roster, hood, links)
        neighbours = set(links.graph[firm_id])
        self.held = _read_held(reader, params, firm_id=firm_id, neighbours=neighbours)
        self._restore_rounds(reader, params, roster=roster, firm_id=firm_id, neighbours=neighbours)

    def _restore_rounds(
        self, reader: FlatReader, params: SecAggParams, *, roster: Roster, firm_id: str, neighbours: set[str]
    ) -> None:
        """Masked and unmasked rounds and what was revealed, checked against each other."""
        rounds = range(self.start, self.start + params.rounds_per_session)
        masked = _optional_round(reader, "masked_round", rounds)
        active = frozenset(reader.sorted_firm_ids("masked_active"))
        if masked is None and active:
            reader.fail("masked_active lists firms although no round was masked")
        if masked is not None and not (active <= set(roster.firms) and firm_id in active):
            reader.fail("masked_active must be roster members and include this firm")
        unmasked = _optional_round(reader, "unmasked_round", rounds)
        if unmasked is not None and (masked is None or unmasked > masked):
            reader.fail(f"unmasked round {unmasked} was never masked (last masked: {masked})")
        revealable = range(0) if unmasked is None else range(self.start, unmasked + 1)
        self_rounds = _read_pairs(
            reader, "revealed_self_mask_owners", "revealed_self_mask_rounds", neighbours | {firm_id}, revealable
        )
        top_key = -1 if unmasked is None else params.mask_key_index(unmasked - self.start)
        key_indices = _read_pairs(
            reader, "revealed_mask_key_owners", "revealed_mask_key_indices", neighbours, range(top_key + 1)
        )
        for owner in self_rounds.keys() & key_indices.keys():
            if any(params.mask_key_index(q - self.start) in key_indices[owner] for q in self_rounds[owner]):
                reader.fail(f"records both secrets of firm {owner!r} under one mask key as revealed")
        self.masked_round, self.masked_active, self.unmasked_round = masked, active, unmasked
        self.revealed_self_rounds, self.revealed_key_indices = self_rounds, key_indices


def _flat_pairs(mapping: Mapping[str, set[int]]) -> tuple[list[str], list[int]]:
    """{owner: {values}} as two parallel lists of sorted (owner, value) pairs."""
    pairs = sorted((owner, value) for owner, values in mapping.items() for value in values)
    return [owner for owner, _ in pairs], [value for _, value in pairs]


def _read_pairs(
    reader: FlatReader, owners_key: str, values_key: str, owners_allowed: set[str], values_allowed: range
) -> dict[str, set[int]]:
    """Inverse of `_flat_pairs`: pairs strictly sorted, owners and values within what may occur."""
    owners = reader.firm_ids(owners_key)
    values = reader.integers(values_key, count=len(owners))
    pairs = list(zip(owners, values, strict=True))
    if any(a >= b for a, b in itertools.pairwise(pairs)):
        reader.fail(f"fields '{owners_key}' and '{values_key}' must list distinct pairs in sorted order")
    mapping: dict[str, set[int]] = {}
    for owner, value in pairs:
        if owner not in owners_allowed:
            reader.fail(f"field '{owners_key}' names {owner!r}, whose shares this firm does not hold")
        if value not in values_allowed:
            reader.fail(
                f"field '{values_key}' holds {value}, outside {values_allowed.start}..{values_allowed.stop - 1}"
            )
        mapping.setdefault(owner, set()).add(value)
    return mapping


def _optional_round(reader: FlatReader, key: str, rounds: range) -> int | None:
    if not reader.has(key):
        return None
    value = reader.integer(key)
    if value not in rounds:
        reader.fail(f"field '{key}' is {value}, outside the session's rounds {rounds.start}..{rounds.stop - 1}")
    return value


def _read_roster(reader: FlatReader, params: SecAggParams, *, run_id: str, session: int) -> Roster:
    firms = reader.sorted_firm_ids("roster_firms")
    n, per_firm = len(firms), params.num_mask_keys
    channel_keys = reader.blobs("roster_channel_public_keys", size=KEY_BYTES, count=n)
    flat = reader.blobs("roster_mask_public_keys", size=KEY_BYTES, count=n * per_firm)
    mask_keys = tuple(flat[i * per_firm : (i + 1) * per_firm] for i in range(n))
    return Roster(run_id, session, firms, channel_keys, mask_keys)


def ciphertext_digest(ciphertext: bytes) -> bytes:
    """What the state keeps of a delivered share ciphertext: enough to recognise a re-delivery, 40x
    smaller than the ciphertext (the state travels with every message a firm handles)."""
    return hashlib.sha256(ciphertext).digest()


def _read_held(
    reader: FlatReader, params: SecAggParams, *, firm_id: str, neighbours: set[str]
) -> dict[str, HeldShares]:
    """The shares this firm holds: its own (no ciphertext) and those its neighbours delivered."""
    owners = reader.sorted_firm_ids("held_owners")
    if firm_id not in owners or not set(owners) <= neighbours | {firm_id}:
        reader.fail("held_owners must include this firm and otherwise only its neighbours")
    num_keys, num_rounds = params.num_mask_keys, params.rounds_per_session
    key_shares = _read_shares(reader, "held_mask_key_shares", len(owners) * num_keys)
    seed_shares = _read_shares(reader, "held_self_mask_shares", len(owners) * num_rounds)
    digests = reader.blobs("held_ciphertext_digests", count=len(owners))
    held: dict[str, HeldShares] = {}
    for i, (owner, digest) in enumerate(zip(owners, digests, strict=True)):
        expected = 0 if owner == firm_id else CIPHERTEXT_DIGEST_BYTES
        if len(digest) != expected:
            reader.fail(f"held ciphertext digest of {owner!r} must be {expected} bytes, got {len(digest)}")
        held[owner] = HeldShares(
            key_shares[i * num_keys : (i + 1) * num_keys],
            seed_shares[i * num_rounds : (i + 1) * num_rounds],
            digest or None,
        )
    return held


def _read_shares(reader: FlatReader, key: str, count: int) -> tuple[int, ...]:
    blobs = reader.blobs(key, size=SHARE_BYTES, count=count)
    try:
        return tuple(decode_share(blob) for blob in blobs)
    except ProtocolError as err:
        reader.fail(f"field '{key}': {err}")
