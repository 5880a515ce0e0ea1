"""plan_workspace: the one listing path (the cycle, plan and explain all list through it)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from reaper.listing import plan_workspace
from reaper.models import Batch
from reaper.policy import Policy, StopReason
from tests.fake_api import T0, FakeClient, FakeClock, batch

pytestmark = pytest.mark.anyio

D = timedelta(days=1)


def old_batches(n: int) -> list[Batch]:
    return [batch(f"b{i}", created_ago=(20 + i) * D, ended_ago=(10 + i) * D) for i in range(n)]


async def test_every_page_is_planned_and_seen() -> None:
    """Seven batches in pages of three: three pages, every batch decided and handed to on_page."""
    client = FakeClient(old_batches(7), clock=FakeClock(), page_size=3)
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
    client = FakeClient(old_batches(7), clock=FakeClock(), page_size=3)
    client.list_fault_page[None] = 2

    listing = await plan_workspace(client, None, Policy(), T0)

    assert not listing.complete
    assert listing.failure is not None
    assert (listing.failure.pages_read, listing.failure.batches_read) == (1, 3)
    assert listing.failure.status == 500
    assert listing.plan.stop is StopReason.INCOMPLETE_LISTING
    assert listing.plan.cancels == ()
    assert listing.plan.deletes == ()
