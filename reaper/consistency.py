"""Trust no listing blindly (issue 12): whole-listing consistency and the clock check. Pure.

The API lists batches newest first. :class:`ListingChecker` is fed the listing page by page and
raises :class:`ListingRejected` with its reason (the ``reason`` label of
``reaper_listing_rejected_total``) at the first row that breaks it:

- ``duplicate_id``: an id listed twice anywhere in the listing;
- ``future_created_at``: a ``created_at`` later than ``now + REAPER_MAX_CLOCK_SKEW`` (unchecked when
  the skew is ``never``);
- ``out_of_order``: a ``created_at`` newer than the row before it, across pages too.

Memory stays constant in the listing's length: since ``created_at`` never increases, a repeated
row (a batch's ``created_at`` never changes) is either among the rows sharing the current lowest
``created_at`` (kept) or older-looking than the rows after it, which is ``out_of_order``. The ids
of the current and the previous page are kept too, so that a repeat within a page or just across
a page boundary is named ``duplicate_id`` rather than ``out_of_order``; either way it is refused.

:func:`check_clock` compares an HTTP ``Date`` header with the host's clock (reason
``clock_skew``). It allows one second more than the limit, as ``Date`` is truncated to the
second; a missing or unreadable header returns None and leaves the decision to the caller.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Final

from reaper.apikey import show
from reaper.durations import format_duration
from reaper.models import Batch, format_time

CLOCK_SKEW: Final = "clock_skew"
DUPLICATE_ID: Final = "duplicate_id"
OUT_OF_ORDER: Final = "out_of_order"
FUTURE_CREATED_AT: Final = "future_created_at"
REASONS: Final = (CLOCK_SKEW, DUPLICATE_ID, OUT_OF_ORDER, FUTURE_CREATED_AT)
# HTTP dates have a resolution of one second (RFC 9110 section 5.6.7).
DATE_RESOLUTION: Final = timedelta(seconds=1)


class ListingRejected(Exception):
    """A listing the reaper must not act on; ``reason`` is a REASONS value, the text one line."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _skew_text(skew: timedelta | None) -> str:
    return f"REAPER_MAX_CLOCK_SKEW={format_duration(skew)}"


class ListingChecker:
    """Check one workspace's listing, page by page, as it arrives."""

    def __init__(self, *, now: datetime, max_clock_skew: timedelta | None) -> None:
        self._now = now
        self._skew = max_clock_skew
        self._latest_allowed = None if max_clock_skew is None else now + max_clock_skew
        self._lowest: datetime | None = None  # the created_at of the last row
        self._ids_at_lowest: set[str] = set()  # the ids of the rows sharing it
        self._previous_page: frozenset[str] = frozenset()
        self._current_page: set[str] = set()
        self.pages = 0
        self.rows = 0

    def check_page(self, page: Iterable[Batch]) -> None:
        """Check the next page's rows in order; raise ListingRejected at the first bad one."""
        self.pages += 1
        previous = self._previous_page = frozenset(self._current_page)
        current: set[str] = set()
        self._current_page = current
        latest = self._latest_allowed
        # The common row (a new id, strictly older than the one before, not in the future) is
        # checked inline: this runs once per listed batch. Anything else (a tie, a repeat, a row
        # out of order or in the future) goes through _check_row, which decides and names it;
        # the state is handed over to it and taken back. ``last`` stands for ``{last}`` as the
        # ids at the lowest created_at, so the common row builds no set.
        lowest, at_lowest, last = self._lowest, self._ids_at_lowest, ""
        rows = 0
        for batch in page:
            batch_id, created = batch.id, batch.created_at
            if (
                batch_id in current
                or batch_id in previous
                or (lowest is not None and created >= lowest)
                or (latest is not None and created > latest)
            ):
                self._lowest, self._ids_at_lowest = lowest, ({last} if last else at_lowest)
                self.rows += rows
                rows = 0
                self._check_row(batch)  # raises, or records a tie
                self.rows += 1
                lowest, at_lowest, last = self._lowest, self._ids_at_lowest, ""
                continue
            lowest, last = created, batch_id
            current.add(batch_id)
            rows += 1
        self._lowest, self._ids_at_lowest = lowest, ({last} if last else at_lowest)
        self.rows += rows

    def _check_row(self, batch: Batch) -> None:
        created = batch.created_at
        if (
            batch.id in self._current_page
            or batch.id in self._previous_page
            or (created == self._lowest and batch.id in self._ids_at_lowest)
        ):
            raise ListingRejected(
                DUPLICATE_ID,
                f"batch {batch.id} is listed twice ({self._at()}): inconsistent listing",
            )
        if self._latest_allowed is not None and created > self._latest_allowed:
            raise ListingRejected(
                FUTURE_CREATED_AT,
                f"batch {batch.id} was created {format_time(created)}, "
                f"{format_duration(created - self._now)} after this host's clock ({self._at()}), "
                f"beyond {_skew_text(self._skew)}",
            )
        if self._lowest is not None and created > self._lowest:
            raise ListingRejected(
                OUT_OF_ORDER,
                f"batch {batch.id} created {format_time(created)} is listed after one created "
                f"{format_time(self._lowest)} ({self._at()}): the listing is not newest first",
            )
        if created != self._lowest:
            self._lowest = created
            self._ids_at_lowest = set()
        self._ids_at_lowest.add(batch.id)
        self._current_page.add(batch.id)

    def _at(self) -> str:
        # Built only for a rejection: _check_row runs once per listed batch.
        return f"page {self.pages}, row {self.rows + 1}"


def parse_http_date(value: str) -> datetime | None:
    """Parse an HTTP ``Date`` value (IMF-fixdate, or the obsolete forms) to aware UTC, or None."""
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:  # "-0000": UTC by RFC 5322
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def check_clock(
    date_header: str | None, host_now: datetime, max_clock_skew: timedelta | None
) -> timedelta | None:
    """Return the API's clock minus the host's, or None when unchecked or unknown.

    Raise ListingRejected (``clock_skew``) when they differ by more than ``max_clock_skew`` plus
    the header's one-second resolution. ``max_clock_skew`` None (``never``) checks nothing; a
    missing or unreadable header returns None.
    """
    if max_clock_skew is None or date_header is None:
        return None
    api_now = parse_http_date(date_header)
    if api_now is None:
        return None
    skew = api_now - host_now
    # Date is truncated: the API's true time lies in [api_now, api_now + 1s).
    if skew > max_clock_skew or -(skew + DATE_RESOLUTION) > max_clock_skew:
        direction = "ahead of" if skew > timedelta(0) else "behind"
        raise ListingRejected(
            CLOCK_SKEW,
            f"the API's clock (Date: {show(date_header.strip()[:40])}) is "
            f"{format_duration(abs(skew))} {direction} this host's, more than "
            f"{_skew_text(max_clock_skew)}",
        )
    return skew
