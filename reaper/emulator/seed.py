"""Seed batches: from API-shaped JSON objects (``--seed-file``) or as a realistic random mix.

Seed objects have the API's MessageBatch shape; every field may be left out:

- ``id``: kept as given (letters, digits, ``_`` and ``-``); generated when absent.
- ``created_at``: kept; absent means now. ``expires_at``: kept; absent means ``created_at`` + 24 h.
- ``processing_status``: ``in_progress``, ``canceling``, ``ended`` or any other string (kept
  forever, never changing: a status the reaper does not know). Absent: ``ended`` when ``ended_at``
  is given, else ``in_progress``.
- ``request_counts``: missing keys count 0; all zero means one request (succeeded once ended,
  else processing). Until a batch has ended only
  ``processing`` may be non-zero (the API fills the others when it ends); an ended batch has
  ``processing`` 0.
- ``ended_at`` (ended only): kept; absent means ``expires_at`` when some requests expired, 30
  minutes after ``cancel_initiated_at`` when some were canceled, else 30 minutes after
  ``created_at``.
- ``cancel_initiated_at``: kept; absent on a ``canceling`` batch means now.
- ``archived_at``: kept (results answer 404 from then on); absent or null means ``created_at`` + 29
  days, shown once that time has come.
- ``results_url``: ignored; it always points at the emulator that serves the batch.

Extra fields (the emulator's own):

- ``workspace_id``: the workspace the batch belongs to (default: the key's default workspace).
- ``_ends_at``: when an ``in_progress`` batch finishes processing by itself (absent: it never does
  and expires at ``expires_at``, every request expired), or when a ``canceling`` one ends (absent:
  ``cancel_initiated_at`` + ``--cancel-seconds``).
- ``_final_counts``: ``{"succeeded", "errored", "canceled", "expired"}`` the batch ends with when it
  reaches ``_ends_at`` (they must add up to its requests). Without it an ``in_progress`` batch ends
  with every request succeeded, a ``canceling`` one with every request canceled; a cancel or an
  expiry before ``_ends_at`` counts the requests processed so far (evenly since ``created_at``) as
  succeeded or errored in the same proportion, the rest canceled or expired.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Container, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from reaper.emulator.records import (
    CANCELING,
    DAY,
    ENDED,
    EXPIRY,
    HOUR,
    IN_PROGRESS,
    MINUTE,
    SECOND,
    BatchRecord,
    new_batch_id,
    parse_rfc3339,
)

_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")
_COUNT_KEYS: Final = ("processing", "succeeded", "errored", "canceled", "expired")
# Times are rendered through datetime, which ends with 9999: a seeded time leaves room for the
# offsets the emulator adds to it (expiry 24 h, results 29 days), or every list would fail later.
_LATEST: Final = parse_rfc3339("9999-11-30T00:00:00Z")
_FINAL_KEYS: Final = ("succeeded", "errored", "canceled", "expired")
_API_FIELDS: Final = frozenset(
    {
        "id",
        "type",
        "processing_status",
        "request_counts",
        "ended_at",
        "created_at",
        "expires_at",
        "archived_at",
        "cancel_initiated_at",
        "results_url",
        "workspace_id",
    }
)
_EXTRA_FIELDS: Final = frozenset({"_ends_at", "_final_counts"})


class SeedError(ValueError):
    """A seed object (or seed file line) the emulator cannot load; the message says why."""


@dataclass(frozen=True, slots=True)
class SeedContext:
    """What filling in a seed object needs from the state."""

    now: int
    default_workspace: str
    cancel_seconds: float
    rng: random.Random
    taken: Container[str]


def read_seed_file(path: Path, context: SeedContext) -> Iterator[BatchRecord]:
    """Yield one record per non-blank line; raise SeedError as ``file:line: why``."""
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise SeedError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    seen: dict[str, int] = {}
    with handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    record = record_from_object(obj, context)
                except json.JSONDecodeError as exc:
                    raise SeedError(
                        f"{path}:{number}: not JSON: {exc.msg} (column {exc.colno})"
                    ) from exc
                except SeedError as exc:
                    raise SeedError(f"{path}:{number}: {exc}") from exc
                if record.id in seen:
                    first = seen[record.id]
                    raise SeedError(
                        f"{path}:{number}: duplicate batch id {record.id} (first on line {first})"
                    )
                seen[record.id] = number
                yield record
        except UnicodeDecodeError as exc:
            raise SeedError(f"{path}: not UTF-8 text: {exc.reason}") from exc


def record_from_object(obj: Any, context: SeedContext) -> BatchRecord:
    """Build a record from one API-shaped batch object, filling in what is missing."""
    if not isinstance(obj, Mapping):
        raise SeedError(f"expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(k for k in obj if k.startswith("_") and k not in _EXTRA_FIELDS)
    if unknown:
        raise SeedError(
            f"unknown field {unknown[0]!r} (the emulator's own: _ends_at, _final_counts)"
        )

    batch_id = obj.get("id")
    if batch_id is None:
        batch_id = new_batch_id(context.rng)
    elif not isinstance(batch_id, str) or not _ID.fullmatch(batch_id):
        raise SeedError(f"id: expected letters, digits, '_' or '-', got {batch_id!r}")
    if batch_id in context.taken:
        raise SeedError(f"id: batch {batch_id} already exists")

    workspace = obj.get("workspace_id") or context.default_workspace
    if not isinstance(workspace, str):
        raise SeedError(f"workspace_id: expected a string, got {workspace!r}")

    created = _time(obj, "created_at")
    created = context.now if created is None else created
    expires = _time(obj, "expires_at")
    expires = created + EXPIRY if expires is None else expires
    ended_at = _time(obj, "ended_at")
    cancel_at = _time(obj, "cancel_initiated_at")
    archived_at = _time(obj, "archived_at")
    ends_at = _time(obj, "_ends_at")

    status = obj.get("processing_status")
    if status is None:
        status = ENDED if ended_at is not None else IN_PROGRESS
    if not isinstance(status, str) or not status:
        raise SeedError(f"processing_status: expected a non-empty string, got {status!r}")
    processing, succeeded, errored, canceled, expired = _counts(obj.get("request_counts"))
    if processing + succeeded + errored + canceled + expired == 0:
        if status == ENDED:
            succeeded = 1
        else:
            processing = 1
    total = processing + succeeded + errored + canceled + expired
    final = _final_counts(obj.get("_final_counts"), total)

    common: dict[str, Any] = {
        "batch_id": batch_id,
        "workspace": workspace,
        "created": created,
        "status": status,
        "total": total,
        "expires": expires,
        "archive_at": archived_at,
        "cancel_at": cancel_at,
    }
    if status in (IN_PROGRESS, CANCELING):
        if succeeded + errored + canceled + expired:
            raise SeedError(
                f"request_counts: a {status} batch counts only 'processing' (the API fills the "
                "others when it ends); give the outcome as _final_counts"
            )
        if ended_at is not None:
            raise SeedError(f"ended_at: a {status} batch has not ended; give _ends_at instead")
        if status == IN_PROGRESS:
            if cancel_at is not None:
                raise SeedError("cancel_initiated_at: set on an in_progress batch; use canceling")
            record = BatchRecord(**common, end=None, natural_end=ends_at, final=final)
            record.schedule()
            return record
        if cancel_at is None:
            cancel_at = common["cancel_at"] = context.now
        done = ends_at if ends_at is not None else cancel_at + int(context.cancel_seconds * SECOND)
        # With _final_counts the planned end is "natural": the given counts are kept verbatim.
        natural_end = done if final is not None else None
        record = BatchRecord(**common, end=None, natural_end=natural_end, final=final)
        record.schedule(done)
        return record

    if ends_at is not None or final is not None:
        raise SeedError(f"_ends_at/_final_counts: only for in_progress or canceling, not {status}")
    if status == ENDED and processing:
        raise SeedError("request_counts: an ended batch has 'processing' 0")
    if status == ENDED and ended_at is None:
        if expired:
            ended_at = expires
        elif canceled and cancel_at is not None:
            ended_at = cancel_at + 30 * MINUTE
        else:
            ended_at = created + 30 * MINUTE
    return BatchRecord(
        **common,
        end=ended_at,
        counts=(succeeded, errored, canceled, expired),
    )


def _time(obj: Mapping[str, Any], name: str) -> int | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise SeedError(f"{name}: expected an RFC 3339 string, got {value!r}")
    try:
        parsed = parse_rfc3339(value)
    except ValueError:
        raise SeedError(
            f"{name}: expected an RFC 3339 time with a zone (2026-01-31T12:00:00Z), got {value!r}"
        ) from None
    if parsed > _LATEST:
        raise SeedError(f"{name}: expected a time before 9999-11-30, got {value!r}")
    return parsed


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SeedError(f"{where}: expected a whole number >= 0, got {value!r}")
    return value


def _counts(value: Any) -> tuple[int, int, int, int, int]:
    if value is None:
        return 0, 0, 0, 0, 0
    if not isinstance(value, Mapping):
        raise SeedError(f"request_counts: expected an object, got {value!r}")
    unknown = sorted(set(value) - set(_COUNT_KEYS))
    if unknown:
        raise SeedError(f"request_counts: unknown key {unknown[0]!r}")
    p, s, e, c, x = (_count(value.get(k, 0), f"request_counts.{k}") for k in _COUNT_KEYS)
    return p, s, e, c, x


def _final_counts(value: Any, total: int) -> tuple[int, int, int, int] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise SeedError(f"_final_counts: expected an object, got {value!r}")
    unknown = sorted(set(value) - set(_FINAL_KEYS))
    if unknown:
        raise SeedError(
            f"_final_counts: unknown key {unknown[0]!r} (accepted: {', '.join(_FINAL_KEYS)})"
        )
    s, e, c, x = (_count(value.get(k, 0), f"_final_counts.{k}") for k in _FINAL_KEYS)
    if s + e + c + x != total:
        raise SeedError(
            f"_final_counts: add up to {s + e + c + x}, but the batch has {total} requests"
        )
    return s, e, c, x


# -- the random mix -------------------------------------------------------------------------------


def random_records(
    n: int,
    *,
    rng: random.Random,
    now: int,
    workspaces: tuple[str, ...],
    days: float,
    cancel_seconds: float,
    taken: Container[str],
) -> Iterator[BatchRecord]:
    """Yield ``n`` batches like an organisation accumulates them over ``days`` days.

    4 % are young and still in progress (a tenth of those stuck until they expire), 1.5 %
    canceling, the rest ended at every age, those older than 29 days archived. Among the ended: a
    tenth with errored requests, 8 % expired at 24 h with part of their requests, 6 % canceled.
    Sizes are log-uniform from 1 to about 20,000 requests.
    """
    span = int(days * DAY)
    cancel_us = int(cancel_seconds * SECOND)
    uniform = rng.uniform
    rand = rng.random
    for position in range(n):
        batch_id = new_batch_id(rng)
        while batch_id in taken:  # pragma: no cover - 131 random bits; the store rejects repeats
            batch_id = new_batch_id(rng)
        workspace = workspaces[0] if len(workspaces) == 1 else rng.choice(workspaces)
        total = max(1, int(10 ** uniform(0.0, 4.3)))
        failed = total * int(uniform(1, 15)) // 100 if rand() < 0.12 else 0
        # Fixed shares by position rather than by chance, so that even a small mix (the demo's 200)
        # has a few in-progress and canceling batches; creation times are random all the same.
        if position % 25 == 12:
            created = now - int(uniform(0, 6 * HOUR))
            natural_end = None if rand() < 0.1 else now + int(uniform(MINUTE, 6 * HOUR))
            record = BatchRecord(
                batch_id=batch_id,
                workspace=workspace,
                created=created,
                status=IN_PROGRESS,
                total=total,
                end=None,
                natural_end=natural_end,
                final=(total - failed, failed, 0, 0),
            )
            record.schedule()
        elif position % 67 == 33:
            created = now - int(uniform(10 * MINUTE, 20 * HOUR))
            cancel_at = now - int(uniform(0, cancel_us))
            record = BatchRecord(
                batch_id=batch_id,
                workspace=workspace,
                created=created,
                status=CANCELING,
                total=total,
                end=None,
                natural_end=now + int(uniform(HOUR, 10 * HOUR)),
                cancel_at=cancel_at,
                final=(total - failed, failed, 0, 0),
            )
            record.schedule(cancel_at + cancel_us)
        else:
            record = _ended(batch_id, workspace, total, failed, now, span, rng)
        yield record


def _ended(
    batch_id: str,
    workspace: str,
    total: int,
    failed: int,
    now: int,
    span: int,
    rng: random.Random,
) -> BatchRecord:
    kind = rng.random()
    cancel_at = None
    if kind < 0.08:  # expired: the queue was slow, part of the requests never ran
        duration = EXPIRY
        expired = max(1, int(total * rng.uniform(0.05, 1.0)))
        done = total - expired
        counts = (done - done * failed // total, done * failed // total, 0, expired)
    elif kind < 0.14:  # canceled part-way
        until_cancel = int(rng.uniform(MINUTE, 2 * HOUR))
        duration = until_cancel + int(rng.uniform(5 * SECOND, 3 * MINUTE))
        canceled = max(1, int(total * rng.uniform(0.1, 1.0)))
        done = total - canceled
        counts = (done - done * failed // total, done * failed // total, canceled, 0)
        cancel_at = until_cancel
    else:
        duration = int(rng.uniform(2 * MINUTE, 3 * HOUR))
        counts = (total - failed, failed, 0, 0)
    created = now - duration - int(rng.random() * max(0, span - duration))
    return BatchRecord(
        batch_id=batch_id,
        workspace=workspace,
        created=created,
        status=ENDED,
        total=total,
        end=created + duration,
        cancel_at=None if cancel_at is None else created + cancel_at,
        counts=counts,
    )
