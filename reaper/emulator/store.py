"""The emulator's store of batches and its time: the part of the state every operation reads.

Each workspace keeps its batches in a ``SortedKeyList`` ordered by (-created_at, id), the listing
order, beside one dict id -> record for the whole store; so retrieve, delete and any list page cost
O(log n) with a million batches. The lifecycle is lazy: a batch is brought up to date (ended,
expired, archived) only when it is read, so a million batches cost nothing per clock tick; none of
its changes alters the sort key. Every method is thread-safe (one re-entrant lock).
"""

from __future__ import annotations

import operator
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sortedcontainers import SortedKeyList

from reaper.emulator.clock import Clock, EmulatorClock
from reaper.emulator.errors import invalid
from reaper.emulator.records import BatchRecord, to_us


@dataclass(frozen=True, slots=True)
class Page:
    """One list page: the batches (newest first) and whether more lie in the requested direction."""

    records: list[BatchRecord]
    has_more: bool


class BatchStore:
    """The batches of every workspace, in listing order, and the clock they live by."""

    def __init__(self, clock: Clock) -> None:
        self.clock = EmulatorClock(clock)
        self._lock = threading.RLock()
        self._by_id: dict[str, BatchRecord] = {}
        self._lists: dict[str, SortedKeyList] = {}

    def now(self) -> datetime:
        """Return the emulator's current time (the clock plus any control-surface offset)."""
        return self.clock()

    def now_us(self) -> int:
        """Return the emulator's current time in microseconds since the epoch."""
        return to_us(self.now())

    def advance(self, seconds: float) -> datetime:
        """Move the emulator's time forward (an offset over the clock); return the new time."""
        return self.clock.advance(seconds)

    def set_time(self, when: datetime) -> datetime:
        """Make the emulator's time read ``when`` from now on (an offset over the clock)."""
        return self.clock.set(when)

    def neighbour(self, workspace: str, batch_id: str) -> BatchRecord | None:
        """Return the batch listed just after ``batch_id`` (else just before); None if alone."""
        with self._lock:
            record = self._by_id.get(batch_id)
            batches = self._lists.get(workspace)
            if record is None or record.workspace != workspace or batches is None:
                return None
            index = batches.bisect_key_left(record.key)
            for other in (index + 1, index - 1):
                if 0 <= other < len(batches):
                    found: BatchRecord = batches[other]
                    found.settle(self.now_us())
                    return found
            return None

    def page(self, workspace: str, limit: int, after_id: str | None, before_id: str | None) -> Page:
        """Return one list page, newest first, in O(log n + limit)."""
        if after_id is not None and before_id is not None:
            raise invalid("Only one of after_id and before_id may be given.")
        with self._lock:
            # Not _sorted(): a list in a workspace nobody used must not create an entry for it.
            batches = self._lists.get(workspace) or _EMPTY
            if before_id is not None:
                stop = batches.bisect_key_left(self._cursor(workspace, "before_id", before_id))
                start = max(0, stop - limit)
                has_more = start > 0
            else:
                start = (
                    0
                    if after_id is None
                    else batches.bisect_key_right(self._cursor(workspace, "after_id", after_id))
                )
                stop = min(len(batches), start + limit)
                has_more = stop < len(batches)
            records: list[BatchRecord] = list(batches.islice(start, stop))
            now = self.now_us()
            for record in records:
                record.settle(now)
            return Page(records, has_more)

    def _cursor(self, workspace: str, name: str, batch_id: str) -> tuple[int, str]:
        # An unknown or deleted cursor is refused: the real behaviour is undocumented (SPEC 6).
        anchor = self._by_id.get(batch_id)
        if anchor is None or anchor.workspace != workspace:
            raise invalid(f"{name}: no message batch with id {batch_id!r} in this workspace.")
        return anchor.key

    def add(self, records: Iterable[BatchRecord]) -> int:
        """Store ready-made records (ids must be new); return how many were added."""
        with self._lock:
            by_workspace: dict[str, list[BatchRecord]] = {}
            added = 0
            for record in records:
                if record.id in self._by_id:
                    raise ValueError(f"batch id {record.id} already exists")
                self._by_id[record.id] = record
                by_workspace.setdefault(record.workspace, []).append(record)
                added += 1
            for workspace, new in by_workspace.items():
                self._sorted(workspace).update(new)
            return added

    def find(self, batch_id: str) -> BatchRecord | None:
        """Return any batch by id, whatever its workspace, brought up to date (None: no such)."""
        with self._lock:
            record = self._by_id.get(batch_id)
            if record is not None:
                record.settle(self.now_us())
            return record

    def __len__(self) -> int:
        return len(self._by_id)

    def iter_records(self, workspace: str | None = None) -> Iterator[BatchRecord]:
        """Yield the batches (of one workspace, or all), newest first per workspace, up to date.

        Iterates over a snapshot, so the store may change meanwhile.
        """
        with self._lock:
            now = self.now_us()
            names = [workspace] if workspace is not None else sorted(self._lists)
            snapshot = [r for name in names for r in self._lists.get(name, ())]
        for record in snapshot:
            record.settle(now)
            yield record

    def counts(self, workspace: str | None = None) -> dict[str, int]:
        """Count batches by processing status (one workspace or all)."""
        counter: Counter[str] = Counter(r.status for r in self.iter_records(workspace))
        return dict(sorted(counter.items()))

    def counts_by_workspace(self) -> dict[str, dict[str, int]]:
        """Count batches by workspace and processing status."""
        with self._lock:
            names = sorted(self._lists)
        return {name: self.counts(name) for name in names}

    def archived_count(self, workspace: str | None = None) -> int:
        """Count ended batches whose results are gone (past 29 days)."""
        now = self.now_us()
        return sum(1 for r in self.iter_records(workspace) if r.is_archived(now))

    def _sorted(self, workspace: str) -> SortedKeyList:
        batches = self._lists.get(workspace)
        if batches is None:
            batches = self._lists[workspace] = SortedKeyList(key=_sort_key)
        return batches

    def _insert(self, record: BatchRecord) -> None:
        self._by_id[record.id] = record
        self._sorted(record.workspace).add(record)


_EMPTY: Final = SortedKeyList()

# C-level, so sorting a million seeds does not call a Python function two million times.
_sort_key = operator.attrgetter("key")
