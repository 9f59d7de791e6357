"""Shared fixtures: the tiny test scenario and its generated chain, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from scenarios.generator import ChainData, generate_chain
from scenarios.schema import Scenario, load_scenario

os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "scenarios" / "tiny.toml"
DEFAULT = ROOT / "scenarios" / "default.toml"
LARGE = ROOT / "scenarios" / "large.toml"


@pytest.fixture(scope="session")
def tiny_scenario() -> Scenario:
    return load_scenario(TINY)


@pytest.fixture(scope="session")
def tiny_chain(tiny_scenario: Scenario) -> ChainData:
    return generate_chain(tiny_scenario)


@pytest.fixture(scope="session")
def default_scenario() -> Scenario:
    return load_scenario(DEFAULT)


@pytest.fixture(scope="session")
def default_chain(default_scenario: Scenario) -> ChainData:
    return generate_chain(default_scenario)
