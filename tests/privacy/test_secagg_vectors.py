"""Known-answer tests: the primitives are `cryptography`'s, these prove we call them correctly."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from silobridge.errors import ProtocolError
from silobridge.privacy.secagg.aead import open_sealed, seal
from silobridge.privacy.secagg.kdf import derive_key, encode_fields, hkdf_sha256
from silobridge.privacy.secagg.keys import KeyPair, agree, check_public_key
from silobridge.privacy.secagg.prg import StreamAccumulator, expand_seed

h = bytes.fromhex

# RFC 5869, Appendix A.1-A.3 (HKDF with SHA-256): (IKM, salt, info, L, OKM).
RFC5869 = [
    pytest.param(
        h("0b" * 22),
        h("000102030405060708090a0b0c"),
        h("f0f1f2f3f4f5f6f7f8f9"),
        42,
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
        id="A.1-basic",
    ),
    pytest.param(
        bytes(range(0x00, 0x50)),
        bytes(range(0x60, 0xB0)),
        bytes(range(0xB0, 0x100)),
        82,
        "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
        "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
        "cc30c58179ec3e87c14c01d5c1f3434f1d87",
        id="A.2-long-inputs",
    ),
    pytest.param(
        h("0b" * 22),
        b"",
        b"",
        42,
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
        id="A.3-zero-salt-info",
    ),
]


@pytest.mark.parametrize(("ikm", "salt", "info", "length", "okm"), RFC5869)
def test_hkdf_matches_rfc5869(ikm: bytes, salt: bytes, info: bytes, length: int, okm: str) -> None:
    assert hkdf_sha256(ikm, salt=salt, info=info, length=length).hex() == okm


def test_hkdf_without_salt_equals_zero_salt() -> None:
    # RFC 5869 section 2.2: an absent salt is HashLen zero bytes; test case A.3 relies on it.
    expected = "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    assert hkdf_sha256(h("0b" * 22), salt=None, info=b"", length=42).hex() == expected


def test_derived_keys_are_bound_to_their_context() -> None:
    secret = bytes(32)
    base = derive_key(secret, "pairwise-mask", "run", 1, 2, "a", "b")
    assert len(base) == 32
    assert base == derive_key(secret, "pairwise-mask", "run", 1, 2, "a", "b")
    for other in (
        derive_key(secret, "share-channel", "run", 1, 2, "a", "b"),
        derive_key(secret, "pairwise-mask", "run", 1, 3, "a", "b"),
        derive_key(secret, "pairwise-mask", "run", 1, 2, "b", "a"),
        derive_key(secret, "pairwise-mask", "run2", 1, 2, "a", "b"),
    ):
        assert other != base


def test_field_encoding_is_unambiguous() -> None:
    assert encode_fields("ab", "c") != encode_fields("a", "bc")
    assert encode_fields(1) != encode_fields("1") != encode_fields(b"1")
    with pytest.raises(TypeError):
        encode_fields(True)


# RFC 7748 section 5.2: (scalar, input u-coordinate, output u-coordinate).
RFC7748_5_2 = [
    (
        "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
        "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
        "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
    ),
    (
        "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
        "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
        "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
    ),
]


@pytest.mark.parametrize(("scalar", "u_in", "u_out"), RFC7748_5_2)
def test_x25519_matches_rfc7748_section_5_2(scalar: str, u_in: str, u_out: str) -> None:
    key = KeyPair.from_private_bytes(h(scalar))
    assert agree(key.private_key, h(u_in), firm="peer", stage="test").hex() == u_out


def test_x25519_diffie_hellman_matches_rfc7748_section_6_1() -> None:
    # RFC 7748 section 6.1: Alice's and Bob's key pairs and their shared secret K.
    alice = KeyPair.from_private_bytes(h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
    bob = KeyPair.from_private_bytes(h("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"))
    assert alice.public_bytes.hex() == "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    assert bob.public_bytes.hex() == "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
    shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    assert agree(alice.private_key, bob.public_bytes, firm="bob", stage="test").hex() == shared
    assert agree(bob.private_key, alice.public_bytes, firm="alice", stage="test").hex() == shared


def test_low_order_public_key_is_refused_naming_the_firm() -> None:
    # u = 0 is a point of small order (RFC 7748 section 6.1 asks implementations to check for the
    # all-zero output); `cryptography` refuses it and we report the firm that sent it.
    with pytest.raises(ProtocolError) as caught:
        check_public_key(bytes(32), firm="mallory", stage="advertise_keys")
    assert caught.value.firm == "mallory" and caught.value.stage == "advertise_keys"
    with pytest.raises(ProtocolError):
        check_public_key(bytes(31), firm="mallory", stage="advertise_keys")


def test_aes_gcm_matches_gcm_spec_test_case_16() -> None:
    # McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)", Test Case 16 (AES-256, 60-byte
    # plaintext, 20-byte AAD, 96-bit IV); the same vector is in NIST's GCM validation examples.
    key = h("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
    plaintext = h(
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
        "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
    )
    aad = h("feedfacedeadbeeffeedfacedeadbeefabaddad2")
    iv = h("cafebabefacedbaddecaf888")
    ciphertext = h(
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
    )
    tag = h("76fc6ece0f4e1768cddf8853bb2d551b")
    sealed = seal(key, iv, plaintext, aad)
    assert sealed == ciphertext + tag
    assert open_sealed(key, iv, sealed, aad, firm="sender", stage="share_keys") == plaintext
    with pytest.raises(ProtocolError) as caught:
        open_sealed(key, iv, sealed, aad + b"x", firm="sender", stage="share_keys")
    assert caught.value.firm == "sender"


def test_aes256_ctr_matches_sp800_38a_f55() -> None:
    # NIST SP 800-38A, F.5.5 CTR-AES256.Encrypt: the cipher and mode the PRG is built on.
    key = h("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
    counter = h("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
    plaintext = h(
        "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
        "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
    )
    ciphertext = (
        "601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5"
        "2b0930daa23de94ce87017ba2d84988ddfc9c58db67aada613c2dd08457941a6"
    )
    encryptor = Cipher(algorithms.AES(key), modes.CTR(counter)).encryptor()
    assert encryptor.update(plaintext).hex() == ciphertext


@pytest.mark.parametrize("modulus_bits", [13, 32, 40, 64])
def test_prg_is_the_aes_ctr_keystream_from_counter_zero(modulus_bits: int) -> None:
    # Definition check: CTR with a zero initial block encrypts the big-endian counters 0, 1, 2, ...
    # so the stream equals AES-ECB over those blocks, read as little-endian words, mod 2^m.
    seed = bytes(range(32))
    length = 37
    words = expand_seed(seed, length, modulus_bits)
    width = words.dtype.itemsize
    blocks = b"".join(i.to_bytes(16, "big") for i in range(-(-length * width // 16)))
    keystream = Cipher(algorithms.AES(seed), modes.ECB()).encryptor().update(blocks)
    expected = np.frombuffer(keystream[: length * width], dtype=words.dtype) & words.dtype.type((1 << modulus_bits) - 1)
    np.testing.assert_array_equal(words, expected)


def test_stream_accumulator_matches_expand_seed() -> None:
    seeds = [bytes([i]) * 32 for i in range(5)]
    signs = [1, -1, 1, 1, -1]
    base = np.arange(1000, dtype=np.uint32)
    accumulator = StreamAccumulator(base, 24)
    accumulator.add_streams(zip(seeds, signs, strict=True))
    expected = base.astype(np.int64)
    for seed, sign in zip(seeds, signs, strict=True):
        expected += sign * expand_seed(seed, 1000, 24).astype(np.int64)
    np.testing.assert_array_equal(accumulator.result(), expected % (1 << 24))
