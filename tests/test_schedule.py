"""Scheduling: standard cron through APScheduler, never two cycles at once, graceful stop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.triggers.cron import CronTrigger
from structlog.testing import capture_logs

from reaper.schedule import CycleScheduler, Schedule, build_schedule, cron_trigger

pytestmark = pytest.mark.anyio

T0 = datetime(2025, 6, 10, 12, 0, 30, tzinfo=UTC)  # a Tuesday


def fire_times(schedule: Schedule, start: datetime, count: int) -> list[datetime]:
    """Return the first ``count`` fire times of a trigger after ``start``, as APScheduler asks."""
    times: list[datetime] = []
    previous = None
    for _ in range(count):
        previous = schedule.trigger.get_next_fire_time(previous, start)
        times.append(previous)
    return times


def test_cron_sunday_is_both_0_and_7() -> None:
    """'0 9 * * 0' and '0 9 * * 7' both fire on Sundays (APScheduler's 0 would be Monday)."""
    for spec in ("0 9 * * 0", "0 9 * * 7", "0 9 * * sun"):
        first = cron_trigger(spec).get_next_fire_time(None, T0)
        assert first == datetime(2025, 6, 15, 9, 0, tzinfo=UTC), spec
        assert first.weekday() == 6
    from_crontab = CronTrigger.from_crontab("0 9 * * 0", timezone=UTC)
    assert from_crontab.get_next_fire_time(None, T0).weekday() == 0  # the pitfall we avoid


def test_cron_day_of_month_or_day_of_week() -> None:
    """With both day fields restricted, a day matches when either does (the 13th OR a Friday)."""
    schedule = build_schedule(timedelta(minutes=15), "0 0 13 * 5", now=T0)
    assert fire_times(schedule, T0, 4) == [
        datetime(2025, 6, 13, tzinfo=UTC),  # Friday the 13th
        datetime(2025, 6, 20, tzinfo=UTC),  # Friday
        datetime(2025, 6, 27, tzinfo=UTC),  # Friday
        datetime(2025, 7, 4, tzinfo=UTC),  # Friday
    ]
    later = datetime(2025, 7, 5, tzinfo=UTC)
    assert fire_times(schedule, later, 3) == [
        datetime(2025, 7, 11, tzinfo=UTC),  # Friday
        datetime(2025, 7, 13, tzinfo=UTC),  # the 13th, a Sunday
        datetime(2025, 7, 18, tzinfo=UTC),  # Friday
    ]


def test_cron_wins_over_interval_and_its_grace_is_one_period() -> None:
    """REAPER_CRON replaces the interval; a run may start up to one period late."""
    hourly = build_schedule(timedelta(minutes=15), "0 * * * *", now=T0)
    assert hourly.misfire_grace == timedelta(hours=1)
    assert fire_times(hourly, T0, 2) == [
        datetime(2025, 6, 10, 13, 0, tzinfo=UTC),
        datetime(2025, 6, 10, 14, 0, tzinfo=UTC),
    ]
    assert "cron" in hourly.description


def test_interval_schedule_fires_every_interval() -> None:
    """Without cron the trigger fires every interval after the previous run."""
    schedule = build_schedule(timedelta(minutes=15), None)
    assert schedule.misfire_grace == timedelta(minutes=15)
    nxt = schedule.trigger.get_next_fire_time(T0, T0)
    assert nxt == T0 + timedelta(minutes=15)


def test_bad_schedules_are_refused() -> None:
    """A malformed cron spec or a non-positive interval is a ValueError."""
    with pytest.raises(ValueError, match="fields"):
        build_schedule(timedelta(minutes=15), "* * *")
    with pytest.raises(ValueError, match="positive"):
        build_schedule(timedelta(0), None)


@pytest.fixture
async def schedulers() -> AsyncIterator[list[CycleScheduler]]:
    """Collect schedulers a test starts and stop them all at the end (no leaked tasks)."""
    started: list[CycleScheduler] = []
    yield started
    for scheduler in started:
        await scheduler.stop(0)


def start(
    schedulers: list[CycleScheduler],
    job: Callable[[], Awaitable[object]],
    interval: float,
    *,
    run_now: bool = True,
) -> CycleScheduler:
    """Start a CycleScheduler on an interval (seconds) and register it for clean-up."""
    scheduler = CycleScheduler(job, build_schedule(timedelta(seconds=interval), None))
    schedulers.append(scheduler)
    scheduler.start(run_now=run_now)
    return scheduler


async def eventually(condition: Callable[[], bool], limit: float = 3.0) -> None:
    """Wait until ``condition()`` holds, failing after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_first_run_is_at_start(schedulers: list[CycleScheduler]) -> None:
    """A cycle runs as soon as the scheduler starts, not one interval later."""
    runs: list[float] = []

    async def job() -> None:
        runs.append(time.monotonic())

    started = time.monotonic()
    start(schedulers, job, 3600)
    await eventually(lambda: len(runs) == 1, limit=1.0)
    assert runs[0] - started < 0.5


async def test_never_two_cycles_at_once(schedulers: list[CycleScheduler]) -> None:
    """A job slower than the interval never overlaps itself; the skipped runs are logged."""
    running = 0
    most = 0
    finished = 0

    async def slow() -> None:
        nonlocal running, most, finished
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.25)
        running -= 1
        finished += 1

    with capture_logs() as captured:
        start(schedulers, slow, 0.05)
        await eventually(lambda: finished >= 3)
    assert most == 1
    assert any(entry["event"] == "cycle.skipped" for entry in captured)


async def test_a_crashing_job_does_not_stop_the_scheduler(
    schedulers: list[CycleScheduler], caplog: pytest.LogCaptureFixture
) -> None:
    """Exceptions are logged as scheduler.job_failed; the next run happens; APScheduler is quiet."""
    calls = 0

    async def crash() -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("boom")

    caplog.set_level(logging.INFO, logger="apscheduler")
    with capture_logs() as captured:
        scheduler = start(schedulers, crash, 0.05)
        await eventually(lambda: calls >= 3)
    assert scheduler.alive
    assert scheduler.scheduling
    crashed = [entry for entry in captured if entry["event"] == "scheduler.job_failed"]
    assert len(crashed) >= 3
    assert crashed[0]["error_type"] == "RuntimeError"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_stop_lets_the_running_cycle_finish_within_the_grace(
    schedulers: list[CycleScheduler],
) -> None:
    """stop() waits for the cycle in flight, starts no new one, and shuts the scheduler down."""
    events: list[str] = []

    async def job() -> None:
        events.append("start")
        await asyncio.sleep(0.3)
        events.append("end")

    scheduler = start(schedulers, job, 0.05)
    await eventually(lambda: scheduler.busy)
    clean = await scheduler.stop(5.0)
    assert clean
    assert events == ["start", "end"]
    assert not scheduler.alive
    await asyncio.sleep(0.2)
    assert events == ["start", "end"]


async def test_the_grace_expiring_cancels_the_cycle(schedulers: list[CycleScheduler]) -> None:
    """A cycle still running at the end of the grace is cancelled, and that is logged."""
    seen: list[str] = []

    async def endless() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    scheduler = start(schedulers, endless, 3600)
    await eventually(lambda: scheduler.busy)
    began = time.monotonic()
    with capture_logs() as captured:
        clean = await scheduler.stop(0.2)
    assert not clean
    assert seen == ["cancelled"]
    assert 0.2 <= time.monotonic() - began < 2
    assert [e["event"] for e in captured] == ["cycle.cancelling", "cycle.cancelled"]
    assert scheduler.runs_cancelled == 1
    assert not scheduler.alive


async def test_a_second_signal_cuts_the_grace_short(schedulers: list[CycleScheduler]) -> None:
    """Setting the force event ends the wait before the grace is over."""

    async def endless() -> None:
        await asyncio.sleep(60)

    scheduler = start(schedulers, endless, 3600)
    await eventually(lambda: scheduler.busy)
    force = asyncio.Event()
    asyncio.get_running_loop().call_later(0.1, force.set)
    began = time.monotonic()
    with capture_logs():
        assert not await scheduler.stop(30.0, force=force)
    assert time.monotonic() - began < 2


async def test_stop_when_idle_is_immediate(schedulers: list[CycleScheduler]) -> None:
    """With no cycle in flight, stop() returns at once and no run starts afterwards."""
    runs = 0

    async def job() -> None:
        nonlocal runs
        runs += 1

    scheduler = start(schedulers, job, 3600, run_now=False)
    assert scheduler.next_run_time() is not None
    began = time.monotonic()
    assert await scheduler.stop(30.0)
    assert time.monotonic() - began < 1
    assert runs == 0
    assert not scheduler.alive
