"""One emulated batch, its lifecycle arithmetic, and the emulator's time and id formats.

Times are integers of microseconds since the Unix epoch: exact (a seeded timestamp is kept to the
microsecond), small, and fast to compare. They become RFC 3339 strings (``...123456Z``, the API's
format) only when a batch is rendered.
"""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime, timedelta
from typing import Any, Final

IN_PROGRESS: Final = "in_progress"
CANCELING: Final = "canceling"
ENDED: Final = "ended"
KNOWN_STATUSES: Final = frozenset({IN_PROGRESS, CANCELING, ENDED})

SECOND: Final = 1_000_000
MINUTE: Final = 60 * SECOND
HOUR: Final = 60 * MINUTE
DAY: Final = 24 * HOUR
# The API's fixed windows: processing ends at the latest 24 h after creation; results are kept for
# 29 days after creation, not after the end (Message Batches docs, "batch-processing").
EXPIRY: Final = DAY
RETENTION: Final = 29 * DAY

# Why an ended batch ended; decides whether unfinished requests count as canceled or expired.
NATURAL: Final = "natural"
CANCEL: Final = "cancel"
EXPIRY_REASON: Final = "expiry"

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE: Final = datetime(1970, 1, 1)  # naive on purpose: C-fast isoformat
_ONE_US: Final = timedelta(microseconds=1)


def to_us(value: datetime) -> int:
    """Convert an aware datetime to integer microseconds since the epoch."""
    if value.tzinfo is None:
        raise ValueError("timestamp without a time zone")
    return (value - _EPOCH) // _ONE_US


def from_us(value: int) -> datetime:
    """Convert integer microseconds since the epoch to an aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=value)


def format_us(value: int) -> str:
    """Format microseconds since the epoch as the API does: UTC, six decimals, ``Z``."""
    return (_EPOCH_NAIVE + timedelta(microseconds=value)).isoformat(timespec="microseconds") + "Z"


def parse_rfc3339(value: str) -> int:
    """Parse an RFC 3339 timestamp with a zone into microseconds; raise ValueError otherwise."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {value!r}")
    return to_us(parsed)


# Real ids look like msgbatch_013Zva2CMHLNnXjNJJKqJ2EF and req_018EeWyXxfu5pfWkrYcMdjWG: a prefix,
# "01", then 22 base62 characters. base64 of random bytes with "+/" mapped to letters is close
# enough and an order of magnitude faster than drawing characters one by one (a million seeds).
_BASE62ISH: Final = bytes.maketrans(b"+/", b"xQ")


def random_token(rng: random.Random) -> str:
    """Return "01" and 22 base62-ish characters drawn from ``rng``."""
    raw = rng.getrandbits(144).to_bytes(18, "little")
    return "01" + base64.b64encode(raw).translate(_BASE62ISH)[:22].decode()


def new_batch_id(rng: random.Random) -> str:
    """Return a fresh batch id in the API's shape."""
    return "msgbatch_" + random_token(rng)


def new_request_id(rng: random.Random) -> str:
    """Return a fresh request id in the API's shape."""
    return "req_" + random_token(rng)


class BatchRecord:
    """One batch as the emulator stores it; rendered to the API's JSON only on the way out.

    ``end`` is when an unfinished batch will end (or, once ended, its ``ended_at``); ``reason`` says
    why. ``natural_end`` is when processing would finish on its own (None: it never would, and the
    batch expires). ``final`` fixes the counts a batch ends with when it ends naturally; without it
    a natural end counts every request succeeded, except the requests of a created batch whose
    params were invalid (``invalid``: request index -> error message), which count as errored.
    """

    __slots__ = (
        "_archive_at",
        "_expires",
        "cancel_at",
        "canceled",
        "custom_ids",
        "end",
        "errored",
        "expired",
        "final",
        "id",
        "invalid",
        "key",
        "natural_end",
        "reason",
        "status",
        "succeeded",
        "total",
        "workspace",
    )

    def __init__(
        self,
        *,
        batch_id: str,
        workspace: str,
        created: int,
        status: str,
        total: int,
        end: int | None,
        reason: str = NATURAL,
        natural_end: int | None = None,
        expires: int | None = None,
        archive_at: int | None = None,
        cancel_at: int | None = None,
        counts: tuple[int, int, int, int] = (0, 0, 0, 0),
        final: tuple[int, int, int, int] | None = None,
        custom_ids: tuple[str, ...] | None = None,
        invalid: dict[int, str] | None = None,
    ) -> None:
        self.id = batch_id
        self.workspace = workspace
        # Newest first, ties broken by id: the sort key never changes after creation.
        self.key = (-created, batch_id)
        self.status = status
        self.total = total
        self.end = end
        self.reason = reason
        self.natural_end = natural_end
        # None: the API's fixed offsets from created_at; saves two ints per batch (a million).
        self._expires = expires
        self._archive_at = archive_at
        self.cancel_at = cancel_at
        self.succeeded, self.errored, self.canceled, self.expired = counts
        self.final = final
        self.custom_ids = custom_ids
        self.invalid = invalid

    @property
    def created(self) -> int:
        """Creation time in microseconds (kept once, inside the sort key)."""
        return -self.key[0]

    @property
    def expires(self) -> int:
        """When processing stops, in microseconds (24 h after creation unless seeded otherwise)."""
        return -self.key[0] + EXPIRY if self._expires is None else self._expires

    @property
    def archive_at(self) -> int:
        """When the results go, in microseconds (29 days after creation unless seeded otherwise)."""
        return -self.key[0] + RETENTION if self._archive_at is None else self._archive_at

    @property
    def processing(self) -> int:
        """Requests not yet succeeded, errored, canceled or expired."""
        return self.total - self.succeeded - self.errored - self.canceled - self.expired

    def settle(self, now: int) -> None:
        """Apply the lifecycle up to ``now``: end the batch if its end time has come."""
        if self.end is not None and now >= self.end and self.status in (IN_PROGRESS, CANCELING):
            self._finish()

    def is_archived(self, now: int) -> bool:
        """Tell whether the results are gone (ended and past the 29-day retention)."""
        return self.status == ENDED and now >= self.archive_at

    def start_cancel(self, now: int, cancel_after: int) -> None:
        """Move an in-progress batch to canceling; it ends at the first of its possible ends."""
        self.status = CANCELING
        self.cancel_at = now
        self.schedule(now + cancel_after)

    def end_now(self, now: int) -> None:
        """End an in-progress batch on its own at ``now``: processing finished (a fault's race)."""
        self.natural_end = now
        self.schedule()
        self.settle(now)

    def schedule(self, cancel_done: int | None = None) -> None:
        """Set ``end`` and ``reason`` to the first of expiry, natural end and cancel completion."""
        # On ties the natural end wins (nothing ends up canceled, which the docs allow), then the
        # cancel, then expiry.
        candidates: list[tuple[int, int, str]] = [(self.expires, 2, EXPIRY_REASON)]
        if self.natural_end is not None:
            candidates.append((self.natural_end, 0, NATURAL))
        if cancel_done is not None:
            candidates.append((cancel_done, 1, CANCEL))
        self.end, _, self.reason = min(candidates)

    def done_at(self, when: int) -> int:
        """Count the requests processed by ``when``, progressing evenly until the natural end."""
        natural_end = self.natural_end
        if natural_end is None:
            return 0  # a batch that never finishes on its own is stuck in the queue
        if when >= natural_end:
            return self.total
        span = natural_end - self.created
        return 0 if span <= 0 else max(0, self.total * (when - self.created) // span)

    def _finish(self) -> None:
        self.status = ENDED
        if self.reason == NATURAL and self.final is not None:
            self.succeeded, self.errored, self.canceled, self.expired = self.final
            return
        if self.reason == NATURAL:
            done = self.total
        else:
            stop = self.expires if self.cancel_at is None else min(self.cancel_at, self.expires)
            done = self.done_at(stop)
        errored = self._errored_among(done)
        self.succeeded = done - errored
        self.errored = errored
        rest = self.total - done
        if self.reason == CANCEL:
            self.canceled = rest
        else:
            self.expired = rest

    def _errored_among(self, done: int) -> int:
        # A created batch processes its requests in order, so the errored ones among the first
        # `done` are exactly its invalid ones below that index.
        if self.invalid is not None:
            return sum(1 for index in self.invalid if index < done)
        if self.final is not None:
            succeeded, errored = self.final[0], self.final[1]
            if succeeded + errored:
                return done * errored // (succeeded + errored)
        return 0

    def render(self, now: int, origin: str) -> dict[str, Any]:
        """Return the API's MessageBatch object (all ten fields) as of ``now``."""
        ended = self.status == ENDED
        # A seeded batch with a status the API may add later keeps the end time it was given.
        ended_at = None if self.status in (IN_PROGRESS, CANCELING) else self.end
        cancel_at = self.cancel_at
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.status,
            "request_counts": {
                "processing": self.processing,
                "succeeded": self.succeeded,
                "errored": self.errored,
                "canceled": self.canceled,
                "expired": self.expired,
            },
            "ended_at": None if ended_at is None else format_us(ended_at),
            "created_at": format_us(-self.key[0]),
            "expires_at": format_us(self.expires),
            "archived_at": format_us(self.archive_at) if ended and now >= self.archive_at else None,
            "cancel_initiated_at": None if cancel_at is None else format_us(cancel_at),
            "results_url": f"{origin}/v1/messages/batches/{self.id}/results" if ended else None,
        }
