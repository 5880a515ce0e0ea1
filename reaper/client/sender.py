"""Send one API request the way every request goes: bounded, paced, retried, measured.

Each attempt passes through a semaphore (``concurrency`` requests in flight) and the pacer
(``max_rpm``, evenly, adaptive; see ``reaper.ratelimit``), and each failure through the retry
policy of ``reaper.retry``. Why a small explicit loop rather than stamina or tenacity: the wait
comes from the response (``retry-after-ms``, ``retry-after``), a 429 must also pause the other
workers, and every attempt feeds the metrics and the pacer; with a library those would all hang
off callbacks and the wait would need smuggling through an exception. The decision itself is a
pure, table-tested function.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import httpx

from reaper.client.responses import Redact, error_for, outcome_of
from reaper.errors import ANSWERED_REQUEST_ID, ConnectionFailed, DeadlinePassed
from reaper.metrics import Metrics
from reaper.ratelimit import Pacer
from reaper.retry import CONNECTION, TIMEOUT, Outcome, retry_wait, server_wait

Sleep = Callable[[float], Awaitable[object]]

# Endpoints whose 409 is final rather than retried (retry.py retries 409 as the SDK does).
_CONFLICT_IS_FINAL: Final = frozenset({"cancel", "delete"})


class Sender:
    """The attempt loop shared by every endpoint of ``BatchClient``."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        concurrency: int,
        max_retries: int,
        pacer: Pacer,
        redact: Redact,
        metrics: Metrics | None,
        log: Any,
        sleep: Sleep,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        jitter: Callable[[], float],
    ) -> None:
        self.http = http
        self.pacer = pacer
        self.redact = redact
        self.requests_made: Counter[str] = Counter()
        self._semaphore = asyncio.Semaphore(concurrency)
        self._max_retries = max_retries
        self._metrics = metrics
        self._log = log
        self._sleep = sleep
        self._clock = clock
        self._wall_clock = wall_clock
        self._jitter = jitter

    def release_slot(self) -> None:
        """Give back the concurrency slot a streamed response held."""
        self._semaphore.release()

    async def request(
        self,
        endpoint: str,
        method: str,
        url: str,
        *,
        workspace: str | None,
        batch_id: str | None = None,
        params: Mapping[str, str | int] | None = None,
        stream: bool = False,
        within: float | None = None,
    ) -> httpx.Response:
        """Send with retries; return a 2xx response or raise ApiError.

        With ``stream=True`` the body is left unread and the returned response still holds its
        concurrency slot: the caller must close it and call ``release_slot``. With ``within``
        (seconds), no attempt starts later than that from now, counting the wait for a turn
        of the pace and for a retry: ``DeadlinePassed`` (or the last error) instead.
        """
        not_after = None if within is None else self._clock() + within
        headers: dict[str, str] | None = None
        if workspace is not None:
            headers = {"anthropic-workspace-id": workspace}
        if stream:
            # What the SDK sends for results (API-NOTES §1); the body is JSON Lines, not JSON.
            headers = {**(headers or {}), "accept": "application/binary"}
        retries = 0
        while True:
            try:
                response, outcome, error = await self._attempt(
                    endpoint,
                    method,
                    url,
                    params=params,
                    headers=headers,
                    stream=stream,
                    not_after=not_after,
                    batch_id=batch_id,
                )
            except httpx.UnsupportedProtocol as exc:
                # A base URL without http(s):// is configuration, not a transient failure.
                raise ConnectionFailed(
                    endpoint, None, "unsupported_protocol", self.redact(str(exc)), batch_id=batch_id
                ) from exc
            if response is not None and response.is_success:
                ANSWERED_REQUEST_ID.set(response.headers.get("request-id"))
                return response
            now = datetime.fromtimestamp(self._wall_clock(), UTC)
            wait = retry_wait(
                outcome,
                retries_taken=retries,
                max_retries=self._max_retries,
                now=now,
                jitter=self._jitter(),
            )
            api_error = error_for(endpoint, batch_id, response, outcome, error, self.redact)
            if outcome.status == 409 and endpoint in _CONFLICT_IS_FINAL:
                # A cancel or delete in conflict with the batch's state is an answer about the
                # batch, not a transient lock: the executor checks the batch instead.
                wait = None
            if outcome.status == 429:
                # Everyone waits out a rate limit, even when this request gives up.
                self.pacer.hold(server_wait(outcome.headers, now=now) or wait or 0.0)
            if wait is None or (not_after is not None and self._clock() + wait > not_after):
                raise api_error
            retries += 1
            if self._metrics is not None:
                self._metrics.api_retries.labels(endpoint=endpoint, reason=outcome.reason).inc()
            self._log.warning(
                "api.retry",
                endpoint=endpoint,
                batch_id=batch_id,
                workspace=workspace,
                status=outcome.status,
                reason=outcome.reason,
                error_type=api_error.error_type,
                request_id=api_error.request_id,
                wait=round(wait, 3),
                attempt=retries,
                max_retries=self._max_retries,
            )
            await self._sleep(wait)

    async def _attempt(
        self,
        endpoint: str,
        method: str,
        url: str,
        *,
        params: Mapping[str, str | int] | None,
        headers: Mapping[str, str] | None,
        stream: bool,
        not_after: float | None = None,
        batch_id: str | None = None,
    ) -> tuple[httpx.Response | None, Outcome, Exception | None]:
        """Make one attempt inside the concurrency bound and the pace; never raise for HTTP."""
        await self._semaphore.acquire()
        keep_slot = False
        try:
            await self.pacer.wait_turn()
            if not_after is not None and self._clock() > not_after:
                raise DeadlinePassed(
                    endpoint,
                    None,
                    "deadline_passed",
                    "not sent: the caller's deadline passed while it waited its turn",
                    batch_id=batch_id,
                )
            self.requests_made[endpoint] += 1
            sent_at = self._clock()
            try:
                request = self.http.build_request(method, url, params=params, headers=headers)
                response = await self.http.send(request, stream=stream)
                if not stream:
                    _unbind(response)
            except httpx.TimeoutException as exc:
                self._observe(endpoint, "error", sent_at)
                return None, Outcome(failure=TIMEOUT), exc
            except httpx.UnsupportedProtocol:
                raise
            except httpx.TransportError as exc:
                self._observe(endpoint, "error", sent_at)
                return None, Outcome(failure=CONNECTION), exc
            self._observe(endpoint, str(response.status_code), sent_at)
            self.pacer.on_response(response.status_code, response.headers, sent_at=sent_at)
            if response.is_success:
                keep_slot = stream
                return response, Outcome(status=response.status_code), None
            if stream:
                try:
                    await response.aread()
                finally:
                    await response.aclose()
            return response, outcome_of(response), None
        finally:
            if not keep_slot:
                self._semaphore.release()

    def _observe(self, endpoint: str, code: str, sent_at: float) -> None:
        if self._metrics is None:
            return
        self._metrics.api_requests.labels(endpoint=endpoint, code=code).inc()
        self._metrics.api_request_duration.labels(endpoint=endpoint).observe(
            max(0.0, self._clock() - sent_at)
        )


_READ: Final = httpx.ByteStream(b"")


def _unbind(response: httpx.Response) -> None:
    """Drop the reference cycle httpx leaves between a read response and its stream.

    httpx wraps every response's stream in one that points back at the response, so a response
    is freed only by the cyclic collector, whenever it next runs: a list page's 450 KB body
    lingered for several pages (13-16 MiB of peak RSS on a first run). The body is read and the
    stream closed by now (``send`` without ``stream``), so a finished empty stream stands in.
    """
    response.stream = _READ
