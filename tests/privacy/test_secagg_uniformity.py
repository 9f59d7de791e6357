"""What the server sees of one firm looks uniform; the same test flags the unmasked vector."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chisquare

from silobridge.privacy.secagg import InMemoryFederation, MaskedInput, SecAggParams, quantise, to_ring
from tests.privacy.secagg_support import entropy_per_firm, firm_ids

LENGTH = 1 << 16  # 256 values expected in each of 256 buckets


def top_byte_p_value(words: np.ndarray, modulus_bits: int) -> float:
    """Chi-square goodness of fit of the top byte (bits m-8 .. m-1) against the uniform law."""
    top = (words.astype(np.uint64) >> np.uint64(modulus_bits - 8)) & np.uint64(0xFF)
    return chisquare(np.bincount(top.astype(np.int64), minlength=256)).pvalue


@pytest.mark.parametrize("modulus_bits", [20, 32, 40])
def test_masked_vector_passes_and_plain_vector_fails_a_uniformity_test(modulus_bits: int) -> None:
    firms = firm_ids(5)
    params = SecAggParams(modulus_bits=modulus_bits)
    federation = InMemoryFederation(firms, params, run_id="uniformity", entropy_for=entropy_per_firm(modulus_bits))
    federation.open_session(1)
    requests = federation.server.start_round(1, LENGTH)
    rng = np.random.default_rng(modulus_bits)
    value_bits = modulus_bits - 3  # what choose_modulus_bits gives for 5 firms
    update = rng.normal(0.0, 0.1, LENGTH)  # a typical model update: small, centred on zero
    quantised, _ = quantise(update, 1.0, value_bits, rng)
    firm = firms[2]
    sent = federation.clients[firm].masked_input(requests[firm], quantised)
    received = MaskedInput.from_wire(sent.to_wire(), expected_sender=firm).vector

    plain = to_ring(quantised, modulus_bits)
    assert top_byte_p_value(plain, modulus_bits) < 1e-12  # the test can fail: the plain update is far from uniform
    assert top_byte_p_value(received, modulus_bits) > 1e-3
    # A partial sum of two firms stays masked too (self masks, and pairwise masks with the others).
    other = firms[3]
    second = federation.clients[other].masked_input(requests[other], quantised).vector
    partial = (received.astype(np.uint64) + second.astype(np.uint64)) & np.uint64((1 << modulus_bits) - 1)
    assert top_byte_p_value(partial, modulus_bits) > 1e-3
