"""Shared fixtures. Helpers: only ADD fixtures here, never change existing ones."""

from __future__ import annotations

import pytest

from reaper.metrics import Metrics
from tests.helpers import Clock

# A test that leaves an asyncio task running fails (tests/leaked_tasks.py).
pytest_plugins = ["tests.leaked_tasks"]


@pytest.fixture
def anyio_backend() -> str:
    """Run anyio-marked async tests on asyncio only (the daemon's loop)."""
    return "asyncio"


@pytest.fixture
def metrics() -> Metrics:
    """Give each test a fresh registry so counts never leak between tests."""
    return Metrics()


@pytest.fixture
def clock() -> Clock:
    """Give each test a fresh manual clock (tests.helpers.Clock) at T0."""
    return Clock()
