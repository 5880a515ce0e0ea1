"""The API's refusals: an exception carrying the status and error type the real API answers with."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class RequestRejected(Exception):
    """An API request the real API would refuse: carries the HTTP status and the error type."""

    def __init__(
        self,
        status: int,
        error_type: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        error_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers = dict(headers or {})
        self.error_code = error_code

    def body(self, request_id: str) -> dict[str, Any]:
        """Return the API's error envelope."""
        error: dict[str, Any] = {"type": self.error_type, "message": self.message}
        if self.error_code is not None:
            error["details"] = {"error_code": self.error_code}
        return {"type": "error", "error": error, "request_id": request_id}


def not_found(batch_id: str) -> RequestRejected:
    """Return the 404 the API gives for an id it does not know (in this workspace)."""
    return RequestRejected(404, "not_found_error", f"No message batch found with id {batch_id!r}.")


def invalid(message: str) -> RequestRejected:
    """Return a 400 ``invalid_request_error``."""
    return RequestRejected(400, "invalid_request_error", message)
