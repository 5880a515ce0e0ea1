"""Builders shared by the policy tests: batches aged relative to a fixed ``NOW``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from reaper.models import Batch, RequestCounts

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
SECOND = timedelta(seconds=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def make_batch(
    batch_id: str,
    status: str = "ended",
    *,
    age: timedelta = 40 * DAY,
    ended_ago: timedelta | None = None,
    errored: int = 0,
    expired: int = 0,
    workspace: str | None = None,
) -> Batch:
    """Build a batch created ``age`` before NOW; an ended one ends ``ended_ago`` before NOW."""
    created = NOW - age
    ended_at = None
    if status == "ended":
        ended_at = NOW - (ended_ago if ended_ago is not None else age - HOUR)
        counts = RequestCounts(succeeded=10, errored=errored, expired=expired)
    else:
        counts = RequestCounts(processing=10)
    return Batch(
        id=batch_id,
        processing_status=status,
        created_at=created,
        request_counts=counts,
        expires_at=created + timedelta(hours=24),
        ended_at=ended_at,
        workspace=workspace,
    )


def mixed_listing(deletes: int, keeps: int, cancels: int = 0) -> list[Batch]:
    """A listing with that many deletable, kept and stale batches (deletes most overdue first)."""
    batches = [make_batch(f"d{i:03}", age=(100 - i) * DAY) for i in range(deletes)]
    batches += [make_batch(f"k{i:03}", "in_progress", age=2 * HOUR) for i in range(keeps)]
    batches += [make_batch(f"c{i:03}", "in_progress", age=(20 + i) * HOUR) for i in range(cancels)]
    return batches
