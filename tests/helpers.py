"""The test suite's one clock and one batch builder (structlog keeps its helpers in one home too).

``Clock`` is every fake time the tests need: the wall clock the reaper decides with (``now()``,
a datetime; ``wall_clock()``, epoch seconds), the monotonic clock its pacer, health and progress
measure with (``monotonic()``, also the clock's ``__call__``), and the ``sleep`` they wait with.
``make_batch`` builds a ``Batch`` aged relative to a ``now``; ``.to_api()`` gives its API object;
``api_batch`` the smaller object the emulator is seeded with. ``mixed_emulator`` serves four
batches on the wall clock and ``run_reaper`` runs ``python -m reaper`` against it.
``tests/conftest.py`` serves a fresh ``Clock`` as the ``clock`` fixture.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from reaper.emulator.clock import system_clock
from reaper.emulator.harness import new_state, running_emulator
from reaper.emulator.state import EmulatorState
from reaper.models import ENDED, Batch, RequestCounts, format_time
from reaper.redaction import MIN_SECRET_FRAGMENT, REDACTED

ROOT = Path(__file__).resolve().parent.parent

T0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


class Clock:
    """A fake time: wall and monotonic clocks that move together, and a sleep that moves them.

    Manual (the default): time stands still until the test calls ``advance`` or the code under
    test awaits ``sleep``, which records the seconds in ``slept``, moves both clocks and yields
    to the loop once, so that concurrent waiters interleave as they would.

    Fast (``speedup=N``): for tests over real HTTP, where the emulator's server thread and the
    reaper must share one time that really passes (a manual clock would never let the server's
    rate-limit bucket refill while the client waits): time follows the host's monotonic clock N
    times faster and ``sleep`` really sleeps ``seconds / N``. One class, so that a test switches
    between the two without changing how it reads the time.
    """

    def __init__(
        self,
        start: datetime = T0,
        *,
        monotonic_start: float = 1000.0,
        speedup: float | None = None,
    ) -> None:
        self.start = start
        self.monotonic_start = monotonic_start
        self.speedup = speedup
        self.slept: list[float] = []
        self._moved = 0.0  # seconds advanced by hand or by sleep (manual), or by hand (fast)
        self._origin = time.monotonic()

    def elapsed(self) -> float:
        """Return the seconds this clock has moved since it was made."""
        if self.speedup is None:
            return self._moved
        return (time.monotonic() - self._origin) * self.speedup + self._moved

    def now(self) -> datetime:
        """Return the wall clock as an aware UTC datetime."""
        return self.start + timedelta(seconds=self.elapsed())

    def wall_clock(self) -> float:
        """Return the wall clock in seconds since the epoch, as ``time.time`` does."""
        return self.start.timestamp() + self.elapsed()

    def monotonic(self) -> float:
        """Return the monotonic clock's seconds, as ``time.monotonic`` does."""
        return self.monotonic_start + self.elapsed()

    __call__ = monotonic

    def advance(self, seconds: float) -> None:
        """Move both clocks ``seconds`` forward."""
        self._moved += seconds

    def set(self, when: datetime) -> None:
        """Put the wall clock at ``when``, in its zone (both clocks move alike, maybe back)."""
        self._moved += (when - self.now()).total_seconds()
        self.start = self.start.astimezone(when.tzinfo)

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock: note them and move the clock (really sleep, if fast)."""
        self.slept.append(seconds)
        if self.speedup is None:
            self.advance(seconds)
            await asyncio.sleep(0)
        else:
            await asyncio.sleep(max(0.0, seconds) / self.speedup)


def make_batch(
    batch_id: str,
    status: str = ENDED,
    *,
    created_ago: timedelta = 40 * DAY,
    ended_ago: timedelta | None = None,
    now: datetime = T0,
    succeeded: int = 10,
    errored: int = 0,
    canceled: int = 0,
    expired: int = 0,
    workspace: str | None = None,
    canceled_after: timedelta | None = None,
    archived_at: datetime | None = None,
) -> Batch:
    """Build a batch created ``created_ago`` before ``now``, as the API lists it.

    An ended batch ends ``ended_ago`` before ``now`` (by default an hour after its creation),
    with ``succeeded``, ``errored``, ``canceled`` and ``expired`` requests and a results URL;
    any other status has 10 requests processing. ``canceled_after``: its cancel was initiated
    that long after its creation. Every batch expires 24 hours after its creation.
    """
    created = now - created_ago
    if status == ENDED:
        ended_at = now - ended_ago if ended_ago is not None else created + HOUR
        counts = RequestCounts(
            succeeded=succeeded, errored=errored, canceled=canceled, expired=expired
        )
        results_url = f"/v1/messages/batches/{batch_id}/results"
    else:
        ended_at = None
        counts = RequestCounts(processing=10, errored=0, expired=0)
        results_url = None
    return Batch(
        id=batch_id,
        processing_status=status,
        created_at=created,
        request_counts=counts,
        expires_at=created + timedelta(hours=24),
        ended_at=ended_at,
        cancel_initiated_at=None if canceled_after is None else created + canceled_after,
        archived_at=archived_at,
        results_url=results_url,
        workspace=workspace,
    )


def api_batch(
    batch_id: str,
    now: datetime,
    *,
    created_ago: timedelta,
    ended_ago: timedelta | None = None,
    status: str | None = None,
    workspace: str | None = None,
    **counts: int,
) -> dict[str, Any]:
    """Return an emulator seed object (the API's shape; the emulator fills in the rest).

    Times are relative to ``now``. With ``ended_ago`` the batch has ended, with ``counts`` (by
    default 5 succeeded); otherwise its ``status`` (``in_progress``) has 5 requests processing.
    """
    obj: dict[str, Any] = {"id": batch_id, "created_at": format_time(now - created_ago)}
    if ended_ago is not None:
        obj["processing_status"] = ENDED
        obj["ended_at"] = format_time(now - ended_ago)
        obj["request_counts"] = counts or {"succeeded": 5}
    else:
        obj["processing_status"] = status or "in_progress"
        obj["request_counts"] = {"processing": 5}
    if workspace is not None:
        obj["workspace_id"] = workspace
    return obj


@contextmanager
def mixed_emulator(api_key: str, *, fresh_age: timedelta) -> Iterator[tuple[str, EmulatorState]]:
    """A loopback emulator on the wall clock with four batches, for ``reaper`` run as a subprocess.

    The subprocess judges ages by the wall clock, so the emulator runs on it too; a canceled batch
    ends at once (the cancel wait costs one poll, a real second). ``old_ended`` is due for delete,
    ``recent_ended`` is kept, ``stale_running`` (13 h) is due for cancel and ``fresh_running``
    (``fresh_age``) is not.
    """
    state = new_state(api_key=api_key, cancel_seconds=0, clock=system_clock)
    with running_emulator(state) as (base_url, state):
        now = state.now()
        state.seed_objects(
            [
                {
                    "id": "old_ended",
                    "created_at": format_time(now - 20 * DAY),
                    "ended_at": format_time(now - 19 * DAY),
                    "request_counts": {"succeeded": 3},
                },
                {
                    "id": "recent_ended",
                    "created_at": format_time(now - 2 * DAY),
                    "ended_at": format_time(now - DAY),
                    "request_counts": {"succeeded": 3},
                },
                {"id": "stale_running", "created_at": format_time(now - 13 * HOUR)},
                {"id": "fresh_running", "created_at": format_time(now - fresh_age)},
            ]
        )
        yield base_url, state


def run_reaper(
    base_url: str, api_key: str, *args: str, timeout: float, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m reaper ARGS`` with a clean environment plus these variables."""
    environ = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "ANTHROPIC_API_KEY": api_key,
        "ANTHROPIC_BASE_URL": base_url,
        "REAPER_MAX_RPM": "100000",
        "REAPER_MAX_RETRIES": "1",
        **env,
    }
    return run_command(list(args), environ, timeout)


def run_command(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m reaper ARGS`` with exactly ``env`` to completion; return what it did."""
    return subprocess.run(
        [sys.executable, "-m", "reaper", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def mask_by_full_scan(secret: str, text: str) -> str:
    """The reference masking: test every 8-character window of ``text`` against ``secret``'s,
    and replace each run of covered characters with one ``REDACTED`` (overlaps merged)."""
    fragments = {secret[i : i + MIN_SECRET_FRAGMENT] for i in range(len(secret) - 7)}
    covered = [False] * len(text)
    for i in range(len(text) - MIN_SECRET_FRAGMENT + 1):
        if text[i : i + MIN_SECRET_FRAGMENT] in fragments:
            covered[i : i + MIN_SECRET_FRAGMENT] = [True] * MIN_SECRET_FRAGMENT
    out, i = [], 0
    while i < len(text):
        if covered[i]:
            while i < len(text) and covered[i]:
                i += 1
            out.append(REDACTED)
        else:
            out.append(text[i])
            i += 1
    return "".join(out)
