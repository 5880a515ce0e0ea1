"""The API's errors as the reaper sees them, apart from the HTTP that produced them.

``reaper.client`` raises these; the cycle, the archive and the commands catch them without
importing the HTTP client. ``str()`` of any of them is built from status, error type, message and
request id only: never a header, never the key.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from typing import Final

# The ``request-id`` of the last successful answer in this task, for the ledger's outcome line
# (errors carry theirs): a context variable, so that concurrent workers each read their own.
ANSWERED_REQUEST_ID: Final[contextvars.ContextVar[str | None]] = contextvars.ContextVar(
    "reaper_answered_request_id", default=None
)


def last_request_id() -> str | None:
    """Return the ``request-id`` of the last successful answer in the current task."""
    return ANSWERED_REQUEST_ID.get()


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


class DeadlinePassed(ApiError):
    """Not sent (or not retried): the caller's deadline passed while it waited its turn."""


_ERROR_CLASSES: Final[Mapping[int | None, type[ApiError]]] = {
    404: NotFoundError,
    400: InvalidRequestError,
    429: RateLimitError,
    None: ConnectionFailed,
}


def error_class(status: int | None) -> type[ApiError]:
    """Return the ApiError subclass for an HTTP status (None: no response at all)."""
    return _ERROR_CLASSES.get(status, ApiError)
