"""The Message Batches API client: typed calls, retries, pacing, and errors that never hold the key.

The only module of the reaper that speaks HTTP. One shared ``httpx.AsyncClient`` (keep-alive
pool sized to the concurrency) carries every call; each attempt passes through a semaphore
(``concurrency`` requests in flight) and the pacer (``max_rpm``, evenly, adaptive; see
``reaper.ratelimit``), and each failure through the retry policy of ``reaper.retry``.

Why a small explicit loop rather than stamina or tenacity: the wait comes from the response
(``retry-after-ms``, ``retry-after``), a 429 must also pause the other workers, and every attempt
feeds the metrics and the pacer; with a library those would all hang off callbacks and the wait
would need smuggling through an exception. The decision itself is a pure, table-tested function.

Secrets: the key lives only in the httpx client's default headers and in the redactor. Errors are
built from status, error type, message and request id, never from a request or its headers
(httpx prints ``x-api-key`` in clear in reprs), and every message is scrubbed of the key, of any
8-character run of it, and of anything shaped like a credential (``reaper.logs.Redactor``).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Final, Protocol, Self
from urllib.parse import quote

import httpx
import structlog

from reaper import __version__
from reaper.logs import Redactor
from reaper.metrics import Metrics
from reaper.models import Batch, ModelError
from reaper.ratelimit import Pacer
from reaper.retry import CONNECTION, TIMEOUT, Outcome, retry_wait, server_wait

API_VERSION: Final = "2023-06-01"
BATCHES_PATH: Final = "/v1/messages/batches"
MAX_PAGE_SIZE: Final = 1000
_MESSAGE_LIMIT: Final = 300  # characters of a non-JSON error body kept in an error message

Sleep = Callable[[float], Awaitable[object]]


class ApiError(Exception):
    """An API call failed for good: after retries, or with an answer that is not retried.

    ``str()`` reads like ``delete msgbatch_x: 500 api_error (request-id req_abc): message``;
    neither it nor ``repr()`` ever contains headers or the key.
    """

    def __init__(
        self,
        endpoint: str,
        status: int | None,
        error_type: str,
        message: str,
        request_id: str | None = None,
        *,
        batch_id: str | None = None,
    ) -> None:
        """Keep the parts; ``batch_id`` is the batch acted on (for ``list``: the page's cursor)."""
        self.endpoint = endpoint
        self.status = status
        self.error_type = error_type
        self.message = message
        self.request_id = request_id
        self.batch_id = batch_id
        super().__init__(self._text())

    def _text(self) -> str:
        head = self.endpoint
        if self.batch_id:
            # For a list page the id is the cursor the page was asked after.
            joiner = " after " if self.endpoint == "list" else " "
            head = f"{self.endpoint}{joiner}{self.batch_id}"
        status = "no response" if self.status is None else str(self.status)
        rid = f" (request-id {self.request_id})" if self.request_id else ""
        return f"{head}: {status} {self.error_type}{rid}: {self.message}"

    def __str__(self) -> str:
        return self._text()


class NotFoundError(ApiError):
    """404: the batch (or its results) does not exist, or no longer does."""


class InvalidRequestError(ApiError):
    """400: the API refused the request (e.g. deleting a batch that has not ended)."""


class RateLimitError(ApiError):
    """429 that retries did not get past."""


class ConnectionFailed(ApiError):
    """No HTTP response at all (connection error or timeout) after retries; status is None."""


_ERROR_CLASSES: Final[Mapping[int | None, type[ApiError]]] = {
    404: NotFoundError,
    400: InvalidRequestError,
    429: RateLimitError,
    None: ConnectionFailed,
}


class ResultsStream(AsyncIterator[bytes]):
    """The body of a results download, chunk by chunk, with the response's ``request_id``.

    A connection that breaks mid-body raises ConnectionFailed (endpoint ``results``), so callers
    need not know httpx.
    """

    def __init__(
        self, response: httpx.Response, batch_id: str, redact: Callable[[str], str]
    ) -> None:
        self.request_id: str | None = response.headers.get("request-id")
        self._chunks = response.aiter_bytes()
        self._batch_id = batch_id
        self._redact = redact

    def __aiter__(self) -> ResultsStream:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await anext(self._chunks)
        except httpx.TransportError as exc:
            kind = TIMEOUT if isinstance(exc, httpx.TimeoutException) else CONNECTION
            text = self._redact(str(exc) or type(exc).__name__)
            raise ConnectionFailed(
                "results", None, kind, f"body broke off: {text}", batch_id=self._batch_id
            ) from exc


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
        self._max_retries = max_retries
        self._metrics = metrics
        self._sleep = sleep
        self._log = logger if logger is not None else structlog.get_logger("reaper.client")
        self._clock = clock
        self._wall_clock = wall_clock
        self._jitter = jitter
        self._redact = Redactor([api_key] if api_key else [])
        self._semaphore = asyncio.Semaphore(concurrency)
        self._pacer = Pacer(max_rpm, clock=clock, sleep=sleep, wall_clock=wall_clock)
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
        self.requests_made: Counter[str] = Counter()

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
        return self._pacer

    # -- endpoints ---------------------------------------------------------------------------

    async def list_pages(self, workspace: str | None) -> AsyncIterator[list[Batch]]:
        """Yield every page of the workspace's batches, newest first, ``page_size`` at a time.

        Fails closed: a page that cannot be read after retries, a malformed envelope, a batch
        object that cannot be parsed (one bad object fails the page: a listing with a hole would
        skew keep-last and the delete fraction), ``has_more`` without a usable cursor, or a page
        that overlaps the previous one (its first batch is the cursor or newer than it) all raise
        ApiError, so the cycle never acts on a listing it could not read whole and in order. The
        next cursor is always the ``last_id`` of the page just read, never an id the caller may
        have acted on.
        """
        cursor: Batch | None = None
        used: set[str] = set()
        while True:
            after = cursor.id if cursor is not None else None
            params: dict[str, str | int] = {"limit": self._page_size}
            if after is not None:
                params["after_id"] = after
            response = await self._request(
                "list", "GET", BATCHES_PATH, workspace=workspace, params=params
            )
            body = self._json_object(response, "list", after)
            data, has_more, last_id = body.get("data"), body.get("has_more"), body.get("last_id")
            if not isinstance(data, list) or not isinstance(has_more, bool):
                raise self._malformed(response, "list", after, "no data list or has_more flag")
            try:
                page = [Batch.from_api(item, workspace) for item in data]
            except (ModelError, TypeError, AttributeError) as exc:
                raise self._malformed(response, "list", after, f"bad batch object: {exc}") from exc
            if last_id != (page[-1].id if page else None):
                raise self._malformed(response, "list", after, "last_id is not the last batch")
            if (
                cursor is not None
                and page
                and (page[0].id == cursor.id or page[0].created_at > cursor.created_at)
            ):
                raise self._malformed(
                    response, "list", after, "page overlaps the previous one (cursor not honoured)"
                )
            yield page
            if not has_more:
                return
            if not page:
                raise self._malformed(response, "list", after, "has_more but no cursor to follow")
            if page[-1].id in used:
                raise self._malformed(response, "list", after, f"cursor {page[-1].id} repeats")
            used.add(page[-1].id)
            cursor = page[-1]

    async def retrieve(self, batch_id: str, workspace: str | None) -> Batch:
        """Return the batch as it is now."""
        response = await self._request(
            "retrieve", "GET", _batch_path(batch_id), workspace=workspace, batch_id=batch_id
        )
        return self._batch(response, "retrieve", batch_id, workspace)

    async def cancel(self, batch_id: str, workspace: str | None) -> Batch:
        """Ask the API to cancel the batch; return it (normally ``canceling``)."""
        response = await self._request(
            "cancel",
            "POST",
            _batch_path(batch_id) + "/cancel",
            workspace=workspace,
            batch_id=batch_id,
        )
        return self._batch(response, "cancel", batch_id, workspace)

    async def delete(self, batch_id: str, workspace: str | None) -> None:
        """Delete the batch; raise NotFoundError when it is already gone (404)."""
        await self._request(
            "delete", "DELETE", _batch_path(batch_id), workspace=workspace, batch_id=batch_id
        )

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
        response = await self._request(
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
                self._semaphore.release()

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

    # -- the attempt loop --------------------------------------------------------------------

    async def _request(
        self,
        endpoint: str,
        method: str,
        url: str,
        *,
        workspace: str | None,
        batch_id: str | None = None,
        params: Mapping[str, str | int] | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """Send with retries; return a 2xx response or raise ApiError.

        With ``stream=True`` the body is left unread and the returned response still holds its
        concurrency slot: the caller must close it and release the semaphore.
        """
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
                    endpoint, method, url, params=params, headers=headers, stream=stream
                )
            except httpx.UnsupportedProtocol as exc:
                # A base URL without http(s):// is configuration, not a transient failure.
                raise ConnectionFailed(
                    endpoint,
                    None,
                    "unsupported_protocol",
                    self._redact(str(exc)),
                    batch_id=batch_id,
                ) from exc
            if response is not None and response.is_success:
                return response
            now = datetime.fromtimestamp(self._wall_clock(), UTC)
            wait = retry_wait(
                outcome,
                retries_taken=retries,
                max_retries=self._max_retries,
                now=now,
                jitter=self._jitter(),
            )
            api_error = self._error(endpoint, batch_id, response, outcome, error)
            if outcome.status == 429:
                # Everyone waits out a rate limit, even when this request gives up.
                self._pacer.hold(server_wait(outcome.headers, now=now) or wait or 0.0)
            if wait is None:
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
    ) -> tuple[httpx.Response | None, Outcome, Exception | None]:
        """Make one attempt inside the concurrency bound and the pace; never raise for HTTP."""
        await self._semaphore.acquire()
        keep_slot = False
        try:
            await self._pacer.wait_turn()
            self.requests_made[endpoint] += 1
            sent_at = self._clock()
            try:
                request = self._http.build_request(method, url, params=params, headers=headers)
                response = await self._http.send(request, stream=stream)
            except httpx.TimeoutException as exc:
                self._observe(endpoint, "error", sent_at)
                return None, Outcome(failure=TIMEOUT), exc
            except httpx.UnsupportedProtocol:
                raise
            except httpx.TransportError as exc:
                self._observe(endpoint, "error", sent_at)
                return None, Outcome(failure=CONNECTION), exc
            self._observe(endpoint, str(response.status_code), sent_at)
            self._pacer.on_response(response.status_code, response.headers, sent_at=sent_at)
            if response.is_success:
                keep_slot = stream
                return response, Outcome(status=response.status_code), None
            if stream:
                try:
                    await response.aread()
                finally:
                    await response.aclose()
            return response, self._outcome(response), None
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

    # -- responses and errors ----------------------------------------------------------------

    def _outcome(self, response: httpx.Response) -> Outcome:
        error_code = None
        envelope = _error_envelope(response)
        if envelope is not None:
            details = envelope.get("details")
            if isinstance(details, dict) and isinstance(details.get("error_code"), str):
                error_code = details["error_code"]
        return Outcome(status=response.status_code, headers=response.headers, error_code=error_code)

    def _error(
        self,
        endpoint: str,
        batch_id: str | None,
        response: httpx.Response | None,
        outcome: Outcome,
        error: Exception | None,
    ) -> ApiError:
        """Build the ApiError for a failed attempt from status, body and request id only."""
        if response is None:
            kind = outcome.failure or CONNECTION
            text = str(error) or type(error).__name__
            return ConnectionFailed(
                endpoint, None, kind, self._redact(text), None, batch_id=batch_id
            )
        status = response.status_code
        request_id = response.headers.get("request-id")
        envelope = _error_envelope(response)
        if envelope is not None:
            error_type = str(envelope.get("type") or _default_type(status))
            message = str(envelope.get("message") or "")
            if request_id is None:
                body_id = _json_or_none(response)
                if isinstance(body_id, dict) and isinstance(body_id.get("request_id"), str):
                    request_id = body_id["request_id"]
        else:
            error_type = _default_type(status)
            message = response.text[:_MESSAGE_LIMIT].strip() or response.reason_phrase
        cls = _ERROR_CLASSES.get(status, ApiError)
        return cls(
            endpoint, status, error_type, self._redact(message), request_id, batch_id=batch_id
        )

    def _json_object(
        self, response: httpx.Response, endpoint: str, batch_id: str | None
    ) -> dict[str, Any]:
        try:
            body = json.loads(response.content)
        except (ValueError, UnicodeDecodeError) as exc:
            raise self._malformed(response, endpoint, batch_id, "body is not JSON") from exc
        if not isinstance(body, dict):
            raise self._malformed(response, endpoint, batch_id, "body is not a JSON object")
        return body

    def _batch(
        self, response: httpx.Response, endpoint: str, batch_id: str, workspace: str | None
    ) -> Batch:
        body = self._json_object(response, endpoint, batch_id)
        try:
            return Batch.from_api(body, workspace)
        except ModelError as exc:
            raise self._malformed(response, endpoint, batch_id, str(exc)) from exc

    def _malformed(
        self, response: httpx.Response, endpoint: str, batch_id: str | None, why: str
    ) -> ApiError:
        return ApiError(
            endpoint,
            response.status_code,
            "malformed_response",
            self._redact(why),
            response.headers.get("request-id"),
            batch_id=batch_id,
        )


def _batch_path(batch_id: str) -> str:
    # Quoted so that an odd id can never address another path ("../", "?", "#").
    return f"{BATCHES_PATH}/{quote(batch_id, safe='')}"


def _default_type(status: int) -> str:
    if status >= 500:
        return "api_error"
    return {404: "not_found_error", 429: "rate_limit_error"}.get(status, "invalid_request_error")


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None


def _error_envelope(response: httpx.Response) -> dict[str, Any] | None:
    """Return ``error`` of the API's error body, or None when the body is not that shape."""
    body = _json_or_none(response)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"]  # type: ignore[no-any-return]
    return None
