"""The emulator's ASGI app: the six Message Batches endpoints under ``/v1`` and the control surface.

Every ``/v1`` request goes through the same steps, in the order the real API plausibly applies them:
latency, authentication (401, without a workspace header), workspace (403 for one the key may not
use), ``anthropic-version`` (400 when absent, any value accepted), the RPM limit (429), injected
faults (500/529/429/404), then the operation. Every response, errors included, carries
``request-id`` and ``anthropic-organization-id``; every one after authentication also
``anthropic-workspace-id``; while an RPM limit is on, the ``anthropic-ratelimit-requests-*`` trio.
The control surface is mounted at ``/_emulator`` (see ``reaper.emulator.control``).

Every response, the control surface's included, carries a ``Date`` header read from the
emulator's clock (plus ``Faults.clock_skew_seconds``), so moving the emulator's time moves
``Date`` too; whoever serves the app must not add the host's (uvicorn: ``date_header=False``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta
from typing import Any, Final

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reaper.emulator import control, injection
from reaper.emulator.clock import http_date
from reaper.emulator.errors import RequestRejected, invalid
from reaper.emulator.records import ENDED, BatchRecord
from reaper.emulator.results import ABORT, CORRUPT, SHORT, TRUNCATE, result_chunks
from reaper.emulator.state import EmulatorState

JSON: Final = "application/json"
JSONL: Final = "application/x-jsonl"
_LIMIT: Final = re.compile(r"[0-9]{1,7}")


def dumps(data: Any) -> bytes:
    """Serialise compactly (fast, and the byte size of a page stays honest)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def create_app(state: EmulatorState) -> Starlette:
    """Build the ASGI app serving ``state`` over ``/v1`` and ``/_emulator``."""
    api = _Api(state)
    routes = [
        Route("/v1/messages/batches", api.collection, methods=["GET", "POST"]),
        Route("/v1/messages/batches/{batch_id}", api.item, methods=["GET", "DELETE"]),
        Route("/v1/messages/batches/{batch_id}/cancel", api.cancel, methods=["POST"]),
        Route("/v1/messages/batches/{batch_id}/results", api.results, methods=["GET"]),
        Mount("/_emulator", routes=control.routes(state)),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: api.unrouted},
        middleware=[Middleware(DateHeader, state=state)],
    )


class DateHeader:
    """ASGI middleware: stamp every response with ``Date`` from the emulator's clock.

    ``Faults.clock_skew_seconds`` moves the stamp (and nothing else); ``Faults.omit_date`` leaves
    it out. A ``Date`` set further in is replaced, so there is only ever one.
    """

    def __init__(self, app: ASGIApp, state: EmulatorState) -> None:
        self.app = app
        self.state = state
        self._last: tuple[int, bytes] = (-1, b"")  # (whole second, its header): one format a second

    def _date(self, when: datetime) -> bytes:
        second = int(when.timestamp())
        if second != self._last[0]:
            self._last = (second, http_date(when).encode("latin-1"))
        return self._last[1]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                faults = self.state.faults
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"date"]
                if not faults.omit_date:
                    when = self.state.now() + timedelta(seconds=faults.clock_skew_seconds)
                    headers.append((b"date", self._date(when)))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, stamped)


Operation = Callable[[Request, str, str], Response]


class _Api:
    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    # -- routes -----------------------------------------------------------------------------

    async def collection(self, request: Request) -> Response:
        if request.method == "POST":
            body = await request.body()
            return await self._serve(
                request, "create", None, lambda r, w, o: self._create(body, w, o)
            )
        return await self._serve(request, "list", None, self._list)

    async def item(self, request: Request) -> Response:
        batch_id = request.path_params["batch_id"]
        if request.method == "DELETE":
            return await self._serve(request, "delete", batch_id, self._delete)
        return await self._serve(request, "retrieve", batch_id, self._retrieve)

    async def cancel(self, request: Request) -> Response:
        # The SDK sends Content-Type: application/json with an empty body: the body is ignored.
        return await self._serve(request, "cancel", request.path_params["batch_id"], self._cancel)

    async def results(self, request: Request) -> Response:
        return await self._serve(request, "results", request.path_params["batch_id"], self._results)

    async def unrouted(self, request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        rejected = (
            RequestRejected(405, "invalid_request_error", f"Method {request.method} not allowed.")
            if status == 405
            else RequestRejected(404, "not_found_error", f"Not found: {request.url.path}")
        )
        request_id = self.state.request_id()
        response = self._error(rejected, request_id)
        response.headers["anthropic-organization-id"] = self.state.organization_id
        self.state.stats.record("other", response.status_code, request_id)
        return response

    # -- the common path --------------------------------------------------------------------

    async def _serve(
        self, request: Request, endpoint: str, batch_id: str | None, operation: Operation
    ) -> Response:
        state = self.state
        faults = state.faults
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        request_id = shown_id = state.request_id()
        headers = {"anthropic-organization-id": state.organization_id}
        workspace: str | None = None
        try:
            self._authenticate(request)
            workspace = state.resolve_workspace(request.headers.get("anthropic-workspace-id"))
            headers["anthropic-workspace-id"] = workspace
            if "anthropic-version" not in request.headers:
                raise invalid("anthropic-version: header is required")
            injection.rate_limit(state, headers)
            injection.inject(state, endpoint, batch_id, workspace)
            origin = f"{request.url.scheme}://{request.url.netloc}"
            response = operation(request, workspace, origin)
        except RequestRejected as exc:
            credential = _credential(request) if state.faults.echo_credentials else None
            if credential:
                exc, shown_id = _echo(exc, credential), f"{request_id}-{credential}"
            response = self._error(exc, shown_id)
        response.headers.update(headers)
        response.headers["request-id"] = shown_id
        state.stats.record(
            endpoint, response.status_code, request_id, batch_id=batch_id, workspace=workspace
        )
        return response

    def _authenticate(self, request: Request) -> None:
        key = self.state.api_key
        if key is None:
            return
        given = request.headers.get("x-api-key")
        if given is None:
            authorization = request.headers.get("authorization", "")
            scheme, _, token = authorization.partition(" ")
            given = token.strip() if scheme.lower() == "bearer" else None
        if given is None:
            raise RequestRejected(401, "authentication_error", "x-api-key header is required")
        if not hmac.compare_digest(given.encode(), key.encode()):
            raise RequestRejected(401, "authentication_error", "invalid x-api-key")

    @staticmethod
    def _error(exc: RequestRejected, request_id: str) -> Response:
        response = Response(dumps(exc.body(request_id)), status_code=exc.status, media_type=JSON)
        response.headers.update(exc.headers)
        response.headers["request-id"] = request_id
        return response

    # -- operations -------------------------------------------------------------------------

    def _create(self, body: bytes, workspace: str, origin: str) -> Response:
        try:
            data = json.loads(body) if body.strip() else None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise invalid(f"Request body is not valid JSON: {exc}") from None
        if data is None:
            raise invalid("requests: Field required")
        record = self.state.create(workspace, data)
        return Response(dumps(record.render(self.state.now_us(), origin)), media_type=JSON)

    def _retrieve(self, request: Request, workspace: str, origin: str) -> Response:
        batch_id = request.path_params["batch_id"]
        other = self._wrong_batch_candidate(workspace, batch_id)
        record = self.state.get(workspace, batch_id)
        return self._batch_answer(record, self._wrong_batch("retrieve", batch_id, other), origin)

    def _cancel(self, request: Request, workspace: str, origin: str) -> Response:
        batch_id = request.path_params["batch_id"]
        other = self._wrong_batch_candidate(workspace, batch_id)
        record = self.state.cancel(workspace, batch_id)
        return self._batch_answer(record, self._wrong_batch("cancel", batch_id, other), origin)

    def _delete(self, request: Request, workspace: str, origin: str) -> Response:
        batch_id = request.path_params["batch_id"]
        other = self._wrong_batch_candidate(workspace, batch_id)
        self.state.delete(workspace, batch_id)
        named = self._wrong_batch("delete", batch_id, other) or batch_id
        return Response(dumps({"id": named, "type": "message_batch_deleted"}), media_type=JSON)

    def _batch_answer(self, record: BatchRecord, other_id: str | None, origin: str) -> Response:
        now = self.state.now_us()
        body = record.render(now, origin)
        if other_id is not None:
            other = self.state.find(other_id)
            body = other.render(now, origin) if other is not None else {**body, "id": other_id}
        return Response(dumps(body), media_type=JSON)

    def _wrong_batch_candidate(self, workspace: str, batch_id: str) -> str | None:
        """Return the batch a wrong answer would name, if the fault is on at all (else None)."""
        faults = self.state.faults
        if not (faults.wrong_batch_rate or batch_id in faults.wrong_batch_ids):
            return None
        if faults.wrong_batch_answer_id is not None:
            return faults.wrong_batch_answer_id
        neighbour = self.state.neighbour(workspace, batch_id)
        if neighbour is not None:
            return neighbour.id
        return "msgbatch_" + self.state.request_id().removeprefix("req_")

    def _wrong_batch(self, endpoint: str, batch_id: str, candidate: str | None) -> str | None:
        """Decide, once the operation succeeded, whether its answer names ``candidate``."""
        state = self.state
        if candidate is None:
            return None
        if batch_id in state.faults.wrong_batch_ids and state.roll(1.0):
            return candidate
        return candidate if state.roll(state.faults.wrong_batch_rate, endpoint) else None

    def _list(self, request: Request, workspace: str, origin: str) -> Response:
        query = request.query_params
        raw_limit = query.get("limit")
        if raw_limit is None:
            limit = 20
        elif _LIMIT.fullmatch(raw_limit) and 1 <= int(raw_limit) <= 1000:
            limit = int(raw_limit)
        else:
            raise invalid(f"limit: Input should be an integer from 1 to 1000, got {raw_limit!r}")
        after_id = query.get("after_id") or None
        page = self.state.page(workspace, limit, after_id, query.get("before_id") or None)
        records, has_more = injection.repeat_rows(
            self.state, page.records, page.has_more, after_id, limit
        )
        now = self.state.now_us()
        data = [record.render(now, origin) for record in records]
        injection.damage_batches(self.state, data)
        body = dumps(
            {
                "data": data,
                "has_more": has_more,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )
        return Response(injection.damage_body(self.state, body), media_type=JSON)

    def _results(self, request: Request, workspace: str, origin: str) -> Response:
        batch_id = request.path_params["batch_id"]
        state = self.state
        record = state.get(workspace, batch_id)
        if record.status != ENDED:
            raise RequestRejected(
                404,
                "not_found_error",
                f"Results for message batch {batch_id} are not available until it has ended.",
            )
        if record.is_archived(state.now_us()):
            raise RequestRejected(
                404,
                "not_found_error",
                f"Results for message batch {batch_id} are no longer available (archived).",
            )
        faults = state.faults
        mode = None
        for ids, name in (
            (faults.results_abort_ids, ABORT),
            (faults.results_truncate_ids, TRUNCATE),
            (faults.results_short_ids, SHORT),
            (faults.results_corrupt_ids, CORRUPT),
        ):
            if batch_id in ids:
                mode = name
                break
        return StreamingResponse(_aiter(result_chunks(record, mode)), media_type=JSONL)


def _credential(request: Request) -> str | None:
    """Return the credential a request carried: the x-api-key value or the bearer token."""
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _echo(exc: RequestRejected, credential: str) -> RequestRejected:
    """Return the same refusal with the credential echoed in its type and message."""
    return RequestRejected(
        exc.status,
        f"{exc.error_type}: {credential}",
        f"{exc.message} (request made with credential {credential})",
        headers=exc.headers,
        error_code=exc.error_code,
    )


async def _aiter(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    # Each chunk is generated in well under a millisecond: no thread pool needed.
    for chunk in chunks:
        yield chunk
