"""The ledger: an append-only, fsynced record of every cancel and delete (SPEC section 2, Ledger).

``REAPER_LEDGER_DIR`` holds one JSON Lines file per UTC day, ``ledger-YYYY-MM-DD.jsonl``. Before a
cancel or delete is sent, the executor calls :meth:`FileLedger.intent`, which writes and fsyncs::

    {"phase": "intent", "ts": ..., "cycle_id": ..., "workspace": ..., "id": ..., "action": ...,
     "rule": ..., "batch": {the batch object as listed}}

and raises :class:`LedgerError` when it cannot (directory missing, read-only, disk full): the
request is then not sent. After the answer, :meth:`FileLedger.outcome` writes::

    {"phase": "done" | "failed" | "gone", "ts": ..., "cycle_id": ..., "workspace": ..., "id": ...,
     "action": ..., "status": HTTP status or null, "request_id": ... or null}

(plus ``"error"``, the error type, when the caller gives one). ``workspace`` is the workspace id,
or ``"default"`` for the key's own workspace, as in the logs, the metrics and the archive's paths.

Files are opened with ``O_APPEND`` for every line and never rewritten, truncated or rotated by
the reaper; each line goes out in as few ``write`` calls as the kernel allows, then ``fsync``; a
new day's file also has its directory fsynced. If a line was cut short (a crash or a full disk
mid-write), the next line starts on a fresh line, so one torn line never swallows the next.
Dry runs write nothing: :func:`open_ledger` returns the :data:`NULL_LEDGER` for them.
docs/ledger.md has ``jq`` queries over these files.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

from reaper.apikey import show
from reaper.archive_sink import fsync_dir
from reaper.metrics import workspace_label
from reaper.models import Batch, format_time

INTENT: Final = "intent"
DONE: Final = "done"
FAILED: Final = "failed"
GONE: Final = "gone"
OUTCOMES: Final = frozenset({DONE, FAILED, GONE})
ACTIONS: Final = frozenset({"cancel", "delete"})


class LedgerError(Exception):
    """A ledger line could not be written; for an intent, the request must not be sent."""


def ledger_path(directory: Path, when: datetime) -> Path:
    """Return the file that holds the lines written at ``when`` (its UTC day)."""
    return directory / f"ledger-{when.astimezone(UTC):%Y-%m-%d}.jsonl"


class Ledger(Protocol):
    """What the executor calls around each cancel and delete."""

    def intent(self, *, cycle_id: str, batch: Batch, action: str, rule: str) -> None:
        """Record (durably) that ``action`` is about to be sent for ``batch``."""

    def outcome(
        self,
        *,
        cycle_id: str,
        batch_id: str,
        workspace: str | None,
        action: str,
        phase: str,
        status: int | None,
        request_id: str | None,
        error: str | None = None,
    ) -> None:
        """Record how the request ended: ``done``, ``failed`` or ``gone`` (404)."""


class NullLedger:
    """No ledger (``REAPER_LEDGER_DIR`` unset, or a dry run): every call does nothing."""

    def intent(self, *, cycle_id: str, batch: Batch, action: str, rule: str) -> None:
        """Do nothing."""

    def outcome(
        self,
        *,
        cycle_id: str,
        batch_id: str,
        workspace: str | None,
        action: str,
        phase: str,
        status: int | None,
        request_id: str | None,
        error: str | None = None,
    ) -> None:
        """Do nothing."""


NULL_LEDGER: Final = NullLedger()


def _utc_now() -> datetime:
    return datetime.now(UTC)


class FileLedger:
    """The ledger in a directory that must exist; safe to call from several threads."""

    def __init__(self, directory: Path, *, clock: Callable[[], datetime] = _utc_now) -> None:
        self.directory = directory
        self._clock = clock
        self._lock = threading.Lock()

    def intent(self, *, cycle_id: str, batch: Batch, action: str, rule: str) -> None:
        """Write and fsync the intent line; raise LedgerError if it is not on disk."""
        now = self._clock()
        self._append(
            {
                "phase": INTENT,
                "ts": format_time(now),
                "cycle_id": cycle_id,
                "workspace": workspace_label(batch.workspace),
                "id": batch.id,
                "action": _action(action),
                "rule": str(rule),
                "batch": batch.to_api(),
            },
            now,
        )

    def outcome(
        self,
        *,
        cycle_id: str,
        batch_id: str,
        workspace: str | None,
        action: str,
        phase: str,
        status: int | None,
        request_id: str | None,
        error: str | None = None,
    ) -> None:
        """Write and fsync the outcome line; raise LedgerError if it is not on disk."""
        if phase not in OUTCOMES:
            raise ValueError(f"outcome phase {phase!r} is not one of {sorted(OUTCOMES)}")
        now = self._clock()
        record: dict[str, Any] = {
            "phase": phase,
            "ts": format_time(now),
            "cycle_id": cycle_id,
            "workspace": workspace_label(workspace),
            "id": batch_id,
            "action": _action(action),
            "status": status,
            "request_id": request_id,
        }
        if error is not None:
            record["error"] = error
        self._append(record, now)

    def _append(self, record: dict[str, Any], now: datetime) -> None:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        data = line.encode("utf-8")
        path = ledger_path(self.directory, now)
        with self._lock:
            try:
                _append_line(path, data)
            except OSError as exc:
                reason = exc.strerror or type(exc).__name__
                raise LedgerError(
                    f"REAPER_LEDGER_DIR={show(str(self.directory))}: cannot write {path.name}: "
                    f"{reason}"
                ) from None


def _append_line(path: Path, data: bytes) -> None:
    """Append one line and fsync it; start it on a fresh line if the file ends mid-line."""
    # O_RDWR only to read the last byte back; every write goes to the end (O_APPEND).
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    fd = os.open(path, flags, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # a torn line before us (crash or full disk): isolate it
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    if size == 0:
        # A new day's file: its name must survive a crash too.
        fsync_dir(path.parent)


def _action(action: str) -> str:
    value = str(action)
    if value not in ACTIONS:
        raise ValueError(f"ledger action {value!r} is not one of {sorted(ACTIONS)}")
    return value


def open_ledger(
    directory: Path | None, *, dry_run: bool, clock: Callable[[], datetime] = _utc_now
) -> Ledger:
    """Return the ledger to use: a FileLedger, or the null one when unset or in a dry run."""
    if directory is None or dry_run:
        return NULL_LEDGER
    return FileLedger(directory, clock=clock)
