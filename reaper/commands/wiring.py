"""Wire a command: settings, logging, clock, archiver and the event loop, the same way for all.

``once``, ``plan``, ``explain`` and ``run`` start here: ``command_settings`` reads the environment
(a bad one raises ConfigError, which ``reaper.cli`` turns into exit 78) and routes the logs,
masked, to stdout or stderr; ``run_async`` runs the command's coroutine and flushes the logs
whatever happens; ``build_archiver`` and ``utc_now`` give every command the same archive and clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, TextIO, TypeVar

from reaper.archive import Archiver
from reaper.logs import configure_logging, flush_logging
from reaper.metrics import Metrics
from reaper.settings import Settings, load_settings

T = TypeVar("T")


def utc_now() -> datetime:
    """Return the current time, aware, in UTC: the clock of every command."""
    return datetime.now(UTC)


def command_settings(*, log_stream: TextIO | None = None) -> Settings:
    """Read the environment's settings (the key required) and configure the masked logs.

    ``log_stream`` is where log lines go: stdout (None) for ``run`` and ``once``, stderr for
    ``plan`` and ``explain``, whose stdout carries nothing but their output.
    """
    settings = load_settings(require_key=True)
    key = settings.api_key_value()
    configure_logging(
        settings.log_level, settings.log_format, secrets=[key] if key else [], stream=log_stream
    )
    return settings


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine to the end, then flush the logs (even on an exception)."""
    try:
        return asyncio.run(main)
    finally:
        flush_logging()


def build_archiver(
    settings: Settings, metrics: Metrics, now: Callable[[], datetime] = utc_now
) -> Archiver | None:
    """Return the archiver of ``REAPER_ARCHIVE_DIR``, or None when no archive is configured."""
    if settings.archive_dir is None:
        return None
    return Archiver(
        settings.archive_dir, missing=settings.archive_missing, metrics=metrics, now=now
    )
