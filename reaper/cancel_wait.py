"""The wait for the batches a cycle canceled: polled with backoff until they end, then handed on.

``CancelWait`` is the executor's: the executor adds each batch its cancel made ``canceling``, and
once every cancel is answered runs the wait. It keeps its word (SPEC section 2,
``REAPER_CANCEL_WAIT_TIMEOUT``): the deadline is counted from the last cancel's answer and checked
before every poll is sent, after its wait for a turn of the pace too (``within``), so the wait
overruns it by at most the requests already in flight. A
batch seen ``ended`` is handed to ``on_ended`` (the executor deletes it) only if its
``cancel_initiated_at`` can be this cycle's cancel (``canceled_since``); otherwise it ended on its
own and is left to rules 5 to 8. What is left when the wait is over is logged, every id named,
and makes the cycle partial: its planned delete was left undone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol

import structlog

from reaper.confirm import NOT_FOUND_TOLERANCE
from reaper.errors import ApiError, DeadlinePassed, NotFoundError
from reaper.models import ENDED, Batch
from reaper.policy import Decision
from reaper.recorder import Recorder
from reaper.workers import URGENT, Job, WorkerPool

# Poll a canceled batch after 1 s, then 2, 4, 8, 16, 30, 30 ...: a cancel usually settles within
# seconds, while a batch with long in-flight requests may take minutes; 30 s keeps the cost of a
# slow one at two requests a minute.
POLL_FIRST_SECONDS: Final = 1.0
POLL_MAX_SECONDS: Final = 30.0
# Ids per line when every one must be named (deletes left undone).
ID_CHUNK: Final = 100

log = structlog.get_logger("reaper.cycle")


class Retriever(Protocol):
    """The part of the client a wait uses."""

    async def retrieve(
        self, batch_id: str, workspace: str | None, *, within: float | None = None
    ) -> Batch:
        """Fetch one batch as it is now, sent within ``within`` seconds or not at all."""
        ...


def earliest_cancel(
    sent_at: datetime, clock_skew: timedelta | None, max_clock_skew: timedelta | None
) -> datetime | None:
    """Return the earliest ``cancel_initiated_at`` a cancel sent at ``sent_at`` can get.

    ``clock_skew`` is the API's clock minus the host's as the listing measured it: a lower bound
    of the true one (``Date`` is truncated and read after the response left), so this never
    dates this cycle's own cancel too late. Unmeasured, the largest skew the clock check allows
    is assumed; None (no check, no measure): any time.
    """
    if clock_skew is not None:
        return sent_at + clock_skew
    return None if max_clock_skew is None else sent_at - max_clock_skew


def canceled_since(batch: Batch, earliest: datetime | None) -> bool:
    """Tell whether the batch's cancel can be this cycle's (initiated no earlier than that)."""
    initiated = batch.cancel_initiated_at
    return initiated is not None and (earliest is None or initiated >= earliest)


@dataclass(slots=True)
class _Waiting:
    """A batch this cycle canceled, polled until it has ended."""

    decision: Decision
    earliest: datetime | None  # the earliest cancel_initiated_at this cycle's cancel can have
    not_found: int = 0


class CancelWait:
    """Poll the batches a cycle canceled until they end or the wait runs out."""

    def __init__(
        self,
        client: Retriever,
        recorder: Recorder,
        pool: WorkerPool,
        *,
        timeout: timedelta,
        now: Callable[[], datetime],
        sleep: Callable[[float], Awaitable[object]],
        on_ended: Callable[[Decision, Batch], None],
    ) -> None:
        self.client = client
        self.recorder = recorder
        self.pool = pool
        self.timeout = timeout
        self.now = now
        self.sleep = sleep
        self.on_ended = on_ended
        self._waiting: dict[str, _Waiting] = {}
        self._deadline: datetime | None = None

    def add(self, d: Decision, earliest: datetime | None) -> None:
        """Wait for a batch this cycle canceled (``earliest``: see ``earliest_cancel``)."""
        self._waiting[d.batch.id] = _Waiting(d, earliest)

    async def run(self) -> None:
        """Poll with backoff until every batch has ended or the wait is over (call once)."""
        if not self._waiting:
            return
        deadline = self._deadline = self.now() + self.timeout
        delay = POLL_FIRST_SECONDS
        while self._waiting:
            remaining = (deadline - self.now()).total_seconds()
            if remaining <= 0:
                break
            await self.sleep(min(delay, remaining))
            delay = min(delay * 2, POLL_MAX_SECONDS)
            await self.pool.run_all(URGENT, [self._poller(w) for w in self._waiting.values()])
        if self._waiting:
            self._timed_out(list(self._waiting))
            self._waiting.clear()

    def _poller(self, waiting: _Waiting) -> Job:
        async def poll() -> None:
            d = waiting.decision
            assert self._deadline is not None
            remaining = (self._deadline - self.now()).total_seconds()
            if remaining < 0:
                return  # the wait is over: this batch is left to later cycles
            try:
                # Not sent at all once the deadline passed waiting for a turn of the pace.
                batch = await self.client.retrieve(
                    d.batch.id, self.recorder.workspace, within=remaining
                )
            except DeadlinePassed:
                return
            except NotFoundError as exc:
                # A 404 while waiting is no proof of deletion either: the polls, spaced by the
                # backoff, count as the confirmation (NOT_FOUND_TOLERANCE more in a row).
                waiting.not_found += 1
                if waiting.not_found > NOT_FOUND_TOLERANCE:
                    del self._waiting[d.batch.id]
                    self._abandoned(d, waiting.not_found, exc.request_id)
                return
            except ApiError as exc:  # still canceled; the next poll or a later cycle will tell
                log.info(
                    "cancel.poll_failed",
                    id=d.batch.id,
                    error_type=exc.error_type,
                    status=exc.status,
                    request_id=exc.request_id,
                )
                return
            waiting.not_found = 0
            if batch.processing_status == ENDED:
                del self._waiting[d.batch.id]
                if batch.id == d.batch.id and not canceled_since(batch, waiting.earliest):
                    self.recorder.not_needed(d, batch, counted=False)
                    return
                self.on_ended(d, batch)

        return poll

    def _timed_out(self, ids: list[str]) -> None:
        """Record canceled batches not seen to end: their planned deletes left undone."""
        tally = self.recorder.tally
        tally.still_ending += len(ids)
        tally.timed_out += len(ids)
        for start in range(0, len(ids), ID_CHUNK):  # every id named, for the operator
            log.warning(
                "cancel.wait_timeout",
                workspace=self.recorder.label,
                batches=len(ids),
                ids=ids[start : start + ID_CHUNK],
                timeout_seconds=self.timeout.total_seconds(),
                consequence="planned delete left undone; rule canceled_stale deletes it later",
            )

    def _abandoned(self, d: Decision, not_found: int, request_id: str | None) -> None:
        """Record a canceled batch that kept answering 404 while waited for."""
        self.recorder.tally.still_ending += 1
        log.warning(
            "cancel.wait_abandoned",
            id=d.batch.id,
            workspace=self.recorder.label,
            not_found=not_found,
            request_id=request_id,
            consequence="left to later cycles",
        )
