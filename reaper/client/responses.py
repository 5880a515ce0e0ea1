"""Read the API's answers: a batch, a JSON object, an error, a results body; never the key.

Every error is built from status, error type, message and request id only, never from a request
or its headers (httpx prints ``x-api-key`` in clear in reprs), and every one of those fields goes
through the client's redactor where it is built: a proxy that echoes the key in an error's type or
request id must not put it in a log, a report or a printed line.

Trust no answer (SPEC section 3): a retrieve, cancel or delete answered with a batch ``id`` that
is not the one asked for is a ``malformed_response``, so nothing is done with another batch.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import httpx

from reaper.errors import ApiError, ConnectionFailed, error_class
from reaper.models import Batch, ModelError
from reaper.retry import CONNECTION, TIMEOUT, Outcome

_MESSAGE_LIMIT: Final = 300  # characters of a non-JSON error body kept in an error message

Redact = Callable[[str], str]


class ResultsStream(AsyncIterator[bytes]):
    """The body of a results download, chunk by chunk, with the response's ``request_id``.

    A connection that breaks mid-body raises ConnectionFailed (endpoint ``results``), so callers
    need not know httpx.
    """

    def __init__(self, response: httpx.Response, batch_id: str, redact: Redact) -> None:
        self.request_id = request_id_of(response, redact)
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


def outcome_of(response: httpx.Response) -> Outcome:
    """Describe a failed response for the retry policy (status, headers, the error's code)."""
    error_code = None
    envelope = _error_envelope(response)
    if envelope is not None:
        details = envelope.get("details")
        if isinstance(details, dict) and isinstance(details.get("error_code"), str):
            error_code = details["error_code"]
    return Outcome(status=response.status_code, headers=response.headers, error_code=error_code)


def error_for(
    endpoint: str,
    batch_id: str | None,
    response: httpx.Response | None,
    outcome: Outcome,
    error: Exception | None,
    redact: Redact,
) -> ApiError:
    """Build the ApiError for a failed attempt from status, body and request id only."""
    if response is None:
        kind = outcome.failure or CONNECTION
        text = str(error) or type(error).__name__
        return ConnectionFailed(endpoint, None, kind, redact(text), None, batch_id=batch_id)
    status = response.status_code
    request_id = request_id_of(response, redact)
    envelope = _error_envelope(response)
    if envelope is not None:
        error_type = str(envelope.get("type") or _default_type(status))
        message = str(envelope.get("message") or "")
        if request_id is None:
            body_id = json_or_none(response)
            if isinstance(body_id, dict) and isinstance(body_id.get("request_id"), str):
                request_id = redact(body_id["request_id"])
    else:
        error_type = _default_type(status)
        message = response.text[:_MESSAGE_LIMIT].strip() or response.reason_phrase
    cls = error_class(status)
    return cls(endpoint, status, redact(error_type), redact(message), request_id, batch_id=batch_id)


def request_id_of(response: httpx.Response, redact: Redact) -> str | None:
    """Return the response's ``request-id``, masked (a proxy may echo the key in it)."""
    value = response.headers.get("request-id")
    return None if value is None else redact(value)


def json_object(
    response: httpx.Response, endpoint: str, batch_id: str | None, redact: Redact
) -> dict[str, Any]:
    """Return the body as a JSON object, or raise a ``malformed_response`` ApiError."""
    try:
        body = json.loads(response.content)
    except (ValueError, UnicodeDecodeError) as exc:
        raise malformed(response, endpoint, batch_id, "body is not JSON", redact) from exc
    if not isinstance(body, dict):
        raise malformed(response, endpoint, batch_id, "body is not a JSON object", redact)
    return body


def batch_from(
    response: httpx.Response,
    endpoint: str,
    batch_id: str,
    workspace: str | None,
    redact: Redact,
) -> Batch:
    """Return the batch the body holds, or raise a ``malformed_response`` ApiError."""
    body = json_object(response, endpoint, batch_id, redact)
    try:
        batch = Batch.from_api(body, workspace)
    except ModelError as exc:
        raise malformed(response, endpoint, batch_id, str(exc), redact) from exc
    check_answer_id(response, endpoint, batch_id, batch.id, redact)
    return batch


def check_answer_id(
    response: httpx.Response, endpoint: str, asked: str, answered: object, redact: Redact
) -> None:
    """Raise a ``malformed_response`` ApiError when the answer names another batch."""
    if answered != asked:
        why = f"the answer names another batch: {str(answered)[:100]!r}"
        raise malformed(response, endpoint, asked, why, redact)


def malformed(
    response: httpx.Response, endpoint: str, batch_id: str | None, why: str, redact: Redact
) -> ApiError:
    """Return the error for an answer that is not what the API promises."""
    return ApiError(
        endpoint,
        response.status_code,
        "malformed_response",
        redact(why),
        request_id_of(response, redact),
        batch_id=batch_id,
    )


def _default_type(status: int) -> str:
    if status >= 500:
        return "api_error"
    return {404: "not_found_error", 429: "rate_limit_error"}.get(status, "invalid_request_error")


def json_or_none(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None


def _error_envelope(response: httpx.Response) -> dict[str, Any] | None:
    """Return ``error`` of the API's error body, or None when the body is not that shape."""
    body = json_or_none(response)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"]  # type: ignore[no-any-return]
    return None
