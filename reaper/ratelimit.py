"""Pace request starts evenly under REAPER_MAX_RPM, slowing down when the API says so.

Why not aiolimiter: ``AsyncLimiter(1, 60 / rpm)`` does space requests evenly (``AsyncLimiter(rpm,
60)`` would allow a burst of rpm), but its rate is fixed, it reads the event loop's clock (tests
cannot drive it) and it has no notion of "nobody starts before t". The pacer below lets workers
through one at a time, in arrival order: the next start is due ``60 / rate`` after the previous
one was due, so there is never a burst, not even after an idle spell, and a late wake-up does not
shift later starts. Only the worker at the head sleeps, and it looks at the rate and the holds
again when it wakes, so a pace that changed meanwhile applies at once instead of to slots handed
out in advance (sixteen workers queued at a slow pace would otherwise keep it for minutes).

The rate adapts to three signals:

- a 429 halves it (once per episode: 429s answering requests sent before the last cut are the
  same episode) down to 1/16 of the configured rate, and every success afterwards wins back 5%;
  the 429's wait (``retry-after``, else the backoff) becomes a shared hold that every worker
  waits out, so one rate-limited request pauses them all instead of each finding out alone;
- ``anthropic-ratelimit-requests-limit`` caps the rate at the organisation's limit (the reaper
  can never use more; its own REAPER_MAX_RPM is usually lower);
- when ``-remaining`` drops below 10% of ``-limit`` the rate shrinks in proportion (remaining /
  10% of the limit, at least 1/16) until ``-reset`` or the next response that says otherwise:
  whatever the server's algorithm (token bucket, window), this settles where our spending
  matches its refill instead of running the budget down to a 429.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Final

Sleep = Callable[[float], Awaitable[object]]

SLOWDOWN: Final = 0.5
"""Rate multiplier applied by a 429."""
RECOVERY: Final = 1.05
"""Rate multiplier applied by each success until the configured rate is back (≈15 after a cut)."""
MIN_FACTOR: Final = 1 / 16
"""The lowest share of the configured rate the pacer slows down to."""
LOW_BUDGET: Final = 0.10
"""Share of the API's request limit below which the remaining budget slows the pacer."""
MAX_HOLD: Final = 60.0
"""Longest shared hold, in seconds (the same cap as a server-named retry wait)."""
_EARLY: Final = 1e-4
"""Seconds a wake-up may come early and still count as on time (event loops round timers)."""

LIMIT_HEADER: Final = "anthropic-ratelimit-requests-limit"
REMAINING_HEADER: Final = "anthropic-ratelimit-requests-remaining"
RESET_HEADER: Final = "anthropic-ratelimit-requests-reset"


def budget_scale(limit: int, remaining: int) -> float:
    """Return the share of the rate to use given the API's remaining request budget."""
    threshold = LOW_BUDGET * limit
    if limit <= 0 or remaining >= threshold:
        return 1.0
    return max(MIN_FACTOR, max(remaining, 0) / threshold)


class Pacer:
    """Space request starts at most ``max_rpm`` a minute, evenly, adapting to the API's signals.

    ``clock`` is monotonic seconds, ``wall_clock`` Unix seconds (to read ``-reset``), ``sleep``
    the coroutine that waits; all three are parameters so tests can run on a fake clock.
    """

    def __init__(
        self,
        max_rpm: float,
        *,
        clock: Callable[[], float],
        sleep: Sleep,
        wall_clock: Callable[[], float],
    ) -> None:
        if not max_rpm > 0 or not math.isfinite(max_rpm):
            raise ValueError(f"max_rpm must be a positive number, got {max_rpm!r}")
        self._max_rpm = float(max_rpm)
        self._clock = clock
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._lock = asyncio.Lock()
        self._last_start = -math.inf  # when the previous start was due
        self._not_before = -math.inf
        self._factor = 1.0
        self._last_cut = -math.inf
        self._ceiling_rpm = math.inf
        self._budget = 1.0
        self._budget_until = math.inf

    @property
    def rate_rpm(self) -> float:
        """The rate new starts are paced at now, in requests per minute."""
        budget = self._budget if self._clock() < self._budget_until else 1.0
        return min(self._max_rpm, self._ceiling_rpm) * max(MIN_FACTOR, self._factor * budget)

    @property
    def not_before(self) -> float:
        """The monotonic time before which no request starts (a shared hold)."""
        return self._not_before

    async def wait_turn(self) -> None:
        """Wait until this request may start: one interval after the previous, after any hold."""
        async with self._lock:
            woke_for: float | None = None
            while True:
                now = self._clock()
                due = max(self._last_start + 60.0 / self.rate_rpm, self._not_before)
                if due <= now + _EARLY:
                    # After a sleep the next start counts from the time slept for, so late
                    # wake-ups do not add up; with no sleep (idle until now) it counts from now:
                    # an idle spell earns no burst.
                    self._last_start = max(due, now if woke_for is None else woke_for)
                    return
                woke_for = due
                await self._sleep(due - now)

    def hold(self, seconds: float) -> None:
        """Let no request start for ``seconds`` (at most MAX_HOLD), whichever worker is asking."""
        if seconds > 0:
            self._not_before = max(self._not_before, self._clock() + min(seconds, MAX_HOLD))

    def on_response(self, status: int, headers: Mapping[str, str], *, sent_at: float) -> None:
        """Adapt the rate to a response: cut it on 429, recover on success, read the budget."""
        if status == 429:
            if sent_at >= self._last_cut:
                self._factor = max(MIN_FACTOR, self._factor * SLOWDOWN)
                self._last_cut = self._clock()
        elif status < 400 and self._factor < 1.0:
            self._factor = min(1.0, self._factor * RECOVERY)
        self._read_budget(headers)

    def _read_budget(self, headers: Mapping[str, str]) -> None:
        limit = _int(headers.get(LIMIT_HEADER))
        remaining = _int(headers.get(REMAINING_HEADER))
        if limit is None or limit <= 0 or remaining is None:
            return
        self._ceiling_rpm = float(limit)
        self._budget = budget_scale(limit, remaining)
        self._budget_until = math.inf
        if self._budget < 1.0:
            until_reset = _seconds_until(headers.get(RESET_HEADER), self._wall_clock())
            if until_reset is not None:
                self._budget_until = self._clock() + min(until_reset, MAX_HOLD)


def _int(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw.strip())
    except ValueError:
        return None


def _seconds_until(raw: str | None, wall_now: float) -> float | None:
    """Read an RFC 3339 ``-reset`` header into seconds from ``wall_now``; None when unreadable."""
    if raw is None:
        return None
    try:
        when = datetime.fromisoformat(raw.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - wall_now)
