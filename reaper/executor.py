"""Carry out one workspace's plan: cancel, wait for the canceled, archive, delete.

The plan's actions run on a fixed pool of ``concurrency`` workers (``reaper.workers``): cancels
first, then deletes. A canceled batch is polled with backoff until it has ended, for at most
``cancel_wait_timeout``, and then deleted if ``delete_canceled`` and the plan has no stop; the
polls and those deletes jump the queue of deletes, so a long backlog never starves them.

The executor trusts the plan: what the guards held back is not in ``plan.cancels`` or
``plan.deletes`` and is never looked at here. Every request that changes a batch leaves through
``Executor._send``, which writes the ledger's intent line (fsynced) before it and the outcome line
after it; an intent that cannot be written fails the action without sending anything. Every
outcome is recorded through the ``Recorder``.

It trusts no answer (SPEC section 3): an answer naming another batch fails its action, a delete
always names the planned id, and the cancel path deletes only what this cycle canceled. A batch
that ended on its own before the cancel took effect (the cancel refused as ended, or the batch
``ended`` with no ``cancel_initiated_at``, or one earlier than this cycle's request) is logged
as a cancel ``not_needed`` and left to rules 5 to 8 in later cycles.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from functools import partial
from typing import Final, Protocol

from reaper.archive import ArchiveOutcome, Outcome, ResultsClient, in_scope
from reaper.cancel_wait import (
    POLL_FIRST_SECONDS,
    POLL_MAX_SECONDS,
    CancelWait,
    canceled_since,
    earliest_cancel,
)
from reaper.confirm import NOT_FOUND_TOLERANCE, confirm_gone
from reaper.errors import ApiError, InvalidRequestError, NotFoundError, last_request_id
from reaper.ledger import DONE, FAILED, GONE, NULL_LEDGER, Ledger, LedgerError
from reaper.models import CANCELING, ENDED, Batch
from reaper.policy import Action, Decision, Plan
from reaper.recorder import Recorder
from reaper.settings import Settings
from reaper.workers import BACKLOG, URGENT, Job, WorkerPool

__all__ = ["POLL_FIRST_SECONDS", "POLL_MAX_SECONDS", "ArchiveHook", "CycleClient", "Executor"]

# Statuses an API answer can give to a refused cancel when the batch has meanwhile ended: 400
# (what the emulator and, by all accounts, the API send) and 409 (state conflict, in newer docs).
_REFUSED_STATUSES: Final = frozenset({400, 409})


class CycleClient(ResultsClient, Protocol):
    """The part of ``reaper.client.BatchClient`` a cycle uses (a fake implements it in tests)."""

    @property
    def requests_made(self) -> Mapping[str, int]:
        """HTTP attempts so far, by endpoint."""
        ...

    def list_pages(self, workspace: str | None) -> AsyncIterator[list[Batch]]:
        """Yield every page of the workspace's batches; raise ApiError if one cannot be read."""
        ...

    async def retrieve(
        self, batch_id: str, workspace: str | None, *, within: float | None = None
    ) -> Batch:
        """Fetch one batch as it is now; with ``within``, sent within that many seconds or not
        at all (``reaper.errors.DeadlinePassed``)."""
        ...

    async def cancel(self, batch_id: str, workspace: str | None) -> Batch:
        """Ask the API to cancel a batch; return the batch as the API answered."""
        ...

    async def delete(self, batch_id: str, workspace: str | None) -> None:
        """Delete a batch; raise NotFoundError on 404."""
        ...


class ArchiveHook(Protocol):
    """Save an ended batch's results before it is deleted (``reaper.archive.Archiver``)."""

    async def archive(self, batch: Batch, client: ResultsClient) -> ArchiveOutcome:
        """Archive the batch's results; ``ok_to_delete`` says whether it may now be deleted."""
        ...


class Executor:
    """Act on one workspace's plan (never in a dry run: the cycle decides that)."""

    def __init__(
        self,
        client: CycleClient,
        recorder: Recorder,
        *,
        settings: Settings,
        now: Callable[[], datetime],
        sleep: Callable[[float], Awaitable[object]],
        archiver: ArchiveHook | None = None,
        stop: asyncio.Event | None = None,
        ledger: Ledger = NULL_LEDGER,
        cycle_id: str = "",
    ) -> None:
        self.client = client
        self.recorder = recorder
        self.workspace = recorder.workspace
        self.settings = settings
        self.now = now
        self.sleep = sleep
        self.archiver = archiver
        self.ledger = ledger
        self.cycle_id = cycle_id
        # Set when the daemon is shutting down: no new cancel and no backlog delete starts.
        self.shutdown = stop if stop is not None else asyncio.Event()
        self._pool = WorkerPool(settings.concurrency)
        self._wait = CancelWait(
            client,
            recorder,
            self._pool,
            timeout=settings.cancel_wait_timeout,
            now=now,
            sleep=sleep,
            on_ended=self._ended,
        )
        self._delete_canceled = False
        self._cancels_left = 0
        self._cancels_finished = asyncio.Event()
        self._clock_skew: timedelta | None = None

    async def run(self, plan: Plan, *, clock_skew: timedelta | None = None) -> None:
        """Cancel and delete what the plan says, wait for the canceled, delete those too.

        ``clock_skew`` is the API's clock minus the host's as the listing measured it (None:
        unknown); it dates this cycle's cancels on the API's clock.
        """
        self._clock_skew = clock_skew
        # A stop (a safety stop: deletes withheld) also keeps the batches canceled now.
        self._delete_canceled = self.settings.delete_canceled and plan.stop is None
        for d in plan.cancels:
            self._cancels_left += 1
            self._pool.submit(URGENT, self._job(d, partial(self._cancel, d)))
        if not self._cancels_left:
            self._cancels_finished.set()
        for d in plan.deletes:
            self._pool.submit(BACKLOG, self._job(d, partial(self._delete, d)))
        async with asyncio.TaskGroup() as workers:
            for _ in range(self._pool.size):
                workers.create_task(self._pool.work())
            await self._cancels_finished.wait()  # the wait is counted from the last answer
            await self._wait.run()
            await self._pool.drain()

    def _job(self, d: Decision, work: Job, *, finishing: bool = False) -> Job:
        """Wrap an action so that an unexpected error fails that action only.

        After a shutdown only ``finishing`` work still starts: deleting a batch this cycle
        canceled. Left for later, such a batch would end with a fresh ``ended_at`` and be kept for
        the whole ended retention; the shutdown grace bounds that last wait.
        """

        async def job() -> None:
            try:
                if self.shutdown.is_set() and not finishing:  # start nothing new
                    self.recorder.deferred(d)
                    return
                await work()
            except Exception as exc:  # one failed action never stops the others
                self.recorder.failed(
                    d, error_type=type(exc).__name__, error=str(exc), unexpected=True
                )
            finally:
                if d.action is Action.CANCEL:  # the cancel wait starts once every cancel is sent
                    self._cancels_left -= 1
                    if not self._cancels_left:
                        self._cancels_finished.set()

        return job

    async def _send(self, d: Decision) -> Batch | None:
        """Send the decision's one cancel or delete: every request that changes a batch is here.

        The ledger's intent line is on disk before the request leaves (LedgerError, and nothing
        sent, when it cannot be written), its outcome line after the answer. Returns the batch as
        a cancel answered (None for a delete); raises ApiError or LedgerError.
        """
        await self._ledger(
            self.ledger.intent,
            cycle_id=self.cycle_id,
            batch=d.batch,
            action=d.action.value,
            rule=d.rule.value,
        )
        try:
            if d.action is Action.CANCEL:
                batch: Batch | None = await self.client.cancel(d.batch.id, self.workspace)
            else:
                await self.client.delete(d.batch.id, self.workspace)
                batch = None
        except ApiError as exc:
            phase = GONE if isinstance(exc, NotFoundError) else FAILED
            await self._outcome(d, phase, exc.status, exc.request_id, exc.error_type)
            raise
        await self._outcome(d, DONE, 200, last_request_id())
        return batch

    async def _outcome(
        self,
        d: Decision,
        phase: str,
        status: int | None,
        request_id: str | None,
        error: str | None = None,
    ) -> None:
        """Write the ledger's outcome line; a failure is logged, the action's outcome stands."""
        try:
            await self._ledger(
                self.ledger.outcome,
                cycle_id=self.cycle_id,
                batch_id=d.batch.id,
                workspace=d.batch.workspace,
                action=d.action.value,
                phase=phase,
                status=status,
                request_id=request_id,
                error=error,
            )
        except LedgerError as exc:
            self.recorder.ledger_unwritable(d, str(exc), phase=phase)

    async def _ledger(self, write: Callable[..., None], **fields: object) -> None:
        """Run one ledger write off the event loop (an fsync); nothing to do without a ledger."""
        if self.ledger is not NULL_LEDGER:
            await asyncio.to_thread(partial(write, **fields))

    def _no_intent(self, d: Decision, exc: LedgerError) -> None:
        self.recorder.ledger_unwritable(d, str(exc), phase="intent")
        self.recorder.failed(d, error_type="ledger_unwritable", error=f"not sent: {exc}")

    def _api_failed(self, d: Decision, exc: ApiError) -> None:
        self.recorder.failed(
            d,
            error_type=exc.error_type,
            status=exc.status,
            request_id=exc.request_id,
            error=str(exc),
        )

    # -- cancel --------------------------------------------------------------------------------

    async def _cancel(self, d: Decision) -> None:
        note: str | None = None
        earliest = earliest_cancel(self.now(), self._clock_skew, self.settings.max_clock_skew)
        try:
            batch = await self._send(d)
        except asyncio.CancelledError:
            self.recorder.interrupted(d)
            raise
        except LedgerError as exc:
            self._no_intent(d, exc)
            return
        except ApiError as exc:
            if not _is_refusal(exc):
                self._api_failed(d, exc)
                return
            batch = await self._confirm_refused_cancel(d, exc)
            if batch is None:
                return
            if batch.processing_status == ENDED:  # refused as ended: it ended without us
                self.recorder.not_needed(d, batch, request_id=exc.request_id)
                return
            note = "already_" + batch.processing_status
        assert batch is not None
        if batch.id != d.batch.id:
            self._wrong_answer(d, batch, "cancel")
            return
        if batch.processing_status in (ENDED, CANCELING) and not canceled_since(batch, earliest):
            self.recorder.not_needed(d, batch)
            return
        self.recorder.done(d, status=batch.processing_status, note=note)
        if not self._delete_canceled:
            return  # nothing to do once it ends: no need to wait for it
        if batch.processing_status == ENDED:
            self._ended(d, batch)
        else:
            self._wait.add(d, earliest)

    def _wrong_answer(self, d: Decision, batch: Batch, endpoint: str) -> None:
        """Fail an action whose answer names another batch: nothing else is touched."""
        self.recorder.failed(
            d,
            error_type="malformed_response",
            error=f"{endpoint} {d.batch.id}: the answer names another batch, {batch.id}",
        )

    async def _confirm_refused_cancel(self, d: Decision, refusal: ApiError) -> Batch | None:
        """After a refused cancel, return the batch if it has ended or is canceling, else fail."""
        # The batch may have ended between the listing and the cancel; the API refuses to cancel
        # an ended batch, which is what we wanted anyway. Ask rather than assume.
        try:
            batch = await self.client.retrieve(d.batch.id, self.workspace)
        except ApiError:
            self._api_failed(d, refusal)
            return None
        if batch.processing_status in (ENDED, CANCELING):
            return batch
        self._api_failed(d, refusal)
        return None

    def _ended(self, canceled: Decision, batch: Batch) -> None:
        """Delete a batch this cycle canceled, now that it has ended (eligible since it ended).

        The delete names the planned id, never one read from an answer: ``batch`` (the answer,
        which has the results_url the archive needs) must be the planned batch.
        """
        if batch.id != canceled.batch.id:
            self._wrong_answer(canceled, batch, "retrieve")
            return
        d = Decision(batch, Action.DELETE, canceled.rule, eligible_at=batch.ended_at)
        self.recorder.planned(1)
        delete = partial(self._delete, d, after_cancel=True)
        self._pool.submit(URGENT, self._job(d, delete, finishing=True))

    # -- delete --------------------------------------------------------------------------------

    async def _delete(self, d: Decision, *, after_cancel: bool = False) -> None:
        # Out of REAPER_ARCHIVE_SCOPE: deleted without an archive.
        if self.archiver is not None and in_scope(d.batch, self.settings.archive_scope):
            saved = await self.archiver.archive(d.batch, self.client)
            if not saved.ok_to_delete:
                if saved.outcome is Outcome.MISSING:
                    self.recorder.kept(d, saved.reason)
                else:
                    self.recorder.failed(
                        d,
                        error_type="archive_failed",
                        request_id=saved.request_id,
                        error=f"results not archived: {saved.reason}",
                    )
                return
        try:
            gone_already = await self._delete_confirmed(d)
        except asyncio.CancelledError:
            self.recorder.interrupted(d)
            raise
        except LedgerError as exc:
            self._no_intent(d, exc)
            return
        except ApiError as exc:
            self._api_failed(d, exc)
            return
        note = "already_gone" if gone_already else None
        self.recorder.done(d, lag=not gone_already, note=note, after_cancel=after_cancel)

    async def _delete_confirmed(self, d: Decision) -> bool:
        """Delete the batch; return True when it was already gone, raise ApiError on failure.

        SPEC §3 counts a delete answered 404 as done (someone was faster), but the API is known
        to answer 404 for batches that exist (API-NOTES §5): trusting one would leave the batch
        behind, and a canceled one then lives on with a fresh ``ended_at`` for the whole
        retention. So a 404 is confirmed (``confirm_gone``), and the batch deleted again if a
        retrieve finds it. Costs nothing unless a delete is answered 404.
        """
        refused = 0
        while True:
            try:
                await self._send(d)
                return False
            except NotFoundError:
                refused += 1
                if refused > NOT_FOUND_TOLERANCE:
                    raise  # a retrieve keeps finding it, yet every delete answers 404
            if (await confirm_gone(self.client, d.batch.id, self.workspace)).gone:
                return True


def _is_refusal(exc: ApiError) -> bool:
    return isinstance(exc, InvalidRequestError) or exc.status in _REFUSED_STATUSES
