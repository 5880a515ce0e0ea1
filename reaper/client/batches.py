"""The Message Batches API client: typed calls over ``Sender``'s bounded, paced, retried requests.

The only part of the reaper that speaks HTTP (with ``reaper.client.sender`` and
``reaper.client.responses``). One shared ``httpx.AsyncClient`` (keep-alive pool sized to the
concurrency) carries every call.

Secrets: the key lives only in the httpx client's default headers and in the redactor. Errors are
built from status, error type, message and request id, never from a request or its headers
(httpx prints ``x-api-key`` in clear in reprs), and every message is scrubbed of the key, of any
8-character run of it, and of anything shaped like a credential (``reaper.logs.Redactor``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from types import TracebackType
from typing import Any, Final, Protocol, Self
from urllib.parse import quote

import httpx
import structlog

from reaper import __version__
from reaper.client.listed import read_listing
from reaper.client.responses import (
    ResultsStream,
    batch_from,
    check_answer_id,
    json_or_none,
    malformed,
    request_id_of,
)
from reaper.client.sender import Sender, Sleep
from reaper.errors import NotFoundError
from reaper.logs import Redactor
from reaper.metrics import Metrics
from reaper.models import Batch, Page
from reaper.ratelimit import Pacer

API_VERSION: Final = "2023-06-01"
BATCHES_PATH: Final = "/v1/messages/batches"
MAX_PAGE_SIZE: Final = 1000


class ClientSettings(Protocol):
    """The part of ``reaper.settings.Settings`` the client reads."""

    @property
    def base_url(self) -> str: ...
    @property
    def page_size(self) -> int: ...
    @property
    def max_retries(self) -> int: ...
    @property
    def max_rpm(self) -> int: ...
    @property
    def concurrency(self) -> int: ...
    @property
    def request_timeout(self) -> timedelta: ...

    def api_key_value(self) -> str | None: ...


class BatchClient:
    """Async client of the Message Batches endpoints the reaper needs.

    Use as ``async with BatchClient(...) as client:``; ``requests_made`` counts every HTTP attempt
    (retries included) by endpoint: list, retrieve, cancel, delete, results.
    """

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str,
        page_size: int = 1000,
        timeout: float = 30.0,
        max_retries: int = 5,
        max_rpm: int = 200,
        concurrency: int = 8,
        metrics: Metrics | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        logger: Any = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1 to {MAX_PAGE_SIZE}, got {page_size}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be at least 0, got {max_retries}")
        self._page_size = page_size
        self._redact = Redactor([api_key] if api_key else [])
        headers = {
            "anthropic-version": API_VERSION,
            "user-agent": f"batch-reaper/{__version__}",
            "accept": "application/json",
        }
        if api_key:
            headers["x-api-key"] = api_key
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout),
            # The semaphore already bounds requests in flight; a pool as large never makes one wait
            # for a connection, and keeping them all alive saves a handshake per request.
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            transport=transport,
            follow_redirects=False,
        )
        self._sender = Sender(
            self._http,
            concurrency=concurrency,
            max_retries=max_retries,
            pacer=Pacer(max_rpm, clock=clock, sleep=sleep, wall_clock=wall_clock),
            redact=self._redact,
            metrics=metrics,
            log=logger if logger is not None else structlog.get_logger("reaper.client"),
            sleep=sleep,
            clock=clock,
            wall_clock=wall_clock,
            jitter=jitter,
        )
        # Every HTTP attempt (retries included), by endpoint.
        self.requests_made: Counter[str] = self._sender.requests_made

    @classmethod
    def from_settings(
        cls,
        settings: ClientSettings,
        *,
        metrics: Metrics | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> BatchClient:
        """Build a client from the reaper's settings."""
        return cls(
            api_key=settings.api_key_value(),
            base_url=settings.base_url,
            page_size=settings.page_size,
            timeout=settings.request_timeout.total_seconds(),
            max_retries=settings.max_retries,
            max_rpm=settings.max_rpm,
            concurrency=settings.concurrency,
            metrics=metrics,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"<BatchClient {self._http.base_url}>"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    @property
    def pacer(self) -> Pacer:
        """The shared pacer (read its ``rate_rpm`` to see the current pace)."""
        return self._sender.pacer

    # -- endpoints ---------------------------------------------------------------------------

    async def list_pages(self, workspace: str | None) -> AsyncIterator[list[Batch]]:
        """Yield every page of the workspace's batches, newest first, ``page_size`` at a time.

        Fails closed: a page that cannot be read after retries, a malformed envelope, a batch
        object that cannot be parsed (one bad object fails the page: a listing with a hole would
        skew keep-last and the delete fraction), ``has_more`` without a usable cursor, or a page
        that overlaps the previous one (its first batch is the cursor or newer than it) all raise
        ApiError, so the cycle never acts on a listing it could not read whole and in order. The
        next cursor is always the ``last_id`` of the page just read, never an id the caller may
        have acted on. Each page is a ``Page``: its response's ``Date`` and ``request-id`` ride
        along for the listing's checks (``reaper.listing``).
        """
        cursor: Batch | None = None
        used: set[str] = set()
        while True:
            after = cursor.id if cursor is not None else None
            params: dict[str, str | int] = {"limit": self._page_size}
            if after is not None:
                params["after_id"] = after
            response = await self._sender.request(
                "list", "GET", BATCHES_PATH, workspace=workspace, params=params
            )
            batches, has_more, last_id = read_listing(response, after, workspace, self._redact)
            page = Page(
                batches,
                date=response.headers.get("date"),
                request_id=request_id_of(response, self._redact),
            )
            if last_id != (page[-1].id if page else None):
                raise malformed(
                    response, "list", after, "last_id is not the last batch", self._redact
                )
            if (
                cursor is not None
                and page
                and (page[0].id == cursor.id or page[0].created_at > cursor.created_at)
            ):
                raise malformed(
                    response,
                    "list",
                    after,
                    "page overlaps the previous one (cursor not honoured)",
                    self._redact,
                )
            yield page
            if not has_more:
                return
            if not page:
                raise malformed(
                    response, "list", after, "has_more but no cursor to follow", self._redact
                )
            if page[-1].id in used:
                raise malformed(
                    response, "list", after, f"cursor {page[-1].id} repeats", self._redact
                )
            used.add(page[-1].id)
            cursor = page[-1]

    async def retrieve(
        self, batch_id: str, workspace: str | None, *, within: float | None = None
    ) -> Batch:
        """Return the batch as it is now; with ``within``, sent no later than that many seconds
        from now (``DeadlinePassed`` otherwise: see ``Sender.request``)."""
        response = await self._sender.request(
            "retrieve",
            "GET",
            _batch_path(batch_id),
            workspace=workspace,
            batch_id=batch_id,
            within=within,
        )
        return batch_from(response, "retrieve", batch_id, workspace, self._redact)

    async def cancel(self, batch_id: str, workspace: str | None) -> Batch:
        """Ask the API to cancel the batch; return it (normally ``canceling``)."""
        response = await self._sender.request(
            "cancel",
            "POST",
            _batch_path(batch_id) + "/cancel",
            workspace=workspace,
            batch_id=batch_id,
        )
        return batch_from(response, "cancel", batch_id, workspace, self._redact)

    async def delete(self, batch_id: str, workspace: str | None) -> None:
        """Delete the batch; raise NotFoundError when it is already gone (404).

        An answer naming another batch's ``id`` is a ``malformed_response`` (the delete may
        have happened: the caller fails the action, and the next listing tells).
        """
        response = await self._sender.request(
            "delete", "DELETE", _batch_path(batch_id), workspace=workspace, batch_id=batch_id
        )
        body = json_or_none(response)
        if isinstance(body, dict) and "id" in body:
            check_answer_id(response, "delete", batch_id, body["id"], self._redact)

    @asynccontextmanager
    async def stream_results(self, batch: Batch) -> AsyncIterator[ResultsStream]:
        """Open the batch's results (JSON Lines) and yield an iterator over the body's bytes.

        The initial response is retried like any call; a failure mid-stream is not (the caller
        restarts the download) and surfaces as ConnectionFailed. The request counts as in flight
        until the block exits. A batch without ``results_url`` raises NotFoundError with status
        None (no request is made). ``results_url`` is followed as given when it is on the base
        URL's origin (as the SDK does) or relative; on any other origin only its path is asked of
        the base URL, so the key is never sent to a host the operator did not configure.
        """
        if not batch.results_url:
            raise NotFoundError(
                "results", None, "not_found_error", "batch has no results_url", batch_id=batch.id
            )
        response = await self._sender.request(
            "results",
            "GET",
            self._same_origin(batch.results_url),
            workspace=batch.workspace,
            batch_id=batch.id,
            stream=True,
        )
        try:
            yield ResultsStream(response, batch.id, self._redact)
        finally:
            try:
                await response.aclose()
            finally:
                self._sender.release_slot()

    def _same_origin(self, url: str) -> str:
        """Return ``url`` if relative or on the base URL's origin, else its path and query."""
        target = httpx.URL(url)
        base = self._http.base_url
        if not target.is_absolute_url or (target.scheme, target.host, target.port) == (
            base.scheme,
            base.host,
            base.port,
        ):
            return url
        return target.raw_path.decode("ascii")


def _batch_path(batch_id: str) -> str:
    # Quoted so that an odd id can never address another path ("../", "?", "#").
    return f"{BATCHES_PATH}/{quote(batch_id, safe='')}"
