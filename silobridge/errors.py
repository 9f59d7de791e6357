"""One error tree for the whole project, so callers can catch `SiloBridgeError` and nothing else.

Every error names where it came from (file, firm, field, stage) so a user can act on it without
reading a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class SiloBridgeError(Exception):
    """Base of every error SiloBridge raises on purpose."""


class ConfigError(SiloBridgeError, ValueError):
    """A scenario, run configuration or CLI option is invalid.

    `source` is the file (or "command line"), `field` the dotted path of the offending value.
    """

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        self.source = source
        self.field = field
        where = ", ".join(part for part in (source, f"field '{field}'" if field else None) if part)
        super().__init__(f"{where}: {message}" if where else message)


@dataclass(frozen=True)
class DataProblem:
    """One problem found in a firm's data file: where it is and what is wrong."""

    file: str
    row: int | None
    column: str | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.row is not None:
            where += f", row {self.row}"
        if self.column is not None:
            where += f", column '{self.column}'"
        return f"{where}: {self.message}"


class DataError(SiloBridgeError, ValueError):
    """A firm's data is missing, malformed or too short; lists every problem found, not just the first."""

    def __init__(self, firm: str, problems: Sequence[DataProblem] | str):
        self.firm = firm
        if isinstance(problems, str):
            problems = [DataProblem(file="", row=None, column=None, message=problems)]
        self.problems = list(problems)
        lines = [str(p) if p.file else p.message for p in self.problems]
        if len(lines) == 1:
            text = f"firm '{firm}': {lines[0]}"
        else:
            text = f"firm '{firm}': {len(lines)} problems:\n" + "\n".join(f"  - {ln}" for ln in lines)
        super().__init__(text)


class ProtocolError(SiloBridgeError):
    """A protocol message was malformed, out of order, replayed or forged; names the firm and stage."""

    def __init__(self, message: str, *, firm: str | None = None, stage: str | None = None):
        self.firm = firm
        self.stage = stage
        where = ", ".join(
            part for part in (f"firm '{firm}'" if firm else None, f"stage '{stage}'" if stage else None) if part
        )
        super().__init__(f"{where}: {message}" if where else message)


class FederationError(SiloBridgeError):
    """A run cannot go on: too few firms answered, a firm failed, or the federation is misconfigured."""


class SimulatedDropout(FederationError):
    """A simulated firm vanished on purpose (scenario [dropout]); the server treats it as a dropout."""


class BudgetExhausted(SiloBridgeError):
    """A release would overspend a privacy budget; nothing was released."""


class LedgerTampered(SiloBridgeError):
    """A privacy ledger failed verification; names the first bad entry."""

    def __init__(self, message: str, *, entry: int | None = None):
        self.entry = entry
        super().__init__(f"entry {entry}: {message}" if entry is not None else message)
