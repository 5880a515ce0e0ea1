"""The retry policy: which answers are retried, and how long each wait is."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from reaper.retry import (
    MAX_SERVER_WAIT,
    Outcome,
    backoff,
    retry_wait,
    server_wait,
    should_retry,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (Outcome(failure="connection"), True),
        (Outcome(failure="timeout"), True),
        (Outcome(status=408), True),
        (Outcome(status=409), True),
        (Outcome(status=429), True),
        (Outcome(status=500), True),
        (Outcome(status=502), True),
        (Outcome(status=503), True),
        (Outcome(status=504), True),
        (Outcome(status=529), True),
        (Outcome(status=400), False),
        (Outcome(status=401), False),
        (Outcome(status=403), False),
        (Outcome(status=404), False),
        (Outcome(status=413), False),
        (Outcome(status=422), False),
        (Outcome(status=500, headers={"x-should-retry": "false"}), False),
        (Outcome(status=529, headers={"x-should-retry": "False"}), False),
        (Outcome(status=400, headers={"x-should-retry": "true"}), True),
        (Outcome(status=404, headers={"x-should-retry": "TRUE"}), True),
        (Outcome(status=500, headers={"x-should-retry": "maybe"}), True),
        (Outcome(status=429, error_code="enforced_spend_limit_reached"), False),
        (
            Outcome(
                status=429,
                headers={"x-should-retry": "true"},
                error_code="enforced_spend_limit_reached",
            ),
            True,
        ),
        (Outcome(status=429, error_code="something_else"), True),
    ],
)
def test_should_retry_follows_the_sdk_and_the_server_override(
    outcome: Outcome, expected: bool
) -> None:
    """Transport failures, 408/409/429/5xx retry; x-should-retry wins; the spend cap does not."""
    assert should_retry(outcome) is expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250.5"}, 0.2505),
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "100", "retry-after": "7"}, 0.1),
        ({"retry-after-ms": "junk", "retry-after": "7"}, 7.0),
        ({"retry-after-ms": "0", "retry-after": "3"}, 3.0),
        ({"retry-after": "120"}, MAX_SERVER_WAIT),
        ({"retry-after-ms": "3600000"}, MAX_SERVER_WAIT),
        ({"retry-after": "0"}, None),
        ({"retry-after": "-4"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "soon"}, None),
        ({"retry-after": format_datetime(NOW + timedelta(seconds=30), usegmt=True)}, 30.0),
        ({"retry-after": format_datetime(NOW - timedelta(seconds=30), usegmt=True)}, None),
        ({"retry-after": format_datetime(NOW + timedelta(hours=2), usegmt=True)}, MAX_SERVER_WAIT),
    ],
)
def test_server_wait_reads_retry_after_ms_then_retry_after(
    headers: dict[str, str], expected: float | None
) -> None:
    """retry-after-ms wins, then retry-after as seconds or HTTP date; capped; junk is ignored."""
    wait = server_wait(headers, now=NOW)
    if expected is None:
        assert wait is None
    else:
        assert wait == pytest.approx(expected)


@pytest.mark.parametrize(
    ("retries_taken", "jitter", "expected"),
    [
        (0, 0.0, 0.5),
        (0, 1.0, 0.375),
        (1, 0.0, 1.0),
        (2, 0.5, 2.0 * 0.875),
        (3, 0.0, 4.0),
        (4, 0.0, 8.0),
        (10, 0.0, 8.0),
        (1000, 0.0, 8.0),
        (4, 1.0, 6.0),
    ],
)
def test_backoff_is_the_sdk_formula(retries_taken: int, jitter: float, expected: float) -> None:
    """min(0.5 * 2**n, 8) * (1 - 0.25 * jitter)."""
    assert backoff(retries_taken, jitter) == pytest.approx(expected)


def test_retry_wait_prefers_the_server_wait_over_backoff() -> None:
    """A 429 with retry-after waits what the server said, not the backoff."""
    outcome = Outcome(status=429, headers={"retry-after": "3"})
    assert retry_wait(outcome, retries_taken=2, max_retries=5, now=NOW, jitter=0.0) == 3.0


def test_retry_wait_backs_off_without_a_server_wait() -> None:
    """A bare 500 waits the exponential backoff of the retries already taken."""
    outcome = Outcome(status=500)
    assert retry_wait(outcome, retries_taken=2, max_retries=5, now=NOW, jitter=0.0) == 2.0


def test_retry_wait_gives_up_after_max_retries() -> None:
    """The attempt after max_retries retries is the last, whatever the server says."""
    outcome = Outcome(status=429, headers={"retry-after": "1", "x-should-retry": "true"})
    assert retry_wait(outcome, retries_taken=4, max_retries=5, now=NOW, jitter=0.0) == 1.0
    assert retry_wait(outcome, retries_taken=5, max_retries=5, now=NOW, jitter=0.0) is None
    assert retry_wait(outcome, retries_taken=0, max_retries=0, now=NOW, jitter=0.0) is None


def test_retry_wait_gives_up_on_a_final_answer() -> None:
    """A 404 is not retried even with a retry-after header."""
    outcome = Outcome(status=404, headers={"retry-after": "1"})
    assert retry_wait(outcome, retries_taken=0, max_retries=5, now=NOW, jitter=0.0) is None


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        (Outcome(status=429), "429"),
        (Outcome(status=529), "529"),
        (Outcome(failure="timeout"), "timeout"),
        (Outcome(failure="connection"), "connection"),
        (Outcome(), "connection"),
    ],
)
def test_outcome_reason_is_the_status_or_the_failure(outcome: Outcome, reason: str) -> None:
    """The retries metric's reason label: a status code, or timeout/connection."""
    assert outcome.reason == reason
