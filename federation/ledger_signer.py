"""Which key signs a run's ledger: the coordinator's long-term key, or (simulations) one made for the run.

A federation file that names a `[privacy] ledger_public_key` binds every run to that key: the run
refuses to start without its private key, or with another one, before any firm is contacted.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from silobridge.errors import ConfigError
from silobridge.federation.settings import RunSettings
from silobridge.privacy.ledger.keys import load_signing_key, raw_public

LONG_TERM = "long-term"
PER_RUN = "per-run"


def ledger_signer(settings: RunSettings) -> tuple[Ed25519PrivateKey, str]:
    """The signing key and its kind ("long-term" or "per-run")."""
    declared = settings.scenario.privacy.ledger_public_key
    if settings.ledger_key is None:
        if declared is not None:
            raise ConfigError(
                f"the federation file names the ledger key {declared}: pass its private key file with --ledger-key",
                source=str(settings.scenario_path),
                field="silobridge.privacy.ledger_public_key",
            )
        return Ed25519PrivateKey.generate(), PER_RUN
    key = load_signing_key(settings.ledger_key)
    if declared is not None and raw_public(key) != bytes.fromhex(declared):
        raise ConfigError(
            f"its public key is {raw_public(key).hex()}, but the federation file {settings.scenario_path} names "
            f"{declared}: partners would reject this run's ledger",
            source=str(settings.ledger_key),
            field="ledger-key",
        )
    return key, LONG_TERM
