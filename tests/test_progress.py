"""Progress: one redrawn line on a terminal, periodic ``cycle.progress`` events otherwise."""

from __future__ import annotations

import io

from structlog.testing import capture_logs

from reaper.progress import LogProgress, TerminalProgress, make_progress
from tests.helpers import Clock


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_with_console_logs_gets_a_line_anything_else_gets_log_events() -> None:
    """The choice follows SPEC: progress on a TTY, logs in pipelines and with JSON logs."""
    assert isinstance(make_progress("console", FakeTty()), TerminalProgress)
    assert isinstance(make_progress("json", FakeTty()), LogProgress)
    assert isinstance(make_progress("console", io.StringIO()), LogProgress)


def test_terminal_line_shows_pages_batches_and_actions() -> None:
    """The line is redrawn in place (carriage return, erase) and ends with a newline on close."""
    out = FakeTty()
    clock = Clock()
    progress = TerminalProgress(out, clock=clock)
    progress.listed("ws_a", 2, 2000)
    clock.advance(1.0)
    progress.planned(10)
    progress.acted(3)
    progress.close()

    frames = out.getvalue().split("\r\x1b[K")
    assert frames[0] == ""
    assert frames[-1] == "reaper: [ws_a] listed 2 pages, 2,000 batches; actions 3/10\n"


def test_terminal_redraws_are_throttled() -> None:
    """A thousand pages listed within 100 ms draw one line, not a thousand."""
    out = FakeTty()
    progress = TerminalProgress(out, clock=Clock())
    for page in range(1, 1001):
        progress.listed(None, page, page * 1000)

    assert out.getvalue().count("\r") == 1


def test_log_progress_emits_at_most_every_interval() -> None:
    """Events come at most every interval; a short cycle stays silent (cycle.finished says it)."""
    clock = Clock()
    with capture_logs() as logs:
        quiet = LogProgress(interval=10, clock=clock)
        quiet.listed(None, 1, 5)
        quiet.close()
        assert logs == []

        progress = LogProgress(interval=10, clock=clock)
        for second in range(25):
            clock.advance(1.0 if second else 0.0)  # the clock reads ``second`` seconds on
            progress.acted()
        progress.close()

    assert [e["event"] for e in logs] == ["cycle.progress"] * 3
    assert [e["actions_done"] for e in logs] == [11, 21, 25]
