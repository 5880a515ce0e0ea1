"""``reaper run``: the daemon, wired: settings, logs, client, archiver, cycle and the shell.

``reaper.daemon.run_daemon`` serves metrics and health and runs the cycle job at start and on the
schedule until SIGTERM/SIGINT; this module builds that job from ``reaper.cycle.run_cycle``. The
daemon turns ready (``/readyz`` 200) as soon as a cycle has listed a workspace completely, not
only when the whole cycle is over: a first cycle with a long backlog of deletions can take hours,
and the reaper is doing its job meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

from reaper.archive import Archiver
from reaper.archive_ahead import ArchiveAhead
from reaper.client import BatchClient
from reaper.commands.wiring import build_archiver, command_settings, run_async, utc_now
from reaper.cycle import CycleClient, CycleReport, build_archive_ahead, run_cycle
from reaper.daemon import run_daemon
from reaper.ledger import Ledger, open_ledger
from reaper.metrics import Metrics
from reaper.progress import LogProgress, Progress
from reaper.server import Health
from reaper.settings import Settings
from reaper.settings_checks import log_settings_warnings


class ReadinessProgress:
    """Pass a cycle's progress on, and mark the daemon ready once a listing is complete.

    The cycle reports the actions it plans only after a workspace's listing has been read to
    the end (an incomplete listing plans nothing), so the first ``planned`` call is the proof.
    """

    def __init__(self, health: Health, inner: Progress | None = None) -> None:
        self._health = health
        self._inner = inner

    def listed(self, workspace: str | None, pages: int, batches: int) -> None:
        """Pass on the listing's progress."""
        if self._inner is not None:
            self._inner.listed(workspace, pages, batches)

    def planned(self, actions: int) -> None:
        """Mark the daemon ready and pass on the number of actions planned."""
        self._health.mark_listed()
        if self._inner is not None:
            self._inner.planned(actions)

    def acted(self, actions: int = 1) -> None:
        """Pass on the actions finished."""
        if self._inner is not None:
            self._inner.acted(actions)

    def close(self) -> None:
        """Finish the inner report."""
        if self._inner is not None:
            self._inner.close()


def cycle_job(
    settings: Settings,
    client: CycleClient,
    *,
    metrics: Metrics,
    health: Health,
    now: Callable[[], datetime] = utc_now,
    archiver: Archiver | None = None,
    stop: asyncio.Event | None = None,
    ledger: Ledger | None = None,
) -> Callable[[], Awaitable[str]]:
    """Return the daemon's job: one cycle, its outcome as the label ``reaper_cycles_total`` uses.

    ``stop`` is the daemon's stop event: once set, the running cycle starts no new action.
    The ledger and the archive-ahead are built here once, for every cycle of the daemon.
    """
    ahead: ArchiveAhead | None = None
    if archiver is not None:
        ahead = build_archive_ahead(settings, archiver, metrics)
    if ledger is None:
        ledger = open_ledger(settings.ledger_dir, dry_run=settings.dry_run, clock=now)

    async def job() -> str:
        report: CycleReport = await run_cycle(
            settings,
            client,
            metrics=metrics,
            now=now,
            # A new reporter per cycle: its tallies are one cycle's.
            progress=ReadinessProgress(health, LogProgress()),
            archiver=archiver,
            stop=stop,
            ledger=ledger,
            ahead=ahead,
        )
        return report.outcome.value

    return job


async def serve(
    settings: Settings,
    *,
    metrics: Metrics | None = None,
    health: Health | None = None,
    stop_event: asyncio.Event | None = None,
    install_signal_handlers: bool = True,
) -> int:
    """Run the daemon until stopped and return its exit code (0, or 69: metrics port unusable)."""
    metrics = metrics if metrics is not None else Metrics()
    health = health if health is not None else Health()
    archiver = build_archiver(settings, metrics, utc_now)
    # One event for the daemon and its cycles: SIGTERM sets it, and the running cycle then starts
    # no new action, so the in-flight ones finish well within REAPER_SHUTDOWN_GRACE.
    stop = stop_event if stop_event is not None else asyncio.Event()
    async with BatchClient.from_settings(settings, metrics=metrics) as client:
        job = cycle_job(
            settings, client, metrics=metrics, health=health, archiver=archiver, stop=stop
        )
        return await run_daemon(
            settings,
            job,
            metrics=metrics,
            health=health,
            stop_event=stop,
            install_signal_handlers=install_signal_handlers,
        )


def main(args: argparse.Namespace) -> int:
    """Run the daemon with the environment's settings; return 0 after SIGTERM/SIGINT."""
    del args  # `run` has no flags: everything comes from the environment
    settings = command_settings()
    log_settings_warnings(settings)  # once, at start: a retention outlasting the results window
    return run_async(serve(settings))
