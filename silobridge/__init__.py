"""SiloBridge: federated analytics for supply chains, private by default.

The one installed package. Its subpackages are the product's layers, each importing only those below
it: `federation` (the Flower apps, the run, the CLI), `clients` (a firm's side) and `server` (the
aggregator's side), `scenarios`, `contract` (what coordinator and firms agree on) and `privacy` (the
pure core). This module holds the version and re-exports the one error tree (`silobridge.errors`).
"""

from silobridge.errors import (
    BudgetExhausted,
    ConfigError,
    DataError,
    FederationError,
    LedgerTampered,
    ProtocolError,
    SiloBridgeError,
)

__version__ = "0.1.0"

__all__ = [
    "BudgetExhausted",
    "ConfigError",
    "DataError",
    "FederationError",
    "LedgerTampered",
    "ProtocolError",
    "SiloBridgeError",
    "__version__",
]
