"""Create validation: a create body checked like the API's schema, synchronously for the envelope.

Like the real API, bad ``params`` do not fail the create: they are noted per request index and
surface later as errored results (docs: "Test your batch requests").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from reaper.emulator.errors import invalid

MAX_REQUESTS: Final = 100_000  # per batch (OpenAPI CreateMessageBatchParams maxItems)
_CUSTOM_ID: Final = re.compile(r"[a-zA-Z0-9_-]{1,64}")


def validate_create(body: Any) -> tuple[tuple[str, ...], dict[int, str]]:
    """Check a create body like the API's schema; return custom ids and the invalid params.

    Only the envelope is checked synchronously; like the real API, bad ``params`` do not fail the
    create but surface later as errored results (docs: "Test your batch requests").
    """
    if not isinstance(body, dict):
        raise invalid("Request body must be a JSON object.")
    extra = sorted(set(body) - {"requests"})
    if extra:
        raise invalid(f"{extra[0]}: Extra inputs are not permitted")
    requests = body.get("requests")
    if requests is None:
        raise invalid("requests: Field required")
    if not isinstance(requests, list):
        raise invalid("requests: Input should be a valid list")
    if not 1 <= len(requests) <= MAX_REQUESTS:
        raise invalid(
            f"requests: List should have between 1 and {MAX_REQUESTS} items, not {len(requests)}"
        )
    custom_ids: list[str] = []
    seen: set[str] = set()
    bad_params: dict[int, str] = {}
    for index, item in enumerate(requests):
        where = f"requests.{index}"
        if not isinstance(item, dict):
            raise invalid(f"{where}: Input should be a valid dictionary")
        extra = sorted(set(item) - {"custom_id", "params"})
        if extra:
            raise invalid(f"{where}.{extra[0]}: Extra inputs are not permitted")
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not _CUSTOM_ID.fullmatch(custom_id):
            raise invalid(
                f"{where}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
            )
        if custom_id in seen:
            raise invalid(f"{where}.custom_id: Duplicate custom_id {custom_id!r} in this batch")
        seen.add(custom_id)
        custom_ids.append(custom_id)
        params = item.get("params")
        if not isinstance(params, dict):
            raise invalid(f"{where}.params: Input should be a valid dictionary")
        problem = params_problem(params)
        if problem is not None:
            bad_params[index] = problem
    return tuple(custom_ids), bad_params


def params_problem(params: Mapping[str, Any]) -> str | None:
    """Return why the Messages API would reject ``params`` (checked when processed), or None."""
    for name in ("model", "max_tokens", "messages"):
        if name not in params:
            return f"{name}: Field required"
    if not isinstance(params["model"], str) or not params["model"]:
        return "model: Input should be a valid string"
    max_tokens = params["max_tokens"]
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    if not isinstance(params["messages"], list) or not params["messages"]:
        return "messages: at least one message is required"
    if params.get("stream") is True:
        return "stream: streaming is not supported in the Message Batches API"
    return None
