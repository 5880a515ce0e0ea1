"""An in-memory stand-in for ``BatchClient`` on a ``tests.helpers.Clock``, with fault hooks.

It keeps the API's rules that the cycle depends on: cancel moves ``in_progress`` to ``canceling``
and the batch ends ``cancel_seconds`` later on the fake clock; cancel of an ended batch and delete
of an unfinished one are refused (400); an unknown id is 404. Faults are queued per
``(endpoint, id)`` and raised before the call takes effect.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from datetime import timedelta

import msgspec

from reaper.errors import ApiError, InvalidRequestError, NotFoundError
from reaper.models import CANCELING, ENDED, IN_PROGRESS, Batch, RequestCounts
from tests.helpers import Clock


def api_error(
    endpoint: str, status: int, error_type: str = "api_error", batch_id: str | None = None
) -> ApiError:
    """Build the error the real client raises after its retries."""
    cls = {404: NotFoundError, 400: InvalidRequestError}.get(status, ApiError)
    return cls(
        endpoint, status, error_type, "injected", f"req_{endpoint}_{status}", batch_id=batch_id
    )


class FakeClient:
    """Batches in a dict per workspace, newest first in pages of ``page_size``."""

    def __init__(
        self,
        batches: Iterable[Batch] = (),
        *,
        clock: Clock,
        page_size: int = 3,
        cancel_seconds: float = 5.0,
        call_seconds: float = 0.0,
    ) -> None:
        self.clock = clock
        self.page_size = page_size
        self.cancel_seconds = cancel_seconds
        self.call_seconds = call_seconds
        self.store: dict[str | None, dict[str, Batch]] = defaultdict(dict)
        for b in batches:
            self.store[b.workspace][b.id] = b
        self.requests_made: Counter[str] = Counter()
        self.calls: list[tuple[str, str | None, str]] = []
        self.faults: dict[tuple[str, str], deque[Exception]] = defaultdict(deque)
        self.list_fault_page: dict[str | None, int] = {}
        self.before: dict[tuple[str, str], Callable[[], None]] = {}
        self.in_flight = 0
        self.max_in_flight = 0

    # -- test helpers ------------------------------------------------------------------------

    def fail(self, endpoint: str, batch_id: str, *errors: Exception) -> None:
        """Raise these errors, one per call, on the next calls of endpoint for batch_id."""
        self.faults[(endpoint, batch_id)].extend(errors)

    def ids(self, workspace: str | None = None) -> set[str]:
        return set(self.store[workspace])

    def mutating_calls(self) -> list[tuple[str, str | None, str]]:
        return [c for c in self.calls if c[0] in ("cancel", "delete")]

    def end(self, batch_id: str, workspace: str | None = None) -> None:
        """End a batch now, as if its last request had just finished."""
        b = self.store[workspace][batch_id]
        counts = RequestCounts(succeeded=b.request_counts.total, errored=0, expired=0)
        self.store[workspace][batch_id] = msgspec.structs.replace(
            b, processing_status=ENDED, ended_at=self.clock.now(), request_counts=counts
        )

    # -- the client's interface --------------------------------------------------------------

    async def list_pages(self, workspace: str | None) -> AsyncIterator[list[Batch]]:
        ordered = sorted(self.store[workspace].values(), key=lambda b: (b.created_at, b.id))
        ordered.reverse()
        for number, start in enumerate(range(0, max(len(ordered), 1), self.page_size), 1):
            await self._call("list", workspace, f"page{number}")
            if self.list_fault_page.get(workspace) == number:
                raise api_error("list", 500)
            yield [self._settle(b) for b in ordered[start : start + self.page_size]]

    async def retrieve(
        self, batch_id: str, workspace: str | None, *, within: float | None = None
    ) -> Batch:
        await self._call("retrieve", workspace, batch_id)
        return self._settle(self._get("retrieve", batch_id, workspace))

    async def cancel(self, batch_id: str, workspace: str | None) -> Batch:
        await self._call("cancel", workspace, batch_id)
        b = self._settle(self._get("cancel", batch_id, workspace))
        if b.processing_status == ENDED:
            raise api_error("cancel", 400, "invalid_request_error", batch_id)
        if b.processing_status == IN_PROGRESS:
            b = msgspec.structs.replace(
                b, processing_status=CANCELING, cancel_initiated_at=self.clock.now()
            )
            self.store[workspace][batch_id] = b
        return b

    async def delete(self, batch_id: str, workspace: str | None) -> None:
        await self._call("delete", workspace, batch_id)
        b = self._settle(self._get("delete", batch_id, workspace))
        if b.processing_status != ENDED:
            raise api_error("delete", 400, "invalid_request_error", batch_id)
        del self.store[workspace][batch_id]

    def stream_results(self, batch: Batch) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        raise NotImplementedError("the fake serves no results; use the emulator")

    # -- internals ---------------------------------------------------------------------------

    async def _call(self, endpoint: str, workspace: str | None, what: str) -> None:
        self.requests_made[endpoint] += 1
        self.calls.append((endpoint, workspace, what))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            # A real pause so that concurrent calls overlap and the in-flight bound shows.
            await asyncio.sleep(self.call_seconds)
        finally:
            self.in_flight -= 1
        hook = self.before.pop((endpoint, what), None)
        if hook is not None:
            hook()
        queued = self.faults.get((endpoint, what))
        if queued:
            raise queued.popleft()

    def _get(self, endpoint: str, batch_id: str, workspace: str | None) -> Batch:
        try:
            return self.store[workspace][batch_id]
        except KeyError:
            raise api_error(endpoint, 404, "not_found_error", batch_id) from None

    def _settle(self, b: Batch) -> Batch:
        """End a canceling batch whose cancel delay has passed on the fake clock."""
        if b.processing_status != CANCELING or b.cancel_initiated_at is None:
            return b
        if self.clock.now() - b.cancel_initiated_at < timedelta(seconds=self.cancel_seconds):
            return b
        counts = RequestCounts(canceled=b.request_counts.total, errored=0, expired=0)
        ended = msgspec.structs.replace(
            b, processing_status=ENDED, ended_at=self.clock.now(), request_counts=counts
        )
        self.store[b.workspace][b.id] = ended
        return ended
