"""Progress of a cycle: one updating line on a terminal, or periodic log events otherwise.

A person at a terminal watching ``reaper once`` or ``reaper plan`` wants to see that a long listing
or a backlog of deletions is moving; a log pipeline wants neither carriage returns nor a line per
page, so it gets a ``cycle.progress`` event every few seconds instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Protocol, TextIO

import structlog

from reaper.metrics import workspace_label

# Redrawing a terminal line more often than this only burns CPU on a fast listing.
_TERMINAL_INTERVAL = 0.1
# Often enough to show a stuck cycle in the logs, rarely enough not to drown them.
_LOG_INTERVAL = 10.0


class Progress(Protocol):
    """What a cycle reports as it goes; every call must be cheap and must never raise."""

    def listed(self, workspace: str | None, pages: int, batches: int) -> None:
        """Report the pages and batches listed so far in a workspace."""

    def planned(self, actions: int) -> None:
        """Add actions to the number planned for this cycle."""

    def acted(self, actions: int = 1) -> None:
        """Count actions finished (done, failed or skipped)."""

    def close(self) -> None:
        """Finish the report (a final newline on a terminal)."""


class _Tally:
    """The numbers both reporters show."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.workspace = "default"
        self.pages = 0
        self.batches = 0
        self.planned = 0
        self.done = 0

    def set_listing(self, workspace: str | None, pages: int, batches: int) -> None:
        self.workspace = workspace_label(workspace)
        self.pages = pages
        self.batches = batches


class TerminalProgress:
    """Redraw one line on a terminal stream (stderr), at most every 100 ms."""

    def __init__(self, stream: TextIO, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream
        self._tally = _Tally(clock)
        self._last_draw = -1e9
        self._drawn = False

    def listed(self, workspace: str | None, pages: int, batches: int) -> None:
        self._tally.set_listing(workspace, pages, batches)
        self._draw()

    def planned(self, actions: int) -> None:
        self._tally.planned += actions
        self._draw(force=True)

    def acted(self, actions: int = 1) -> None:
        self._tally.done += actions
        self._draw(force=self._tally.done >= self._tally.planned)

    def close(self) -> None:
        if self._drawn:
            self._draw(force=True)
            self._write("\n")
            self._drawn = False

    def line(self) -> str:
        """Return the text of the progress line."""
        t = self._tally
        return (
            f"reaper: [{t.workspace}] listed {t.pages:,} pages, {t.batches:,} batches;"
            f" actions {t.done:,}/{t.planned:,}"
        )

    def _draw(self, *, force: bool = False) -> None:
        now = self._tally.clock()
        if not force and now - self._last_draw < _TERMINAL_INTERVAL:
            return
        self._last_draw = now
        self._drawn = True
        # \r and "erase to end of line": log lines printed meanwhile must not leave debris behind.
        self._write(f"\r\x1b[K{self.line()}")

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # a closed or broken terminal must never fail the cycle
            pass


class LogProgress:
    """Emit a ``cycle.progress`` log event at most every ``interval`` seconds."""

    def __init__(
        self,
        *,
        interval: float = _LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._tally = _Tally(clock)
        self._interval = interval
        self._log = logger if logger is not None else structlog.get_logger("reaper.progress")
        self._last_emit = clock()
        self._emits = 0
        self._dirty = False

    def listed(self, workspace: str | None, pages: int, batches: int) -> None:
        self._tally.set_listing(workspace, pages, batches)
        self._maybe_emit()

    def planned(self, actions: int) -> None:
        self._tally.planned += actions
        self._maybe_emit()

    def acted(self, actions: int = 1) -> None:
        self._tally.done += actions
        self._maybe_emit()

    def close(self) -> None:
        # A final line only when something happened since the last one: short cycles stay quiet,
        # since cycle.finished already says everything.
        if self._dirty and self._emits:
            self._emit()

    def _maybe_emit(self) -> None:
        self._dirty = True
        if self._tally.clock() - self._last_emit >= self._interval:
            self._emit()

    def _emit(self) -> None:
        t = self._tally
        self._last_emit = t.clock()
        self._dirty = False
        self._emits += 1
        self._log.info(
            "cycle.progress",
            workspace=t.workspace,
            pages=t.pages,
            batches=t.batches,
            actions_done=t.done,
            actions_planned=t.planned,
        )


def make_progress(
    log_format: str, stream: TextIO | None = None, *, clock: Callable[[], float] = time.monotonic
) -> TerminalProgress | LogProgress:
    """Choose a terminal line (a TTY with console logs) or log events (anything else)."""
    out = stream if stream is not None else sys.stderr
    try:
        interactive = out.isatty()
    except (OSError, ValueError):
        interactive = False
    if interactive and log_format == "console":
        return TerminalProgress(out, clock=clock)
    return LogProgress(clock=clock)
