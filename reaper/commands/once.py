"""``reaper once``: run one cycle, print a one-paragraph summary, exit with SPEC §1's code.

0 every planned action done; 1 the cycle failed (a listing could not be read) or some action
failed; 3 a safety guard stopped deletions; 78 bad configuration (raised as ConfigError and
mapped by ``reaper.cli``). Logs go to stdout; progress and the summary go to stderr, so a
pipeline reading the JSON log lines gets nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from datetime import UTC, datetime

from reaper.archive import Archiver
from reaper.client import BatchClient
from reaper.cycle import CycleReport, run_cycle
from reaper.logs import configure_logging, flush_logging
from reaper.metrics import Metrics
from reaper.progress import Progress, make_progress
from reaper.settings import Settings, load_settings


def main(args: argparse.Namespace) -> int:
    """Run one cycle with the environment's settings and return the exit code."""
    del args  # `once` has no flags: everything comes from the environment
    settings = load_settings()
    key = settings.api_key_value()
    configure_logging(settings.log_level, settings.log_format, secrets=[key] if key else [])
    try:
        report = asyncio.run(run_once(settings, progress=make_progress(settings.log_format)))
    finally:
        flush_logging()
    print(report.summary_text(), file=sys.stderr, flush=True)
    return report.exit_code()


def _utc_now() -> datetime:
    return datetime.now(UTC)


async def run_once(
    settings: Settings,
    *,
    metrics: Metrics | None = None,
    now: Callable[[], datetime] = _utc_now,
    progress: Progress | None = None,
) -> CycleReport:
    """Run one cycle against the API the settings name, with a client of its own."""
    metrics = metrics if metrics is not None else Metrics()
    archiver = None
    if settings.archive_dir is not None:
        archiver = Archiver(
            settings.archive_dir, missing=settings.archive_missing, metrics=metrics, now=now
        )
    async with BatchClient.from_settings(settings, metrics=metrics) as client:
        return await run_cycle(
            settings, client, metrics=metrics, now=now, progress=progress, archiver=archiver
        )
