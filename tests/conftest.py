"""Shared fixtures: one reference context (tokenizer + tiny text encoder) per test session."""

from pathlib import Path

import pytest

from parity.models.context import Context
from parity.suite.cases import load_cases

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="session")
def context() -> Context:
    return Context()


@pytest.fixture(scope="session")
def suite_cases():
    return {c.id: c for c in load_cases(ROOT / "fixtures" / "cases")}
