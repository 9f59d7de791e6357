"""A stand-in for RunDirectory holding only what `federation.resume.Checkpoints` uses, shared by the resume tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class FakeRunFolder:
    """What Checkpoints needs of a RunDirectory."""

    partial: Path
    keep_on_failure: bool = False
    metrics: list[dict[str, Any]] = field(default_factory=list)

    def rewrite_metrics(self, records: list[dict[str, Any]]) -> None:
        self.metrics = list(records)
