"""The daemon's shell: metrics server, scheduler, heartbeat and signals around a cycle job.

``run_daemon`` knows nothing of what a cycle does. It runs ``cycle_job`` (an async callable
returning the cycle's outcome: success, partial, failed or safety_stop) at start and on the
schedule, keeps going whatever one cycle does, and on SIGTERM/SIGINT stops scheduling, lets the
running cycle finish within the shutdown grace, cancels it after that, flushes the logs and
returns 0. A second signal cuts the grace short.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, timedelta, tzinfo
from typing import Final, Protocol

import structlog

from reaper.exits import EX_OK, EX_UNAVAILABLE
from reaper.logs import flush_logging
from reaper.metrics import Metrics
from reaper.schedule import CycleScheduler, build_schedule
from reaper.server import Health, MetricsServer, start_server

# The heartbeat runs well inside Health's staleness limit (60 s by default).
HEARTBEAT_INTERVAL: Final = 5.0
FAILED: Final = "failed"

_log = structlog.get_logger("reaper.daemon")


class DaemonSettings(Protocol):
    """The settings the daemon's shell reads (``reaper.settings.Settings`` has them all)."""

    @property
    def interval(self) -> timedelta:
        """Time between cycles when no cron spec is set."""

    @property
    def cron(self) -> str | None:
        """A 5-field crontab; wins over the interval."""

    @property
    def shutdown_grace(self) -> timedelta:
        """How long SIGTERM waits for the running cycle."""

    @property
    def metrics_host(self) -> str:
        """Address of the metrics and health server."""

    @property
    def metrics_port(self) -> int:
        """Port of the metrics and health server; 0 turns it off."""


CycleJob = Callable[[], Awaitable[str]]


def guard_cycle(cycle_job: CycleJob, *, metrics: Metrics) -> Callable[[], Awaitable[None]]:
    """Wrap a cycle job so that no exception escapes: one that does is logged and counted.

    The cycle counts its own outcome in ``reaper_cycles_total`` and logs its own crash
    (``cycle.crashed``, in ``reaper.cycle``); the wrapper counts only the runs that never returned
    an outcome (an exception out of the job itself, or a cancellation at shutdown). Readiness is
    the job's business (``reaper.commands.run.ReadinessProgress``): the daemon knows nothing of
    listings.
    """

    async def guarded() -> None:
        try:
            await cycle_job()
        except asyncio.CancelledError:
            metrics.cycles.labels(outcome=FAILED).inc()
            raise
        except Exception as exc:
            metrics.cycles.labels(outcome=FAILED).inc()
            _log.error(
                "daemon.job_failed",
                error_type=type(exc).__name__,
                error=str(exc),
                exc_info=True,
            )

    return guarded


async def run_daemon(
    settings: DaemonSettings,
    cycle_job: CycleJob,
    *,
    metrics: Metrics,
    health: Health,
    stop_event: asyncio.Event | None = None,
    install_signal_handlers: bool = True,
    heartbeat_interval: float = HEARTBEAT_INTERVAL,
    tz: tzinfo = UTC,
) -> int:
    """Serve metrics and health, run cycles on the schedule until stopped; return the exit code.

    Stops when SIGTERM or SIGINT arrives (with ``install_signal_handlers``) or when
    ``stop_event`` is set. Returns 0 after a graceful stop, 69 when the metrics address cannot be
    bound. A bad cron spec raises ValueError (settings validate it first).
    """
    stop = stop_event if stop_event is not None else asyncio.Event()
    force = asyncio.Event()
    schedule = build_schedule(settings.interval, settings.cron, tz=tz)
    scheduler = CycleScheduler(guard_cycle(cycle_job, metrics=metrics), schedule, tz=tz)

    server: MetricsServer | None = None
    if settings.metrics_port != 0:
        try:
            server = start_server(
                metrics.registry, health, host=settings.metrics_host, port=settings.metrics_port
            )
        except OSError as exc:
            _log.error(
                "daemon.server_failed",
                host=settings.metrics_host,
                port=settings.metrics_port,
                error=str(exc),
            )
            flush_logging()
            return EX_UNAVAILABLE

    loop = asyncio.get_running_loop()
    signals: list[signal.Signals] = []

    def on_signal(signum: signal.Signals) -> None:
        if stop.is_set():
            _log.warning("daemon.forced", signal=signum.name)
            force.set()
        else:
            _log.info("daemon.signal", signal=signum.name)
            stop.set()

    async def beat() -> None:
        while True:
            health.scheduler_alive = scheduler.alive
            health.heartbeat()
            await asyncio.sleep(heartbeat_interval)

    heartbeat = asyncio.create_task(beat(), name="reaper-heartbeat")
    grace = settings.shutdown_grace.total_seconds()
    clean = False
    try:
        if install_signal_handlers:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, on_signal, signum)
                signals.append(signum)
        scheduler.start(run_now=True)
        health.scheduler_alive = True
        health.heartbeat()
        _log.info(
            "daemon.started",
            schedule=schedule.description,
            metrics_url=None if server is None else server.url,
            shutdown_grace_seconds=grace,
        )
        await stop.wait()
        _log.info("daemon.stopping", busy=scheduler.busy, shutdown_grace_seconds=grace)
        clean = await scheduler.stop(grace, force=force)
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
        # Reached without stop() only when run_daemon itself is cancelled or failed.
        scheduler.abort()
        health.scheduler_alive = False
        if server is not None:
            # close() joins the server thread; keep the loop free while it does.
            await asyncio.to_thread(server.close)
    _log.info(
        "daemon.stopped",
        clean=clean,
        cycles_started=scheduler.runs_started,
        cycles_cancelled=scheduler.runs_cancelled,
    )
    flush_logging()
    return EX_OK
