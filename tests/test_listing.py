"""plan_workspace: the one listing path (the cycle, plan and explain all list through it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from email.utils import format_datetime

import pytest

from reaper.listing import plan_workspace
from reaper.models import Batch, Page
from reaper.policy import Policy, StopReason
from tests.fake_api import FakeClient
from tests.helpers import T0, Clock, make_batch

pytestmark = pytest.mark.anyio

D = timedelta(days=1)


def old_batches(n: int) -> list[Batch]:
    return [make_batch(f"b{i}", created_ago=(20 + i) * D, ended_ago=(10 + i) * D) for i in range(n)]


async def test_every_page_is_planned_and_seen() -> None:
    """Seven batches in pages of three: three pages, every batch decided and handed to on_page."""
    client = FakeClient(old_batches(7), clock=Clock(), page_size=3)
    pages: list[list[Batch]] = []

    listing = await plan_workspace(client, None, Policy(), T0, on_page=pages.append)

    assert listing.complete
    assert listing.failure is None
    assert listing.pages == 3
    assert [len(page) for page in pages] == [3, 3, 1]
    assert listing.plan.listed == 7
    assert len(listing.plan.deletes) == 7


async def test_a_page_that_fails_makes_an_incomplete_plan_that_acts_on_nothing() -> None:
    """Page 2 fails: no exception, a failure that says how far it got, and no action planned."""
    client = FakeClient(old_batches(7), clock=Clock(), page_size=3)
    client.list_fault_page[None] = 2

    listing = await plan_workspace(client, None, Policy(), T0)

    assert not listing.complete
    assert listing.failure is not None
    assert (listing.failure.pages_read, listing.failure.batches_read) == (1, 3)
    assert listing.failure.status == 500
    assert listing.plan.stop is StopReason.INCOMPLETE_LISTING
    assert listing.plan.cancels == ()
    assert listing.plan.deletes == ()


class PagedLister:
    """Serve the given pages as the client would, each with a Date header and a request id."""

    def __init__(self, pages: list[list[Batch]], date: str | None) -> None:
        self.pages = pages
        self.date = date

    async def list_pages(self, workspace: str | None) -> AsyncIterator[list[Batch]]:
        for number, page in enumerate(self.pages, 1):
            yield Page(page, date=self.date, request_id=f"req_page{number}")


async def test_a_date_within_the_skew_is_accepted_and_reported() -> None:
    """The API's clock 90 s ahead with a 2-minute limit: listed, and the skew said."""
    lister = PagedLister([old_batches(2)], format_datetime(T0 + timedelta(seconds=90), True))

    listing = await plan_workspace(
        lister, None, Policy(), T0, max_clock_skew=timedelta(minutes=2), clock=lambda: T0
    )

    assert listing.complete
    assert listing.clock_skew == timedelta(seconds=90)
    assert len(listing.plan.deletes) == 2


@pytest.mark.parametrize("days", [8, -8])
async def test_a_date_far_from_the_host_clock_refuses_the_listing(days: int) -> None:
    """Issue 12 #3: the API's Date 8 days off the host's clock: nothing is planned."""
    lister = PagedLister([old_batches(3)], format_datetime(T0 + days * D, True))

    listing = await plan_workspace(lister, None, Policy(), T0, clock=lambda: T0)

    assert listing.failure is not None
    assert listing.failure.error_type == "clock_skew"
    assert listing.failure.request_id == "req_page1"
    assert "REAPER_MAX_CLOCK_SKEW=2m" in listing.failure.message
    assert listing.plan.deletes == ()
    assert listing.plan.cancels == ()


async def test_the_clock_is_read_when_the_first_page_arrives() -> None:
    """A first page that took 5 minutes of retries is compared with the clock at its arrival."""
    clock = Clock()
    lister = PagedLister([old_batches(2)], format_datetime(T0 + 5 * timedelta(minutes=1), True))
    clock.advance(300)  # the listing began at T0; the page arrives 5 minutes later

    listing = await plan_workspace(lister, None, Policy(), T0, clock=clock.now)

    assert listing.complete, listing.failure


async def test_never_turns_the_clock_check_off() -> None:
    lister = PagedLister([old_batches(2)], format_datetime(T0 + 8 * D, True))

    listing = await plan_workspace(
        lister, None, Policy(), T0, max_clock_skew=None, clock=lambda: T0
    )

    assert listing.complete
    assert listing.clock_skew is None


async def test_a_row_repeated_further_down_a_page_refuses_the_listing() -> None:
    """Issue 12 #4: the page repeats its first batch at its end: duplicate_id, nothing planned."""
    rows = old_batches(4)
    lister = PagedLister([rows[:2], [*rows[2:], rows[0]]], None)

    listing = await plan_workspace(lister, None, Policy(), T0)

    assert listing.failure is not None
    assert listing.failure.error_type == "duplicate_id"
    assert listing.failure.request_id == "req_page2"
    assert listing.failure.pages_read == 1
    assert listing.plan.deletes == ()


async def test_a_listing_out_of_order_or_from_the_future_is_refused() -> None:
    rows = old_batches(3)
    listing = await plan_workspace(PagedLister([[rows[2], rows[0]]], None), None, Policy(), T0)
    assert listing.failure is not None
    assert listing.failure.error_type == "out_of_order"

    future = make_batch("f", "in_progress", created_ago=-timedelta(minutes=10))
    listing = await plan_workspace(PagedLister([[future, *rows]], None), None, Policy(), T0)
    assert listing.failure is not None
    assert listing.failure.error_type == "future_created_at"
    assert listing.plan.cancels == ()
    assert listing.plan.deletes == ()
