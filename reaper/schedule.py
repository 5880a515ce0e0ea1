"""When cycles run: APScheduler 3 wiring, standard cron, never two at once, graceful stop.

A cycle runs at start and then on ``REAPER_INTERVAL`` or ``REAPER_CRON``. Two APScheduler 3
behaviours are worked around here rather than trusted:

- ``CronTrigger.from_crontab`` reads weekday 0 as Monday and ANDs day-of-month with day-of-week;
  standard cron has 0 and 7 as Sunday and ORs them. Cron specs go through ``reaper.cronspec``
  and a small trigger (``NextAfterTrigger``) that asks it for the next fire time.
- ``shutdown(wait=True)`` cancels a running coroutine job instead of waiting for it. ``stop()``
  pauses the scheduler (no new run starts), waits on our own "cycle idle" event up to the grace,
  cancels what is left, and only then shuts the scheduler down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Final

import structlog
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_RUNNING, STATE_STOPPED
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from reaper.cronspec import parse_cron

JOB_ID: Final = "cycle"
# After the grace, a cancelled cycle gets this long to run its cleanup (close the HTTP client).
CANCEL_TIMEOUT: Final = 5.0

_log = structlog.get_logger("reaper.schedule")


class NextAfterTrigger(BaseTrigger):  # type: ignore[misc]  # apscheduler 3 ships no types
    """An APScheduler trigger that fires at ``next_after(previous fire time)``.

    ``next_after(dt)`` must return a time strictly after ``dt``. Before the first fire the trigger
    fires at the first time at or after now.
    """

    __slots__ = ("_next_after", "description")

    def __init__(self, next_after: Callable[[datetime], datetime], description: str) -> None:
        self._next_after = next_after
        self.description = description

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        """Return the next fire time after the previous one (or at/after ``now`` at first)."""
        after = previous_fire_time or now - timedelta(microseconds=1)
        return self._next_after(after)

    def __str__(self) -> str:
        return self.description

    def __repr__(self) -> str:
        return f"<NextAfterTrigger {self.description}>"


def cron_trigger(spec: str) -> NextAfterTrigger:
    """Build a trigger for a 5-field crontab with standard cron semantics (raises ValueError)."""
    parsed = parse_cron(spec)
    return NextAfterTrigger(parsed.next_after, f"cron {parsed.text!r}")


@dataclass(frozen=True, slots=True)
class Schedule:
    """A trigger, how late a run may start and still run, and how to say it in a log line."""

    trigger: Any  # an apscheduler BaseTrigger (untyped library)
    misfire_grace: timedelta
    description: str


def build_schedule(
    interval: timedelta, cron: str | None, *, tz: tzinfo = UTC, now: datetime | None = None
) -> Schedule:
    """Build the schedule of the settings: ``cron`` when set (it wins), else ``interval``.

    The misfire grace is one period: a run that starts late (a starved loop, a suspended host)
    still runs while it is less than a period late; later than that the next run supersedes it,
    and coalescing folds all the missed ones into one.
    """
    if cron is not None:
        parsed = parse_cron(cron)
        start = (now if now is not None else datetime.now(tz)).astimezone(tz)
        first = parsed.next_after(start)
        period = parsed.next_after(first) - first
        trigger = NextAfterTrigger(parsed.next_after, f"cron {parsed.text!r}")
        return Schedule(trigger, max(period, timedelta(seconds=1)), trigger.description)
    if interval <= timedelta(0):
        raise ValueError(f"the interval must be positive, got {interval}")
    return Schedule(
        IntervalTrigger(seconds=interval.total_seconds(), timezone=tz),
        interval,
        f"every {interval.total_seconds():g}s",
    )


class CycleScheduler:
    """Run one async job on a schedule, at most one at a time, and stop gracefully."""

    def __init__(
        self,
        job: Callable[[], Awaitable[object]],
        schedule: Schedule,
        *,
        tz: tzinfo = UTC,
    ) -> None:
        self._job = job
        self.schedule = schedule
        self._tz = tz
        self._scheduler = AsyncIOScheduler(timezone=tz)
        self._scheduler.add_listener(self._on_skipped, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        self._idle = asyncio.Event()
        self._idle.set()
        self._current: asyncio.Task[Any] | None = None
        self.runs_started = 0
        self.runs_cancelled = 0

    @property
    def alive(self) -> bool:
        """Whether the scheduler is started and not shut down (pausing to stop counts as alive)."""
        return bool(self._scheduler.state != STATE_STOPPED)

    @property
    def scheduling(self) -> bool:
        """Whether new runs will still start (started, neither paused nor shut down)."""
        return bool(self._scheduler.state == STATE_RUNNING)

    @property
    def busy(self) -> bool:
        """Whether a run is in progress."""
        return not self._idle.is_set()

    def next_run_time(self) -> datetime | None:
        """Return when the next run is due, or None when none is scheduled."""
        job = self._scheduler.get_job(JOB_ID)
        return None if job is None else job.next_run_time

    def start(self, *, run_now: bool = True) -> None:
        """Start scheduling (on the running loop); with ``run_now`` the first run is immediate."""
        kwargs: dict[str, Any] = {}
        if run_now:
            kwargs["next_run_time"] = datetime.now(self._tz)
        self._scheduler.add_job(
            self._run,
            trigger=self.schedule.trigger,
            id=JOB_ID,
            name="cycle",
            max_instances=1,  # never two cycles at once
            coalesce=True,  # missed runs fold into one
            misfire_grace_time=max(1, int(self.schedule.misfire_grace.total_seconds())),
            replace_existing=True,
            **kwargs,
        )
        self._scheduler.start()

    async def stop(self, grace: float, *, force: asyncio.Event | None = None) -> bool:
        """Stop: no new run, let the running one finish within ``grace`` seconds, then cancel it.

        ``force`` (a second signal) cuts the grace short. Return True when no run had to be
        cancelled.
        """
        if not self.alive:
            return True
        self._scheduler.pause()
        # A run submitted just before the pause has its task created but not yet started; one
        # turn of the loop lets it enter _run and mark itself busy.
        await asyncio.sleep(0)
        finished = await self._wait_idle(grace, force)
        if not finished:
            task = self._current
            _log.warning("cycle.cancelling", grace_seconds=grace)
            if task is not None:
                task.cancel()
            await self._wait_idle(CANCEL_TIMEOUT, None)
        self._scheduler.shutdown(wait=False)
        # AsyncIOScheduler.shutdown only schedules the work on the loop: let it happen.
        for _ in range(100):
            if not self.alive:
                break
            await asyncio.sleep(0.01)
        return finished

    def abort(self) -> None:
        """Shut down at once, cancelling a running cycle (when stop() could not run)."""
        if self.alive:
            self._scheduler.shutdown(wait=False)

    async def wait_idle(self, limit: float) -> bool:
        """Wait until no run is in progress, at most ``limit`` seconds; return whether idle."""
        return await self._wait_idle(limit, None)

    async def _wait_idle(self, limit: float, force: asyncio.Event | None) -> bool:
        if self._idle.is_set():
            return True
        waiters = {asyncio.ensure_future(self._idle.wait())}
        if force is not None:
            waiters.add(asyncio.ensure_future(force.wait()))
        try:
            await asyncio.wait(waiters, timeout=max(limit, 0), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*waiters, return_exceptions=True)
        return self._idle.is_set()

    async def _run(self) -> None:
        # Top of the job's task: nothing may escape into APScheduler's logger from here.
        self._idle.clear()
        self._current = asyncio.current_task()
        self.runs_started += 1
        try:
            await self._job()
        except asyncio.CancelledError:
            # Only stop() (after the grace) or the scheduler's shutdown cancel a run.
            self.runs_cancelled += 1
            _log.warning("cycle.cancelled")
        except Exception as exc:
            # The daemon's job wrapper catches everything first; this is the last line.
            _log.error("scheduler.job_failed", error_type=type(exc).__name__, exc_info=True)
        finally:
            self._current = None
            self._idle.set()

    def _on_skipped(self, event: JobEvent) -> None:
        if event.code == EVENT_JOB_MAX_INSTANCES:
            _log.warning(
                "cycle.skipped",
                reason="previous cycle still running",
                schedule=self.schedule.description,
            )
        else:
            scheduled = getattr(event, "scheduled_run_time", None)
            _log.warning(
                "cycle.skipped",
                reason="missed its start by more than the grace",
                scheduled_at=None if scheduled is None else scheduled.isoformat(),
            )
