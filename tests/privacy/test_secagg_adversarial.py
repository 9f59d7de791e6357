"""Replayed, reordered and forged messages, and the re-key rule: each refused naming firm and stage."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from silobridge.errors import ProtocolError
from silobridge.privacy.secagg import (
    AdvertiseRequest,
    MaskedInput,
    MaskedInputRequest,
    Roster,
    SecAggClient,
    SecAggParams,
    SecAggServer,
    Stage,
    UnmaskRequest,
)
from silobridge.privacy.secagg.shamir import SHARE_BYTES
from tests.privacy.secagg_support import firm_ids, seeded_entropy

RUN = "run-adversarial"
LENGTH = 16


class Harness:
    """Drives clients and server stage by stage through the wire format, with hooks to interfere."""

    def __init__(self, n: int, params: SecAggParams, *, seed: str = "h", drop_faulty_firms: bool = True):
        self.params = params
        self.firms = firm_ids(n)
        self.clients = {
            f: SecAggClient(f, params, run_id=RUN, entropy=seeded_entropy(f"{seed}/{f}")) for f in self.firms
        }
        self.server = SecAggServer(params, run_id=RUN, drop_faulty_firms=drop_faulty_firms)
        self.rng = np.random.default_rng(0)
        self.vectors: dict[str, np.ndarray] = {}

    def open_session(self, first_round: int) -> Roster:
        request = self.server.start_session(first_round, self.firms)
        adverts = {f: c.advertise(request).to_wire() for f, c in self.clients.items()}
        roster = self.server.receive_advertise(adverts)
        self.server.receive_shares({f: self.clients[f].share_keys(roster).to_wire() for f in roster.firms})
        return roster

    def masked_inputs(
        self, round_number: int, skip: set[str] = frozenset()
    ) -> tuple[dict[str, MaskedInputRequest], dict]:
        requests = self.server.start_round(round_number, LENGTH)
        self.vectors = {f: self.rng.integers(0, 1 << self.params.modulus_bits, LENGTH) for f in requests}
        replies = {
            f: self.clients[f].masked_input(request, self.vectors[f]).to_wire()
            for f, request in requests.items()
            if f not in skip
        }
        return requests, replies

    def unmask_replies(self, request: UnmaskRequest, skip: set[str] = frozenset()) -> dict:
        return {f: self.clients[f].unmask(request).to_wire() for f in request.survivors if f not in skip}

    def run_round(self, round_number: int, skip_masked: set[str] = frozenset()) -> np.ndarray:
        _, replies = self.masked_inputs(round_number, skip_masked)
        total = self.server.finish(self.unmask_replies(self.server.receive_masked_inputs(replies)))
        expected = sum(self.vectors[f].astype(np.uint64) for f in replies) & np.uint64(
            (1 << self.params.modulus_bits) - 1
        )
        np.testing.assert_array_equal(total, expected)
        return total


def expect_error(error: pytest.ExceptionInfo, firm: str, stage: Stage) -> None:
    assert error.value.firm == firm, str(error.value)
    assert error.value.stage == stage, str(error.value)


# ---- replay --------------------------------------------------------------------------------------


def test_masked_input_from_round_r_resent_in_round_r_plus_1_is_refused() -> None:
    params = SecAggParams(modulus_bits=16, rounds_per_session=2)
    harness = Harness(6, params, drop_faulty_firms=False)
    harness.open_session(1)
    _, old = harness.masked_inputs(1)
    harness.server.finish(harness.unmask_replies(harness.server.receive_masked_inputs(old)))
    victim = harness.firms[2]
    _, fresh = harness.masked_inputs(2)
    fresh[victim] = old[victim]
    with pytest.raises(ProtocolError, match="round 1, this is round 2") as caught:
        harness.server.receive_masked_inputs(fresh)
    expect_error(caught, victim, Stage.MASKED_INPUT)
    assert harness.server.record.aborted  # strict server: the round stops, nothing released


def test_tolerant_server_drops_the_replaying_firm_and_still_sums_exactly() -> None:
    params = SecAggParams(modulus_bits=16, rounds_per_session=2)
    harness = Harness(6, params)
    harness.open_session(1)
    _, old = harness.masked_inputs(1)
    harness.server.finish(harness.unmask_replies(harness.server.receive_masked_inputs(old)))
    victim = harness.firms[2]
    _, fresh = harness.masked_inputs(2)
    fresh[victim] = old[victim]
    unmask = harness.server.receive_masked_inputs(fresh)
    total = harness.server.finish(harness.unmask_replies(unmask))
    honest = [f for f in harness.firms if f != victim]
    np.testing.assert_array_equal(total, sum(harness.vectors[f].astype(np.uint64) for f in honest) & np.uint64(0xFFFF))
    record = harness.server.record
    assert record.dropped[victim] == Stage.MASKED_INPUT and "replayed" in record.errors[victim]
    assert record.reconstructed_mask_keys == (victim,)


def test_message_from_an_earlier_session_is_refused() -> None:
    harness = Harness(5, SecAggParams(modulus_bits=16), drop_faulty_firms=False)
    harness.open_session(1)
    _, old = harness.masked_inputs(1)
    harness.server.finish(harness.unmask_replies(harness.server.receive_masked_inputs(old)))
    harness.open_session(2)
    _, fresh = harness.masked_inputs(2)
    fresh[harness.firms[0]] = old[harness.firms[0]]
    with pytest.raises(ProtocolError, match="session 1, not 2") as caught:
        harness.server.receive_masked_inputs(fresh)
    expect_error(caught, harness.firms[0], Stage.MASKED_INPUT)


def test_client_refuses_replayed_requests() -> None:
    harness = Harness(5, SecAggParams(modulus_bits=16))
    roster = harness.open_session(1)
    firm = harness.firms[0]
    client = harness.clients[firm]
    with pytest.raises(ProtocolError, match="already shared") as caught:
        client.share_keys(roster)
    expect_error(caught, firm, Stage.SHARE_KEYS)
    requests, replies = harness.masked_inputs(1)
    with pytest.raises(ProtocolError, match="replayed or reordered") as caught:
        client.masked_input(requests[firm], harness.vectors[firm])
    expect_error(caught, firm, Stage.MASKED_INPUT)
    unmask = harness.server.receive_masked_inputs(replies)
    client.unmask(unmask)
    with pytest.raises(ProtocolError, match="already unmasked") as caught:
        client.unmask(unmask)
    expect_error(caught, firm, Stage.UNMASK)
    with pytest.raises(ProtocolError, match="replayed") as caught:
        client.advertise(AdvertiseRequest(RUN, 1, 1, harness.params.fingerprint()))
    expect_error(caught, firm, Stage.ADVERTISE_KEYS)


# ---- reordering ----------------------------------------------------------------------------------


def test_client_refuses_masked_input_before_its_keys_are_shared() -> None:
    params = SecAggParams(modulus_bits=16)
    client = SecAggClient("acme", params, run_id=RUN, entropy=seeded_entropy(1))
    request = MaskedInputRequest(RUN, 1, 1, "acme", LENGTH, ("acme", "b", "c"))
    with pytest.raises(ProtocolError, match="AdvertiseRequest must come first") as caught:
        client.masked_input(request, np.zeros(LENGTH, dtype=np.int64))
    expect_error(caught, "acme", Stage.MASKED_INPUT)
    client.advertise(AdvertiseRequest(RUN, 1, 1, params.fingerprint()))
    with pytest.raises(ProtocolError, match="stage out of order") as caught:
        client.masked_input(request, np.zeros(LENGTH, dtype=np.int64))
    expect_error(caught, "acme", Stage.MASKED_INPUT)
    with pytest.raises(ProtocolError, match="stage out of order") as caught:
        client.unmask(UnmaskRequest(RUN, 1, 1, ("acme",)))
    expect_error(caught, "acme", Stage.UNMASK)


def test_server_refuses_a_masked_input_sent_while_keys_are_being_shared() -> None:
    params = SecAggParams(modulus_bits=16)
    harness = Harness(4, params, drop_faulty_firms=False)
    request = harness.server.start_session(1, harness.firms)
    roster = harness.server.receive_advertise({f: c.advertise(request).to_wire() for f, c in harness.clients.items()})
    shares = {f: harness.clients[f].share_keys(roster).to_wire() for f in roster.firms}
    early = MaskedInput(RUN, 1, 1, harness.firms[1], 16, np.zeros(LENGTH, dtype=np.uint32))
    shares[harness.firms[1]] = early.to_wire()
    with pytest.raises(ProtocolError, match="expected a ShareKeys message, got 'MaskedInput'") as caught:
        harness.server.receive_shares(shares)
    expect_error(caught, harness.firms[1], Stage.SHARE_KEYS)


# ---- forgery -------------------------------------------------------------------------------------


def _first_round_requests(harness: Harness) -> dict[str, MaskedInputRequest]:
    harness.open_session(1)
    return harness.server.start_round(1, LENGTH)


def test_tampered_share_ciphertext_is_detected_naming_its_sender() -> None:
    harness = Harness(5, SecAggParams(modulus_bits=16))
    requests = _first_round_requests(harness)
    firm = harness.firms[0]
    request = requests[firm]
    ciphertexts = list(request.share_ciphertexts)
    ciphertexts[0] = bytes([ciphertexts[0][0] ^ 1]) + ciphertexts[0][1:]
    forged = dataclasses.replace(request, share_ciphertexts=tuple(ciphertexts))
    with pytest.raises(ProtocolError, match="failed authentication") as caught:
        harness.clients[firm].masked_input(forged, np.zeros(LENGTH, dtype=np.int64))
    expect_error(caught, request.share_senders[0], Stage.SHARE_KEYS)


def test_shares_bound_to_other_associated_data_are_refused() -> None:
    # The server swaps which sender a ciphertext is attributed to: the key and the associated data
    # (run, session, sender, recipient) no longer match, so authentication fails.
    harness = Harness(5, SecAggParams(modulus_bits=16))
    requests = _first_round_requests(harness)
    firm = harness.firms[0]
    request = requests[firm]
    swapped = dataclasses.replace(
        request,
        share_nonces=(request.share_nonces[1], request.share_nonces[0], *request.share_nonces[2:]),
        share_ciphertexts=(request.share_ciphertexts[1], request.share_ciphertexts[0], *request.share_ciphertexts[2:]),
    )
    with pytest.raises(ProtocolError, match="failed authentication") as caught:
        harness.clients[firm].masked_input(swapped, np.zeros(LENGTH, dtype=np.int64))
    expect_error(caught, request.share_senders[0], Stage.SHARE_KEYS)


def test_message_presented_under_another_firms_name_is_refused() -> None:
    harness = Harness(5, SecAggParams(modulus_bits=16), drop_faulty_firms=False)
    harness.open_session(1)
    _, replies = harness.masked_inputs(1)
    a, b = harness.firms[0], harness.firms[1]
    replies[b] = replies[a]
    with pytest.raises(ProtocolError, match=f"claims to come from '{a}'") as caught:
        harness.server.receive_masked_inputs(replies)
    expect_error(caught, b, Stage.MASKED_INPUT)


def test_malformed_masked_vector_is_refused() -> None:
    harness = Harness(5, SecAggParams(modulus_bits=12), drop_faulty_firms=False)
    harness.open_session(1)
    _, replies = harness.masked_inputs(1)
    firm = harness.firms[3]
    replies[firm] = {**replies[firm], "vector": replies[firm]["vector"][:-4]}
    with pytest.raises(ProtocolError, match=f"{LENGTH} values") as caught:
        harness.server.receive_masked_inputs(replies)
    expect_error(caught, firm, Stage.MASKED_INPUT)
    harness2 = Harness(5, SecAggParams(modulus_bits=12), drop_faulty_firms=False)
    harness2.open_session(1)
    _, replies = harness2.masked_inputs(1)
    replies[firm] = {**replies[firm], "vector": b"\xff" * (4 * LENGTH)}
    with pytest.raises(ProtocolError, match="outside") as caught:
        harness2.server.receive_masked_inputs(replies)
    expect_error(caught, firm, Stage.MASKED_INPUT)


def test_corrupt_unmask_share_aborts_naming_the_owner() -> None:
    # Four of five holders answer and the threshold is 3: the server rebuilds each seed from the
    # three lowest x-coordinates, which include the corrupt share; the commitment catches it.
    harness = Harness(5, SecAggParams(modulus_bits=16))
    harness.open_session(1)
    _, replies = harness.masked_inputs(1)
    unmask = harness.server.receive_masked_inputs(replies)
    answers = harness.unmask_replies(unmask, skip={harness.firms[4]})
    liar = harness.firms[0]
    shares = list(answers[liar]["self_mask_shares"])
    owner = answers[liar]["self_mask_owners"][1]
    shares[1] = (int.from_bytes(shares[1], "big") ^ 1).to_bytes(SHARE_BYTES, "big")
    answers[liar] = {**answers[liar], "self_mask_shares": shares}
    with pytest.raises(ProtocolError, match="does not match its commitment") as caught:
        harness.server.finish(answers)
    expect_error(caught, owner, Stage.UNMASK)


def test_copied_or_low_order_public_keys_exclude_the_firm() -> None:
    harness = Harness(6, SecAggParams(modulus_bits=16))
    request = harness.server.start_session(1, harness.firms)
    adverts = {f: c.advertise(request).to_wire() for f, c in harness.clients.items()}
    copier, victim, weak = harness.firms[0], harness.firms[1], harness.firms[2]
    adverts[copier] = {**adverts[copier], "channel_public_key": adverts[victim]["channel_public_key"]}
    adverts[weak] = {**adverts[weak], "mask_public_keys": [bytes(32)]}
    roster = harness.server.receive_advertise(adverts)
    assert set(roster.firms) == set(harness.firms) - {copier, victim, weak}
    errors = harness.server.record.errors
    assert "not unique" in errors[copier] and "not unique" in errors[victim]
    assert "low-order" in errors[weak]


def test_client_refuses_a_server_running_other_parameters() -> None:
    client = SecAggClient("acme", SecAggParams(modulus_bits=16), run_id=RUN)
    other = SecAggParams(modulus_bits=16, num_neighbours=4)
    with pytest.raises(ProtocolError, match="fingerprint") as caught:
        client.advertise(AdvertiseRequest(RUN, 1, 1, other.fingerprint()))
    expect_error(caught, "acme", Stage.ADVERTISE_KEYS)


def test_client_reveals_nothing_when_the_server_isolates_it() -> None:
    # A server claiming that all but one of a firm's neighbours dropped would learn that firm's
    # input from its self-mask; the client checks the threshold itself and refuses.
    harness = Harness(5, SecAggParams(modulus_bits=16))
    harness.open_session(1)
    _, replies = harness.masked_inputs(1)
    harness.server.receive_masked_inputs(replies)
    firm = harness.firms[0]
    lie = UnmaskRequest(RUN, 1, 1, (firm, harness.firms[1]))
    with pytest.raises(ProtocolError, match="below threshold") as caught:
        harness.clients[firm].unmask(lie)
    expect_error(caught, firm, Stage.UNMASK)


# ---- re-key rule ---------------------------------------------------------------------------------


def test_firm_whose_mask_key_was_rebuilt_cannot_take_part_until_it_re_keys() -> None:
    # One mask key serves the whole 3-round session (the "agree once" lever), so rebuilding it in
    # round 1 would let the server strip that firm's pairwise masks in rounds 2 and 3.
    params = SecAggParams(modulus_bits=16, rounds_per_session=3, rounds_per_mask_key=3)
    harness = Harness(7, params)
    harness.open_session(1)
    dropper = harness.firms[4]
    harness.run_round(1, skip_masked={dropper})
    assert harness.server.record.reconstructed_mask_keys == (dropper,)

    # Round 2: the server does not ask it, and refuses its input if it sends one anyway.
    requests, replies = harness.masked_inputs(2)
    assert dropper not in requests and harness.server.record.retired == (dropper,)
    replies[dropper] = MaskedInput(RUN, 1, 2, dropper, 16, np.zeros(LENGTH, dtype=np.uint32)).to_wire()
    unmask = harness.server.receive_masked_inputs(replies)
    assert "must re-key" in harness.server.record.errors[dropper]
    harness.server.finish(harness.unmask_replies(unmask))

    # Round 3: a server that lists it anyway is refused by a neighbour that revealed its key shares.
    requests = harness.server.start_round(3, LENGTH)
    neighbour = next(f for f in harness.server.graph[dropper] if f in requests)
    honest = requests[neighbour]
    sneaky = dataclasses.replace(honest, active_firms=tuple(sorted({*honest.active_firms, dropper})))
    with pytest.raises(ProtocolError, match="must re-key") as caught:
        harness.clients[neighbour].masked_input(sneaky, np.zeros(LENGTH, dtype=np.int64))
    expect_error(caught, dropper, Stage.MASKED_INPUT)
    replies = {
        f: harness.clients[f].masked_input(r, np.zeros(LENGTH, dtype=np.int64)).to_wire() for f, r in requests.items()
    }
    harness.server.finish(harness.unmask_replies(harness.server.receive_masked_inputs(replies)))

    # After re-keying in a new session it takes part again, and the sum is exact.
    harness.open_session(4)
    harness.run_round(4)
    assert dropper in harness.server.record.contributors and harness.server.record.retired == ()


def test_self_mask_revealed_under_a_key_blocks_recovering_that_key() -> None:
    # With one key for two rounds: a firm that survived round 1 (self-mask revealed) and drops in
    # round 2 cannot be recovered without exposing its round-1 input, so the round aborts and the
    # clients would refuse as well.
    params = SecAggParams(modulus_bits=16, rounds_per_session=2, rounds_per_mask_key=2)
    harness = Harness(6, params)
    harness.open_session(1)
    harness.run_round(1)
    dropper = harness.firms[2]
    _, replies = harness.masked_inputs(2, skip={dropper})
    with pytest.raises(ProtocolError, match="start a new key session") as caught:
        harness.server.receive_masked_inputs(replies)
    expect_error(caught, dropper, Stage.MASKED_INPUT)
    survivors = tuple(sorted(replies))
    holder = next(f for f in harness.server.graph[dropper] if f in replies)
    with pytest.raises(ProtocolError, match="revealed under the same mask key") as caught:
        harness.clients[holder].unmask(UnmaskRequest(RUN, 1, 2, survivors))
    expect_error(caught, dropper, Stage.UNMASK)


def test_with_a_key_per_round_a_recovered_firm_rejoins_the_next_round() -> None:
    params = SecAggParams(modulus_bits=16, rounds_per_session=2)
    harness = Harness(6, params)
    harness.open_session(1)
    dropper = harness.firms[1]
    harness.run_round(1, skip_masked={dropper})
    assert harness.server.record.reconstructed_mask_keys == (dropper,)
    harness.run_round(2)
    assert dropper in harness.server.record.contributors


def test_shares_delivered_again_must_be_identical_also_after_a_restore() -> None:
    # A firm keeps only a digest of each delivered ciphertext in its state; a server that sends a
    # neighbour's shares again must send the same bytes, or it could swap in shares of its choosing.
    params = SecAggParams(modulus_bits=16, rounds_per_session=3)
    harness = Harness(5, params)
    first = _first_round_requests(harness)
    firm = harness.firms[0]
    assert first[firm].share_senders  # the first request of the session carries the neighbours' shares
    zeros = np.zeros(LENGTH, dtype=np.int64)
    harness.clients[firm].masked_input(first[firm], zeros)
    others = {f: harness.clients[f].masked_input(r, zeros).to_wire() for f, r in first.items() if f != firm}
    del others  # round 1 is left unfinished: only the firm's handling of round 2's request matters
    restored = SecAggClient.from_state(harness.clients[firm].to_state(), params, run_id=RUN)
    second = dataclasses.replace(first[firm], round_number=2)
    identical = restored.masked_input(second, zeros)
    assert identical.round_number == 2

    restored = SecAggClient.from_state(harness.clients[firm].to_state(), params, run_id=RUN)
    ciphertexts = list(first[firm].share_ciphertexts)
    ciphertexts[0] = bytes([ciphertexts[0][0] ^ 1]) + ciphertexts[0][1:]
    swapped = dataclasses.replace(first[firm], round_number=2, share_ciphertexts=tuple(ciphertexts))
    with pytest.raises(ProtocolError, match="different shares from this firm a second time") as caught:
        restored.masked_input(swapped, zeros)
    expect_error(caught, first[firm].share_senders[0], Stage.SHARE_KEYS)
