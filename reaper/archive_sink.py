"""Write one results body to disk, verified: hashed, gzipped, fsynced, renamed into place.

``ResultsSink`` checks every line of the body as it is written (JSON, a ``custom_id`` seen once,
a known ``result.type``, no more lines than ``request_counts``), and commits the archive and its
sidecar only when the count is exact; anything else raises ``Rejected`` and leaves no file behind.
It runs in worker threads, one call at a time. ``FileLayer`` is every file operation it makes
(tests subclass it to inject write errors).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from reaper.models import Batch

RESULT_TYPES: Final = ("succeeded", "errored", "canceled", "expired")
# Read files about a MiB at a time when hashing them.
_READ_BYTES: Final = 1 << 20
# One result line holds at most one Message (128k output tokens is well under 2 MiB of JSON); a body
# without newlines must not grow the carry buffer without bound.
_MAX_LINE_BYTES: Final = 64 << 20
# Level 1 keeps up with a fast download on one core (~160 MB/s on answer text, 3.4:1); level 6
# (zlib's default) gains a fifth in size for six times the CPU (25 MB/s, 4.3:1), measured.
_GZIP_LEVEL: Final = 1
_FILE_MODE: Final = 0o640  # results are customer data: owner and group (a backup sidecar) only
_DIR_MODE: Final = 0o750


def fsync_dir(path: Path) -> None:
    """Make the directory's entries (a rename, a new file) durable (also the ledger's, a plan's)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
        fsync_dir(path)

    def unlink(self, path: Path) -> None:
        """Remove ``path`` if it exists."""
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class Rejected(Exception):
    """The results do not verify, or could not be written; ``reason`` says which and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Written:
    bytes: int
    lines: int


class ResultsSink:
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
                raise Rejected("aborted: the archive was abandoned")
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

    def finish(self, sidecar: Callable[[Written, str, dict[str, int]], dict[str, Any]]) -> Written:
        """Verify the count, then fsync and rename the archive and its sidecar into place."""
        with self._lock:
            packed, raw = self._files()
            if self._carry:
                self._line(bytes(self._carry))
                self._carry.clear()
            if self.lines != self._expected:
                raise Rejected(
                    f"short_stream: {self.lines} result lines, request_counts total "
                    f"{self._expected} ({self._body_bytes} bytes read)"
                )
            packed.close()
            self._fs.fsync(raw)
            size = raw.tell()
            raw.close()
            written = Written(bytes=size, lines=self.lines)
            document = sidecar(written, self._sha.hexdigest(), dict(self._types))
            document["gzip_sha256"] = file_sha256(self._tmp)
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
            raise Rejected("aborted: the archive was abandoned")
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
            raise Rejected(
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
            raise Rejected(f"invalid_line: {where} is not JSON") from None
        if not isinstance(item, dict):
            raise Rejected(f"invalid_line: {where} is not a JSON object")
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            raise Rejected(f"invalid_line: {where} has no string custom_id")
        result = item.get("result")
        kind = result.get("type") if isinstance(result, dict) else None
        if kind not in RESULT_TYPES:
            raise Rejected(f"invalid_line: {where} has no result.type in {'|'.join(RESULT_TYPES)}")
        key = hash(custom_id)
        if key in self._seen:
            raise Rejected(f"duplicate_custom_id: {where} repeats custom_id {custom_id[:64]!r}")
        self._seen.add(key)
        self.lines += 1
        self._types[kind] += 1
        if self.lines > self._expected:
            raise Rejected(
                f"too_many_lines: more than request_counts total {self._expected} result lines"
            )


def sidecar_path(archive: Path) -> Path:
    """Return the sidecar's path for an archive path (``<id>.jsonl.gz`` -> ``<id>.json``)."""
    return archive.with_name(archive.name.removesuffix(".jsonl.gz") + ".json")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(_READ_BYTES):
            digest.update(block)
    return digest.hexdigest()
