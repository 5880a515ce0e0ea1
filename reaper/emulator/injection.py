"""Fault injection for the ``/v1`` endpoints: the RPM limit, injected errors and damaged pages.

Functions of the emulator's state and ``Faults`` (see ``reaper.emulator.faults`` for each switch);
``reaper.emulator.app`` calls them at the point of a request where the real API would fail.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Final

from reaper.emulator.errors import RequestRejected, not_found
from reaper.emulator.records import BatchRecord, format_us, to_us
from reaper.emulator.state import EmulatorState

ID_ENDPOINTS: Final = frozenset({"retrieve", "cancel", "delete", "results"})


def rate_limit(state: EmulatorState, headers: dict[str, str]) -> None:
    """Apply the RPM limit: set the ratelimit headers; 429 when the bucket is empty."""
    verdict = state.take_token()
    if verdict is None:
        return
    allowed, remaining, full_seconds, retry_after = verdict
    headers["anthropic-ratelimit-requests-limit"] = str(state.faults.rate_limit_rpm)
    headers["anthropic-ratelimit-requests-remaining"] = str(remaining)
    reset = state.now() + timedelta(seconds=full_seconds)
    headers["anthropic-ratelimit-requests-reset"] = format_us(to_us(reset))[:-8] + "Z"
    if allowed:
        return
    extra = retry_hint(state)
    if state.faults.rate_limit_retry_after:
        extra["retry-after"] = str(retry_after)
    raise RequestRejected(
        429,
        "rate_limit_error",
        "Number of request tokens has exceeded your per-minute rate limit "
        f"({state.faults.rate_limit_rpm} requests per minute). Please retry later.",
        headers=extra,
    )


def retry_hint(state: EmulatorState) -> dict[str, str]:
    """Return the ``x-should-retry`` header the faults ask for (none by default)."""
    should_retry = state.faults.should_retry
    return {} if should_retry is None else {"x-should-retry": str(should_retry).lower()}


def inject(state: EmulatorState, endpoint: str, batch_id: str | None, workspace: str) -> None:
    """Raise the injected error (500/529, throttling 429, transient 404) if one is due."""
    faults = state.faults
    if state.roll(faults.error_rate, endpoint):
        if state.pick(faults.overloaded_share):
            raise RequestRejected(529, "overloaded_error", "Overloaded", headers=retry_hint(state))
        raise RequestRejected(500, "api_error", "Internal server error", headers=retry_hint(state))
    if state.roll(faults.throttle_rate, endpoint):
        raise RequestRejected(
            429,
            "rate_limit_error",
            "Your request rate is increasing too quickly; ramp up gradually.",
            headers=retry_hint(state),
            error_code=faults.throttle_error_code,
        )
    if batch_id is None or endpoint not in ID_ENDPOINTS:
        return
    if batch_id in faults.not_found_ids and state.roll(1.0):
        raise not_found(batch_id)
    if state.roll(faults.not_found_rate, endpoint):
        raise not_found(batch_id)
    if faults.not_found_young_seconds:
        record = state.find(batch_id)
        young = to_us(state.now()) - int(faults.not_found_young_seconds * 1_000_000)
        if (
            record is not None
            and record.workspace == workspace
            and record.created > young
            and state.roll(1.0)
        ):
            raise not_found(batch_id)


def repeat_rows(
    state: EmulatorState,
    records: list[BatchRecord],
    has_more: bool,
    after_id: str | None,
    limit: int,
) -> tuple[list[BatchRecord], bool]:
    """Apply the repeated-row faults; the page stays within ``limit`` and hides no batch."""
    faults = state.faults
    anchor = None
    if after_id is not None and limit >= 2 and state.roll(faults.list_repeat_previous_rate, "list"):
        anchor = state.find(after_id)  # exists: the page's cursor was checked
    if anchor is not None:
        kept = records[: limit - 1]
        return [anchor, *kept], has_more or len(kept) < len(records)
    if len(records) >= 2 and state.roll(faults.list_repeat_row_rate, "list"):
        kept = records[: limit - 1]
        middle = (len(kept) - 1) // 2
        return [*kept[: middle + 1], kept[middle], *kept[middle + 1 :]], (
            has_more or len(kept) < len(records)
        )
    return records, has_more


def damage_batches(state: EmulatorState, data: list[dict[str, Any]]) -> None:
    """Show batches of a page with an unknown status or without some fields, if due."""
    faults = state.faults
    if not (faults.unknown_status_rate or faults.missing_fields_rate):
        return
    for batch in data:
        if state.roll(faults.unknown_status_rate, "list"):
            batch["processing_status"] = faults.unknown_status
        if state.roll(faults.missing_fields_rate, "list"):
            for name in faults.missing_fields:
                batch.pop(name, None)


def damage_body(state: EmulatorState, body: bytes) -> bytes:
    """Apply the malformed and truncated list faults to a page's serialised body."""
    if state.roll(state.faults.malformed_list_rate, "list"):
        return body[: len(body) // 2] + b"}}<!-- upstream connection reset -->"
    if state.roll(state.faults.truncated_list_rate, "list"):
        return body[: len(body) // 2]
    return body
