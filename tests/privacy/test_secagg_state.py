"""A firm's SecAggClient survives being stored as a flat Flower ConfigRecord between every message.

In Flower a ClientApp may run each message in a new process; only `context.state` carries over.
These tests run the protocol with every firm restored from `to_state()` before, and stored after,
each call, through a ConfigRecord-rule checker and Flower's own protobuf round trip, and check that
nothing changes: same sums, same aborts, same bytes, same stored state as a long-lived client. Then
that the security rules hold across a restore, and that tampered states are refused by name.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import pytest
from flwr.app import ConfigRecord, RecordDict
from flwr.common.serde import config_record_from_proto, config_record_to_proto
from flwr.proto.recorddict_pb2 import ConfigRecord as ProtoConfigRecord
from hypothesis import event, given, settings
from hypothesis import strategies as st

from silobridge.errors import ConfigError, ProtocolError
from silobridge.privacy.secagg import (
    AdvertiseRequest,
    InMemoryFederation,
    MaskedInputRequest,
    Roster,
    SecAggClient,
    SecAggParams,
    Stage,
    UnmaskRequest,
    default_num_neighbours,
)
from silobridge.privacy.secagg.keys import Entropy, KeyPair
from silobridge.privacy.secagg.messages import AdvertiseKeys, MaskedInput, ShareKeys, UnmaskShares
from silobridge.privacy.secagg.state import STATE_FORMAT, STATE_STAGE
from tests.privacy.secagg_support import entropy_per_firm, firm_ids, seeded_entropy

RUN = "run-state"
INT64 = range(-(2**63), 2**63)
SCALARS = (bool, int, float, str, bytes)


# ---- what Flower's context.state accepts --------------------------------------------------------


def check_config_record(state: Mapping[Any, Any]) -> None:
    """Raise TypeError unless `state` fits a Flower ConfigRecord exactly.

    Keys are str; a value is one of bool, int (64-bit, as protobuf carries it), float, str, bytes,
    or a list whose items all have one of those exact types (empty lists allowed). No None, no
    tuples, no nesting, no numpy scalars.
    """
    for key, value in state.items():
        if type(key) is not str:
            raise TypeError(f"key {key!r} is not a str")
        items = value if type(value) is list else [value]
        kinds = {type(item) for item in items}
        if len(kinds) > 1 or not kinds <= set(SCALARS):
            raise TypeError(f"{key!r}: {sorted(k.__name__ for k in kinds)} is not one ConfigRecord scalar type")
        if any(type(item) is int and item not in INT64 for item in items):
            raise TypeError(f"{key!r}: integer outside 64 bits")


def through_flower(state: Mapping[str, Any]) -> dict[str, Any]:
    """The state as the next process would get it: checked, in a ConfigRecord, as protobuf bytes."""
    check_config_record(state)
    wire = config_record_to_proto(ConfigRecord(dict(state))).SerializeToString()
    parsed = ProtoConfigRecord()
    parsed.ParseFromString(wire)
    return dict(config_record_from_proto(parsed))


def test_the_config_record_checker_refuses_what_flower_cannot_carry() -> None:
    for bad in ({"a": None}, {"a": (1, 2)}, {"a": [[1]]}, {"a": [1, "x"]}, {"a": [1, True]}, {"a": {"b": 1}}):
        with pytest.raises(TypeError):
            check_config_record(bad)
    for bad in ({"a": np.int64(1)}, {"a": 2**63}, {1: 1}):
        with pytest.raises(TypeError):
            check_config_record(bad)
    check_config_record({"a": [], "b": [b"x"], "c": -1, "d": "s", "e": True, "f": [0.5]})


# ---- a firm that keeps nothing in memory between messages ----------------------------------------


class StatelessFirm:
    """A firm as a Flower ClientApp runs it: each call restores the client, then stores it again.

    The state is stored after a call that raised as well (the glue would answer with an error
    reply and still save). Before each call the restored client must write back exactly what it
    was restored from.
    """

    def __init__(self, firm_id: str, params: SecAggParams, *, entropy: Entropy):
        self.firm_id, self.params, self.entropy = firm_id, params, entropy
        self.stored: dict[str, Any] = {}

    def _handle(self, method: str, *args: Any) -> Any:
        client = SecAggClient.restore_or_new(self.stored, self.firm_id, self.params, run_id=RUN, entropy=self.entropy)
        assert not self.stored or client.to_state() == self.stored, f"{self.firm_id}: restoring changed the state"
        try:
            return getattr(client, method)(*args)
        finally:
            self.stored = through_flower(client.to_state())

    def advertise(self, request: AdvertiseRequest) -> AdvertiseKeys:
        return self._handle("advertise", request)

    def share_keys(self, roster: Roster) -> ShareKeys:
        return self._handle("share_keys", roster)

    def masked_input(self, request: MaskedInputRequest, vector: np.ndarray) -> MaskedInput:
        return self._handle("masked_input", request, vector)

    def unmask(self, request: UnmaskRequest) -> UnmaskShares:
        return self._handle("unmask", request)


def federation(firms: Sequence[str], params: SecAggParams, seed: int, *, stateless: bool) -> InMemoryFederation:
    """The in-memory federation, its clients long-lived or (stateless) restored for every message."""
    fed = InMemoryFederation(firms, params, run_id=RUN, entropy_for=entropy_per_firm(seed))
    if stateless:
        fed.clients = {f: StatelessFirm(f, params, entropy=entropy_per_firm(seed)(f)) for f in fed.clients}
    return fed


def outcome(call: Callable[[], Any]) -> tuple[Any, ...]:
    """A comparable summary of one step: its result, or the ProtocolError that aborted it."""
    try:
        result = call()
    except ProtocolError as err:
        return ("aborted", err.stage, err.firm, str(err))
    if isinstance(result, Roster):
        return ("roster", result)
    return ("sum", result.total.tolist(), result.record.to_dict(), result.traffic, dict(result.client_errors))


def plain_sum(vectors: Mapping[str, np.ndarray], firms: Sequence[str], modulus_bits: int) -> list[int]:
    return [sum(int(vectors[f][i]) for f in firms) % (1 << modulus_bits) for i in range(len(vectors[firms[0]]))]


# ---- the whole protocol, restored at every message -----------------------------------------------


@st.composite
def runs(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(3, 10))
    k = draw(st.one_of(st.none(), st.sampled_from(sorted({*range(2, n - 1, 2), n - 1}))))
    k_resolved = default_num_neighbours(n) if k is None else k
    t = draw(st.one_of(st.none(), st.integers((k_resolved + 1) // 2 + 1, k_resolved + 1)))
    rounds = draw(st.integers(1, 3))
    params = SecAggParams(
        modulus_bits=draw(st.integers(2, 64)),
        num_neighbours=k,
        threshold=t,
        rounds_per_session=rounds,
        rounds_per_mask_key=draw(st.sampled_from([1, rounds])),
    )
    firms = firm_ids(n)

    def schedule(stages: list[Stage]) -> dict[str, Stage]:
        """Who drops at which of `stages`: about one firm in ten at each."""
        drawn = draw(st.lists(st.sampled_from([None] * 9 * len(stages) + stages), min_size=n, max_size=n))
        return {f: s for f, s in zip(firms, drawn, strict=True) if s is not None}

    sessions = [
        (schedule([Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS]), [schedule(list(Stage)[2:]) for _ in range(rounds)])
        for _ in range(draw(st.integers(1, 2)))
    ]
    return {
        "params": params,
        "firms": firms,
        "sessions": sessions,
        "length": draw(st.integers(1, 12)),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


@settings(max_examples=60, deadline=None)
@given(run=runs())
def test_restoring_every_firm_before_every_message_changes_nothing(run: dict[str, Any]) -> None:
    params, firms, seed = run["params"], run["firms"], run["seed"]
    reference = federation(firms, params, seed, stateless=False)
    stateless = federation(firms, params, seed, stateless=True)
    rng = np.random.default_rng(seed)
    high = (1 << params.modulus_bits) - 1
    event(f"{len(run['sessions'])} session(s) of {params.rounds_per_session} round(s), {params.num_mask_keys} key(s)")
    for index, (session_drops, round_drops) in enumerate(run["sessions"]):
        start = index * params.rounds_per_session
        opened = outcome(partial(reference.open_session, start, dropouts=session_drops))
        assert outcome(partial(stateless.open_session, start, dropouts=session_drops)) == opened
        event(f"session {opened[0]}")
        for offset, drops in enumerate(round_drops if opened[0] == "roster" else []):
            vectors = {f: rng.integers(0, high, run["length"], dtype=np.uint64, endpoint=True) for f in firms}
            expected = outcome(partial(reference.run_round, start + offset, vectors, dropouts=drops))
            assert outcome(partial(stateless.run_round, start + offset, vectors, dropouts=drops)) == expected
            event(f"round {expected[0]}")
            if expected[0] == "sum":
                contributors = list(expected[2]["contributors"])
                assert expected[1] == plain_sum(vectors, contributors, params.modulus_bits)
        assert stateless.client_errors == reference.client_errors  # the same refusals, aborted rounds included
        for firm in firms:  # what the next process would load equals the long-lived client's state
            stored, live = stateless.clients[firm].stored, through_flower(reference.clients[firm].to_state())
            assert stored == live or (not stored and live["session_phase"] == "none")  # never asked yet


# ---- exact reconstruction ------------------------------------------------------------------------


def snapshot(client: SecAggClient) -> dict[str, Any]:
    """Every piece of a client's state, derived parts included, with key pairs as private bytes."""

    def plain(value: Any) -> Any:
        if isinstance(value, KeyPair):
            return value.private_bytes()
        if isinstance(value, tuple):
            return tuple(plain(item) for item in value)
        return value

    session = client._session
    fields = (
        {}
        if session is None
        else {f.name: plain(getattr(session, f.name)) for f in dataclasses.fields(session) if f.compare}
    )  # a field with compare=False is a cache of derived values (mask agreements, derived on demand)
    return {
        "firm_id": client.firm_id,
        "run_id": client.run_id,
        "params": client.params,
        "last_masked_round": client._last_masked_round,
        **fields,
    }


def test_a_restored_client_equals_the_original_at_every_stage_derived_state_included() -> None:
    params = SecAggParams(modulus_bits=16, rounds_per_session=3, rounds_per_mask_key=3)
    firms = firm_ids(9)
    fed = federation(firms, params, seed=11, stateless=False)

    def check_all() -> None:
        for client in fed.clients.values():
            restored = SecAggClient.from_state(through_flower(client.to_state()), params, run_id=RUN)
            assert snapshot(restored) == snapshot(client)

    check_all()
    fed.open_session(1, dropouts={firms[8]: Stage.SHARE_KEYS})
    check_all()
    vectors = {f: np.arange(5) for f in firms}
    fed.run_round(1, vectors, dropouts={firms[0]: Stage.MASKED_INPUT, firms[1]: Stage.UNMASK})
    check_all()
    client = fed.clients[firms[2]]
    assert client._session.revealed_key_indices and client._session.revealed_self_rounds
    assert client._session.receive_keys
    # Mask agreements are derived on demand: a restored client derives the same ones.
    restored = SecAggClient.from_state(through_flower(client.to_state()), params, run_id=RUN)
    for neighbour in client._session.graph[client.firm_id]:
        assert restored._session.mask_agreement(neighbour, 0, stage="test") == client._session.mask_agreement(
            neighbour, 0, stage="test"
        )


def test_nothing_stored_means_a_fresh_client_and_an_empty_state_is_refused_by_from_state() -> None:
    params = SecAggParams(modulus_bits=16)
    context_state = RecordDict()  # what Flower's context.state is
    for nothing in (context_state.get("secagg"), {}, ConfigRecord()):
        fresh = SecAggClient.restore_or_new(nothing, "acme", params, run_id=RUN)
        assert fresh.firm_id == "acme" and fresh.to_state()["session_phase"] == "none"
    fresh.advertise(AdvertiseRequest(RUN, 1, 1, params.fingerprint()))
    context_state["secagg"] = ConfigRecord(fresh.to_state())
    restored = SecAggClient.restore_or_new(context_state["secagg"], "acme", params, run_id=RUN)
    assert snapshot(restored) == snapshot(fresh)
    with pytest.raises(ProtocolError, match="restore_or_new") as caught:
        SecAggClient.from_state({}, params, run_id=RUN)
    assert caught.value.stage == STATE_STAGE


# ---- security rules after a restore --------------------------------------------------------------


class Firms:
    """Clients and a server driven by hand, with any firm swapped for its restored copy at will."""

    def __init__(self, n: int, params: SecAggParams, seed: str = "rules"):
        self.params, self.firms = params, firm_ids(n)
        self.fed = InMemoryFederation(self.firms, params, run_id=RUN, entropy_for=entropy_per_firm(seed))
        self.server = self.fed.server

    def restore(self, firm: str) -> SecAggClient:
        """Replace `firm`'s client with one rebuilt from its stored state (as a new process would)."""
        stored = through_flower(self.fed.clients[firm].to_state())
        self.fed.clients[firm] = SecAggClient.from_state(stored, self.params, run_id=RUN, entropy=seeded_entropy(firm))
        return self.fed.clients[firm]

    def round(self, r: int, skip: set[str] = frozenset()) -> tuple[dict[str, MaskedInputRequest], UnmaskRequest]:
        requests = self.server.start_round(r, 4)
        replies = {
            f: self.fed.clients[f].masked_input(q, np.zeros(4, dtype=np.int64)).to_wire()
            for f, q in requests.items()
            if f not in skip
        }
        unmask = self.server.receive_masked_inputs(replies)
        self.server.finish({f: self.fed.clients[f].unmask(unmask).to_wire() for f in unmask.survivors})
        return requests, unmask


def expect(caught: pytest.ExceptionInfo, firm: str, stage: str) -> None:
    assert (caught.value.firm, caught.value.stage) == (firm, stage), str(caught.value)


def test_restored_client_refuses_to_mask_or_unmask_a_round_twice() -> None:
    firms = Firms(5, SecAggParams(modulus_bits=16, rounds_per_session=2))
    roster = firms.fed.open_session(1)
    me = firms.firms[0]
    with pytest.raises(ProtocolError, match="already shared"):
        firms.restore(me).share_keys(roster)
    requests, unmask = firms.round(1)
    client = firms.restore(me)
    with pytest.raises(ProtocolError, match="replayed or reordered") as caught:
        client.masked_input(requests[me], np.zeros(4, dtype=np.int64))
    expect(caught, me, Stage.MASKED_INPUT)
    with pytest.raises(ProtocolError, match="already unmasked") as caught:
        firms.restore(me).unmask(unmask)
    expect(caught, me, Stage.UNMASK)
    with pytest.raises(ProtocolError, match="replayed"):
        firms.restore(me).advertise(AdvertiseRequest(RUN, 1, 2, firms.params.fingerprint()))
    # Session 2 would reuse round 2 only if round 2 had been masked; mask it, then try.
    firms.round(2)
    with pytest.raises(ProtocolError, match="reuse round numbers up to 2") as caught:
        firms.restore(me).advertise(AdvertiseRequest(RUN, 2, 2, firms.params.fingerprint()))
    expect(caught, me, Stage.ADVERTISE_KEYS)


def test_restored_client_refuses_a_retired_firm_and_never_reveals_both_secrets() -> None:
    params = SecAggParams(modulus_bits=16, rounds_per_session=3, rounds_per_mask_key=3)
    firms = Firms(7, params)
    firms.fed.open_session(1)
    dropper, survivor = firms.firms[4], firms.firms[1]
    firms.round(1, skip={dropper})  # the dropper's mask key is rebuilt: it is retired for the session
    requests = firms.server.start_round(2, 4)
    neighbour = next(f for f in firms.server.graph[dropper] if f in requests)
    sneaky = dataclasses.replace(
        requests[neighbour], active_firms=tuple(sorted({*requests[neighbour].active_firms, dropper}))
    )
    with pytest.raises(ProtocolError, match="must re-key") as caught:
        firms.restore(neighbour).masked_input(sneaky, np.zeros(4, dtype=np.int64))
    expect(caught, dropper, Stage.MASKED_INPUT)

    # A lying server claims the survivor of round 1 dropped in round 2: revealing its mask key
    # would expose its round-1 input, whose self-mask was revealed under the same key.
    replies = {
        f: firms.fed.clients[f].masked_input(q, np.zeros(4, dtype=np.int64)).to_wire()
        for f, q in requests.items()
        if f != survivor
    }
    holder = next(f for f in firms.server.graph[survivor] if f in replies)
    lie = UnmaskRequest(RUN, 1, 2, tuple(sorted(replies)))
    with pytest.raises(ProtocolError, match="revealed under the same mask key") as caught:
        firms.restore(holder).unmask(lie)
    expect(caught, survivor, Stage.UNMASK)


# ---- tampered and malformed states ---------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_state() -> tuple[SecAggParams, str, dict[str, Any], list[str]]:
    """firm-000's state after one round of a 2-round, 1-key session in which firm-004 dropped."""
    params = SecAggParams(modulus_bits=16, rounds_per_session=2, rounds_per_mask_key=2)
    firms = Firms(5, params, seed="tamper")
    firms.fed.open_session(1)
    firms.round(1, skip={firms.firms[4]})
    return params, firms.firms[0], through_flower(firms.fed.clients[firms.firms[0]].to_state()), firms.firms


def replaced(state: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    return {**state, **changes}


def without(state: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k != key}


LOW_ORDER_POINT = bytes(32)  # X25519's zero point: agreement with it is refused

TAMPERED: list[tuple[str, Callable[[dict[str, Any], list[str]], Any], str]] = [
    ("not a dict", lambda s, f: list(s.items()), "expected a SecAggClient state dict"),
    ("other format version", lambda s, f: replaced(s, format="silobridge-secagg-client-state/0"), "format"),
    ("no format", lambda s, f: without(s, "format"), "nothing was stored"),
    ("missing field", lambda s, f: without(s, "held_owners"), r"fields missing \['held_owners'\]"),
    ("unexpected field", lambda s, f: replaced(s, debug=1), r"unexpected \['debug'\]"),
    ("unknown phase", lambda s, f: replaced(s, session_phase="masked"), "session_phase must be one of"),
    ("int as str", lambda s, f: replaced(s, last_masked_round="1"), "must be int, got str"),
    ("bool as int", lambda s, f: replaced(s, session_start=True), "must be int, got bool"),
    ("tuple as list", lambda s, f: replaced(s, held_owners=tuple(s["held_owners"])), "must be list, got tuple"),
    ("mixed list", lambda s, f: replaced(s, self_mask_seeds=[*s["self_mask_seeds"][:1], 3]), "list of bytes"),
    ("truncated private key", lambda s, f: replaced(s, channel_private_key=s["channel_private_key"][:31]), "32 bytes"),
    (
        "truncated mask key",
        lambda s, f: replaced(s, mask_private_keys=[s["mask_private_keys"][0][:-1]]),
        "every item of field 'mask_private_keys' must be 32 bytes",
    ),
    ("seed missing", lambda s, f: replaced(s, self_mask_seeds=s["self_mask_seeds"][:1]), "must hold 2 items"),
    ("invalid firm id", lambda s, f: replaced(s, firm_id=""), "invalid firm id"),
    ("unsorted roster", lambda s, f: replaced(s, roster_firms=s["roster_firms"][::-1]), "sorted order"),
    ("other private key", lambda s, f: replaced(s, channel_private_key=b"\x07" * 32), "did not advertise"),
    (
        "low-order roster key",
        lambda s, f: replaced(s, roster_channel_public_keys=[*s["roster_channel_public_keys"][:4], LOW_ORDER_POINT]),
        "stored roster key of firm 'firm-004' is unusable",
    ),
    (
        "share outside the field",
        lambda s, f: replaced(s, held_self_mask_shares=[b"\xff" * 66, *s["held_self_mask_shares"][1:]]),
        "outside the field",
    ),
    (
        "own shares missing",
        lambda s, f: {
            **s,
            "held_owners": s["held_owners"][1:],
            "held_mask_key_shares": s["held_mask_key_shares"][1:],
            "held_self_mask_shares": s["held_self_mask_shares"][2:],
            "held_ciphertext_digests": s["held_ciphertext_digests"][1:],
        },
        "must include this firm",
    ),
    (
        "truncated ciphertext digest",
        lambda s, f: replaced(
            s,
            held_ciphertext_digests=[
                s["held_ciphertext_digests"][0],
                s["held_ciphertext_digests"][1][:-1],
                *s["held_ciphertext_digests"][2:],
            ],
        ),
        "held ciphertext digest of 'firm-001'",
    ),
    ("masked round outside the session", lambda s, f: replaced(s, masked_round=9), "outside the session's rounds"),
    ("unmasked before masked", lambda s, f: replaced(s, unmasked_round=2), "never masked"),
    ("active without a masked round", lambda s, f: without(s, "masked_round"), "no round was masked"),
    ("replay guard rewound", lambda s, f: replaced(s, last_masked_round=-1), "contradicts"),
    (
        "both secrets revealed",
        lambda s, f: replaced(
            s, revealed_mask_key_owners=sorted([*s["revealed_mask_key_owners"], f[1]]), revealed_mask_key_indices=[0, 0]
        ),
        "both secrets of firm 'firm-001'",
    ),
    (
        "pairs out of order",
        lambda s, f: replaced(s, revealed_self_mask_owners=s["revealed_self_mask_owners"][::-1]),
        "distinct pairs in sorted order",
    ),
    ("pair counts differ", lambda s, f: replaced(s, revealed_mask_key_indices=[]), "must hold 1 items"),
    ("key index out of range", lambda s, f: replaced(s, revealed_mask_key_indices=[1]), "outside 0..0"),
]


@pytest.mark.parametrize(("mutate", "match"), [case[1:] for case in TAMPERED], ids=[case[0] for case in TAMPERED])
def test_tampered_state_is_refused_naming_the_firm_and_the_problem(shared_state, mutate, match) -> None:
    params, me, state, firms = shared_state
    assert state["revealed_mask_key_owners"] == [firms[4]]  # the fixture's shape the cases rely on
    with pytest.raises(ProtocolError, match=match) as caught:
        SecAggClient.from_state(mutate(state, firms), params, run_id=RUN)
    assert caught.value.stage == STATE_STAGE
    assert caught.value.firm in (None, me)  # None only before the firm id could be read


def test_state_of_another_run_params_or_firm_is_a_config_error(shared_state) -> None:
    params, me, state, firms = shared_state
    with pytest.raises(ConfigError, match="run") as caught:
        SecAggClient.from_state(state, params, run_id="another-run")
    assert caught.value.field == "run_id"
    other = SecAggParams(modulus_bits=16, rounds_per_session=2, rounds_per_mask_key=1)
    with pytest.raises(ConfigError, match="other secure-aggregation parameters") as caught:
        SecAggClient.from_state(state, other, run_id=RUN)
    assert caught.value.field == "params"
    with pytest.raises(ConfigError, match="params"):
        SecAggClient.from_state(replaced(state, params_fingerprint="0" * 64), params, run_id=RUN)
    with pytest.raises(ConfigError, match="belongs to firm 'firm-000'") as caught:
        SecAggClient.restore_or_new(state, firms[1], params, run_id=RUN)
    assert caught.value.field == "firm_id"
    assert SecAggClient.restore_or_new(state, me, params, run_id=RUN).to_state() == state
    assert state["format"] == STATE_FORMAT


@functools.cache
def states_in_every_phase() -> list[tuple[SecAggParams, dict[str, Any]]]:
    """firm-000's state with no session, after advertising, after sharing keys, after a round."""
    params = SecAggParams(modulus_bits=12, rounds_per_session=2)
    firms = Firms(4, params, seed="fuzz")
    me = firms.firms[0]
    states = [firms.fed.clients[me].to_state()]
    request = firms.server.start_session(1, firms.firms)
    adverts = {f: c.advertise(request).to_wire() for f, c in firms.fed.clients.items()}
    states.append(firms.fed.clients[me].to_state())
    roster = firms.server.receive_advertise(adverts)
    firms.server.receive_shares({f: c.share_keys(roster).to_wire() for f, c in firms.fed.clients.items()})
    states.append(firms.fed.clients[me].to_state())
    firms.round(1, skip={firms.firms[3]})
    states.append(firms.fed.clients[me].to_state())
    return [(params, through_flower(state)) for state in states]


WIRE_VALUES = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.booleans(),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=80),
    st.lists(st.integers(-3, 5), max_size=4),
    st.lists(st.text(max_size=10), max_size=4),
    st.lists(st.binary(max_size=70), max_size=4),
    st.sampled_from([[b"\x00" * 32], [b"\xff" * 66], ["firm-001", "firm-000"], [1, 0], []]),
)


@settings(max_examples=200, deadline=None)
@given(which=st.integers(0, 3), data=st.data())
def test_any_corrupted_field_loads_or_raises_a_named_error_never_anything_else(which: int, data: st.DataObject) -> None:
    params, state = states_in_every_phase()[which]
    key = data.draw(st.sampled_from(sorted(state) + ["masked_round", "unmasked_round", "extra"]))
    delete = data.draw(st.booleans())
    corrupted = without(state, key) if delete else replaced(state, **{key: data.draw(WIRE_VALUES)})
    try:
        restored = SecAggClient.from_state(corrupted, params, run_id=RUN)
    except (ProtocolError, ConfigError) as err:
        event(type(err).__name__)
        return
    event("loaded")
    assert restored.to_state() == corrupted  # whatever loads is exactly what was stored
