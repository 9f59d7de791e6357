"""SiloBridge: federated analytics for supply chains, private by default.

This package is the shared kernel every layer may import: the version and the one error tree.
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
