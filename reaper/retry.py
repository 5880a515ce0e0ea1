"""Decide whether to retry an API request and how long to wait first (pure functions).

The policy is the official SDK's (API-NOTES §8), with two changes:

- a wait the server asks for (``retry-after-ms``, ``retry-after``) is capped at
  ``MAX_SERVER_WAIT`` seconds: a daemon that sleeps for hours on one bad header looks hung, and the
  next attempt simply asks again (SDK 0.x capped at 60 s too; 2.10 obeys anything positive);
- a 429 whose body says ``enforced_spend_limit_reached`` (the monthly spend cap, API-NOTES §6.2) is
  not retried: it keeps failing until the month resets, so retrying only burns the RPM budget.

No I/O, no clock, no randomness of its own: the caller passes the wall-clock time (for an
HTTP-date ``retry-after``) and a jitter draw in [0, 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

BACKOFF_BASE: Final = 0.5
"""Seconds before the first retry when the server names no wait (the SDK's INITIAL_RETRY_DELAY)."""
BACKOFF_CAP: Final = 8.0
"""Longest backoff between two attempts (the SDK's MAX_RETRY_DELAY)."""
JITTER: Final = 0.25
"""Share of the backoff taken off at random, so that workers failing together retry apart."""
MAX_SERVER_WAIT: Final = 60.0
"""Longest wait obeyed from ``retry-after(-ms)``; longer asks are cut to this (see module doc)."""

RETRYABLE_STATUSES: Final = frozenset({408, 409, 429})
SPEND_LIMIT_CODE: Final = "enforced_spend_limit_reached"

TIMEOUT: Final = "timeout"
CONNECTION: Final = "connection"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt came back with: a status and headers, or a transport failure."""

    status: int | None = None
    """HTTP status, or None when no response arrived."""
    headers: Mapping[str, str] | None = None
    """Response headers, looked up by lower-case name (httpx.Headers is case-insensitive)."""
    failure: str | None = None
    """``timeout`` or ``connection`` when no response arrived."""
    error_code: str | None = None
    """``error.details.error_code`` from an error body, when there is one."""

    @property
    def reason(self) -> str:
        """Label for ``reaper_api_retries_total``: the status code, or the kind of failure."""
        if self.status is not None:
            return str(self.status)
        return self.failure or CONNECTION


def should_retry(outcome: Outcome) -> bool:
    """Return True when the request is worth another attempt (budget aside)."""
    if outcome.status is None:
        return True
    verdict = (_header(outcome.headers, "x-should-retry") or "").lower()
    if verdict == "true":
        return True
    if verdict == "false":
        return False
    if outcome.status == 429 and outcome.error_code == SPEND_LIMIT_CODE:
        return False
    return outcome.status in RETRYABLE_STATUSES or outcome.status >= 500


def server_wait(headers: Mapping[str, str] | None, *, now: datetime) -> float | None:
    """Return the wait in seconds the server asked for, capped, or None when it named none.

    ``retry-after-ms`` (float milliseconds) wins over ``retry-after`` (float seconds, or an HTTP
    date). Zero, negative, non-finite and unreadable values count as no wait named.
    """
    millis = _positive_float(_header(headers, "retry-after-ms"))
    if millis is not None:
        return min(millis / 1000.0, MAX_SERVER_WAIT)
    raw = _header(headers, "retry-after")
    if raw is None:
        return None
    seconds = _positive_float(raw)
    if seconds is None:
        seconds = _seconds_until_http_date(raw, now)
    return None if seconds is None else min(seconds, MAX_SERVER_WAIT)


def backoff(retries_taken: int, jitter: float) -> float:
    """Return the SDK's backoff: ``min(0.5 * 2**n, 8) * (1 - 0.25 * jitter)``, n = retries taken."""
    base = min(BACKOFF_BASE * 2.0 ** min(retries_taken, 32), BACKOFF_CAP)
    return base * (1.0 - JITTER * min(max(jitter, 0.0), 1.0))


def retry_wait(
    outcome: Outcome, *, retries_taken: int, max_retries: int, now: datetime, jitter: float
) -> float | None:
    """Return how long to wait before the next attempt, or None to give up now."""
    if retries_taken >= max_retries or not should_retry(outcome):
        return None
    named = server_wait(outcome.headers, now=now)
    return named if named is not None else backoff(retries_taken, jitter)


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if headers is None:
        return None
    value = headers.get(name)
    return None if value is None else value.strip()


def _positive_float(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def _seconds_until_http_date(raw: str, now: datetime) -> float | None:
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; parsedate gives naive for "-0000"
        when = when.replace(tzinfo=UTC)
    seconds = (when - now).total_seconds()
    return seconds if seconds > 0 else None
