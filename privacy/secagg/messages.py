"""The protocol's messages: frozen dataclasses with a flat wire form (see `wire`).

Stage and direction (S = server, F = firm; [b] broadcast, the same message to every firm):

    ADVERTISE_KEYS   S->F [b] AdvertiseRequest     F->S AdvertiseKeys
    SHARE_KEYS       S->F [b] Roster               F->S ShareKeys
    MASKED_INPUT     S->F     MaskedInputRequest   F->S MaskedInput
    UNMASK           S->F [b] UnmaskRequest        F->S UnmaskShares

`from_wire` checks structure, types and sizes and that the message names the expected firm; the
state machines then check it against protocol state (run, session, round, roster).

Sizes per firm (n firms, k neighbours, K mask keys and R rounds per session, L parameters, w-byte
ring words, 66-byte shares): AdvertiseKeys ~ 32 (1 + K + R); Roster ~ n (id + 32 (1 + K));
ShareKeys ~ k (id + 12 + 16 + 66 (K + R)); MaskedInputRequest ~ n ids + (first round of a session)
k (id + 28 + 66 (K + R)); MaskedInput ~ w L; UnmaskRequest ~ n ids; UnmaskShares ~ (k + 1)(id + 66).
Only MaskedInput grows with L: w L with w = 4 up to 32-bit rings, the size of a float32 update.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from silobridge.privacy.secagg.aead import NONCE_BYTES
from silobridge.privacy.secagg.keys import KEY_BYTES
from silobridge.privacy.secagg.ring import check_modulus_bits, ring_dtype
from silobridge.privacy.secagg.shamir import SHARE_BYTES
from silobridge.privacy.secagg.stages import Stage
from silobridge.privacy.secagg.wire import WireDict, WireReader, header


def _check_sender(reader: WireReader, claimed: str, expected_sender: str | None) -> str:
    if expected_sender is not None and claimed != expected_sender:
        reader.fail(f"message claims to come from {claimed!r} but arrived from {expected_sender!r}")
    return claimed


def _check_recipient(reader: WireReader, claimed: str, expected_recipient: str | None) -> str:
    if expected_recipient is not None and claimed != expected_recipient:
        reader.fail(f"message is addressed to {claimed!r}, not to {expected_recipient!r}")
    return claimed


# ---- stage 1: advertise keys -------------------------------------------------------------------


@dataclass(frozen=True)
class AdvertiseRequest:
    """S->F: open key session `session` (its first round) for `num_rounds` rounds."""

    MESSAGE: ClassVar[str] = "AdvertiseRequest"
    STAGE: ClassVar[Stage] = Stage.ADVERTISE_KEYS
    FIELDS: ClassVar[tuple[str, ...]] = ("run_id", "session", "num_rounds", "params_fingerprint")

    run_id: str
    session: int
    num_rounds: int
    params_fingerprint: str

    def to_wire(self) -> WireDict:
        return {
            **header(self.MESSAGE),
            "run_id": self.run_id,
            "session": self.session,
            "num_rounds": self.num_rounds,
            "params_fingerprint": self.params_fingerprint,
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, object], *, recipient: str | None = None) -> AdvertiseRequest:
        """`recipient` (this firm) is only used to name it in errors."""
        r = WireReader(wire, message=cls.MESSAGE, fields=cls.FIELDS, firm=recipient, stage=cls.STAGE)
        return cls(
            r.text("run_id"), r.integer("session"), r.integer("num_rounds", minimum=1), r.text("params_fingerprint")
        )


@dataclass(frozen=True)
class AdvertiseKeys:
    """F->S: the firm's public keys for the session and commitments to its self-mask seeds.

    One channel key (share encryption), one mask key per key period (pairwise seeds), one
    commitment per round (lets the server verify a self-mask seed rebuilt from shares).
    """

    MESSAGE: ClassVar[str] = "AdvertiseKeys"
    STAGE: ClassVar[Stage] = Stage.ADVERTISE_KEYS
    FIELDS: ClassVar[tuple[str, ...]] = (
        "run_id",
        "session",
        "sender",
        "channel_public_key",
        "mask_public_keys",
        "self_mask_commitments",
    )

    run_id: str
    session: int
    sender: str
    channel_public_key: bytes
    mask_public_keys: tuple[bytes, ...]
    self_mask_commitments: tuple[bytes, ...]

    def to_wire(self) -> WireDict:
        return {
            **header(self.MESSAGE),
            "run_id": self.run_id,
            "session": self.session,
            "sender": self.sender,
            "channel_public_key": self.channel_public_key,
            "mask_public_keys": list(self.mask_public_keys),
            "self_mask_commitments": list(self.self_mask_commitments),
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, object], *, expected_sender: str | None) -> AdvertiseKeys:
        r = WireReader(wire, message=cls.MESSAGE, fields=cls.FIELDS, firm=expected_sender, stage=cls.STAGE)
        sender = _check_sender(r, r.firm_id("sender"), expected_sender)
        mask_keys = r.blobs("mask_public_keys", size=KEY_BYTES)
        commitments = r.blobs("self_mask_commitments", size=32)
        if not mask_keys or not commitments:
            r.fail("at least one mask key and one self-mask commitment are required")
        return cls(
            r.text("run_id"),
            r.integer("session"),
            sender,
            r.blob("channel_public_key", size=KEY_BYTES),
            mask_keys,
            commitments,
        )


# ---- stage 2: share keys -----------------------------------------------------------------------


@dataclass(frozen=True)
class Roster:
    """S->F [b]: every firm whose keys were accepted, sorted, with its public keys.

    On the wire the mask keys are one flat firm-major list (n * num_mask_keys items).
    """

    MESSAGE: ClassVar[str] = "Roster"
    STAGE: ClassVar[Stage] = Stage.SHARE_KEYS
    FIELDS: ClassVar[tuple[str, ...]] = (
        "run_id",
        "session",
        "firms",
        "channel_public_keys",
        "num_mask_keys",
        "mask_public_keys",
    )

    run_id: str
    session: int
    firms: tuple[str, ...]
    channel_public_keys: tuple[bytes, ...]
    mask_public_keys: tuple[tuple[bytes, ...], ...]

    def index(self, firm: str) -> int:
        """Position of `firm` in the roster; its Shamir x-coordinate is index + 1."""
        return self.firms.index(firm)

    def to_wire(self) -> WireDict:
        return {
            **header(self.MESSAGE),
            "run_id": self.run_id,
            "session": self.session,
            "firms": list(self.firms),
            "channel_public_keys": list(self.channel_public_keys),
            "num_mask_keys": len(self.mask_public_keys[0]) if self.mask_public_keys else 0,
            "mask_public_keys": [key for keys in self.mask_public_keys for key in keys],
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, object], *, recipient: str | None = None) -> Roster:
        r = WireReader(wire, message=cls.MESSAGE, fields=cls.FIELDS, firm=recipient, stage=cls.STAGE)
        firms = r.sorted_firm_ids("firms")
        n, per_firm = len(firms), r.integer("num_mask_keys", minimum=1)
        channel_keys = r.blobs("channel_public_keys", size=KEY_BYTES, count=n)
        flat = r.blobs("mask_public_keys", size=KEY_BYTES, count=n * per_firm)
        mask_keys = tuple(flat[i * per_firm : (i + 1) * per_firm] for i in range(n))
        return cls(r.text("run_id"), r.integer("session"), firms, channel_keys, mask_keys)


@dataclass(frozen=True)
class ShareKeys:
    """F->S: for each neighbour, its shares of this firm's secrets, AES-GCM encrypted to it."""

    MESSAGE: ClassVar[str] = "ShareKeys"
    STAGE: ClassVar[Stage] = Stage.SHARE_KEYS
    FIELDS: ClassVar[tuple[str, ...]] = ("run_id", "session", "sender", "recipients", "nonces", "ciphertexts")

    run_id: str
    session: int
    sender: str
    recipients: tuple[str, ...]
    nonces: tuple[bytes, ...]
    ciphertexts: tuple[bytes, ...]

    def to_wire(self) -> WireDict:
        return {
            **header(self.MESSAGE),
            "run_id": self.run_id,
            "session": self.session,
            "sender": self.sender,
            "recipients": list(self.recipients),
            "nonces": list(self.nonces),
            "ciphertexts": list(self.ciphertexts),
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, object], *, expected_sender: str | None) -> ShareKeys:
        r = WireReader(wire, message=cls.MESSAGE, fields=cls.FIELDS, firm=expected_sender, stage=cls.STAGE)
        sender = _check_sender(r, r.firm_id("sender"), expected_sender)
        recipients = r.sorted_firm_ids("recipients")
        if sender in recipients:
            r.fail("a firm does not send shares to itself")
        count = len(recipients)
        nonces = r.blobs("nonces", size=NONCE_BYTES, count=count)
        ciphertexts = r.blobs("ciphertexts", count=count)
        return cls(r.text("run_id"), r.integer("session"), sender, recipients, nonces, ciphertexts)


# ---- stage 3: masked input ---------------------------------------------------------------------


@dataclass(frozen=True)
class MaskedInputRequest:
    """S->F: mask round `round_number` with the firms in `active_firms`.

    Until the firm has answered once in the session, it also carries the encrypted shares that its
    neighbours sent it in SHARE_KEYS (routed by the server, readable only by this firm).
    """

    MESSAGE: ClassVar[str] = "MaskedInputRequest"
    STAGE: ClassVar[Stage] = Stage.MASKED_INPUT
    FIELDS: ClassVar[tuple[str, ...]] = (
        "run_id",
        "session",
        "round_number",
        "recipient",
        "vector_length",
        "active_firms",
        "share_senders",
        "share_nonces",
        "share_ciphertexts",
    )

    run_id: str
    session: int
    round_number: int
    recipient: str
    vector_length: int
    active_firms: tuple[str, ...]
    share_senders: tuple[str, ...] = ()
    share_nonces: tuple[bytes, ...] = ()
    share_ciphertexts: tuple[bytes, ...] = ()

    def to_wire(self) -> WireDict:
        return {
            **header(self.MESSAGE),
            "run_id": self.run_id,
            "session": self.session,
            "round_number": self.round_number,
            "recipient": self.recipient,
            "vector_length": self.vector_length,
            "active_firms": list(self.active_firms),
            "share_senders": list(self.share_senders),
            "share_nonces": list(self.share_nonces),
            "share_ciphertexts": list(self.share_ciphertexts),
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, object], *, expected_recipient: str | None) -> MaskedInputRequest:
        r = WireReader(wire, message=cls.MESSAGE, fields=cls.FIELDS, firm=expected_recipient, stage=cls.STAGE)
        recipient = _check_recipient(r, r.firm_id("recipient"), expected_recipient)
        senders = r.sorted_firm_ids("share_senders")
        return cls(
            r.text("run_id"),
            r.integer("session"),
            r.integer("round_number"),
            recipient,
            r.integer("vector_length", minimum=1),
            r.sorted_firm_ids("active_firms"),
            senders,
            r.blobs("share_nonces", size=NONCE_BYTES, count=len(senders)),
            r.blobs("share_ciphertexts", count=len(senders)),
        )


@dataclass(frozen=True, eq=False)
class MaskedInput:
    """F->S: the masked update, ring words of `ring_dtype(modulus_bits)`.

    On the wire the vector is one little-endian bytes value; `to_wire(include_vector=False)` leaves
    it out so a transport can carry `vector` as an array instead (then pass it to `from_wire`).
    """

    MESSAGE: ClassVar[str] = "MaskedInput"
    STAGE: ClassVar[Stage] = Stage.MASKED_INPUT
    FIELDS: ClassVar[tuple[str, ...]] = ("run_id", "session", "round_number", "sender", "modulus_bits")

    run_id: str
    session: int
    round_number: int
    sender: str
    modulus_bits: int
    vector: np.ndarray = field(repr=False)

    def to_wire(self, *, include_vector: bool = True) -> WireDict:
        wire: WireDict = {
            **header(self.MESSAGE),
            "run_id": self.run_id,
            "session": self.session,
            "round_number": self.round_number,
            "sender": self.sender,
            "modulus_bits": self.modulus_bits,
        }
        if include_vector:
            wire["vector"] = np.ascontiguousarray(self.vector, dtype=ring_dtype(self.modulus_bits)).tobytes()
        return wire

    @classmethod
    def from_wire(
        cls, wire: Mapping[str, object], *, expected_sender: str | None, vector: np.ndarray | None = None
    ) -> MaskedInput:
        """Exactly one of wire['vector'] (bytes) and `vector` (an ndarray of ring words) is given."""
        carries_bytes = isinstance(wire, Mapping) and "vector" in wire
        fields = cls.FIELDS + (("vector",) if carries_bytes else ())
        r = WireReader(wire, message=cls.MESSAGE, fields=fields, firm=expected_sender, stage=cls.STAGE)
        sender = _check_sender(r, r.firm_id("sender"), expected_sender)
        modulus_bits = r.integer("modulus_bits", minimum=2)
        if modulus_bits > 64:
            r.fail(f"modulus_bits must be at most 64, got {modulus_bits}")
        dtype = ring_dtype(check_modulus_bits(modulus_bits))
        if carries_bytes == (vector is not None):
            r.fail("the vector must come either as wire bytes or as an array, exactly once")
        if carries_bytes:
            raw = r.blob("vector")
            if not raw or len(raw) % dtype.itemsize:
                r.fail(f"vector bytes must be a non-zero multiple of {dtype.itemsize}, got {len(raw)}")
            words = np.frombuffer(raw, dtype=dtype)
        else:
            words = np.asarray(vector)
            if words.dtype != dtype or words.ndim != 1 or words.size == 0:
                r.fail(f"vector must be a non-empty 1-D {dtype} array, got {words.dtype} of shape {words.shape}")
        if modulus_bits < dtype.itemsize * 8 and int(words.max()) >> modulus_bits:
            r.fail(f"vector holds values outside [0, 2^{modulus_bits})")
        return cls(r.text("run_id"), r.integer("session"), r.integer("round_number"), sender, modulus_bits, words)


# ---- stage 4: unmask ---------------------------------------------------------------------------


@dataclass(frozen=True)
class UnmaskRequest:
    """S->F [b]: these firms' masked inputs arrived; reveal shares to unmask their sum."""

    MESSAGE: ClassVar[str] = "UnmaskRequest"
    STAGE: ClassVar[Stage] = Stage.UNMASK
    FIELDS: ClassVar[tuple[str, ...]] = ("run_id", "session", "round_number", "survivors")

    run_id: str
    session: int
    round_number: int
    survivors: tuple[str, ...]

    def to_wire(self) -> WireDict:
        return {
            **header(self.MESSAGE),
            "run_id": self.run_id,
            "session": self.session,
            "round_number": self.round_number,
            "survivors": list(self.survivors),
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, object], *, recipient: str | None = None) -> UnmaskRequest:
        r = WireReader(wire, message=cls.MESSAGE, fields=cls.FIELDS, firm=recipient, stage=cls.STAGE)
        survivors = r.sorted_firm_ids("survivors")
        return cls(r.text("run_id"), r.integer("session"), r.integer("round_number"), survivors)


@dataclass(frozen=True)
class UnmaskShares:
    """F->S: shares of the survivors' self-mask seeds and of the dropped neighbours' mask keys.

    Never both for the same firm and key: that is what keeps every individual input hidden.
    """

    MESSAGE: ClassVar[str] = "UnmaskShares"
    STAGE: ClassVar[Stage] = Stage.UNMASK
    FIELDS: ClassVar[tuple[str, ...]] = (
        "run_id",
        "session",
        "round_number",
        "sender",
        "self_mask_owners",
        "self_mask_shares",
        "mask_key_owners",
        "mask_key_shares",
    )

    run_id: str
    session: int
    round_number: int
    sender: str
    self_mask_owners: tuple[str, ...]
    self_mask_shares: tuple[bytes, ...]
    mask_key_owners: tuple[str, ...]
    mask_key_shares: tuple[bytes, ...]

    def to_wire(self) -> WireDict:
        return {
            **header(self.MESSAGE),
            "run_id": self.run_id,
            "session": self.session,
            "round_number": self.round_number,
            "sender": self.sender,
            "self_mask_owners": list(self.self_mask_owners),
            "self_mask_shares": list(self.self_mask_shares),
            "mask_key_owners": list(self.mask_key_owners),
            "mask_key_shares": list(self.mask_key_shares),
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, object], *, expected_sender: str | None) -> UnmaskShares:
        r = WireReader(wire, message=cls.MESSAGE, fields=cls.FIELDS, firm=expected_sender, stage=cls.STAGE)
        sender = _check_sender(r, r.firm_id("sender"), expected_sender)
        self_owners = r.sorted_firm_ids("self_mask_owners")
        key_owners = r.sorted_firm_ids("mask_key_owners")
        if set(self_owners) & set(key_owners):
            r.fail("a firm's self-mask share and mask-key share must never both be revealed")
        return cls(
            r.text("run_id"),
            r.integer("session"),
            r.integer("round_number"),
            sender,
            self_owners,
            r.blobs("self_mask_shares", size=SHARE_BYTES, count=len(self_owners)),
            key_owners,
            r.blobs("mask_key_shares", size=SHARE_BYTES, count=len(key_owners)),
        )
