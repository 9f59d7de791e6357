"""Shamir sharing over GF(2^521 - 1): known vector, any t of n rebuild, t - 1 do not."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from silobridge.errors import ConfigError, ProtocolError
from silobridge.privacy.secagg.shamir import (
    PRIME,
    decode_share,
    encode_share,
    evaluate_polynomial,
    reconstruct_secret,
    split_secret,
)
from tests.privacy.secagg_support import seeded_entropy

# Worked example of Wikipedia's "Shamir's secret sharing" article: secret 1234, threshold 3,
# f(x) = 1234 + 166 x + 94 x^2, shares at x = 1..6.
WIKIPEDIA_SHARES = {1: 1494, 2: 1942, 3: 2578, 4: 3402, 5: 4414, 6: 5614}


def test_known_polynomial_gives_known_shares() -> None:
    assert split_secret(1234, 3, range(1, 7), coefficients=[166, 94]) == WIKIPEDIA_SHARES


def test_any_three_of_six_rebuild_and_two_do_not() -> None:
    for subset in itertools.combinations(WIKIPEDIA_SHARES.items(), 3):
        assert reconstruct_secret(dict(subset), 3) == 1234
    for subset in itertools.combinations(WIKIPEDIA_SHARES.items(), 2):
        with pytest.raises(ProtocolError, match="need 3 shares"):
            reconstruct_secret(dict(subset), 3)


@settings(max_examples=40, deadline=None)
@given(
    secret=st.integers(min_value=0, max_value=(1 << 256) - 1),
    holders=st.integers(min_value=1, max_value=12),
    data=st.data(),
)
def test_any_threshold_subset_rebuilds_a_32_byte_secret(secret: int, holders: int, data: st.DataObject) -> None:
    threshold = data.draw(st.integers(min_value=1, max_value=holders))
    xs = data.draw(st.lists(st.integers(min_value=1, max_value=500), min_size=holders, max_size=holders, unique=True))
    shares = split_secret(secret, threshold, xs, entropy=seeded_entropy(secret % 1000))
    subset = data.draw(st.lists(st.sampled_from(xs), min_size=threshold, max_size=threshold, unique=True))
    assert reconstruct_secret({x: shares[x] for x in subset}, threshold) == secret
    if threshold > 1:
        with pytest.raises(ProtocolError):
            reconstruct_secret({x: shares[x] for x in subset[:-1]}, threshold)


def test_fewer_than_threshold_shares_fit_every_secret() -> None:
    # Why t - 1 shares reveal nothing: whatever the candidate secret, some degree-(t - 1) polynomial
    # through (0, candidate) also passes through the t - 1 known shares.
    shares = split_secret(42, 3, [1, 2, 3], entropy=seeded_entropy(7))
    (x1, y1), (x2, y2) = (1, shares[1]), (2, shares[2])
    det_inverse = pow(x1 * x2 * (x2 - x1) % PRIME, -1, PRIME)
    for candidate in (0, 1, 42, 99, PRIME - 1):
        # Solve c1 x + c2 x^2 = y - candidate at x1 and x2 (a 2x2 Vandermonde system mod PRIME).
        r1, r2 = (y1 - candidate) % PRIME, (y2 - candidate) % PRIME
        c1 = (r1 * x2 * x2 - r2 * x1 * x1) * det_inverse % PRIME
        c2 = (x1 * r2 - x2 * r1) * det_inverse % PRIME
        assert evaluate_polynomial([candidate, c1, c2], x1) == y1
        assert evaluate_polynomial([candidate, c1, c2], x2) == y2


def test_share_encoding_round_trips_and_refuses_out_of_field_values() -> None:
    for value in (0, 1, PRIME - 1):
        assert decode_share(encode_share(value)) == value
    with pytest.raises(ProtocolError):
        decode_share(b"\xff" * 66, firm="f", stage="unmask")
    with pytest.raises(ProtocolError):
        decode_share(b"\x00" * 65)


def test_invalid_split_arguments_raise_config_errors() -> None:
    with pytest.raises(ConfigError):
        split_secret(1, 0, [1, 2])
    with pytest.raises(ConfigError):
        split_secret(1, 3, [1, 2])
    with pytest.raises(ConfigError):
        split_secret(1, 2, [1, 1])
    with pytest.raises(ConfigError):
        split_secret(PRIME, 1, [1])
