"""Typed models of the Message Batches API objects the reaper reads.

Pure data: no I/O, no clock. ``processing_status`` stays a plain string so that a status the API
adds later is carried through (and kept by the policy) instead of failing the whole listing.

``Batch`` and ``RequestCounts`` are frozen msgspec Structs: the listing's fast path
(``reaper.client.listed``) decodes a page straight into them in C, and ``gc=False`` keeps them out
of the cyclic garbage collector (they hold only strings, numbers, datetimes and each other, so
they can never be part of a cycle): a first run lists a million of them. Copy one with a change
with ``msgspec.structs.replace``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec

IN_PROGRESS: Final = "in_progress"
CANCELING: Final = "canceling"
ENDED: Final = "ended"
KNOWN_STATUSES: Final = frozenset({IN_PROGRESS, CANCELING, ENDED})
_FINER_THAN_MICROSECONDS: Final = re.compile(r"[.,](\d{7,})")


class ModelError(ValueError):
    """An API object lacks a field the reaper needs, or has one it cannot read."""


def parse_time(value: str) -> datetime:
    """Parse an RFC 3339 timestamp (``...Z`` or with an offset) into an aware UTC datetime.

    As RFC 3339 allows, ``t`` and ``z`` may be lower case; a fraction finer than microseconds is
    rounded to the nearest microsecond (half up), as the listing's fast path reads it
    (``reaper.client.listed``), so both read the same instant from the same text.
    """
    finer = _FINER_THAN_MICROSECONDS.search(value)
    if finer is not None:
        digits = finer.group(1)
        value = value[: finer.start(1) + 6] + value[finer.end(1) :]
        return parse_time(value) + timedelta(microseconds=1 if digits[6] >= "5" else 0)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        if not any(c in value for c in "tz"):
            raise
        parsed = datetime.fromisoformat(value.upper())
    zone = parsed.tzinfo
    if zone is UTC:  # the API's own ``...Z`` form (and ``+00:00``): already UTC, no conversion
        return parsed
    if zone is None:
        raise ValueError(f"timestamp without a time zone: {value!r}")
    return parsed.astimezone(UTC)


def format_time(value: datetime) -> str:
    """Format an aware datetime the way the API does: UTC, microseconds, ``Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class RequestCounts(msgspec.Struct, frozen=True, gc=False, kw_only=True):  # gc: module text
    """Tallies of a batch's requests by state; only ``processing`` is non-zero until it ends.

    Keyword-only, and ``errored`` and ``expired`` have no default: they choose the retention (rule
    6 or 7), so a tally missing from the API's answer must not read as 0, or a failed batch would
    be deleted after the shorter retention. Decoding a list page into this type
    (``reaper.client.listed``) refuses a row without them, as ``from_api`` does.
    """

    processing: int = 0
    succeeded: int = 0
    errored: int
    canceled: int = 0
    expired: int

    @property
    def total(self) -> int:
        return self.processing + self.succeeded + self.errored + self.canceled + self.expired

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> RequestCounts:
        get = data.get  # errored and expired are required (see the class's text)
        return cls(
            processing=int(get("processing", 0)),
            succeeded=int(get("succeeded", 0)),
            errored=int(data["errored"]),
            canceled=int(get("canceled", 0)),
            expired=int(data["expired"]),
        )


class Batch(msgspec.Struct, frozen=True, gc=False):
    """One message batch as listed, plus the workspace it was listed in (None: the key's own)."""

    id: str
    processing_status: str
    created_at: datetime
    request_counts: RequestCounts
    expires_at: datetime | None = None
    ended_at: datetime | None = None
    cancel_initiated_at: datetime | None = None
    archived_at: datetime | None = None
    results_url: str | None = None
    workspace: str | None = None

    def to_api(self) -> dict[str, Any]:
        """Render as the API's ``MessageBatch`` JSON object (the ledger and plans write it)."""
        counts = self.request_counts
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.processing_status,
            "request_counts": {
                "processing": counts.processing,
                "succeeded": counts.succeeded,
                "errored": counts.errored,
                "canceled": counts.canceled,
                "expired": counts.expired,
            },
            "created_at": format_time(self.created_at),
            "expires_at": _format_optional(self.expires_at),
            "ended_at": _format_optional(self.ended_at),
            "cancel_initiated_at": _format_optional(self.cancel_initiated_at),
            "archived_at": _format_optional(self.archived_at),
            "results_url": self.results_url,
        }

    @property
    def has_failures(self) -> bool:
        """True when any request errored or expired (rule 6's retention applies)."""
        return self.request_counts.errored + self.request_counts.expired > 0

    @classmethod
    def from_api(cls, data: Mapping[str, Any], workspace: str | None = None) -> Batch:
        """Build a Batch from the API's JSON object; raise ModelError when it cannot be read."""
        try:
            batch_id = data["id"]
            status = data["processing_status"]
            if not isinstance(batch_id, str) or not batch_id:
                raise ModelError(f"batch id is not a non-empty string: {batch_id!r}")
            if not isinstance(status, str):
                raise ModelError(f"batch {batch_id}: processing_status is not a string")
            # Required, like its failure tallies (see RequestCounts.from_api).
            counts = data["request_counts"]
            # type() first: a decoded JSON object is a dict, and the ABC check costs per row.
            if type(counts) is not dict and not isinstance(counts, Mapping):
                raise ModelError(f"batch {batch_id}: request_counts is not an object")
            # Positional, with the optional timestamps parsed inline: this runs once per listed
            # batch (a million on a first run), so each call and keyword saved counts.
            get = data.get
            expires, ended = get("expires_at"), get("ended_at")
            cancel, archived = get("cancel_initiated_at"), get("archived_at")
            return cls(
                batch_id,
                status,
                parse_time(data["created_at"]),
                RequestCounts.from_api(counts),
                None if expires is None else parse_time(expires),
                None if ended is None else parse_time(ended),
                None if cancel is None else parse_time(cancel),
                None if archived is None else parse_time(archived),
                get("results_url"),
                workspace,
            )
        except ModelError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"unreadable batch object: {type(exc).__name__}: {exc}") from exc


class Page(list[Batch]):
    """One page of a listing, with what its response said of itself (for the listing's checks).

    ``date`` is the response's HTTP ``Date`` header and ``request_id`` its ``request-id``, None
    when absent. A plain ``list[Batch]`` stands for a page whose response said neither.
    """

    __slots__ = ("date", "request_id")

    def __init__(
        self,
        batches: Iterable[Batch] = (),
        *,
        date: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(batches)
        self.date = date
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class Hold:
    """A person's hold on one batch (a line of ``REAPER_HOLDS_FILE``): keep it until ``until``.

    ``reason`` and ``by`` are free text for people (logs, ``explain``); a hold is active while
    ``now < until`` and ignored (logged as expired) afterwards.
    """

    id: str
    until: datetime
    reason: str | None = None
    by: str | None = None

    def active(self, now: datetime) -> bool:
        """True while the hold still keeps its batch."""
        return now < self.until


def _format_optional(value: datetime | None) -> str | None:
    return None if value is None else format_time(value)


def _optional_time(value: Any) -> datetime | None:
    return None if value is None else parse_time(value)
