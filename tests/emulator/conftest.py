"""Fixtures for the emulator tests: a state on a manual clock, a served emulator, an SDK client."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest

from reaper.emulator.harness import new_state, running_emulator
from reaper.emulator.state import EmulatorState

KEY = "sk-ant-emulator-test-key"


@pytest.fixture
def state() -> EmulatorState:
    """Give each test a fresh state on a ManualClock, requiring KEY."""
    return new_state(api_key=KEY)


@pytest.fixture
def served(state: EmulatorState) -> Iterator[str]:
    """Serve ``state`` over loopback HTTP for the test; yield the base URL."""
    with running_emulator(state) as (base_url, _):
        yield base_url


@pytest.fixture
def sdk(served: str) -> Iterator[anthropic.Anthropic]:
    """Give the official SDK client, pointed at the served emulator, without retries."""
    with anthropic.Anthropic(api_key=KEY, base_url=served, max_retries=0) as client:
        yield client
