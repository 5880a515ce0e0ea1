"""Archive an ended batch's results to disk, verified, before the cycle deletes the batch.

Layout: ``<root>/<workspace or default>/<YYYY-MM-DD of created_at, UTC>/<batch id>.jsonl.gz`` holds
the results body exactly as the API served it, gzip-compressed; ``<batch id>.json`` next to it (the
sidecar) records the batch object, the line count, the sha256 of the uncompressed body and of the
``.gz`` file, sizes and when it was written. A batch is safe to delete only when every line of its
results parsed as a result and the count equals the batch's ``request_counts`` total, and both files
are fsynced and renamed into place. Anything else keeps the batch; nothing raises out of
``Archiver.archive`` but cancellation.

Memory stays flat: the body is streamed chunk by chunk, lines split across chunks are joined in a
carry buffer, and the CPU-heavy work (JSON parsing, hashing, gzip, writes, fsync) runs in a worker
thread on about a MiB at a time so that a 256 MB download never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import errno
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import structlog

from reaper.archive_sink import (
    RESULT_TYPES,
    FileLayer,
    Rejected,
    ResultsSink,
    Written,
    file_sha256,
    sidecar_path,
)
from reaper.confirm import confirm_gone
from reaper.errors import ApiError, NotFoundError
from reaper.metrics import Metrics, workspace_label
from reaper.models import ENDED, Batch, format_time

SIDECAR_FORMAT: Final = 1
# Hand the worker thread about a MiB at a time: few thread hops, and bounded memory.
_FEED_BYTES: Final = 1 << 20
_MAX_SIDECAR_BYTES: Final = 1 << 20
# Ids become file names: refuse anything that could leave the directory or hide a file.
# The API keeps a batch's results this long after its creation (``archived_at`` says when, once
# it has passed; shared/API-NOTES.md).
RESULTS_WINDOW: Final = timedelta(days=29)
_SAFE_NAME: Final = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,199}")

log = structlog.get_logger("reaper.archive")


class Outcome(StrEnum):
    """What archiving one batch came to (the ``outcome`` label of ``reaper_archive_total``)."""

    ARCHIVED = "archived"
    ALREADY = "already"
    FAILED = "failed"
    MISSING = "missing"


@dataclass(frozen=True, slots=True)
class ArchiveOutcome:
    """The result of ``Archiver.archive``: delete the batch only if ``ok_to_delete``."""

    outcome: Outcome
    ok_to_delete: bool
    reason: str | None
    request_id: str | None
    bytes: int
    lines: int
    path: Path


class ResultsBody(Protocol):
    """A results body being downloaded (``reaper.client.ResultsStream``)."""

    request_id: str | None

    def __aiter__(self) -> AsyncIterator[bytes]:
        """Iterate over the body's bytes as they arrive."""
        ...


class ResultsClient(Protocol):
    """The part of ``reaper.client.BatchClient`` the archiver uses."""

    def stream_results(self, batch: Batch) -> AbstractAsyncContextManager[ResultsBody]:
        """Open GET ``batch.results_url`` and yield its body chunk by chunk."""
        ...

    async def retrieve(self, batch_id: str, workspace: str | None) -> Batch:
        """Fetch one batch as it is now."""
        ...


def results_expire_at(batch: Batch) -> datetime:
    """Return when the batch's results go: ``archived_at``, or 29 days after creation."""
    return batch.archived_at if batch.archived_at is not None else batch.created_at + RESULTS_WINDOW


def in_scope(batch: Batch, scope: Literal["all", "failed"]) -> bool:
    """Tell whether ``REAPER_ARCHIVE_SCOPE`` covers the batch (``failed``: errored or expired)."""
    return scope == "all" or batch.has_failures


class Archiver:
    """Stream ended batches' results into ``root`` and say whether each may be deleted."""

    def __init__(
        self,
        root: Path,
        *,
        missing: Literal["keep", "delete"],
        metrics: Metrics,
        now: Callable[[], datetime],
        fs: FileLayer | None = None,
    ) -> None:
        self.root = root
        self.missing = missing
        self._metrics = metrics
        self._now = now
        self._fs = fs if fs is not None else FileLayer()

    def path_for(self, batch: Batch) -> Path:
        """Return where the batch's results archive goes (the sidecar is ``sidecar_path`` of it)."""
        day = batch.created_at.astimezone(UTC).strftime("%Y-%m-%d")
        return self.root / workspace_label(batch.workspace) / day / f"{batch.id}.jsonl.gz"

    async def archive(self, batch: Batch, client: ResultsClient) -> ArchiveOutcome:
        """Archive the batch's results unless already done; never raise for a failure to archive."""
        path = self.path_for(batch)
        names = (batch.id, workspace_label(batch.workspace))
        if not all(_SAFE_NAME.fullmatch(name) for name in names):
            return self._failed(batch, path, f"unsafe_name: cannot use {names!r} as file names")
        now = self._now()
        # Never create the root: a mistyped path or a volume that failed to mount would put the
        # archive on the container's own disk, lost at the next restart, after the delete.
        root_ok = await asyncio.to_thread(self.root.is_dir)
        if root_ok:
            # First: an archive on disk (archived ahead) outlives the results' 29 days.
            try:
                existing = await asyncio.to_thread(_read_matching_sidecar, batch, path)
            except OSError as exc:  # unreadable archive directory: the write would fail as well
                return self._failed(batch, path, f"write_error: {exc}")
            if existing is not None:
                return self._already(batch, path, existing)
        if batch.archived_at is not None and batch.archived_at <= now:
            return self._missing(batch, path, None)
        if batch.processing_status != ENDED or batch.results_url is None:
            return self._failed(
                batch, path, f"not_ended: status {batch.processing_status}, no results yet"
            )
        if not root_ok:
            return self._failed(batch, path, f"no_archive_dir: {self.root} is not a directory")
        return await self._download(batch, client, path)

    def _already(self, batch: Batch, path: Path, existing: dict[str, Any]) -> ArchiveOutcome:
        log.info(
            "archive.already",
            id=batch.id,
            workspace=workspace_label(batch.workspace),
            lines=existing["lines"],
            bytes=existing["bytes"],
            path=str(path),
        )
        return self._record(
            batch,
            ArchiveOutcome(
                outcome=Outcome.ALREADY,
                ok_to_delete=True,
                reason=None,
                request_id=None,
                bytes=int(existing["bytes"]),
                lines=int(existing["lines"]),
                path=path,
            ),
        )

    async def _download(self, batch: Batch, client: ResultsClient, path: Path) -> ArchiveOutcome:
        started = time.monotonic()
        sink = ResultsSink(self._fs, path, batch)
        request_id: str | None = None
        try:
            async with client.stream_results(batch) as body:
                request_id = body.request_id
                # Only once the results answered: a refused download creates no file at all.
                await asyncio.to_thread(sink.open)
                pending: list[bytes] = []
                size = 0
                async for chunk in body:
                    pending.append(chunk)
                    size += len(chunk)
                    if size >= _FEED_BYTES:
                        await asyncio.to_thread(sink.feed, pending)
                        pending, size = [], 0
                if pending:
                    await asyncio.to_thread(sink.feed, pending)
            archived_at = format_time(self._now())

            def sidecar(written: Written, sha256: str, types: dict[str, int]) -> dict[str, Any]:
                return {
                    "format": SIDECAR_FORMAT,
                    "id": batch.id,
                    "workspace": batch.workspace,
                    "batch": batch.to_api(),
                    "results_file": path.name,
                    "lines": written.lines,
                    "bytes": written.bytes,
                    "sha256": sha256,
                    "result_types": {kind: types.get(kind, 0) for kind in RESULT_TYPES},
                    "archived_at": archived_at,
                    "request_id": request_id,
                }

            written = await asyncio.to_thread(sink.finish, sidecar)
        except NotFoundError as exc:
            return await self._not_found(batch, client, path, exc)
        except ApiError as exc:
            return self._failed(batch, path, f"download: {exc}", exc.request_id or request_id)
        except Rejected as exc:
            return self._failed(batch, path, exc.reason, request_id)
        except OSError as exc:
            name = errno.errorcode.get(exc.errno or 0, "OSError")
            reason = f"write_error: {name}: {exc.strerror or exc}"
            return self._failed(batch, path, reason, request_id)
        except Exception as exc:  # a stream that breaks in any way keeps the batch
            return self._failed(batch, path, f"error: {type(exc).__name__}: {exc}", request_id)
        finally:
            sink.abort()
        self._metrics.archive_bytes.labels(workspace=workspace_label(batch.workspace)).inc(
            written.bytes
        )
        log.info(
            "archive.done",
            id=batch.id,
            workspace=workspace_label(batch.workspace),
            lines=written.lines,
            bytes=written.bytes,
            path=str(path),
            seconds=round(time.monotonic() - started, 3),
            request_id=request_id,
        )
        return self._record(
            batch,
            ArchiveOutcome(
                outcome=Outcome.ARCHIVED,
                ok_to_delete=True,
                reason=None,
                request_id=request_id,
                bytes=written.bytes,
                lines=written.lines,
                path=path,
            ),
        )

    async def _not_found(
        self, batch: Batch, client: ResultsClient, path: Path, exc: ApiError
    ) -> ArchiveOutcome:
        # A 404 means "gone" only once the batch is archived; 404s right after creation are known to
        # be transient (API-NOTES §5), so ask the batch itself rather than trusting the 404.
        if batch.archived_at is not None and batch.archived_at <= self._now():
            return self._missing(batch, path, exc.request_id)
        try:
            seen = await confirm_gone(client, batch.id, batch.workspace, tries=1)
        except ApiError as again:
            return self._retrieve_failed(batch, path, exc, again)
        except Exception as again:  # the batch is kept whatever went wrong
            return self._failed(batch, path, f"not_found: retrieve: {again!r}", exc.request_id)
        fresh = seen.batch
        if fresh is None:
            assert seen.last_not_found is not None
            return self._retrieve_failed(batch, path, exc, seen.last_not_found)
        if fresh.archived_at is not None and fresh.archived_at <= self._now():
            return self._missing(fresh, path, exc.request_id)
        return self._failed(
            batch,
            path,
            "not_found: results answered 404 but the batch is not archived",
            exc.request_id,
        )

    def _retrieve_failed(
        self, batch: Batch, path: Path, exc: ApiError, again: ApiError
    ) -> ArchiveOutcome:
        reason = f"not_found: results 404 ({exc.request_id}), and retrieve failed: {again}"
        return self._failed(batch, path, reason, again.request_id)

    def _missing(self, batch: Batch, path: Path, request_id: str | None) -> ArchiveOutcome:
        archived_at = format_time(batch.archived_at) if batch.archived_at else None
        log.info(
            "archive.missing",
            id=batch.id,
            workspace=workspace_label(batch.workspace),
            archived_at=archived_at,
            policy=self.missing,
            request_id=request_id,
        )
        return self._record(
            batch,
            ArchiveOutcome(
                outcome=Outcome.MISSING,
                ok_to_delete=self.missing == "delete",
                reason=f"results_gone: archived_at {archived_at}",
                request_id=request_id,
                bytes=0,
                lines=0,
                path=path,
            ),
        )

    def _failed(
        self, batch: Batch, path: Path, reason: str, request_id: str | None = None
    ) -> ArchiveOutcome:
        log.warning(
            "archive.failed",
            id=batch.id,
            workspace=workspace_label(batch.workspace),
            reason=reason,
            request_id=request_id,
        )
        return self._record(
            batch,
            ArchiveOutcome(
                outcome=Outcome.FAILED,
                ok_to_delete=False,
                reason=reason,
                request_id=request_id,
                bytes=0,
                lines=0,
                path=path,
            ),
        )

    def _record(self, batch: Batch, outcome: ArchiveOutcome) -> ArchiveOutcome:
        self._metrics.archive.labels(
            workspace=workspace_label(batch.workspace), outcome=outcome.outcome.value
        ).inc()
        return outcome


def _read_matching_sidecar(batch: Batch, path: Path) -> dict[str, Any] | None:
    """Return the sidecar if it vouches for a complete archive of this batch on disk, else None."""
    side = sidecar_path(path)
    try:
        with side.open("rb") as source:
            document = json.loads(source.read(_MAX_SIDECAR_BYTES + 1))
        stat = path.stat()
    except (FileNotFoundError, ValueError):
        return None
    if not isinstance(document, dict):
        return None
    expected = {
        "format": SIDECAR_FORMAT,
        "id": batch.id,
        "lines": batch.request_counts.total,
        "bytes": stat.st_size,
    }
    if any(document.get(key) != value for key, value in expected.items()):
        return None
    if document.get("gzip_sha256") != file_sha256(path):
        return None
    return document


__all__ = [
    "RESULT_TYPES",
    "SIDECAR_FORMAT",
    "ArchiveOutcome",
    "Archiver",
    "FileLayer",
    "Outcome",
    "ResultsBody",
    "ResultsClient",
    "sidecar_path",
]
