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
import contextlib
import errno
import gzip
import hashlib
import json
import os
import re
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, Final, Literal, Protocol

import structlog

from reaper.confirm import confirm_gone
from reaper.errors import ApiError, NotFoundError
from reaper.metrics import Metrics, workspace_label
from reaper.models import ENDED, Batch, format_time

RESULT_TYPES: Final = ("succeeded", "errored", "canceled", "expired")
SIDECAR_FORMAT: Final = 1
# Hand the worker thread about a MiB at a time: few thread hops, and bounded memory.
_FEED_BYTES: Final = 1 << 20
# One result line holds at most one Message (128k output tokens is well under 2 MiB of JSON); a body
# without newlines must not grow the carry buffer without bound.
_MAX_LINE_BYTES: Final = 64 << 20
_MAX_SIDECAR_BYTES: Final = 1 << 20
# Level 1 keeps up with a fast download on one core (~160 MB/s on answer text, 3.4:1); level 6
# (zlib's default) gains a fifth in size for six times the CPU (25 MB/s, 4.3:1), measured.
_GZIP_LEVEL: Final = 1
_FILE_MODE: Final = 0o640  # results are customer data: owner and group (a backup sidecar) only
_DIR_MODE: Final = 0o750
# Ids become file names: refuse anything that could leave the directory or hide a file.
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


class FileLayer:
    """The file operations the archiver performs; tests subclass it to inject write errors."""

    def makedirs(self, path: Path) -> None:
        """Create ``path`` and missing parents, fsyncing each new directory's parent."""
        missing: list[Path] = []
        probe = path
        while not probe.is_dir():
            missing.append(probe)
            probe = probe.parent
        for directory in reversed(missing):
            with contextlib.suppress(FileExistsError):
                directory.mkdir(mode=_DIR_MODE)
            self.fsync_dir(directory.parent)

    def create(self, path: Path) -> IO[bytes]:
        """Create ``path`` exclusively for writing (it must not exist)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE)
        return os.fdopen(fd, "wb")

    def fsync(self, file: IO[bytes]) -> None:
        """Flush ``file`` to the device."""
        file.flush()
        os.fsync(file.fileno())

    def replace(self, source: Path, target: Path) -> None:
        """Rename ``source`` over ``target`` atomically (same directory)."""
        os.replace(source, target)

    def fsync_dir(self, path: Path) -> None:
        """Make the directory's entries (a rename, a new file) durable."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def unlink(self, path: Path) -> None:
        """Remove ``path`` if it exists."""
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class _Rejected(Exception):
    """The results do not verify, or could not be written; ``reason`` says which and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Written:
    bytes: int
    lines: int


class _Sink:
    """Verify, hash and gzip one results body into temp files; commit them or leave nothing.

    Used from worker threads one call at a time; the lock lets ``abort`` (on the event loop) wait
    for a write still running in a thread of a cancelled task before it closes and removes files.
    """

    def __init__(self, fs: FileLayer, path: Path, batch: Batch) -> None:
        self._fs = fs
        self._batch = batch
        self._path = path
        self._sidecar = sidecar_path(path)
        self._expected = batch.request_counts.total
        self._lock = threading.Lock()
        self._closed = False
        self._done = False
        self._raw: IO[bytes] | None = None
        self._gzip: gzip.GzipFile | None = None
        self._sha = hashlib.sha256()
        self._body_bytes = 0
        self._carry = bytearray()
        self.lines = 0
        self._line_no = 0
        self._types: Counter[str] = Counter()
        # hash() of each custom_id: ~90 bytes a line (measured), ~9 MiB at the API's cap of
        # 100,000 requests a batch; the only state that grows with the results.
        self._seen: set[int] = set()
        suffix = f".{os.getpid()}.{threading.get_ident()}.{time.monotonic_ns()}.tmp"
        self._tmp = path.with_name(f".{path.name}{suffix}")
        self._tmp_sidecar = path.with_name(f".{self._sidecar.name}{suffix}")

    @property
    def done(self) -> bool:
        return self._done

    def open(self) -> None:
        """Create the directory and the temp file (removing temps a crashed run left behind)."""
        with self._lock:
            if self._closed:  # aborted (a cancelled task) before this thread got to run
                raise _Rejected("aborted: the archive was abandoned")
            self._fs.makedirs(self._path.parent)
            for stale in self._path.parent.glob(f".{self._batch.id}.json*.tmp"):
                self._fs.unlink(stale)
            self._raw = self._fs.create(self._tmp)
            self._gzip = gzip.GzipFile(
                filename=self._path.name.removesuffix(".gz"),
                mode="wb",
                compresslevel=_GZIP_LEVEL,
                fileobj=self._raw,
                mtime=0,
            )

    def feed(self, chunks: Iterable[bytes]) -> None:
        """Write and verify the next chunks of the body."""
        with self._lock:
            packed, _ = self._files()
            for chunk in chunks:
                self._sha.update(chunk)
                self._body_bytes += len(chunk)
                packed.write(chunk)
                self._split(chunk)

    def finish(
        self, sidecar: Callable[[_Written, str, dict[str, int]], dict[str, Any]]
    ) -> _Written:
        """Verify the count, then fsync and rename the archive and its sidecar into place."""
        with self._lock:
            packed, raw = self._files()
            if self._carry:
                self._line(bytes(self._carry))
                self._carry.clear()
            if self.lines != self._expected:
                raise _Rejected(
                    f"short_stream: {self.lines} result lines, request_counts total "
                    f"{self._expected} ({self._body_bytes} bytes read)"
                )
            packed.close()
            self._fs.fsync(raw)
            size = raw.tell()
            raw.close()
            written = _Written(bytes=size, lines=self.lines)
            document = sidecar(written, self._sha.hexdigest(), dict(self._types))
            document["gzip_sha256"] = _file_sha256(self._tmp)
            document["uncompressed_bytes"] = self._body_bytes
            with self._fs.create(self._tmp_sidecar) as out:
                out.write(json.dumps(document, indent=2, sort_keys=True).encode() + b"\n")
                self._fs.fsync(out)
            # Archive first, sidecar second: a crash between the renames leaves no sidecar or an old
            # one that does not match, and the next cycle downloads again.
            self._fs.replace(self._tmp, self._path)
            self._fs.replace(self._tmp_sidecar, self._sidecar)
            self._fs.fsync_dir(self._path.parent)
            self._done = True
            self._closed = True
            return written

    def abort(self) -> None:
        """Close and remove the temp files, unless the archive was committed."""
        with self._lock:
            if self._done:
                return
            self._closed = True
            for closing in (self._gzip, self._raw):
                if closing is not None:
                    # The write error that got us here may strike again on close; nothing to keep.
                    with contextlib.suppress(OSError, ValueError):
                        closing.close()
            for tmp in (self._tmp, self._tmp_sidecar):
                with contextlib.suppress(OSError):
                    self._fs.unlink(tmp)

    def _files(self) -> tuple[gzip.GzipFile, IO[bytes]]:
        if self._closed or self._gzip is None or self._raw is None:
            raise _Rejected("aborted: the archive was abandoned")
        return self._gzip, self._raw

    def _split(self, chunk: bytes) -> None:
        start = 0
        if self._carry:
            end = chunk.find(b"\n")
            if end < 0:
                self._extend_carry(chunk)
                return
            self._carry += chunk[:end]
            self._line(bytes(self._carry))
            self._carry.clear()
            start = end + 1
        while (end := chunk.find(b"\n", start)) >= 0:
            self._line(chunk[start:end])
            start = end + 1
        self._extend_carry(chunk[start:])

    def _extend_carry(self, rest: bytes) -> None:
        self._carry += rest
        if len(self._carry) > _MAX_LINE_BYTES:
            raise _Rejected(
                f"line_too_long: line {self._line_no + 1} exceeds {_MAX_LINE_BYTES} bytes"
            )

    def _line(self, raw: bytes) -> None:
        self._line_no += 1
        if not raw.strip():
            return  # a blank line carries no result; it is archived as served all the same
        where = f"line {self._line_no}"
        try:
            item = json.loads(raw)
        except ValueError:
            raise _Rejected(f"invalid_line: {where} is not JSON") from None
        if not isinstance(item, dict):
            raise _Rejected(f"invalid_line: {where} is not a JSON object")
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            raise _Rejected(f"invalid_line: {where} has no string custom_id")
        result = item.get("result")
        kind = result.get("type") if isinstance(result, dict) else None
        if kind not in RESULT_TYPES:
            raise _Rejected(f"invalid_line: {where} has no result.type in {'|'.join(RESULT_TYPES)}")
        key = hash(custom_id)
        if key in self._seen:
            raise _Rejected(f"duplicate_custom_id: {where} repeats custom_id {custom_id[:64]!r}")
        self._seen.add(key)
        self.lines += 1
        self._types[kind] += 1
        if self.lines > self._expected:
            raise _Rejected(
                f"too_many_lines: more than request_counts total {self._expected} result lines"
            )


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
        if batch.archived_at is not None and batch.archived_at <= now:
            return self._missing(batch, path, None)
        if batch.processing_status != ENDED or batch.results_url is None:
            return self._failed(
                batch, path, f"not_ended: status {batch.processing_status}, no results yet"
            )
        # Never create the root: a mistyped path or a volume that failed to mount would put the
        # archive on the container's own disk, lost at the next restart, after the delete.
        if not await asyncio.to_thread(self.root.is_dir):
            return self._failed(batch, path, f"no_archive_dir: {self.root} is not a directory")
        try:
            existing = await asyncio.to_thread(_read_matching_sidecar, batch, path)
        except OSError as exc:  # unreadable archive directory: the write would fail as well
            return self._failed(batch, path, f"write_error: {exc}")
        if existing is not None:
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
        return await self._download(batch, client, path)

    async def _download(self, batch: Batch, client: ResultsClient, path: Path) -> ArchiveOutcome:
        started = time.monotonic()
        sink = _Sink(self._fs, path, batch)
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

            def sidecar(written: _Written, sha256: str, types: dict[str, int]) -> dict[str, Any]:
                return {
                    "format": SIDECAR_FORMAT,
                    "id": batch.id,
                    "workspace": batch.workspace,
                    "batch": batch_to_api(batch),
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
        except _Rejected as exc:
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


def sidecar_path(archive: Path) -> Path:
    """Return the sidecar's path for an archive path (``<id>.jsonl.gz`` -> ``<id>.json``)."""
    return archive.with_name(archive.name.removesuffix(".jsonl.gz") + ".json")


def batch_to_api(batch: Batch) -> dict[str, Any]:
    """Render a batch as the API's ``MessageBatch`` JSON object."""
    counts = batch.request_counts

    def when(value: datetime | None) -> str | None:
        return None if value is None else format_time(value)

    return {
        "id": batch.id,
        "type": "message_batch",
        "processing_status": batch.processing_status,
        "request_counts": {
            "processing": counts.processing,
            "succeeded": counts.succeeded,
            "errored": counts.errored,
            "canceled": counts.canceled,
            "expired": counts.expired,
        },
        "created_at": format_time(batch.created_at),
        "expires_at": when(batch.expires_at),
        "ended_at": when(batch.ended_at),
        "cancel_initiated_at": when(batch.cancel_initiated_at),
        "archived_at": when(batch.archived_at),
        "results_url": batch.results_url,
    }


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
    if document.get("gzip_sha256") != _file_sha256(path):
        return None
    return document


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(_FEED_BYTES):
            digest.update(block)
    return digest.hexdigest()
