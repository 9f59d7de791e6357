"""Wire format: flat ConfigRecord-compatible dicts, exact round trips, strict rejection."""

from __future__ import annotations

import numpy as np
import pytest

from silobridge.errors import ProtocolError
from silobridge.privacy.secagg import (
    PROTOCOL_VERSION,
    AdvertiseKeys,
    AdvertiseRequest,
    MaskedInput,
    MaskedInputRequest,
    Roster,
    SecAggParams,
    ShareKeys,
    Stage,
    UnmaskRequest,
    UnmaskShares,
    secure_vector_sum,
    wire_size,
)
from tests.privacy.secagg_support import entropy_per_firm, firm_ids

KEY = bytes(range(32))
SHARE = bytes(66)

MESSAGES = [
    AdvertiseRequest("run", 3, 2, "f" * 64),
    AdvertiseKeys("run", 3, "acme", KEY, (KEY[::-1], KEY), (bytes(32), bytes(32))),
    Roster("run", 3, ("a", "b", "c"), (KEY, KEY, KEY), ((KEY, KEY), (KEY, KEY), (KEY, KEY))),
    ShareKeys("run", 3, "a", ("b", "c"), (bytes(12), bytes(12)), (b"x" * 10, b"y" * 10)),
    MaskedInputRequest("run", 3, 4, "a", 7, ("a", "b", "c"), ("b",), (bytes(12),), (b"z" * 5,)),
    MaskedInputRequest("run", 3, 5, "a", 7, ("a", "b", "c")),
    UnmaskRequest("run", 3, 4, ("a", "c")),
    UnmaskShares("run", 3, 4, "a", ("a", "c"), (SHARE, SHARE), ("b",), (SHARE,)),
]
SENDER_ARG = {AdvertiseKeys: "acme", ShareKeys: "a", UnmaskShares: "a"}


def parse(message_type: type, wire: dict, **kwargs):
    if message_type in SENDER_ARG:
        return message_type.from_wire(wire, expected_sender=kwargs.get("sender", SENDER_ARG[message_type]))
    if message_type is MaskedInputRequest:
        return message_type.from_wire(wire, expected_recipient="a")
    return message_type.from_wire(wire)


def assert_config_record_compatible(wire: dict) -> None:
    """Flower ConfigRecord values: int, float, str, bytes, bool, or a homogeneous list of one."""
    scalars = (int, float, str, bytes, bool)
    for key, value in wire.items():
        assert isinstance(key, str)
        if isinstance(value, list):
            assert all(type(item) in scalars for item in value) and len({type(item) for item in value}) <= 1, key
        else:
            assert type(value) in scalars, key


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_through_a_flat_dict(message) -> None:
    wire = message.to_wire()
    assert_config_record_compatible(wire)
    assert wire["protocol"] == PROTOCOL_VERSION and wire["message"] == type(message).__name__
    assert parse(type(message), wire) == message


def test_masked_input_round_trips_as_bytes_or_as_an_array() -> None:
    for bits, width in ((20, 4), (32, 4), (33, 8), (64, 8)):
        vector = np.arange(10, dtype=np.uint32 if width == 4 else np.uint64)
        message = MaskedInput("run", 1, 1, "a", bits, vector)
        wire = message.to_wire()
        assert_config_record_compatible(wire)
        assert len(wire["vector"]) == width * 10  # little-endian words of the ring's width
        back = MaskedInput.from_wire(wire, expected_sender="a")
        np.testing.assert_array_equal(back.vector, vector)
        bare = message.to_wire(include_vector=False)
        assert "vector" not in bare
        np.testing.assert_array_equal(MaskedInput.from_wire(bare, expected_sender="a", vector=vector).vector, vector)
        with pytest.raises(ProtocolError, match="exactly once"):
            MaskedInput.from_wire(wire, expected_sender="a", vector=vector)
        with pytest.raises(ProtocolError, match="exactly once"):
            MaskedInput.from_wire(bare, expected_sender="a")


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda w: w.update(extra=1), "unexpected"),
        (lambda w: w.pop("round_number"), "missing"),
        (lambda w: w.update(round_number=True), "must be int"),
        (lambda w: w.update(round_number=-1), ">= 0"),
        (lambda w: w.update(protocol="silobridge-secagg/0"), "protocol"),
        (lambda w: w.update(message="UnmaskRequest"), "out of order"),
        (lambda w: w.update(self_mask_owners=["c", "a"]), "sorted"),
        (lambda w: w.update(self_mask_owners=["a", 3]), "list of str"),
        (lambda w: w.update(self_mask_shares=[SHARE, SHARE[:-1]]), "66 bytes"),
        (lambda w: w.update(mask_key_owners=["a"]), "never both"),
        (lambda w: w.update(sender="b"), "arrived from 'a'"),
        (lambda w: w.update(sender=""), "invalid firm id"),
    ],
)
def test_malformed_messages_are_refused_naming_firm_and_stage(mutate, problem: str) -> None:
    wire = MESSAGES[-1].to_wire()
    mutate(wire)
    with pytest.raises(ProtocolError, match=problem) as caught:
        UnmaskShares.from_wire(wire, expected_sender="a")
    assert caught.value.firm == "a" and caught.value.stage == Stage.UNMASK


def test_other_structural_checks() -> None:
    with pytest.raises(ProtocolError, match="12 bytes"):
        ShareKeys.from_wire({**MESSAGES[3].to_wire(), "nonces": [bytes(11), bytes(12)]}, expected_sender="a")
    with pytest.raises(ProtocolError, match="itself"):
        ShareKeys.from_wire({**MESSAGES[3].to_wire(), "recipients": ["a", "b"]}, expected_sender="a")
    with pytest.raises(ProtocolError, match="6 items"):
        Roster.from_wire({**MESSAGES[2].to_wire(), "mask_public_keys": [KEY] * 5})
    with pytest.raises(ProtocolError, match="addressed to 'a'"):
        MaskedInputRequest.from_wire(MESSAGES[4].to_wire(), expected_recipient="b")
    with pytest.raises(ProtocolError, match="dict"):
        UnmaskRequest.from_wire([("message", "UnmaskRequest")])


def test_wire_sizes_per_stage_match_the_documented_formulas() -> None:
    n, length = 12, 1000
    params = SecAggParams(modulus_bits=24)
    rng = np.random.default_rng(1)
    vectors = {f: rng.integers(0, 1 << 24, length) for f in firm_ids(n)}
    traffic = secure_vector_sum(vectors, params, entropy_for=entropy_per_firm("sizes")).traffic
    k = params.neighbourhood(n).num_neighbours
    per_firm_masked = traffic.upload_bytes[Stage.MASKED_INPUT] / n
    assert 4 * length < per_firm_masked < 4 * length + 200  # uint32 words plus a small header
    per_firm_shares = traffic.upload_bytes[Stage.SHARE_KEYS] / n
    ciphertext = 66 * 2 + 16  # one mask key and one self-mask seed share, AES-GCM tag
    assert k * (ciphertext + 12) < per_firm_shares < k * (ciphertext + 12 + 20) + 200
    assert wire_size({"ab": b"xyz", "n": 5, "l": ["q", "rs"], "t": True}) == 2 + 3 + 1 + 8 + 1 + 3 + 1 + 1
