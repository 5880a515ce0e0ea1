"""The emulator's time: the clocks it can run on, and the offset the control surface moves.

- ``system_clock``: the host's clock (``reaper emulator`` runs on it).
- ``ManualClock``: a clock that moves only when told (tests and the demo).
- ``EmulatorClock``: the clock the emulator reads, a base clock plus an offset that
  ``POST /_emulator/clock`` (or ``EmulatorState.advance``/``set_time``) moves. The lifecycle of
  every batch and the ``Date`` header of every response follow it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """Return the current time, aware, in UTC."""
    return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told: ``advance()`` or ``set()``."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start if start is not None else datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
        if self._now.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")

    def __call__(self) -> datetime:
        return self._now

    def advance(self, by: float | timedelta) -> datetime:
        """Move the clock forward by seconds or a timedelta; return the new time."""
        self._now += by if isinstance(by, timedelta) else timedelta(seconds=by)
        return self._now

    def set(self, when: datetime) -> None:
        """Set the clock to an aware datetime."""
        if when.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self._now = when


class EmulatorClock:
    """A base clock plus an offset: what the emulator calls now. Thread-safe."""

    def __init__(self, base: Clock = system_clock) -> None:
        self._base = base
        self._offset = timedelta()
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        return self._base() + self._offset

    def advance(self, seconds: float) -> datetime:
        """Move the time forward (the offset grows); return the new time."""
        with self._lock:
            self._offset += timedelta(seconds=seconds)
        return self()

    def set(self, when: datetime) -> datetime:
        """Make the time read ``when`` from now on (an offset over the base clock)."""
        with self._lock:
            self._offset = when - self._base()
        return self()

    def reset(self) -> None:
        """Forget the offset: the time is the base clock's again."""
        with self._lock:
            self._offset = timedelta()


def http_date(when: datetime) -> str:
    """Format an aware time as an HTTP ``Date`` header (RFC 9110 IMF-fixdate, whole seconds)."""
    return format_datetime(when.astimezone(UTC).replace(microsecond=0), usegmt=True)
