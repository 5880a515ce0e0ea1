"""confirm_gone: a 404 is taken for "gone" only once retrieves keep answering 404."""

from __future__ import annotations

from datetime import timedelta

import pytest

from reaper.confirm import NOT_FOUND_TOLERANCE, confirm_gone
from reaper.errors import ApiError
from tests.fake_api import FakeClient, api_error
from tests.helpers import Clock, make_batch

pytestmark = pytest.mark.anyio


def not_found() -> ApiError:
    return api_error("retrieve", 404, "not_found_error", "b")


async def test_a_retrieve_that_finds_the_batch_ends_the_confirmation() -> None:
    """Two 404s, then the batch: it is not gone, and it comes back as it is now."""
    client = FakeClient([make_batch("b", created_ago=timedelta(days=9))], clock=Clock())
    client.fail("retrieve", "b", not_found(), not_found())

    seen = await confirm_gone(client, "b", None)

    assert not seen.gone
    assert seen.batch is not None
    assert seen.batch.id == "b"
    assert client.requests_made["retrieve"] == 3


async def test_every_retrieve_answering_404_confirms_it_gone() -> None:
    """NOT_FOUND_TOLERANCE retrieves, all 404: gone, with the last 404 kept for its request id."""
    client = FakeClient([], clock=Clock())

    seen = await confirm_gone(client, "b", None)

    assert seen.gone
    assert seen.last_not_found is not None
    assert seen.last_not_found.status == 404
    assert client.requests_made["retrieve"] == NOT_FOUND_TOLERANCE


async def test_another_error_concludes_nothing_and_is_raised() -> None:
    """A 500 on the retrieve says nothing about the batch: the caller decides."""
    client = FakeClient([make_batch("b", created_ago=timedelta(days=9))], clock=Clock())
    client.fail("retrieve", "b", api_error("retrieve", 500))

    with pytest.raises(ApiError):
        await confirm_gone(client, "b", None, tries=2)
