"""Secure aggregation (SecAgg, Bonawitz et al. CCS 2017, with SecAgg+ neighbour graphs, Bell et al.
CCS 2020): the server learns the sum of the firms' integer vectors and nothing else, even when
firms drop out mid-round. Pure core: no Flower, no I/O; the state machines take and return messages.

Modules, one job each:
    params     SecAggParams, defaults for neighbours and threshold, Neighbourhood
    stages     the four stage names
    quantise   floats <-> integers (stochastic rounding, counted clipping, modulus, error bound)
    ring       integers mod 2^m in uint32/uint64 words
    kdf        HKDF-SHA256 and SHA-256 with domain-separated context
    keys       X25519 key pairs and agreement
    aead       AES-GCM for the routed secret shares
    prg        AES-256-CTR mask expansion, vectorised
    shamir     Shamir sharing over GF(2^521 - 1)
    graph      the public neighbour graph
    masking    masking and unmasking arithmetic
    wire       strict flat-dict (Flower ConfigRecord) encoding
    messages   the eight protocol messages
    client     SecAggClient, a firm's state machine
    state      what a firm keeps between messages, and its flat form for Flower's context.state
    server     SecAggServer and DropoutRecord
    simulate   everything in memory: secure_vector_sum, InMemoryFederation

One round, classic mode (rounds_per_session=1), with `SESSION` = the round number:

    S: req = server.start_session(round, firms)              F: keys = client.advertise(req)
    S: roster = server.receive_advertise({firm: keys})        F: shares = client.share_keys(roster)
    S: server.receive_shares({firm: shares})
    S: reqs = server.start_round(round, length)               F: y = client.masked_input(reqs[firm], x)
    S: unmask = server.receive_masked_inputs({firm: y})       F: r = client.unmask(unmask)
    S: total = server.finish({firm: r}); server.record

With rounds_per_session = R the first three lines run once per R rounds.

A Flower ClientApp may handle each message in a fresh process, so the glue keeps nothing in memory:

    client = SecAggClient.restore_or_new(stored, firm, params, run_id=run)   # stored: context.state record
    reply = client.<stage method>(request)
    stored = client.to_state()                                               # saved back, even after a refusal
"""

from silobridge.privacy.secagg.client import SecAggClient
from silobridge.privacy.secagg.dropout_record import DropoutRecord
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
from silobridge.privacy.secagg.params import (
    PROTOCOL_VERSION,
    Neighbourhood,
    SecAggParams,
    default_num_neighbours,
    default_threshold,
)
from silobridge.privacy.secagg.quantise import (
    QuantStats,
    choose_modulus_bits,
    dequantise,
    quantisation_scale,
    quantise,
    sum_error_bound,
)
from silobridge.privacy.secagg.ring import to_ring, to_signed
from silobridge.privacy.secagg.server import SecAggServer
from silobridge.privacy.secagg.simulate import InMemoryFederation, SecureSum, Traffic, secure_vector_sum
from silobridge.privacy.secagg.stages import Stage
from silobridge.privacy.secagg.state import STATE_FORMAT
from silobridge.privacy.secagg.wire import wire_size

__all__ = [
    "PROTOCOL_VERSION",
    "STATE_FORMAT",
    "AdvertiseKeys",
    "AdvertiseRequest",
    "DropoutRecord",
    "InMemoryFederation",
    "MaskedInput",
    "MaskedInputRequest",
    "Neighbourhood",
    "QuantStats",
    "Roster",
    "SecAggClient",
    "SecAggParams",
    "SecAggServer",
    "SecureSum",
    "ShareKeys",
    "Stage",
    "Traffic",
    "UnmaskRequest",
    "UnmaskShares",
    "choose_modulus_bits",
    "default_num_neighbours",
    "default_threshold",
    "dequantise",
    "quantisation_scale",
    "quantise",
    "secure_vector_sum",
    "sum_error_bound",
    "to_ring",
    "to_signed",
    "wire_size",
]
