"""``reaper once``: run one cycle, print a one-paragraph summary, exit with SPEC §1's code.

0 every planned action done; 1 the cycle failed (a listing could not be read) or some action
failed; 3 a safety guard stopped deletions; 78 bad configuration (raised as ConfigError and
mapped by ``reaper.cli``). Logs go to stdout; progress and the summary go to stderr, so a
pipeline reading the JSON log lines gets nothing else.

SIGTERM and SIGINT stop it as they stop ``run``: nothing new starts, the calls in flight finish
(batches already canceled are still waited for and deleted) within ``REAPER_SHUTDOWN_GRACE``,
after which (or at a second signal) the cycle is cut short. An interrupted ``once`` never exits
0: 1 (3 if a guard stopped a workspace), and its summary says it was interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable
from datetime import datetime

import structlog

from reaper.client import BatchClient
from reaper.commands.wiring import build_archiver, command_settings, run_async, utc_now
from reaper.cycle import CycleReport, PlanSelector, build_archive_ahead, run_cycle
from reaper.exits import EX_FAILED
from reaper.ledger import open_ledger
from reaper.metrics import Metrics
from reaper.progress import Progress, make_progress
from reaper.settings import Settings

log = structlog.get_logger("reaper.once")


def main(args: argparse.Namespace) -> int:
    """Run one cycle with the environment's settings and return the exit code."""
    del args  # `once` has no flags: everything comes from the environment
    settings = command_settings()
    report, signals = run_async(run_until_signal(settings, make_progress(settings.log_format)))
    if report is None:  # cut short past the grace, or by a second signal
        print(
            f"Interrupted by {signals[0]}: the cycle was cut short after"
            " REAPER_SHUTDOWN_GRACE; the next cycle sees what it left (exit 1).",
            file=sys.stderr,
            flush=True,
        )
        return EX_FAILED
    # A signal during the cycle makes it partial (exit 1), or it stays a safety stop (exit 3).
    print(report.summary_text(), file=sys.stderr, flush=True)
    return report.exit_code()


async def run_until_signal(
    settings: Settings, progress: Progress | None
) -> tuple[CycleReport | None, list[str]]:
    """Run one cycle; SIGTERM/SIGINT stop it as they stop the daemon (see the module doc).

    Returns the report (None when the cycle was cut short) and the signals received.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []
    cycle = asyncio.create_task(run_once(settings, progress=progress, stop=stop))
    grace = settings.shutdown_grace.total_seconds()

    def on_signal(signum: signal.Signals) -> None:
        received.append(signum.name)
        if stop.is_set():  # a second signal: no more waiting
            log.warning("once.forced", signal=signum.name)
            cycle.cancel()
            return
        log.info("once.signal", signal=signum.name, shutdown_grace_seconds=grace)
        stop.set()
        loop.call_later(grace, cycle.cancel)

    installed = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
        installed.append(signum)
    try:
        return await cycle, received
    except asyncio.CancelledError:
        if not received:
            raise
        return None, received
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


async def run_once(
    settings: Settings,
    *,
    metrics: Metrics | None = None,
    now: Callable[[], datetime] = utc_now,
    progress: Progress | None = None,
    select: PlanSelector | None = None,
    stop: asyncio.Event | None = None,
) -> CycleReport:
    """Run one cycle against the API the settings name, with a client of its own.

    ``select`` narrows what the cycle acts on (``reaper apply``); once ``stop`` is set, nothing
    new starts (``run_cycle``).
    """
    metrics = metrics if metrics is not None else Metrics()
    archiver = build_archiver(settings, metrics, now)
    ahead = None if archiver is None else build_archive_ahead(settings, archiver, metrics)
    ledger = open_ledger(settings.ledger_dir, dry_run=settings.dry_run, clock=now)
    async with BatchClient.from_settings(settings, metrics=metrics) as client:
        return await run_cycle(
            settings,
            client,
            metrics=metrics,
            now=now,
            progress=progress,
            archiver=archiver,
            ahead=ahead,
            ledger=ledger,
            select=select,
            stop=stop,
        )
