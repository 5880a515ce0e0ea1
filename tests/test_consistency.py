"""Listing consistency and the clock check: an inconsistent listing is refused, with its reason."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reaper.consistency import (
    ListingChecker,
    ListingRejected,
    check_clock,
    parse_http_date,
)
from reaper.models import Batch
from tests.helpers import make_batch

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SKEW = timedelta(minutes=2)


def row(batch_id: str, created: datetime) -> Batch:
    return make_batch(batch_id, created_ago=NOW - created, now=NOW)


def ago(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


def rejected(pages: Sequence[Sequence[Batch]], skew: timedelta | None = SKEW) -> ListingRejected:
    checker = ListingChecker(now=NOW, max_clock_skew=skew)

    def check_all() -> None:
        for page in pages:
            checker.check_page(page)

    with pytest.raises(ListingRejected) as info:
        check_all()
    return info.value


def test_a_newest_first_listing_with_ties_passes() -> None:
    """Distinct ids, created_at never increasing (ties allowed), across pages."""
    checker = ListingChecker(now=NOW, max_clock_skew=SKEW)
    checker.check_page([row("a", ago(1)), row("b", ago(2)), row("c", ago(2))])
    checker.check_page([row("d", ago(2)), row("e", ago(9))])
    checker.check_page([])
    assert (checker.pages, checker.rows) == (3, 5)


def test_a_row_repeated_further_down_the_same_page_is_a_duplicate() -> None:
    """Issue 12, case 4: a page repeating an earlier batch further down."""
    error = rejected([[row("a", ago(1)), row("b", ago(2)), row("a", ago(1))]])
    assert error.reason == "duplicate_id"
    assert "batch a is listed twice (page 1, row 3)" in str(error)


def test_a_row_repeated_on_the_next_page_is_a_duplicate() -> None:
    """The first row of a page repeating the previous page's last (a cursor off by one)."""
    error = rejected([[row("a", ago(1)), row("b", ago(2))], [row("b", ago(2)), row("c", ago(3))]])
    assert error.reason == "duplicate_id"


def test_a_row_repeated_pages_later_among_equal_created_at_is_a_duplicate() -> None:
    """Rows sharing the lowest created_at are remembered across any number of pages."""
    tied = ago(5)
    pages = [[row(f"t{p}", tied)] for p in range(10)] + [[row("t0", tied)]]
    assert rejected(pages).reason == "duplicate_id"


def test_a_row_repeated_pages_later_is_refused_as_out_of_order() -> None:
    """Far from its first sighting a repeat is older-looking than what precedes it: refused."""
    pages = [[row(f"b{p}", ago(p))] for p in range(1, 6)] + [[row("b1", ago(1))]]
    assert rejected(pages).reason == "out_of_order"


def test_a_created_at_newer_than_the_row_before_is_out_of_order_across_pages() -> None:
    """Not only at a page's first row: anywhere, and across the page boundary."""
    assert rejected([[row("a", ago(5)), row("b", ago(3))]]).reason == "out_of_order"
    error = rejected([[row("a", ago(5))], [row("b", ago(3))]])
    assert error.reason == "out_of_order"
    assert "(page 2, row 2)" in str(error)


def test_a_created_at_beyond_the_skew_is_in_the_future() -> None:
    """now + 2m is fine; one second more is a future_created_at naming the limit."""
    checker = ListingChecker(now=NOW, max_clock_skew=SKEW)
    checker.check_page([row("ok", NOW + SKEW)])
    error = rejected([[row("late", NOW + SKEW + timedelta(seconds=1))]])
    assert error.reason == "future_created_at"
    assert "beyond REAPER_MAX_CLOCK_SKEW=2m" in str(error)


def test_never_turns_the_future_check_off_but_not_the_order() -> None:
    """With the clock check off a future row passes; order and duplicates are still checked."""
    checker = ListingChecker(now=NOW, max_clock_skew=None)
    checker.check_page([row("a", NOW + timedelta(days=8)), row("b", NOW)])
    assert rejected([[row("a", NOW), row("a", NOW)]], skew=None).reason == "duplicate_id"


# -- properties against an oracle that remembers everything

ids = st.integers(min_value=0, max_value=10_000).map(lambda n: f"msgbatch_{n}")
offsets = st.integers(min_value=-2, max_value=60 * 24 * 40)  # minutes before NOW (-2: the skew)


@st.composite
def good_listings(draw: st.DrawFn) -> list[Batch]:
    """Distinct ids with created_at non-increasing, ties included."""
    batch_ids = draw(st.lists(ids, unique=True, max_size=40))
    minutes = sorted(draw(st.lists(offsets, min_size=len(batch_ids), max_size=len(batch_ids))))
    return [row(i, ago(m)) for i, m in zip(batch_ids, minutes, strict=True)]


@st.composite
def faulty_listings(draw: st.DrawFn) -> list[Batch]:
    """A good listing with some faults: repeated rows, swapped rows, future rows."""
    rows = draw(good_listings())
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        fault = draw(st.sampled_from(["repeat", "swap", "future"]))
        if fault == "repeat" and rows:
            source = draw(st.integers(min_value=0, max_value=len(rows) - 1))
            at = draw(st.integers(min_value=source + 1, max_value=len(rows)))
            rows.insert(at, rows[source])
        elif fault == "swap" and len(rows) >= 2:
            i = draw(st.integers(min_value=0, max_value=len(rows) - 2))
            j = draw(st.integers(min_value=i + 1, max_value=len(rows) - 1))
            rows[i], rows[j] = rows[j], rows[i]
        elif fault == "future":
            at = draw(st.integers(min_value=0, max_value=len(rows)))
            late = NOW + SKEW + timedelta(minutes=draw(st.integers(min_value=1, max_value=9999)))
            rows.insert(at, row(f"future_{at}", late))
    return rows


def paginate(rows: list[Batch], sizes: list[int]) -> list[list[Batch]]:
    pages, start = [], 0
    for size in sizes:
        pages.append(rows[start : start + size])
        start += size
    pages.append(rows[start:])
    return pages


def oracle(rows: list[Batch]) -> bool:
    """True when the whole listing is consistent, judged with all of it in memory."""
    seen = [b.id for b in rows]
    ordered = all(a.created_at >= b.created_at for a, b in itertools.pairwise(rows))
    in_time = all(b.created_at <= NOW + SKEW for b in rows)
    return len(set(seen)) == len(seen) and ordered and in_time


def verdict(pages: list[list[Batch]]) -> str | None:
    checker = ListingChecker(now=NOW, max_clock_skew=SKEW)
    try:
        for page in pages:
            checker.check_page(page)
    except ListingRejected as exc:
        return exc.reason
    return None


@given(good_listings(), st.lists(st.integers(min_value=0, max_value=7), max_size=8))
def test_a_consistent_listing_always_passes_however_it_is_paged(
    rows: list[Batch], sizes: list[int]
) -> None:
    """No false alarm: a good listing passes whatever the page boundaries."""
    assert verdict(paginate(rows, sizes)) is None


@given(faulty_listings(), st.lists(st.integers(min_value=0, max_value=7), max_size=8))
def test_the_checker_refuses_exactly_what_the_full_memory_oracle_refuses(
    rows: list[Batch], sizes: list[int]
) -> None:
    """Page by page with constant memory, the checker agrees with an oracle that sees it all."""
    reason = verdict(paginate(rows, sizes))
    assert (reason is None) == oracle(rows)


@given(good_listings().filter(bool), st.data())
def test_a_repeat_within_a_page_is_named_a_duplicate(
    rows: list[Batch], data: st.DataObject
) -> None:
    """A row repeated later on its own page is reported as duplicate_id, not another reason."""
    source = data.draw(st.integers(min_value=0, max_value=len(rows) - 1))
    at = data.draw(st.integers(min_value=source + 1, max_value=len(rows)))
    assert verdict([[*rows[:at], rows[source], *rows[at:]]]) == "duplicate_id"


# -- the clock


def http_date(when: datetime) -> str:
    return when.strftime("%a, %d %b %Y %H:%M:%S GMT")


def test_a_date_within_the_skew_passes_and_returns_the_difference() -> None:
    """A minute apart with a 2m limit: fine, and the measured skew is returned."""
    assert check_clock(http_date(NOW + timedelta(minutes=1)), NOW, SKEW) == timedelta(minutes=1)
    assert check_clock(http_date(NOW - timedelta(minutes=2)), NOW, SKEW) == -SKEW


def test_the_header_resolution_is_allowed_for() -> None:
    """Date drops sub-seconds: a host at .9s past the API's second is not 'behind' by a second."""
    host = NOW + SKEW + timedelta(milliseconds=900)
    assert check_clock(http_date(NOW), host, SKEW) is not None


@pytest.mark.parametrize(
    ("offset", "word"), [(timedelta(days=8), "ahead of"), (-SKEW * 2, "behind")]
)
def test_a_date_beyond_the_skew_is_refused_naming_both(offset: timedelta, word: str) -> None:
    """Issue 12, case 3: the API's Date 8 days off the host's clock fails the listing."""
    header = http_date(NOW + offset)
    with pytest.raises(ListingRejected) as info:
        check_clock(header, NOW, SKEW)
    assert info.value.reason == "clock_skew"
    assert f"(Date: {header})" in str(info.value)
    assert f"{word} this host's, more than REAPER_MAX_CLOCK_SKEW=2m" in str(info.value)


def test_never_and_a_missing_or_bad_header_check_nothing() -> None:
    """never disables the check; no header (or an unreadable one) is left to the caller."""
    assert check_clock(http_date(NOW + timedelta(days=8)), NOW, None) is None
    assert check_clock(None, NOW, SKEW) is None
    assert check_clock("yesterday-ish", NOW, SKEW) is None


@pytest.mark.parametrize(
    "value",
    [
        "Tue, 01 Dec 2026 12:00:00 GMT",
        "Tuesday, 01-Dec-26 12:00:00 GMT",
        "Tue Dec  1 12:00:00 2026",
    ],
)
def test_every_http_date_form_parses_to_utc(value: str) -> None:
    """IMF-fixdate and the two obsolete forms HTTP recipients must accept (RFC 9110)."""
    assert parse_http_date(value) == NOW


def row_by_row(pages: list[list[Batch]]) -> tuple[str, str] | None:
    """The checker as it was before check_page's inline loop: every row through _check_row."""
    checker = ListingChecker(now=NOW, max_clock_skew=SKEW)
    try:
        for page in pages:
            checker.pages += 1
            checker._previous_page = frozenset(checker._current_page)
            checker._current_page = set()
            for batch in page:
                checker._check_row(batch)
                checker.rows += 1
    except ListingRejected as exc:
        return exc.reason, str(exc)
    return None


@given(faulty_listings(), st.lists(st.integers(min_value=0, max_value=7), max_size=8))
def test_the_inline_loop_names_the_same_row_and_reason_as_row_by_row(
    rows: list[Batch], sizes: list[int]
) -> None:
    """check_page's common-row shortcut changes nothing: same reason, same message (page, row)."""
    pages = paginate(rows, sizes)
    checker = ListingChecker(now=NOW, max_clock_skew=SKEW)
    found = None
    try:
        for page in pages:
            checker.check_page(page)
    except ListingRejected as exc:
        found = exc.reason, str(exc)
    assert found == row_by_row(pages)
    if found is None:
        assert checker.rows == len(rows)
