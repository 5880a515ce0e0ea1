"""``reaper once`` as a subprocess against a loopback emulator: exit codes and the summary."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from datetime import timedelta

import pytest

from reaper.emulator.faults import Faults
from reaper.emulator.state import EmulatorState
from tests.helpers import mixed_emulator, run_reaper

KEY = "sk-ant-once-test-key-0123456789"
D = timedelta(days=1)


@pytest.fixture
def emulator() -> Iterator[tuple[str, EmulatorState]]:
    with mixed_emulator(KEY, fresh_age=D / 24) as served:
        yield served


def reaper_once(base_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_reaper(base_url, KEY, "once", timeout=60, **env)


def log_events(stdout: str) -> list[dict[str, object]]:
    """Parse stdout as JSON Lines (every line must be one object)."""
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_once_acts_and_exits_0(emulator: tuple[str, EmulatorState]) -> None:
    """Live: the old batch and the stale one (after its cancel) are deleted; exit 0, summary."""
    base_url, state = emulator
    run = reaper_once(base_url, REAPER_DRY_RUN="false")

    assert run.returncode == 0, run.stderr
    assert {r.id for r in state.iter_records()} == {"recent_ended", "fresh_running"}
    summary = run.stderr.strip().splitlines()[-1]
    assert summary.startswith("Listed 4 batches in 1 workspace")
    assert "Canceled 1 and deleted 2 batches (1 of them once canceled)." in summary
    assert summary.endswith("Outcome: success (exit 0).")
    events = log_events(run.stdout)
    assert events[-1]["event"] == "cycle.finished"
    assert all(KEY not in line for line in (run.stdout + run.stderr).splitlines())


def test_once_dry_run_is_the_default(emulator: tuple[str, EmulatorState]) -> None:
    """Without REAPER_DRY_RUN, nothing changes and the summary says DRY RUN first."""
    base_url, state = emulator
    run = reaper_once(base_url)

    assert run.returncode == 0, run.stderr
    assert state.stats.mutating() == {"create": 0, "cancel": 0, "delete": 0}
    assert len(state) == 4
    assert run.stderr.strip().splitlines()[-1].startswith("DRY RUN: nothing was changed")


def test_once_exits_3_on_a_safety_stop(emulator: tuple[str, EmulatorState]) -> None:
    """Deleting 1 of 4 exceeds a 0.2 fraction: exit 3 and no delete."""
    base_url, state = emulator
    run = reaper_once(base_url, REAPER_DRY_RUN="false", REAPER_MAX_DELETE_FRACTION="0.2")

    assert run.returncode == 3, run.stderr
    assert state.stats.mutating()["delete"] == 0
    assert "SAFETY STOP in workspace default" in run.stderr
    assert any(e["event"] == "safety.stop" for e in log_events(run.stdout))


def test_once_exits_1_when_the_api_is_down() -> None:
    """Nothing listens: the listing fails, nothing is done, exit 1 with the reason."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run = reaper_once(f"http://127.0.0.1:{port}", REAPER_DRY_RUN="false")

    assert run.returncode == 1, run.stderr
    assert "LISTING FAILED in workspace default after 0 pages" in run.stderr
    assert "Outcome: failed (exit 1)." in run.stderr


def test_once_exits_1_when_a_listing_page_fails(emulator: tuple[str, EmulatorState]) -> None:
    """The API answers 500 to every list call: fail closed, exit 1, no mutating request."""
    base_url, state = emulator
    state.faults = Faults(error_rate=1.0, endpoints=frozenset({"list"}))
    run = reaper_once(base_url, REAPER_DRY_RUN="false")

    assert run.returncode == 1, run.stderr
    assert state.stats.mutating() == {"create": 0, "cancel": 0, "delete": 0}
    assert any(e["event"] == "listing.failed" for e in log_events(run.stdout))


def test_once_exits_78_on_bad_configuration() -> None:
    """A misspelt REAPER_ variable is refused before anything is sent."""
    run = reaper_once("http://127.0.0.1:9", REAPER_DRY_RUM="false")

    assert run.returncode == 78
    assert "REAPER_DRY_RUM" in run.stderr
