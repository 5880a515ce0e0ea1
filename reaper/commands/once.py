"""``reaper once``: run one cycle, print a one-paragraph summary, exit with SPEC §1's code.

0 every planned action done; 1 the cycle failed (a listing could not be read) or some action
failed; 3 a safety guard stopped deletions; 78 bad configuration (raised as ConfigError and
mapped by ``reaper.cli``). Logs go to stdout; progress and the summary go to stderr, so a
pipeline reading the JSON log lines gets nothing else.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime

from reaper.client import BatchClient
from reaper.commands.wiring import build_archiver, command_settings, run_async, utc_now
from reaper.cycle import CycleReport, PlanSelector, build_archive_ahead, run_cycle
from reaper.ledger import open_ledger
from reaper.metrics import Metrics
from reaper.progress import Progress, make_progress
from reaper.settings import Settings


def main(args: argparse.Namespace) -> int:
    """Run one cycle with the environment's settings and return the exit code."""
    del args  # `once` has no flags: everything comes from the environment
    settings = command_settings()
    report = run_async(run_once(settings, progress=make_progress(settings.log_format)))
    print(report.summary_text(), file=sys.stderr, flush=True)
    return report.exit_code()


async def run_once(
    settings: Settings,
    *,
    metrics: Metrics | None = None,
    now: Callable[[], datetime] = utc_now,
    progress: Progress | None = None,
    select: PlanSelector | None = None,
) -> CycleReport:
    """Run one cycle against the API the settings name, with a client of its own.

    ``select`` narrows what the cycle acts on (``reaper apply``).
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
        )
