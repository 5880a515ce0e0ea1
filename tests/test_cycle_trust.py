"""Trust no answer blindly (SPEC section 3), against the in-memory fake: each rule on its own.

The same failures against the emulator, over HTTP, are in tests/chaos/test_trust.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import msgspec
import pytest
from structlog.testing import capture_logs

from reaper.metrics import Metrics
from reaper.models import CANCELING, ENDED, IN_PROGRESS, Batch, RequestCounts
from reaper.outcomes import ActionOutcome, CycleOutcome
from reaper.policy import Action
from tests.fake_api import FakeClient
from tests.helpers import Clock, make_batch
from tests.test_cycle import D, H, cycle, make_settings

pytestmark = pytest.mark.anyio

LIVE = {"dry_run": "false"}


def stale(n: int) -> list[Batch]:
    return [make_batch(f"stale_{i:02}", IN_PROGRESS, created_ago=13 * H) for i in range(n)]


class WrongCancelAnswer(FakeClient):
    """Cancels take effect, but the answer is another batch's object (already ended)."""

    def __init__(self, *args: object, other: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.other = other

    async def cancel(self, batch_id: str, workspace: str | None) -> Batch:
        await super().cancel(batch_id, workspace)
        return self.store[workspace][self.other]


async def test_a_cancel_answered_with_another_batch_deletes_neither(metrics: Metrics) -> None:
    """Issue 12 #5: the answer names a protected, ended batch: the action fails, nothing else."""
    protected = make_batch("protected_young", created_ago=30 * timedelta(minutes=1), ended_ago=H)
    client = WrongCancelAnswer([protected, *stale(1)], clock=Clock(), other="protected_young")
    with capture_logs() as logs:
        report = await cycle(make_settings(**LIVE, protect_ids="protected_young"), client, metrics)

    assert [c for c in client.mutating_calls() if c[0] == "delete"] == []
    assert "protected_young" in client.ids()
    assert "stale_00" in client.ids()
    (failure,) = report.failures
    assert (failure.batch_id, failure.error_type) == ("stale_00", "malformed_response")
    assert "protected_young" in failure.message
    assert report.outcome is CycleOutcome.PARTIAL
    assert any(e["event"] == "action.failed" and e["id"] == "stale_00" for e in logs)


class EndsOnItsOwn(FakeClient):
    """The batch ends by itself (no cancel_initiated_at) just as the cancel is accepted."""

    async def cancel(self, batch_id: str, workspace: str | None) -> Batch:
        await self._call("cancel", workspace, batch_id)
        b = self.store[workspace][batch_id]
        ended = msgspec.structs.replace(
            b,
            processing_status=ENDED,
            ended_at=self.clock.now(),
            request_counts=RequestCounts(succeeded=b.request_counts.total, errored=0, expired=0),
        )
        self.store[workspace][batch_id] = ended
        return ended


async def test_a_cancel_answered_ended_without_cancel_initiated_at_is_not_needed(
    metrics: Metrics,
) -> None:
    """Answered 200 with the batch ended on its own: not needed, not deleted (rules 5-8 later)."""
    client = EndsOnItsOwn(stale(1), clock=Clock())
    with capture_logs() as logs:
        report = await cycle(make_settings(**LIVE), client, metrics)

    assert client.mutating_calls() == [("cancel", None, "stale_00")]
    assert "stale_00" in client.ids()
    assert report.count(Action.CANCEL, ActionOutcome.NOT_NEEDED) == 1
    assert report.outcome is CycleOutcome.SUCCESS
    (line,) = [e for e in logs if e["event"] == "batch.cancel"]
    assert line["outcome"] == "not_needed"
    assert line["status"] == ENDED
    assert "cancel_initiated_at" not in line  # it had none


async def test_a_batch_someone_else_canceled_earlier_is_not_deleted_by_the_cancel_path(
    metrics: Metrics,
) -> None:
    """Canceling since an hour before this cycle's cancel (a person's): not needed, kept."""
    clock = Clock()
    theirs = msgspec.structs.replace(
        stale(1)[0], processing_status=CANCELING, cancel_initiated_at=clock.now() - H
    )
    client = FakeClient([theirs], clock=clock, cancel_seconds=3 * 3600)
    # The listing saw it in_progress; a person canceled it an hour ago.
    listed = msgspec.structs.replace(
        theirs, processing_status=IN_PROGRESS, cancel_initiated_at=None
    )

    async def list_pages(workspace: str | None) -> AsyncIterator[list[Batch]]:
        yield [listed]

    client.list_pages = list_pages  # type: ignore[method-assign]
    report = await cycle(make_settings(**LIVE), client, metrics)

    assert client.mutating_calls() == [("cancel", None, "stale_00")]
    assert report.count(Action.CANCEL, ActionOutcome.NOT_NEEDED) == 1
    assert client.requests_made["retrieve"] == 0  # not waited for


class SlowPolls(FakeClient):
    """Every retrieve takes one second of the fake clock."""

    async def retrieve(
        self, batch_id: str, workspace: str | None, *, within: float | None = None
    ) -> Batch:
        self.clock.advance(1.0)
        return await super().retrieve(batch_id, workspace, within=within)


async def test_the_cancel_wait_checks_its_deadline_before_every_poll(metrics: Metrics) -> None:
    """Issue 12 #7: 20 canceled batches that never end, a 5 s wait, polls of 1 s each on one
    worker: no poll is sent after the deadline, the deletes left undone make the cycle partial."""
    clock = Clock()
    client = SlowPolls(stale(20), clock=clock, cancel_seconds=3600, page_size=100)
    start = clock.now()
    with capture_logs() as logs:
        report = await cycle(
            make_settings(**LIVE, cancel_wait_timeout="5s", concurrency="1"), client, metrics
        )

    # The first round starts at 1 s; polls at 1, 2, 3, 4 and 5 s, none after the deadline.
    assert client.requests_made["retrieve"] == 5
    assert clock.now() - start <= timedelta(seconds=5 + 1)
    assert report.still_ending == 20
    assert report.outcome is CycleOutcome.PARTIAL
    assert report.exit_code() == 1
    named = [i for e in logs if e["event"] == "cancel.wait_timeout" for i in e["ids"]]
    assert sorted(named) == [f"stale_{i:02}" for i in range(20)]


async def test_a_cancel_that_ends_within_the_wait_is_still_deleted(metrics: Metrics) -> None:
    """The rule's normal path is untouched: canceled here, ended, deleted, success."""
    client = FakeClient(
        [*stale(2), make_batch("old", created_ago=20 * D, ended_ago=19 * D)],
        clock=Clock(),
        cancel_seconds=5,
    )
    report = await cycle(make_settings(**LIVE), client, metrics)

    assert client.ids() == set()
    assert report.count(Action.CANCEL, ActionOutcome.DONE) == 2
    assert report.outcome is CycleOutcome.SUCCESS
