"""End-to-end properties: masks cancel, dropouts are recovered, too few survivors abort cleanly."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from silobridge.errors import ConfigError, ProtocolError
from silobridge.privacy.secagg import (
    InMemoryFederation,
    SecAggParams,
    SecAggServer,
    Stage,
    default_num_neighbours,
    default_threshold,
    secure_vector_sum,
    to_signed,
)
from silobridge.privacy.secagg.graph import is_connected, neighbour_graph
from tests.privacy.secagg_support import entropy_per_firm, firm_ids

RUN = "run-test"


def plain_sum(vectors: Mapping[str, np.ndarray], firms: Sequence[str], modulus_bits: int) -> np.ndarray:
    """The reference: the exact integer sum of the firms' vectors, reduced mod 2^m."""
    columns = np.array([[int(x) for x in vectors[f]] for f in firms], dtype=object)
    return np.array([int(c) % (1 << modulus_bits) for c in columns.sum(axis=0)], dtype=np.uint64)


def expected_outcome(
    firms: Sequence[str], params: SecAggParams, schedule: Mapping[str, Stage], session: int
) -> tuple[Stage | None, set[str], set[str], set[str]]:
    """Independent statement of when a round must abort: (abort stage or None, contributors,
    firms whose mask key gets rebuilt, contributors whose self-mask gets rebuilt)."""
    roster = sorted(f for f in firms if schedule.get(f) != Stage.ADVERTISE_KEYS)
    if len(roster) < params.min_firms:
        return Stage.ADVERTISE_KEYS, set(), set(), set()
    try:
        hood = params.neighbourhood(len(roster))
    except ConfigError:
        return Stage.ADVERTISE_KEYS, set(), set(), set()
    graph = {f: set(ns) for f, ns in neighbour_graph(RUN, session, roster, hood.num_neighbours).items()}
    t = hood.threshold
    shared = {f for f in roster if schedule.get(f) != Stage.SHARE_KEYS}
    if len(shared) < params.min_firms or any(len(graph[f] & shared) + 1 < t for f in shared):
        return Stage.SHARE_KEYS, set(), set(), set()
    survivors = {f for f in shared if schedule.get(f) != Stage.MASKED_INPUT}
    dropped = shared - survivors
    needed = {d for d in dropped if graph[d] & survivors}
    if (
        len(survivors) < params.min_firms
        or any(len(graph[s] & survivors) + 1 < t for s in survivors)
        or any(len(graph[d] & survivors) < t for d in needed)
        or not is_connected(survivors, {f: tuple(ns) for f, ns in graph.items()})
    ):
        return Stage.MASKED_INPUT, set(), set(), set()
    responders = {f for f in survivors if schedule.get(f) != Stage.UNMASK}
    if any(len((graph[s] | {s}) & responders) < t for s in survivors) or any(
        len(graph[d] & responders) < t for d in needed
    ):
        return Stage.UNMASK, set(), set(), set()
    return None, survivors, needed, survivors - responders


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[SecAggParams, dict[str, np.ndarray], dict[str, Stage], int]:
    n = draw(st.integers(3, 20))
    k = draw(st.one_of(st.none(), st.sampled_from(sorted({*range(2, n - 1, 2), n - 1}))))
    k_resolved = default_num_neighbours(n) if k is None else k
    t = draw(st.one_of(st.none(), st.integers((k_resolved + 1) // 2 + 1, k_resolved + 1)))
    modulus_bits = draw(st.integers(2, 64))
    length = draw(st.integers(1, 40))
    firms = firm_ids(n)
    stages = draw(st.lists(st.sampled_from([None] * 8 + list(Stage)), min_size=n, max_size=n))
    schedule = {f: s for f, s in zip(firms, stages, strict=True) if s is not None}
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    high = np.iinfo(np.uint64).max if modulus_bits == 64 else (1 << modulus_bits) - 1
    vectors = {f: rng.integers(0, high, size=length, dtype=np.uint64, endpoint=True) for f in firms}
    params = SecAggParams(modulus_bits=modulus_bits, num_neighbours=k, threshold=t)
    return params, vectors, schedule, seed


@settings(max_examples=60, deadline=None)
@given(scenario=scenarios())
def test_unmasked_sum_is_exact_or_the_round_aborts_releasing_nothing(scenario) -> None:
    params, vectors, schedule, seed = scenario
    firms = sorted(vectors)
    abort_stage, contributors, rebuilt_keys, rebuilt_seeds = expected_outcome(firms, params, schedule, session=1)
    event(f"abort at {abort_stage}" if abort_stage else "exact sum")
    if abort_stage is not None:
        with pytest.raises(ProtocolError) as caught:
            secure_vector_sum(vectors, params, dropouts=schedule, run_id=RUN, entropy_for=entropy_per_firm(seed))
        assert caught.value.stage == abort_stage
        assert "nothing released" in str(caught.value)
        return
    result = secure_vector_sum(vectors, params, dropouts=schedule, run_id=RUN, entropy_for=entropy_per_firm(seed))
    np.testing.assert_array_equal(result.total, plain_sum(vectors, sorted(contributors), params.modulus_bits))
    record = result.record
    assert set(record.contributors) == contributors
    assert dict(record.dropped) == schedule
    assert set(record.reconstructed_mask_keys) == rebuilt_keys
    assert set(record.recovered_self_masks) == rebuilt_seeds
    assert record.aborted is None and not record.errors and not result.client_errors


def test_dropout_record_converts_to_plain_json() -> None:
    firms = firm_ids(5)
    vectors = {f: np.arange(4) for f in firms}
    result = secure_vector_sum(vectors, SecAggParams(modulus_bits=8), dropouts={firms[0]: Stage.MASKED_INPUT})
    summary = json.loads(json.dumps(result.record.to_dict()))
    assert summary["dropped"] == {firms[0]: "masked_input"} and summary["contributors"] == firms[1:]


def test_signed_inputs_sum_to_the_signed_total() -> None:
    params = SecAggParams(modulus_bits=12)
    rng = np.random.default_rng(3)
    vectors = {f: rng.integers(-100, 100, size=50) for f in firm_ids(6)}
    result = secure_vector_sum(vectors, params, entropy_for=entropy_per_firm(3))
    np.testing.assert_array_equal(to_signed(result.total, 12), sum(vectors.values()))


def test_too_few_survivors_abort_and_the_server_keeps_no_partial_sum() -> None:
    firms = firm_ids(5)  # complete graph, k = 4, threshold 3 of 5 holders
    params = SecAggParams(modulus_bits=16)
    vectors = {f: np.arange(8) for f in firms}
    federation = InMemoryFederation(firms, params, run_id=RUN, entropy_for=entropy_per_firm("abort"))
    federation.open_session(1)
    schedule = {firms[0]: Stage.UNMASK, firms[1]: Stage.UNMASK, firms[2]: Stage.UNMASK}
    with pytest.raises(ProtocolError) as caught:
        federation.run_round(1, vectors, dropouts=schedule)
    assert caught.value.stage == Stage.UNMASK
    server = federation.server
    assert server.record.contributors == () and server.record.aborted
    assert server._round.total is None  # the running sum of masked inputs is gone
    with pytest.raises(ProtocolError, match="out of order"):
        server.finish({})


def test_a_session_serves_several_rounds_with_two_exchanges_each() -> None:
    firms = firm_ids(8)
    params = SecAggParams(modulus_bits=20, rounds_per_session=3)
    rng = np.random.default_rng(5)
    federation = InMemoryFederation(firms, params, run_id=RUN, entropy_for=entropy_per_firm("session"))
    federation.open_session(10)
    dropper = firms[3]
    for round_number, schedule in ((10, {dropper: Stage.MASKED_INPUT}), (11, {}), (12, {firms[5]: Stage.UNMASK})):
        vectors = {f: rng.integers(0, 1 << 20, size=30) for f in firms}
        result = federation.run_round(round_number, vectors, dropouts=schedule)
        expected = sorted(set(firms) - ({dropper} if round_number == 10 else set()))
        assert list(result.record.contributors) == expected
        np.testing.assert_array_equal(result.total, plain_sum(vectors, expected, 20))
    # With one mask key per round, the firm whose round-10 key was rebuilt takes part in round 11.
    assert result.traffic.uploads[Stage.ADVERTISE_KEYS] == len(firms)  # keys advertised once
    assert result.traffic.uploads[Stage.MASKED_INPUT] == 3 * len(firms) - 1


def test_shares_are_routed_only_until_a_firm_has_used_them() -> None:
    firms = firm_ids(6)
    params = SecAggParams(modulus_bits=16, rounds_per_session=2)
    federation = InMemoryFederation(firms, params, run_id=RUN, entropy_for=entropy_per_firm("route"))
    federation.open_session(1)
    vectors = {f: np.ones(4, dtype=np.int64) for f in firms}
    federation.run_round(1, vectors, dropouts={firms[0]: Stage.MASKED_INPUT})
    requests = federation.server.start_round(2, 4)
    assert requests[firms[0]].share_senders  # it never answered round 1, so it gets them again
    assert all(not requests[f].share_senders for f in firms[1:])


def test_neighbour_graph_is_regular_symmetric_and_deterministic() -> None:
    firms = firm_ids(30)
    graph = neighbour_graph("r", 1, firms, 8)
    assert graph == neighbour_graph("r", 1, list(reversed(firms)), 8)
    assert graph != neighbour_graph("r", 2, firms, 8)  # a new session reshuffles the ring
    for firm, neighbours in graph.items():
        assert len(neighbours) == 8 and firm not in neighbours
        assert all(firm in graph[other] for other in neighbours)
    assert is_connected(firms, graph)
    complete = neighbour_graph("r", 1, firms[:5], 4)
    assert all(len(ns) == 4 for ns in complete.values())
    with pytest.raises(ConfigError):
        neighbour_graph("r", 1, firms, 7)  # odd degree below n - 1


def test_parameter_defaults_and_validation() -> None:
    assert [default_num_neighbours(n) for n in (3, 10, 16, 20, 50, 100, 300)] == [2, 9, 12, 14, 18, 20, 26]
    assert [default_threshold(k) for k in (2, 9, 20)] == [2, 6, 11]
    # A higher expected dropout widens the neighbourhoods so rounds still complete.
    assert [default_num_neighbours(100, d) for d in (0.1, 0.2, 0.3)] == [20, 34, 84]
    assert SecAggParams(modulus_bits=24, expected_dropout=0.3).neighbourhood(100).num_neighbours == 84
    with pytest.raises(ConfigError, match="expected_dropout"):
        SecAggParams(modulus_bits=24, expected_dropout=0.5)
    hood = SecAggParams(modulus_bits=24).neighbourhood(100)
    assert (hood.num_neighbours, hood.threshold, hood.tolerated_dropouts) == (20, 11, 10)
    with pytest.raises(ConfigError, match="strict majority"):
        SecAggParams(modulus_bits=24, num_neighbours=10, threshold=5).neighbourhood(100)
    with pytest.raises(ConfigError, match="exceeds"):
        SecAggParams(modulus_bits=24, num_neighbours=10, threshold=12).neighbourhood(100)
    with pytest.raises(ConfigError, match="even"):
        SecAggParams(modulus_bits=24, num_neighbours=9).neighbourhood(100)
    with pytest.raises(ConfigError):
        SecAggParams(modulus_bits=65)
    with pytest.raises(ConfigError):
        SecAggParams(modulus_bits=24, rounds_per_session=2, rounds_per_mask_key=3)
    params = SecAggParams(modulus_bits=24, rounds_per_session=4, rounds_per_mask_key=2)
    assert params.num_mask_keys == 2 and [params.mask_key_index(i) for i in range(4)] == [0, 0, 1, 1]
    summary = params.describe(50)
    assert summary["resolved_num_neighbours"] == 18 and summary["mean_exchanges_per_round"] == 2.5
    assert all(isinstance(v, (int, float, str, bool, type(None))) for v in summary.values())
    assert params.fingerprint() != SecAggParams(modulus_bits=24).fingerprint()


def test_fewer_than_min_firms_abort_at_advertise() -> None:
    params = SecAggParams(modulus_bits=16)
    vectors = {f: np.zeros(3, dtype=np.int64) for f in firm_ids(3)}
    with pytest.raises(ProtocolError) as caught:
        secure_vector_sum(vectors, params, dropouts={"firm-000": Stage.ADVERTISE_KEYS})
    assert caught.value.stage == Stage.ADVERTISE_KEYS


def test_server_refuses_calls_out_of_order() -> None:
    server = SecAggServer(SecAggParams(modulus_bits=16), run_id=RUN)
    with pytest.raises(ProtocolError, match="out of order"):
        server.receive_shares({})
    with pytest.raises(ProtocolError, match="out of order"):
        server.start_round(1, 10)


@st.composite
def session_scenarios(draw: st.DrawFn):
    n = draw(st.integers(4, 12))
    rounds = draw(st.integers(2, 3))
    key_life = draw(st.sampled_from([1, rounds]))
    firms = firm_ids(n)
    schedules = [
        {
            f: s
            for f, s in zip(
                firms,
                draw(st.lists(st.sampled_from([None] * 6 + list(Stage)[2:]), min_size=n, max_size=n)),
                strict=True,
            )
            if s
        }
        for _ in range(rounds)
    ]
    params = SecAggParams(
        modulus_bits=draw(st.integers(8, 40)), rounds_per_session=rounds, rounds_per_mask_key=key_life
    )
    return params, firms, schedules, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=50, deadline=None)
@given(scenario=session_scenarios())
def test_sessions_recover_every_round_or_abort_it_and_retire_rebuilt_keys(scenario) -> None:
    params, firms, schedules, seed = scenario
    federation = InMemoryFederation(firms, params, run_id=RUN, entropy_for=entropy_per_firm(seed))
    federation.open_session(1)
    hood = params.neighbourhood(len(firms))
    graph = {f: set(ns) for f, ns in neighbour_graph(RUN, 1, firms, hood.num_neighbours).items()}
    t = hood.threshold
    retired: dict[str, set[int]] = {}
    revealed_self: dict[str, set[int]] = {}
    rng = np.random.default_rng(seed)
    for offset, schedule in enumerate(schedules):
        round_number, key = 1 + offset, params.mask_key_index(offset)
        vectors = {f: rng.integers(0, 1 << params.modulus_bits, 6) for f in firms}
        active = {f for f in firms if key not in retired.get(f, ())}
        survivors = {f for f in active if schedule.get(f) != Stage.MASKED_INPUT}
        needed = {d for d in active - survivors if graph[d] & survivors}
        if len(active) < params.min_firms or any(len(graph[f] & active) + 1 < t for f in active):
            expected: Stage | None = Stage.MASKED_INPUT
        elif (
            len(survivors) < params.min_firms
            or any(len(graph[s] & survivors) + 1 < t for s in survivors)
            or any(len(graph[d] & survivors) < t for d in needed)
            or not is_connected(survivors, {f: tuple(ns) for f, ns in graph.items()})
            or any(params.mask_key_index(q - 1) == key for d in needed for q in revealed_self.get(d, ()))
        ):
            expected = Stage.MASKED_INPUT
        else:
            for d in needed:
                retired.setdefault(d, set()).add(key)
            for s in survivors:
                revealed_self.setdefault(s, set()).add(round_number)
            responders = {f for f in survivors if schedule.get(f) != Stage.UNMASK}
            short = any(len((graph[s] | {s}) & responders) < t for s in survivors) or any(
                len(graph[d] & responders) < t for d in needed
            )
            expected = Stage.UNMASK if short else None
        event(
            f"round {offset + 1} of {len(schedules)}, key life {params.rounds_per_mask_key}: {expected or 'exact sum'}"
        )
        if expected is not None:
            with pytest.raises(ProtocolError) as caught:
                federation.run_round(round_number, vectors, dropouts=schedule)
            assert caught.value.stage == expected
            continue
        result = federation.run_round(round_number, vectors, dropouts=schedule)
        assert set(result.record.contributors) == survivors
        np.testing.assert_array_equal(result.total, plain_sum(vectors, sorted(survivors), params.modulus_bits))
        assert set(result.record.retired) == {f for f in firms if key in retired.get(f, ())} - needed
    assert not federation.client_errors


def test_neighbourhoods_sized_for_30_percent_dropout_recover_such_a_round() -> None:
    # expected_dropout=0.3 widens each neighbourhood (k = 84 of 99) so that a random 30% of the
    # firms vanishing before their input arrives is recovered rather than aborted.
    firms = firm_ids(100)
    params = SecAggParams(modulus_bits=23, expected_dropout=0.3)
    rng = np.random.default_rng(30)
    vectors = {f: rng.integers(0, 1 << 16, 4) for f in firms}
    gone = rng.choice(firms, size=30, replace=False)
    result = secure_vector_sum(
        vectors, params, dropouts={f: Stage.MASKED_INPUT for f in gone}, entropy_for=entropy_per_firm("thirty")
    )
    assert len(result.record.reconstructed_mask_keys) == 30
    np.testing.assert_array_equal(result.total, plain_sum(vectors, list(result.record.contributors), 23))
