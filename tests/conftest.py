"""Shared fixtures. Helpers: only ADD fixtures here, never change existing ones."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from reaper.client import BatchClient
from reaper.emulator.harness import new_state, running_emulator
from reaper.emulator.state import EmulatorState
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


@pytest.fixture
def emulator() -> Iterator[tuple[str, EmulatorState]]:
    """An emulator with its defaults on 127.0.0.1: its base URL and state (a file may define
    its own ``emulator`` with other seeds or faults)."""
    with running_emulator(new_state()) as served:
        yield served


@pytest.fixture
async def client(emulator: tuple[str, EmulatorState]) -> AsyncIterator[BatchClient]:
    """A BatchClient on ``emulator`` that retries once (key ``sk-test``, default pacing)."""
    base_url, _ = emulator
    async with BatchClient(api_key="sk-test", base_url=base_url, max_retries=1) as api:
        yield api
