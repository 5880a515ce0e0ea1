"""The list answer's fast path (msgspec) never disagrees with the exact one (Batch.from_api).

The fast path may only decline a page; whenever it answers, it answers what ``Batch.from_api``
reads from the same bytes. Without its checks (the required failure tallies, the UTC check,
the workspace override) the property below finds a page where the two differ.
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from reaper.client.listed import fast_listing
from reaper.models import Batch, ModelError, RequestCounts, format_time

NOW = datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _row(i: int, *, ended: bool = True) -> dict[str, Any]:
    created = NOW - timedelta(days=i % 40, seconds=i)
    batch = Batch(
        f"msgbatch_{i:024d}",
        "ended" if ended else "in_progress",
        created,
        RequestCounts(succeeded=3, errored=1 if i % 7 == 0 else 0, expired=0)
        if ended
        else RequestCounts(processing=4, errored=0, expired=0),
        expires_at=created + timedelta(hours=24),
        ended_at=created + timedelta(hours=1) if ended else None,
        results_url=f"http://127.0.0.1:1/v1/messages/batches/msgbatch_{i:024d}/results"
        if ended
        else None,
    )
    return batch.to_api()


def _page(rows: list[dict[str, Any]], *, has_more: bool = False) -> bytes:
    body = {
        "data": rows,
        "has_more": has_more,
        "first_id": rows[0].get("id") if rows else None,
        "last_id": rows[-1].get("id") if rows else None,
    }
    return json.dumps(body).encode()


def _exact(content: bytes, workspace: str | None) -> tuple[list[Batch], bool, Any] | None:
    """What the exact path reads from a page, None where it refuses a batch object."""
    body = json.loads(content)
    try:
        batches = [Batch.from_api(item, workspace) for item in body["data"]]
    except (ModelError, TypeError, AttributeError):
        return None
    return batches, body["has_more"], body.get("last_id")


def test_an_ordinary_page_takes_the_fast_path_and_reads_the_same() -> None:
    content = _page([_row(i, ended=i % 3 != 0) for i in range(50)], has_more=True)
    fast = fast_listing(content, None)
    assert fast is not None, "the fast path declined an ordinary page"
    assert fast == _exact(content, None)
    assert all(type(b) is Batch for b in fast[0])


def test_the_workspace_is_the_listings_not_the_answers() -> None:
    rows = [_row(1), _row(2)]
    rows[0]["workspace"] = "wrkspc_from_the_answer"
    content = _page(rows)
    fast = fast_listing(content, "wrkspc_listed")
    assert fast is not None
    assert [b.workspace for b in fast[0]] == ["wrkspc_listed", "wrkspc_listed"]
    fast = fast_listing(content, None)
    assert fast is not None
    assert [b.workspace for b in fast[0]] == [None, None]


def test_a_missing_failure_tally_is_not_read_as_zero() -> None:
    for tally in ("errored", "expired"):
        rows = [_row(1), _row(2)]
        del rows[1]["request_counts"][tally]
        assert fast_listing(_page(rows), None) is None
        assert _exact(_page(rows), None) is None


def _offset(value: str) -> str:
    return value.replace("Z", "+02:00")


def _naive(value: str) -> str:
    return value.replace("Z", "")


# Each fault turns one row into something the API should not send (or sends in another form).
FAULTS: dict[str, Any] = {
    "drop_errored": lambda r: r["request_counts"].pop("errored"),
    "drop_expired": lambda r: r["request_counts"].pop("expired"),
    "drop_processing": lambda r: r["request_counts"].pop("processing"),
    "drop_id": lambda r: r.pop("id"),
    "empty_id": lambda r: r.update(id=""),
    "int_id": lambda r: r.update(id=7),
    "drop_created": lambda r: r.pop("created_at"),
    "null_created": lambda r: r.update(created_at=None),
    "offset_created": lambda r: r.update(created_at=_offset(r["created_at"])),
    "naive_created": lambda r: r.update(created_at=_naive(r["created_at"])),
    "offset_ended": lambda r: r.update(ended_at=r["ended_at"] and _offset(r["ended_at"])),
    "naive_expires": lambda r: r.update(expires_at=_naive(r["expires_at"])),
    "garbage_expires": lambda r: r.update(expires_at="yesterday"),
    "lower_tz": lambda r: r.update(created_at=r["created_at"].replace("Z", "z").replace("T", "t")),
    "space_t": lambda r: r.update(created_at=r["created_at"].replace("T", " ")),
    "minus_zero": lambda r: r.update(created_at=r["created_at"].replace("Z", "-00:00")),
    "compact_offset": lambda r: r.update(created_at=r["created_at"].replace("Z", "+0000")),
    "no_seconds": lambda r: r.update(created_at=r["created_at"][:16] + "Z"),
    "nanos_up": lambda r: r.update(created_at=r["created_at"].replace("Z", "789Z")),
    "nanos_down": lambda r: r.update(created_at=r["created_at"].replace("Z", "4999Z")),
    "nanos_carry": lambda r: r.update(created_at="2026-12-31T23:59:59.9999995Z"),
    "comma_fraction": lambda r: r.update(created_at=r["created_at"].replace(".", ",")),
    "string_count": lambda r: r["request_counts"].update(succeeded="3"),
    "bool_count": lambda r: r["request_counts"].update(errored=True),
    "float_count": lambda r: r["request_counts"].update(expired=2.0),
    "counts_list": lambda r: r.update(request_counts=[0, 1]),
    "int_status": lambda r: r.update(processing_status=3),
    "new_status": lambda r: r.update(processing_status="paused"),
    "int_url": lambda r: r.update(results_url=5),
    "extra_field": lambda r: r.update(extra={"errored": 1, "nested": [1, 2]}),
    "answer_workspace": lambda r: r.update(workspace="wrkspc_answer"),
    "cancel_time": lambda r: r.update(cancel_initiated_at=format_time(NOW)),
    "archived_offset": lambda r: r.update(archived_at=_offset(format_time(NOW))),
    "row_not_object": lambda r: r.clear(),
}


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(0, 6),
    faults=st.lists(
        st.tuples(st.integers(0, 5), st.sampled_from(sorted(FAULTS))), min_size=0, max_size=3
    ),
    workspace=st.sampled_from([None, "wrkspc_1"]),
    has_more=st.booleans(),
)
def test_the_fast_path_only_ever_declines(
    size: int, faults: list[tuple[int, str]], workspace: str | None, has_more: bool
) -> None:
    rows = [_row(i, ended=i % 2 == 0) for i in range(size)]
    for index, fault in faults:
        if index < len(rows):
            with contextlib.suppress(KeyError, AttributeError, TypeError):  # an earlier fault
                FAULTS[fault](rows[index])  # took away what this one changes
    content = _page(rows, has_more=has_more)
    fast = fast_listing(content, workspace)
    if fast is not None:
        assert fast == _exact(content, workspace)
        for batch in fast[0]:
            times = (batch.created_at, batch.expires_at, batch.ended_at, batch.archived_at)
            assert all(t is None or t.tzinfo is UTC for t in times)
    elif not faults:
        raise AssertionError("the fast path declined a page with no fault")


def test_an_envelope_it_cannot_read_is_declined() -> None:
    for content in (b"[]", b"{}", b"not json", b'{"data": {}, "has_more": false}'):
        assert fast_listing(content, None) is None
    assert fast_listing(b'{"data": [], "has_more": "no"}', None) is None
    assert fast_listing(b'{"data": [], "has_more": false, "last_id": 3}', None) is None
