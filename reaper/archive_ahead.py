"""Archive ahead of deletion: every ended batch in scope, in the first cycle after it ends.

The API keeps results 29 days after a batch's creation; a retention longer than that (the default
``REAPER_DELETE_FAILED_AFTER=30d``) would otherwise lose them before the delete's archive. So:

* while a workspace is listed, a ``Scout`` sees every page (``plan_workspace``'s ``on_page``) and
  checks each ended batch in scope against the archive on disk: one directory listing per day
  directory (pages come newest first, so one day's names are held at a time), no request. It
  counts the backlog (results available, not archived) and the batches whose results are gone
  with no archive, and keeps only the most urgent candidates in a bounded heap: ``2 * cap + 1``
  of them, enough for the cap of downloads after up to ``cap`` of them were deleted (and so
  archived) by the cycle's own deletes, plus one to know the soonest expiry left;
* after the cycle's cancels and deletes, ``ArchiveAhead.run`` downloads the most urgent first
  (``archived_at``, or ``created_at`` + 29 days), at most ``REAPER_MAX_ACTIONS_PER_RUN`` a
  workspace and cycle, through the cycle's client (paced like every request), on
  ``REAPER_CONCURRENCY`` workers; a failure of the archive directory itself (missing, read-only,
  full) stops the rest with one log line, since every other download would fail the same way.

A batch whose results are gone with no archive is counted once in ``reaper_results_lost_total``:
a live cycle leaves a ``<id>.lost`` marker next to where its archive would be, so a restart does
not count it again (a dry run writes nothing and counts it once per process). Dry runs download
nothing; they report the backlog all the same.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final, Literal

import structlog

from reaper.archive import Archiver, Outcome, ResultsClient, in_scope, results_expire_at
from reaper.metrics import Metrics, workspace_label
from reaper.models import ENDED, Batch, format_time

log = structlog.get_logger("reaper.archive")

# Failures of the archive directory itself: every other download would fail the same way.
_STORAGE_REASONS: Final = ("no_archive_dir", "write_error")
LOST_SUFFIX: Final = ".lost"


def _archived(names: frozenset[str], batch_id: str) -> bool:
    return f"{batch_id}.json" in names and f"{batch_id}.jsonl.gz" in names


@dataclass(slots=True)
class Scout:
    """One workspace's listing, seen page by page: the backlog and the most urgent candidates."""

    archiver: Archiver
    scope: Literal["all", "failed"]
    now: datetime
    keep: int
    since: datetime | None = None
    mark_lost: bool = False
    backlog: int = 0
    lost: int = 0
    _heap: list[tuple[float, int, Batch]] = field(default_factory=list)
    _order: itertools.count[int] = field(default_factory=itertools.count)
    _dir: Path | None = None
    _names: frozenset[str] = frozenset()
    _mark_failed: bool = False

    def on_page(self, page: Iterable[Batch]) -> None:
        """See one page of the listing (``plan_workspace``'s ``on_page``)."""
        for batch in page:
            if batch.processing_status == ENDED and in_scope(batch, self.scope):
                self._see(batch)

    def candidates(self) -> list[Batch]:
        """Return the candidates kept, most urgent first."""
        return [batch for _key, _n, batch in sorted(self._heap, reverse=True)]

    def _see(self, batch: Batch) -> None:
        expires = results_expire_at(batch)
        names = self._day(batch)
        if _archived(names, batch.id):
            return
        if expires <= self.now:
            marked = f"{batch.id}{LOST_SUFFIX}" in names
            if not marked and (self.since is None or expires > self.since):
                self.lost += 1
                self._mark(batch)
            return
        self.backlog += 1
        # A max-heap on expiry (negated): the least urgent leaves when the heap is full.
        entry = (-expires.timestamp(), next(self._order), batch)
        if len(self._heap) < self.keep:
            heapq.heappush(self._heap, entry)
        elif self.keep and entry[0] > self._heap[0][0]:
            heapq.heapreplace(self._heap, entry)

    def _day(self, batch: Batch) -> frozenset[str]:
        directory = self.archiver.path_for(batch).parent
        if directory != self._dir:
            self._dir = directory
            try:
                self._names = frozenset(os.listdir(directory))
            except OSError:  # no archive for that day yet (or no archive dir: the run says so)
                self._names = frozenset()
        return self._names

    def _mark(self, batch: Batch) -> None:
        """Leave the ``<id>.lost`` marker (live cycles only), so no restart counts it again."""
        log.warning(
            "archive.results_lost",
            id=batch.id,
            workspace=workspace_label(batch.workspace),
            expired_at=format_time(results_expire_at(batch)),
            consequence="its results expired before they were archived",
        )
        if not self.mark_lost or self._mark_failed:
            return
        path = self.archiver.path_for(batch).with_name(f"{batch.id}{LOST_SUFFIX}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"id": batch.id, "seen_at": format_time(self.now)}) + "\n")
        except OSError as exc:
            self._mark_failed = True  # the archive dir is the problem; the run will say so
            log.warning("archive.lost_mark_failed", path=str(path), error=str(exc))


@dataclass(frozen=True, slots=True)
class AheadReport:
    """What one workspace's archive-ahead did."""

    archived: int
    failed: int
    backlog: int
    min_expiry_seconds: float | None
    stopped: str | None = None


class ArchiveAhead:
    """Archive every ended batch in scope ahead of deletion; built once per command."""

    def __init__(
        self,
        archiver: Archiver,
        *,
        scope: Literal["all", "failed"],
        max_downloads: int,
        concurrency: int,
        metrics: Metrics,
    ) -> None:
        self.archiver = archiver
        self.scope: Literal["all", "failed"] = scope
        self.max_downloads = max_downloads
        self.concurrency = max(1, concurrency)
        self.metrics = metrics
        # The previous listing of each workspace in this process: a dry run counts a loss once.
        self._since: dict[str | None, datetime] = {}

    def scout(self, workspace: str | None, now: datetime, *, dry_run: bool) -> Scout:
        """Return the scout to feed with the workspace's pages, listed at ``now``."""
        self.metrics.init_workspace(workspace)
        return Scout(
            self.archiver,
            self.scope,
            now,
            keep=2 * self.max_downloads + 1,
            since=self._since.get(workspace),
            mark_lost=not dry_run,
        )

    async def run(
        self,
        scout: Scout,
        workspace: str | None,
        client: ResultsClient,
        *,
        dry_run: bool,
        now: datetime,
        tried: frozenset[str] = frozenset(),
        stop: asyncio.Event | None = None,
    ) -> AheadReport:
        """Download the most urgent candidates, record the backlog left, and report.

        ``tried``: the ids the cycle's deletes already archived or tried to (not tried again).
        """
        self._since[workspace] = scout.now
        label = workspace_label(workspace)
        if scout.lost:
            self.metrics.results_lost.labels(workspace=label).inc(scout.lost)
        todo = [] if dry_run else scout.candidates()[: 2 * self.max_downloads]
        archived: set[str] = set()
        failed = 0
        stopped: str | None = None
        if todo and not await asyncio.to_thread(self.archiver.root.is_dir):
            failed, todo = 1, []
            stopped = f"no_archive_dir: {self.archiver.root} is not a directory"
            self._stopped(label, stopped)
        if todo:
            # File checks, no request: the cycle's own deletes archived some of them already.
            archived = await asyncio.to_thread(_on_disk, self.archiver, todo)
            # A delete whose archive failed a moment ago is left to the next cycle.
            todo = [b for b in todo if b.id not in archived and b.id not in tried]
            todo = todo[: self.max_downloads]  # most urgent first, in this order
        queue = iter(todo)

        async def worker() -> None:
            nonlocal failed, stopped
            for batch in queue:
                if stopped is not None or (stop is not None and stop.is_set()):
                    return
                result = await self.archiver.archive(batch, client)
                if result.outcome in (Outcome.ARCHIVED, Outcome.ALREADY):
                    archived.add(batch.id)
                elif result.outcome is Outcome.FAILED:
                    failed += 1
                    reason = result.reason or ""
                    if reason.startswith(_STORAGE_REASONS) and stopped is None:
                        stopped = reason
                        self._stopped(label, reason)

        if todo:
            async with asyncio.TaskGroup() as workers:
                for _ in range(min(self.concurrency, len(todo))):
                    workers.create_task(worker())
        left = [b for b in scout.candidates() if b.id not in archived]
        backlog = max(0, scout.backlog - (len(scout.candidates()) - len(left)))
        soonest = min((results_expire_at(b) for b in left), default=None)
        min_expiry = None if soonest is None else max(0.0, (soonest - now).total_seconds())
        self.metrics.set_archive_backlog(workspace, backlog, min_expiry)
        report = AheadReport(len(archived), failed, backlog, min_expiry, stopped)
        log.info(
            "archive.ahead",
            workspace=label,
            dry_run=dry_run,
            archived=report.archived,
            failed=failed,
            backlog=backlog,
            lost=scout.lost,
            min_expiry_seconds=None if min_expiry is None else round(min_expiry),
        )
        return report

    def _stopped(self, label: str, reason: str) -> None:
        log.error(
            "archive.stopped",
            workspace=label,
            reason=reason,
            root=str(self.archiver.root),
            consequence="no more archiving in this workspace this cycle; "
            "no batch in scope is deleted without its archive",
        )


def _on_disk(archiver: Archiver, batches: Iterable[Batch]) -> set[str]:
    """Return the ids whose archive and sidecar are in place (no hashing: file checks)."""
    found = set()
    for batch in batches:
        path = archiver.path_for(batch)
        if path.is_file() and path.with_name(f"{batch.id}.json").is_file():
            found.add(batch.id)
    return found
