"""Write the bench's seed files: JSON Lines of API-shaped batches with exact counts per kind.

Every batch is ``ended`` unless said otherwise, with times relative to ``now`` so that the
reaper's default policy (``REAPER_MIN_AGE=1h``, ``REAPER_DELETE_ENDED_AFTER=7d``,
``REAPER_DELETE_FAILED_AFTER=30d``, ``REAPER_CANCEL_STALE_AFTER=12h``) decides each kind the same
way whatever the minute the bench runs at:

- deletable: ended 8 to 38 days ago, no failures (rule 7), or one in ten ended 31 to 38 days ago
  with errored requests (rule 6);
- stale: ``in_progress`` and 13 to 20 hours old (rule 3: canceled, then deleted once ended);
- kept: ended 1 to 6 days ago (rule 8), ended 8 to 25 days ago with errored requests (rule 8:
  failed batches are kept 30 days), still ``in_progress`` and 2 to 10 hours old (rule 4), or
  created less than an hour ago (rule 2).

Lines are formatted by hand rather than by ``json.dumps``: a million of them take a few seconds.
Ids look like the API's (``msgbatch_`` and 24 characters), so memory per batch is realistic.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = 1_000_000
_HOUR = 3600 * _US
_DAY = 24 * _HOUR


def _stamp(us: int) -> str:
    """Format microseconds since the epoch the way the API does (``...123456Z``)."""
    return (_EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ended(out: TextIO, batch_id: str, created: int, ended: int, errored: int) -> None:
    succeeded = 20 - errored
    out.write(
        f'{{"id":"{batch_id}","processing_status":"ended","created_at":"{_stamp(created)}",'
        f'"ended_at":"{_stamp(ended)}","request_counts":{{"processing":0,'
        f'"succeeded":{succeeded},"errored":{errored},"canceled":0,"expired":0}}}}\n'
    )


def _in_progress(out: TextIO, batch_id: str, created: int) -> None:
    out.write(
        f'{{"id":"{batch_id}","processing_status":"in_progress","created_at":"{_stamp(created)}",'
        f'"request_counts":{{"processing":20}}}}\n'
    )


def _spread(i: int, n: int, low: int, high: int) -> int:
    """Place item i of n evenly in [low, high) (microseconds), so every time is distinct."""
    return low + (high - low) * i // max(1, n)


def write_seed(
    path: Path, *, deletable: int, kept: int, stale: int = 0, now: datetime | None = None
) -> None:
    """Write ``deletable`` batches the default policy deletes, ``stale`` it cancels, ``kept``."""
    now_us = int(((now or datetime.now(UTC)) - _EPOCH).total_seconds() * _US)
    with path.open("w", encoding="utf-8") as out:
        for i in range(stale):
            created = now_us - _spread(i, stale, 13 * _HOUR, 20 * _HOUR)
            _in_progress(out, f"msgbatch_stale{i:019d}", created)
        for i in range(deletable):
            batch_id = f"msgbatch_del{i:021d}"
            if i % 10 == 9:  # failed: kept 30 days, so ended at least 31 days ago
                ended = now_us - _spread(i, deletable, 31 * _DAY, 38 * _DAY)
                _ended(out, batch_id, ended - 2 * _HOUR, ended, errored=3)
            else:
                ended = now_us - _spread(i, deletable, 8 * _DAY, 38 * _DAY)
                _ended(out, batch_id, ended - 2 * _HOUR, ended, errored=0)
        for i in range(kept):
            batch_id = f"msgbatch_keep{i:020d}"
            kind = i % 20
            if kind < 16:  # 80 %: ended within the week
                ended = now_us - _spread(i, kept, 1 * _DAY, 6 * _DAY)
                _ended(out, batch_id, ended - 2 * _HOUR, ended, errored=0)
            elif kind < 18:  # 10 %: failed, younger than the 30-day retention
                ended = now_us - _spread(i, kept, 8 * _DAY, 25 * _DAY)
                _ended(out, batch_id, ended - 2 * _HOUR, ended, errored=2)
            elif kind == 18:  # 5 %: still running, not yet stale
                _in_progress(out, batch_id, now_us - _spread(i, kept, 2 * _HOUR, 10 * _HOUR))
            else:  # 5 %: created within the hour (protected by REAPER_MIN_AGE)
                created = now_us - _spread(i, kept, 5 * 60 * _US, 40 * 60 * _US)
                _ended(out, batch_id, created, created + 60 * _US, errored=0)
