"""Timestamps and batch objects as the API writes them, read back exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reaper.models import Batch, ModelError, RequestCounts, parse_time

COUNT_FIELDS = ("processing", "succeeded", "errored", "canceled", "expired")


def test_the_apis_z_form_is_read_as_utc() -> None:
    parsed = parse_time("2026-12-01T22:45:46.071234Z")
    assert parsed == datetime(2026, 12, 1, 22, 45, 46, 71234, tzinfo=UTC)
    assert parsed.utcoffset() == timedelta(0)


def test_an_offset_is_converted_to_utc() -> None:
    parsed = parse_time("2026-12-02T00:45:46+02:00")
    assert parsed == datetime(2026, 12, 1, 22, 45, 46, tzinfo=UTC)
    assert parsed.tzinfo is UTC
    assert parsed.hour == 22


def test_a_timestamp_without_a_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="without a time zone"):
        parse_time("2026-12-01T22:45:46")


def test_a_bad_timestamp_fails_the_batch_naming_it() -> None:
    data = Batch(
        "msgbatch_x",
        "ended",
        datetime(2026, 1, 1, tzinfo=UTC),
        RequestCounts(succeeded=1, errored=0, expired=0),
    ).to_api()
    data["ended_at"] = "2026-01-01T00:00:00"
    with pytest.raises(ModelError, match="without a time zone"):
        Batch.from_api(data)
    data["ended_at"] = None
    data["request_counts"] = [1, 2]
    with pytest.raises(ModelError, match="request_counts is not an object"):
        Batch.from_api(data)


_times = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)
)


@given(
    created=_times,
    optional=st.lists(st.one_of(st.none(), _times), min_size=4, max_size=4),
    counts=st.lists(st.integers(0, 10**6), min_size=5, max_size=5),
    status=st.sampled_from(["in_progress", "canceling", "ended", "something_new"]),
    results_url=st.one_of(st.none(), st.just("https://example.invalid/results")),
    workspace=st.one_of(st.none(), st.just("wrkspc_1")),
)
def test_a_batch_reads_back_field_for_field(
    created: datetime,
    optional: list[datetime | None],
    counts: list[int],
    status: str,
    results_url: str | None,
    workspace: str | None,
) -> None:
    """from_api(to_api(b)) is b: every field lands where it belongs, offsets or not."""
    batch = Batch(
        "msgbatch_1",
        status,
        created,
        RequestCounts(**dict(zip(COUNT_FIELDS, counts, strict=True))),
        *optional,
        results_url,
        workspace,
    )
    assert Batch.from_api(batch.to_api(), workspace) == batch
    shifted = batch.to_api()
    east = timezone(timedelta(hours=5, minutes=30))
    shifted["created_at"] = created.astimezone(east).isoformat()
    assert Batch.from_api(shifted, workspace) == batch
