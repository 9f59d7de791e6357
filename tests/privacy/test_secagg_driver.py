"""The one sequencing of a secure sum (`SecureSumDriver`) over a transport of our own: sessions, round
numbers and retries, which every caller (coordinator, benchmark, in-memory simulation, tests) relies on."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from silobridge.errors import ConfigError, ProtocolError
from silobridge.privacy.secagg import SecAggClient, SecAggParams, SecAggServer
from silobridge.privacy.secagg.driver import SecureSumDriver
from silobridge.privacy.secagg.messages import AdvertiseRequest, MaskedInputRequest, Roster, UnmaskRequest
from tests.privacy.secagg_support import entropy_per_firm, firm_ids

RUN = "run-driver"
BITS = 20


class _CountingTransport:
    """Hands each stage to in-memory clients, counts the exchanges, and lets chosen firms vanish before
    unmasking in chosen rounds (enough of them aborts the round)."""

    def __init__(self, firms: Sequence[str], params: SecAggParams, vectors: dict[str, np.ndarray]):
        entropy = entropy_per_firm("driver")
        self.clients = {f: SecAggClient(f, params, run_id=RUN, entropy=entropy(f)) for f in firms}
        self.vectors = vectors
        self.exchanges: list[str] = []
        self.vanish_in: dict[int, set[str]] = {}  # round number -> firms that never answer the unmask stage
        self.rounds: list[int] = []
        self.silent_at_advertise: list[set[str]] = []  # per key agreement: firms that never answer it

    def advertise(self, request: AdvertiseRequest, firms: Sequence[str]) -> dict:
        self.exchanges.append("advertise")
        gone = self.silent_at_advertise.pop(0) if self.silent_at_advertise else set()
        return {f: self.clients[f].advertise(request) for f in firms if f not in gone}

    def share_keys(self, roster: Roster) -> dict:
        self.exchanges.append("share")
        return {f: self.clients[f].share_keys(roster) for f in roster.firms}

    def masked_inputs(self, requests: dict[str, MaskedInputRequest]) -> dict:
        self.exchanges.append("masked")
        self.rounds.append(next(iter(requests.values())).round_number)
        return {f: self.clients[f].masked_input(r, self.vectors[f]) for f, r in requests.items()}

    def unmask(self, request: UnmaskRequest) -> dict:
        self.exchanges.append("unmask")
        gone = self.vanish_in.get(request.round_number, set())
        return {f: self.clients[f].unmask(request) for f in request.survivors if f not in gone}


def _setup(n: int, rounds_per_session: int) -> tuple[list[str], SecureSumDriver, _CountingTransport]:
    firms = firm_ids(n)
    params = SecAggParams(modulus_bits=BITS, rounds_per_session=rounds_per_session)
    rng = np.random.default_rng(3)
    vectors = {f: rng.integers(0, 1 << 10, size=12) for f in firms}
    driver = SecureSumDriver(SecAggServer(params, run_id=RUN))
    return firms, driver, _CountingTransport(firms, params, vectors)


def test_keys_are_agreed_once_per_session_and_each_sum_is_exact() -> None:
    firms, driver, transport = _setup(6, rounds_per_session=2)
    expected = np.sum([transport.vectors[f] for f in firms], axis=0) % (1 << BITS)
    for _ in range(3):
        total = driver.secure_sum(transport, firms, 12)
        np.testing.assert_array_equal(total, expected)
    # two sessions (rounds 1-2, then 3-4): advertise and share twice, masked input and unmask once per sum
    session, sum_ = ["advertise", "share"], ["masked", "unmask"]
    assert transport.exchanges == session + sum_ + sum_ + session + sum_
    assert transport.rounds == [1, 2, 3] and driver.next_round == 4


def test_an_aborted_sum_is_retried_under_a_new_round_number_and_reported() -> None:
    firms, driver, transport = _setup(5, rounds_per_session=4)
    transport.vanish_in[1] = set(firms[:3])  # three of five never unmask: below the threshold, round 1 aborts
    aborts: list[tuple[int, str]] = []
    total = driver.secure_sum(transport, firms, 12, attempts=3, on_abort=lambda a, e: aborts.append((a, e.stage)))
    assert [a for a, _ in aborts] == [1] and aborts[0][1] == "unmask"
    assert transport.rounds == [1, 2]  # the aborted round's number is used up
    np.testing.assert_array_equal(total, np.sum([transport.vectors[f] for f in firms], axis=0) % (1 << BITS))


def test_the_last_abort_is_raised_and_attempts_must_be_positive() -> None:
    firms, driver, transport = _setup(5, rounds_per_session=4)
    transport.vanish_in = {r: set(firms[:3]) for r in (1, 2)}
    aborts: list[int] = []
    with pytest.raises(ProtocolError, match="aborted, nothing released"):
        driver.secure_sum(transport, firms, 12, attempts=2, on_abort=lambda a, e: aborts.append(a))
    assert aborts == [1, 2] and transport.rounds == [1, 2]
    with pytest.raises(ConfigError, match="attempts"):
        driver.secure_sum(transport, firms, 12, attempts=0)


def test_a_key_agreement_that_fails_is_retried_under_a_session_that_starts_after_it() -> None:
    """Three of five firms silent in the first key agreement (a worker killed): the retry opens a new session,
    which the server accepts only from a later round (the failed one recorded round 1 as a session start)."""
    firms, driver, transport = _setup(5, rounds_per_session=4)
    transport.silent_at_advertise = [set(firms[:3])]
    aborts: list[tuple[int, str]] = []
    total = driver.secure_sum(transport, firms, 12, attempts=2, on_abort=lambda a, e: aborts.append((a, e.stage)))
    assert [a for a, _ in aborts] == [1] and aborts[0][1] == "advertise_keys"
    assert transport.exchanges == ["advertise", "advertise", "share", "masked", "unmask"]
    assert transport.rounds == [2] and driver.next_round == 3
    np.testing.assert_array_equal(total, np.sum([transport.vectors[f] for f in firms], axis=0) % (1 << BITS))
