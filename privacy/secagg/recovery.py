"""Rebuilding a dropped firm's secrets from its Shamir shares, checked against what it committed to.

Pure functions: the server decides what a mismatch means (a corrupt share aborts the round).
"""

from __future__ import annotations

from silobridge.privacy.secagg.keys import KeyPair
from silobridge.privacy.secagg.masking import self_mask_commitment
from silobridge.privacy.secagg.shamir import reconstruct_secret


def rebuild_self_seed(
    shares: dict[int, int],
    threshold: int,
    expected_commitment: bytes,
    session: tuple[str, int],
    round_number: int,
    firm: str,
) -> bytes | None:
    """The self-mask seed of a firm that sent its input and vanished (`session`: the run id and the
    session's first round); None when it does not match the commitment the firm advertised (a corrupt
    share)."""
    run_id, first_round = session
    value = reconstruct_secret(shares, threshold)
    seed = value.to_bytes(32, "big") if value < 1 << 256 else b""
    commitment = self_mask_commitment(seed, run_id=run_id, session=first_round, round_number=round_number, firm=firm)
    return seed if seed and commitment == expected_commitment else None


def rebuild_mask_key(shares: dict[int, int], threshold: int, expected_public: bytes) -> KeyPair | None:
    """The mask key of a firm that dropped before sending its input; None when it does not match the
    public key the firm advertised (a corrupt share)."""
    value = reconstruct_secret(shares, threshold)
    key = KeyPair.from_private_bytes(value.to_bytes(32, "big")) if value < 1 << 256 else None
    return key if key is not None and key.public_bytes == expected_public else None
