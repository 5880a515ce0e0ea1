"""The archiver saves verified results before a delete, and says no whenever it could not."""

from __future__ import annotations

import asyncio
import errno
import gzip
import hashlib
import itertools
import json
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any, Literal, cast

import anyio
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from reaper import archive as archive_module
from reaper import archive_sink
from reaper.archive import Archiver, FileLayer, Outcome, sidecar_path
from reaper.errors import ApiError, ConnectionFailed, NotFoundError
from reaper.metrics import Metrics
from reaper.models import ENDED, IN_PROGRESS, Batch, RequestCounts
from tests import helpers

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CREATED = datetime(2026, 2, 20, 23, 30, 5, 123456, tzinfo=UTC)

pytestmark = pytest.mark.anyio


def make_batch(
    batch_id: str = "msgbatch_01abc",
    *,
    counts: RequestCounts | None = None,
    workspace: str | None = None,
    archived_at: datetime | None = None,
    status: str = ENDED,
) -> Batch:
    """A batch created at CREATED with ``counts`` (5 succeeded, 2 errored, 1 expired)."""
    counts = counts if counts is not None else RequestCounts(succeeded=5, errored=2, expired=1)
    return helpers.make_batch(
        batch_id,
        status,
        created_ago=timedelta(0),
        now=CREATED,
        succeeded=counts.succeeded,
        errored=counts.errored,
        canceled=counts.canceled,
        expired=counts.expired,
        workspace=workspace,
        archived_at=archived_at,
    )


def result_line(number: int, kind: str) -> bytes:
    result: dict[str, Any] = {"type": kind}
    if kind == "succeeded":
        result["message"] = {
            "id": f"msg_{number:08d}",
            "type": "message",
            "role": "assistant",
            "content": [{"type": "text", "text": f"answer {number} \u00e9\u4e2d"}],
        }
    elif kind == "errored":
        result["error"] = {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": "bad params"},
            "request_id": f"req_{number}",
        }
    return json.dumps({"custom_id": f"request-{number:06d}", "result": result}).encode() + b"\n"


def results_body(counts: RequestCounts) -> bytes:
    kinds = (
        ["succeeded"] * counts.succeeded
        + ["errored"] * counts.errored
        + ["canceled"] * counts.canceled
        + ["expired"] * counts.expired
    )
    # Not in request order, as the API serves them.
    order = sorted(range(len(kinds)), key=lambda n: (n * 7919) % (len(kinds) or 1))
    return b"".join(result_line(n, kinds[n]) for n in order)


def split(body: bytes, size: int) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


class FakeResultsClient:
    """Serve each batch's results as given chunks; count requests like BatchClient does."""

    def __init__(self) -> None:
        self.chunks: dict[str, Sequence[bytes]] = {}
        self.break_after: dict[str, int] = {}
        self.open_error: dict[str, ApiError] = {}
        self.fresh: dict[str, Batch | ApiError] = {}
        self.requests_made: Counter[str] = Counter()
        self.between_chunks: Callable[[int], Any] | None = None

    def serve(self, batch: Batch, chunks: Sequence[bytes] | None = None) -> None:
        self.chunks[batch.id] = (
            chunks if chunks is not None else split(results_body(batch.request_counts), 1000)
        )

    @asynccontextmanager
    async def stream_results(self, batch: Batch) -> AsyncIterator[FakeBody]:
        self.requests_made["results"] += 1
        if batch.id in self.open_error:
            raise self.open_error[batch.id]
        yield FakeBody(self, batch.id)

    async def retrieve(self, batch_id: str, workspace: str | None) -> Batch:
        self.requests_made["retrieve"] += 1
        fresh = self.fresh[batch_id]
        if isinstance(fresh, ApiError):
            raise fresh
        return fresh


class FakeBody:
    """One download: the chunks, possibly breaking off like a dropped connection."""

    def __init__(self, client: FakeResultsClient, batch_id: str) -> None:
        self.request_id: str | None = f"req_results_{batch_id}"
        self._client = client
        self._batch_id = batch_id

    async def __aiter__(self) -> AsyncIterator[bytes]:
        limit = self._client.break_after.get(self._batch_id)
        for number, chunk in enumerate(self._client.chunks[self._batch_id]):
            if limit is not None and number >= limit:
                raise ConnectionFailed(
                    "results", None, "connection", "body broke off", batch_id=self._batch_id
                )
            if self._client.between_chunks is not None:
                await self._client.between_chunks(number)
            await asyncio.sleep(0)
            yield chunk


def not_found(batch_id: str) -> NotFoundError:
    return NotFoundError(
        "results", 404, "not_found_error", "Not found", "req_404", batch_id=batch_id
    )


def make_archiver(
    root: Path,
    metrics: Metrics,
    *,
    missing: Literal["keep", "delete"] = "keep",
    fs: FileLayer | None = None,
) -> Archiver:
    return Archiver(root, missing=missing, metrics=metrics, now=lambda: NOW, fs=fs)


def archive_count(metrics: Metrics, outcome: str, workspace: str = "default") -> float:
    value = metrics.registry.get_sample_value(
        "reaper_archive_total", {"workspace": workspace, "outcome": outcome}
    )
    return value or 0.0


def archived_bytes(metrics: Metrics, workspace: str = "default") -> float:
    value = metrics.registry.get_sample_value(
        "reaper_archive_bytes_total", {"workspace": workspace}
    )
    return value or 0.0


def files_under(root: Path) -> list[Path]:
    """Every file below root, hidden temp files included."""
    return sorted(p for p in root.rglob("*") if p.is_file())


# -- archive, then verify ---------------------------------------------------------------------


async def test_archive_writes_verified_results_and_sidecar(
    tmp_path: Path, metrics: Metrics
) -> None:
    """An intact stream lands gzip'd at the documented path with a sidecar that describes it."""
    batch = make_batch(workspace="wrkspc_01")
    client = FakeResultsClient()
    client.serve(batch)
    body = results_body(batch.request_counts)

    with capture_logs() as logs:
        outcome = await make_archiver(tmp_path, metrics).archive(batch, client)

    path = tmp_path / "wrkspc_01" / "2026-02-20" / "msgbatch_01abc.jsonl.gz"
    assert outcome.outcome is Outcome.ARCHIVED
    assert outcome.ok_to_delete
    assert outcome.path == path
    assert outcome.lines == 8
    assert outcome.bytes == path.stat().st_size
    assert outcome.request_id == "req_results_msgbatch_01abc"
    assert gzip.decompress(path.read_bytes()) == body
    side = json.loads(sidecar_path(path).read_text())
    assert side["id"] == batch.id
    assert side["lines"] == 8
    assert side["sha256"] == hashlib.sha256(body).hexdigest()
    assert side["uncompressed_bytes"] == len(body)
    assert side["bytes"] == path.stat().st_size
    assert side["gzip_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert side["result_types"] == {"succeeded": 5, "errored": 2, "canceled": 0, "expired": 1}
    assert side["archived_at"] == "2026-03-01T12:00:00.000000Z"
    assert side["workspace"] == "wrkspc_01"
    assert Batch.from_api(side["batch"], "wrkspc_01") == batch
    assert files_under(tmp_path) == [sidecar_path(path), path]
    assert archive_count(metrics, "archived", "wrkspc_01") == 1
    assert archived_bytes(metrics, "wrkspc_01") == path.stat().st_size
    assert [e["event"] for e in logs] == ["archive.done"]


async def test_archive_day_directory_uses_created_at_in_utc(
    tmp_path: Path, metrics: Metrics
) -> None:
    """The date directory is created_at's UTC day, whatever the zone the datetime carries."""
    local = CREATED.astimezone(timezone(timedelta(hours=5)))
    assert local.date().isoformat() == "2026-02-21"
    shifted = msgspec.structs.replace(make_batch(), created_at=local)
    path = make_archiver(tmp_path, metrics).path_for(shifted)
    assert path == tmp_path / "default" / "2026-02-20" / "msgbatch_01abc.jsonl.gz"


async def test_zero_request_batch_archives_an_empty_file(tmp_path: Path, metrics: Metrics) -> None:
    """A batch with no requests has nothing to lose: an empty archive verifies."""
    batch = make_batch(counts=RequestCounts(errored=0, expired=0))
    client = FakeResultsClient()
    client.serve(batch, [])

    outcome = await make_archiver(tmp_path, metrics).archive(batch, client)

    assert outcome.outcome is Outcome.ARCHIVED
    assert outcome.ok_to_delete
    assert outcome.lines == 0
    assert gzip.decompress(outcome.path.read_bytes()) == b""


async def test_crlf_blank_lines_and_last_line_without_newline_verify(
    tmp_path: Path, metrics: Metrics
) -> None:
    """Line endings the SDK accepts are accepted; the bytes are archived exactly as served."""
    batch = make_batch(counts=RequestCounts(succeeded=3, errored=0, expired=0))
    lines = [result_line(n, "succeeded").rstrip(b"\n") for n in range(3)]
    body = lines[0] + b"\r\n\n" + lines[1] + b"\n" + lines[2]
    client = FakeResultsClient()
    client.serve(batch, split(body, 7))

    outcome = await make_archiver(tmp_path, metrics).archive(batch, client)

    assert outcome.outcome is Outcome.ARCHIVED
    assert outcome.lines == 3
    assert gzip.decompress(outcome.path.read_bytes()) == body


# -- verification failures --------------------------------------------------------------------


def _corrupt(body: bytes) -> bytes:
    lines = body.splitlines(keepends=True)
    lines[3] = lines[3][: len(lines[3]) // 2] + b"\n"
    return b"".join(lines)


def _replace_line(body: bytes, line: bytes) -> bytes:
    lines = body.splitlines(keepends=True)
    lines[2] = line
    return b"".join(lines)


FULL = results_body(RequestCounts(succeeded=5, errored=2, expired=1))
BROKEN_BODIES = {
    "short_stream": FULL[: FULL.index(b"\n", len(FULL) // 2) + 1],
    "truncated_line": FULL[: len(FULL) - 10],
    "corrupt_line": _corrupt(FULL),
    "array_line": _replace_line(FULL, b"[1, 2]\n"),
    "no_custom_id": _replace_line(FULL, b'{"result": {"type": "succeeded"}}\n'),
    "numeric_custom_id": _replace_line(FULL, b'{"custom_id": 7, "result": {"type": "expired"}}\n'),
    "unknown_type": _replace_line(FULL, b'{"custom_id": "x", "result": {"type": "pending"}}\n'),
    "result_not_object": _replace_line(FULL, b'{"custom_id": "x", "result": "succeeded"}\n'),
    "duplicate_custom_id": _replace_line(FULL, FULL.splitlines(keepends=True)[0]),
    "extra_line": FULL + result_line(99, "succeeded"),
    "invalid_utf8": _replace_line(FULL, b'{"custom_id": "\xff\xfe", "result": {"type": "x"}}\n'),
}
REASONS = {
    "short_stream": "short_stream",
    "truncated_line": "invalid_line",
    "corrupt_line": "invalid_line",
    "array_line": "invalid_line",
    "no_custom_id": "invalid_line",
    "numeric_custom_id": "invalid_line",
    "unknown_type": "invalid_line",
    "result_not_object": "invalid_line",
    "duplicate_custom_id": "duplicate_custom_id",
    "extra_line": "too_many_lines",
    "invalid_utf8": "invalid_line",
}


@pytest.mark.parametrize("case", sorted(BROKEN_BODIES))
async def test_a_stream_that_does_not_verify_fails_and_leaves_no_file(
    tmp_path: Path, metrics: Metrics, case: str
) -> None:
    """Short, truncated, corrupt or over-long results keep the batch and leave nothing on disk."""
    batch = make_batch()
    client = FakeResultsClient()
    client.serve(batch, split(BROKEN_BODIES[case], 300))

    with capture_logs() as logs:
        outcome = await make_archiver(tmp_path, metrics).archive(batch, client)

    assert outcome.outcome is Outcome.FAILED
    assert not outcome.ok_to_delete
    assert outcome.reason is not None
    assert outcome.reason.startswith(REASONS[case] + ":")
    assert outcome.request_id == "req_results_msgbatch_01abc"
    assert files_under(tmp_path) == []
    assert archive_count(metrics, "failed") == 1
    assert archive_count(metrics, "archived") == 0
    assert archived_bytes(metrics) == 0
    [event] = logs
    assert event["event"] == "archive.failed"
    assert event["log_level"] == "warning"
    assert event["reason"] == outcome.reason
    assert event["request_id"] == "req_results_msgbatch_01abc"
    assert event["id"] == batch.id


async def test_a_line_longer_than_the_limit_fails(
    tmp_path: Path, metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body without newlines cannot grow the carry buffer without bound."""
    monkeypatch.setattr(archive_sink, "_MAX_LINE_BYTES", 1000)
    batch = make_batch()
    client = FakeResultsClient()
    client.serve(batch, [b"x" * 600] * 4)

    outcome = await make_archiver(tmp_path, metrics).archive(batch, client)

    assert outcome.outcome is Outcome.FAILED
    assert outcome.reason is not None
    assert outcome.reason.startswith("line_too_long:")
    assert files_under(tmp_path) == []


async def test_an_interrupted_download_fails_and_leaves_no_file(
    tmp_path: Path, metrics: Metrics
) -> None:
    """A connection breaking mid-body keeps the batch; the partial temp file is removed."""
    batch = make_batch()
    client = FakeResultsClient()
    client.serve(batch, split(FULL, 100))
    client.break_after[batch.id] = 5
    written: list[list[Path]] = []

    async def look(number: int) -> None:
        if number == 4:
            written.append(files_under(tmp_path))

    client.between_chunks = look

    with capture_logs() as logs:
        outcome = await make_archiver(tmp_path, metrics).archive(batch, client)

    assert written[0], "the temp file existed while downloading"
    assert outcome.outcome is Outcome.FAILED
    assert not outcome.ok_to_delete
    assert outcome.reason is not None
    assert outcome.reason.startswith("download: results msgbatch_01abc: no response")
    assert files_under(tmp_path) == []
    assert archive_count(metrics, "failed") == 1
    assert logs[0]["event"] == "archive.failed"


async def test_an_unexpected_exception_mid_stream_fails_without_raising(
    tmp_path: Path, metrics: Metrics
) -> None:
    """Whatever breaks inside the download, archive() returns failed instead of raising."""
    batch = make_batch()
    client = FakeResultsClient()
    client.serve(batch)

    async def explode(number: int) -> None:
        if number == 1:
            raise RuntimeError("boom")

    client.between_chunks = explode
    outcome = await make_archiver(tmp_path, metrics).archive(batch, client)

    assert outcome.outcome is Outcome.FAILED
    assert outcome.reason == "error: RuntimeError: boom"
    assert files_under(tmp_path) == []


async def test_a_refused_download_fails_with_the_request_id(
    tmp_path: Path, metrics: Metrics
) -> None:
    """An API error on the results request is a failure carrying the API's request id."""
    batch = make_batch()
    client = FakeResultsClient()
    client.open_error[batch.id] = ApiError(
        "results", 500, "api_error", "Internal server error", "req_500", batch_id=batch.id
    )

    with capture_logs() as logs:
        outcome = await make_archiver(tmp_path, metrics).archive(batch, client)

    assert outcome.outcome is Outcome.FAILED
    assert outcome.request_id == "req_500"
    assert outcome.reason is not None
    assert "500 api_error" in outcome.reason
    assert logs[0]["request_id"] == "req_500"
    assert files_under(tmp_path) == []


async def test_a_batch_that_has_not_ended_is_not_downloaded(
    tmp_path: Path, metrics: Metrics
) -> None:
    """Results of an unfinished batch do not exist yet: failed, and no request made."""
    batch = make_batch(status=IN_PROGRESS, counts=RequestCounts(processing=4, errored=0, expired=0))
    client = FakeResultsClient()

    outcome = await make_archiver(tmp_path, metrics).archive(batch, client)

    assert outcome.outcome is Outcome.FAILED
    assert outcome.reason is not None
    assert outcome.reason.startswith("not_ended:")
    assert client.requests_made["results"] == 0


@pytest.mark.parametrize(
    ("batch_id", "workspace"),
    [("../../etc/passwd", None), (".hidden", None), ("msgbatch_ok", "ws/../../x"), ("a b", None)],
)
async def test_ids_that_are_not_safe_file_names_are_refused(
    tmp_path: Path, metrics: Metrics, batch_id: str, workspace: str | None
) -> None:
    """An id or workspace cannot make the archiver write outside its directory."""
    batch = make_batch(batch_id, workspace=workspace)
    client = FakeResultsClient()
    client.serve(batch)

    outcome = await make_archiver(tmp_path / "root", metrics).archive(batch, client)

    assert outcome.outcome is Outcome.FAILED
    assert outcome.reason is not None
    assert outcome.reason.startswith("unsafe_name:")
    assert client.requests_made["results"] == 0
    assert files_under(tmp_path) == []


async def test_an_archive_root_that_does_not_exist_is_not_created(
    tmp_path: Path, metrics: Metrics
) -> None:
    """A missing root (a volume that did not mount) fails every archive instead of faking one."""
    batch = make_batch()
    client = FakeResultsClient()
    client.serve(batch)

    outcome = await make_archiver(tmp_path / "not-mounted", metrics).archive(batch, client)

    assert outcome.outcome is Outcome.FAILED
    assert not outcome.ok_to_delete
    assert outcome.reason is not None
    assert outcome.reason.startswith("no_archive_dir:")
    assert client.requests_made["results"] == 0
    assert files_under(tmp_path) == []
    assert not (tmp_path / "not-mounted").exists()


# -- disk full and other write errors ------------------------------------------------------------


class FailingWrites:
    """A file that accepts ``budget`` bytes, then fails writes with ``error``."""

    def __init__(self, inner: IO[bytes], budget: int, error: int) -> None:
        self._inner = inner
        self._budget = budget
        self._error = error

    def write(self, data: Any) -> int:
        if len(data) > self._budget:
            raise OSError(self._error, "No space left on device")
        self._budget -= len(data)
        return self._inner.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __enter__(self) -> FailingWrites:
        return self

    def __exit__(self, *exc: object) -> None:
        self._inner.close()


class DiskFull(FileLayer):
    """Fail writes past a byte budget on files whose name matches, like a full disk."""

    def __init__(self, budget: int, *, match: str = "", error: int = errno.ENOSPC) -> None:
        self.budget = budget
        self.match = match
        self.error = error

    def create(self, path: Path) -> IO[bytes]:
        inner = super().create(path)
        if self.match not in path.name:
            return inner
        return cast(IO[bytes], FailingWrites(inner, self.budget, self.error))


class FailingFsync(FileLayer):
    """Fail fsync of files (EIO), as a device that loses writes does."""

    def fsync(self, file: IO[bytes]) -> None:
        raise OSError(errno.EIO, "Input/output error")


class FailingRename(FileLayer):
    """Fail the rename of the sidecar, after the archive itself was renamed."""

    def replace(self, source: Path, target: Path) -> None:
        if target.suffix == ".json":
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        super().replace(source, target)


@pytest.mark.parametrize(
    ("fs", "reason"),
    [
        (DiskFull(0), "write_error: ENOSPC: No space left on device"),
        (DiskFull(2000), "write_error: ENOSPC: No space left on device"),
        (DiskFull(10, match=".json."), "write_error: ENOSPC: No space left on device"),
        (DiskFull(0, error=errno.EDQUOT), "write_error: EDQUOT: No space left on device"),
        (FailingFsync(), "write_error: EIO: Input/output error"),
    ],
    ids=["at-once", "mid-stream", "sidecar", "quota", "fsync"],
)
async def test_a_write_error_fails_the_archive_and_leaves_no_file(
    tmp_path: Path, metrics: Metrics, fs: FileLayer, reason: str
) -> None:
    """Disk full (or any write error) is an archive failure, not a crash, and nothing is left."""
    batch = make_batch(counts=RequestCounts(succeeded=300, errored=0, expired=0))
    client = FakeResultsClient()
    client.serve(batch, split(results_body(batch.request_counts), 4096))

    with capture_logs() as logs:
        outcome = await make_archiver(tmp_path, metrics, fs=fs).archive(batch, client)

    assert outcome.outcome is Outcome.FAILED
    assert not outcome.ok_to_delete
    assert outcome.reason == reason
    assert outcome.request_id == "req_results_msgbatch_01abc"
    assert files_under(tmp_path) == []
    assert archive_count(metrics, "failed") == 1
    assert archived_bytes(metrics) == 0
    assert logs[0]["event"] == "archive.failed"


class Recording(FileLayer):
    """Record the durability steps, in order, by kind and file name."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, str]] = []
        self._names: dict[int, str] = {}

    def create(self, path: Path) -> IO[bytes]:
        self.steps.append(("create", _kind(path)))
        file = super().create(path)
        self._names[id(file)] = _kind(path)
        return file

    def fsync(self, file: IO[bytes]) -> None:
        self.steps.append(("fsync", self._names[id(file)]))
        super().fsync(file)

    def replace(self, source: Path, target: Path) -> None:
        self.steps.append(("replace", f"{_kind(source)} -> {_kind(target)}"))
        super().replace(source, target)

    def fsync_dir(self, path: Path) -> None:
        self.steps.append(("fsync_dir", path.name))
        super().fsync_dir(path)


def _kind(path: Path) -> str:
    name = path.name
    if name.startswith("."):
        return "tmp.json" if ".json." in name else "tmp.gz"
    return "json" if name.endswith(".json") else "gz" if name.endswith(".gz") else name


async def test_both_files_are_fsynced_before_the_renames_and_the_directory_after(
    tmp_path: Path, metrics: Metrics
) -> None:
    """Durability: data reaches the disk before a name points at it; the renames do too."""
    batch = make_batch()
    client = FakeResultsClient()
    client.serve(batch)
    fs = Recording()

    outcome = await make_archiver(tmp_path, metrics, fs=fs).archive(batch, client)

    assert outcome.outcome is Outcome.ARCHIVED
    assert fs.steps == [
        # New directories are made durable in their parents as they are created.
        ("fsync_dir", tmp_path.name),
        ("fsync_dir", "default"),
        ("create", "tmp.gz"),
        ("fsync", "tmp.gz"),
        ("create", "tmp.json"),
        ("fsync", "tmp.json"),
        ("replace", "tmp.gz -> gz"),
        ("replace", "tmp.json -> json"),
        ("fsync_dir", "2026-02-20"),
    ]


async def test_a_failed_sidecar_rename_is_a_failure_and_the_next_run_redownloads(
    tmp_path: Path, metrics: Metrics
) -> None:
    """Without its sidecar an archive is not trusted: the batch is kept and downloaded again."""
    batch = make_batch()
    client = FakeResultsClient()
    client.serve(batch)

    first = await make_archiver(tmp_path, metrics, fs=FailingRename()).archive(batch, client)
    assert first.outcome is Outcome.FAILED
    assert not first.ok_to_delete
    assert not sidecar_path(first.path).exists()
    assert [p.name for p in files_under(tmp_path)] == ["msgbatch_01abc.jsonl.gz"]

    second = await make_archiver(tmp_path, metrics).archive(batch, client)
    assert second.outcome is Outcome.ARCHIVED
    assert client.requests_made["results"] == 2


async def test_temp_files_a_crashed_run_left_are_removed(tmp_path: Path, metrics: Metrics) -> None:
    """A kill -9 mid-download leaves a hidden temp; the next attempt cleans it up."""
    batch = make_batch()
    day = tmp_path / "default" / "2026-02-20"
    day.mkdir(parents=True)
    (day / ".msgbatch_01abc.jsonl.gz.1.2.3.tmp").write_bytes(b"partial")
    (day / ".msgbatch_01abc.json.1.2.3.tmp").write_bytes(b"{")
    (day / ".msgbatch_01other.jsonl.gz.1.2.3.tmp").write_bytes(b"someone else's")
    client = FakeResultsClient()
    client.serve(batch)

    outcome = await make_archiver(tmp_path, metrics).archive(batch, client)

    assert outcome.outcome is Outcome.ARCHIVED
    assert sorted(p.name for p in files_under(tmp_path)) == [
        ".msgbatch_01other.jsonl.gz.1.2.3.tmp",
        "msgbatch_01abc.json",
        "msgbatch_01abc.jsonl.gz",
    ]


async def test_cancelling_a_download_leaves_no_file(tmp_path: Path, metrics: Metrics) -> None:
    """A shutdown cancelling the archive mid-stream removes the temp file and propagates."""
    batch = make_batch(counts=RequestCounts(succeeded=2000, errored=0, expired=0))
    client = FakeResultsClient()
    client.serve(batch, split(results_body(batch.request_counts), 5_000))
    started = asyncio.Event()

    async def stall(number: int) -> None:
        if number == 30:
            started.set()
            await asyncio.sleep(3600)

    client.between_chunks = stall
    archiver = make_archiver(tmp_path, metrics)

    task = asyncio.create_task(archiver.archive(batch, client))
    await asyncio.wait_for(started.wait(), 10)
    assert files_under(tmp_path), "the temp file exists mid-download"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert files_under(tmp_path) == []


def test_an_abort_before_the_worker_thread_opens_the_file_wins(tmp_path: Path) -> None:
    """A task cancelled while its open() still waits for a thread never leaves a temp file."""
    path = tmp_path / "default" / "2026-02-20" / "msgbatch_01abc.jsonl.gz"
    sink = archive_sink.ResultsSink(FileLayer(), path, make_batch())
    sink.abort()
    with pytest.raises(archive_sink.Rejected):
        sink.open()
    assert files_under(tmp_path) == []


# -- re-runs ----------------------------------------------------------------------------------


async def test_a_rerun_finds_the_archive_and_does_not_download_again(
    tmp_path: Path, metrics: Metrics
) -> None:
    """A matching sidecar means already archived: ok to delete, no second request."""
    batch = make_batch()
    client = FakeResultsClient()
    client.serve(batch)
    archiver = make_archiver(tmp_path, metrics)
    first = await archiver.archive(batch, client)

    with capture_logs() as logs:
        second = await archiver.archive(batch, client)

    assert second.outcome is Outcome.ALREADY
    assert second.ok_to_delete
    assert (second.lines, second.bytes, second.path) == (first.lines, first.bytes, first.path)
    assert client.requests_made["results"] == 1
    assert archive_count(metrics, "already") == 1
    assert archived_bytes(metrics) == first.bytes
    assert [e["event"] for e in logs] == ["archive.already"]


def _set_lines(path: Path) -> None:
    side = sidecar_path(path)
    document = json.loads(side.read_text())
    document["lines"] = 7
    side.write_text(json.dumps(document))


def _other_id(path: Path) -> None:
    side = sidecar_path(path)
    document = json.loads(side.read_text())
    document["id"] = "msgbatch_other"
    side.write_text(json.dumps(document))


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _append(path: Path) -> None:
    with path.open("ab") as out:
        out.write(b"\0")


SPOILERS: dict[str, Callable[[Path], object]] = {
    "line count": _set_lines,
    "other id": _other_id,
    "archive changed": _flip_byte,
    "archive grew": _append,
    "archive gone": lambda path: path.unlink(),
    "sidecar not json": lambda path: sidecar_path(path).write_text("{not json"),
    "sidecar a list": lambda path: sidecar_path(path).write_text("[]"),
    "sidecar gone": lambda path: sidecar_path(path).unlink(),
}


@pytest.mark.parametrize("spoil", sorted(SPOILERS))
async def test_a_sidecar_that_does_not_match_means_download_again(
    tmp_path: Path, metrics: Metrics, spoil: str
) -> None:
    """Anything short of a matching sidecar and archive is downloaded and written again."""
    batch = make_batch()
    client = FakeResultsClient()
    client.serve(batch)
    archiver = make_archiver(tmp_path, metrics)
    first = await archiver.archive(batch, client)
    SPOILERS[spoil](first.path)

    second = await archiver.archive(batch, client)

    assert second.outcome is Outcome.ARCHIVED
    assert client.requests_made["results"] == 2
    assert gzip.decompress(second.path.read_bytes()) == results_body(batch.request_counts)
    assert json.loads(sidecar_path(second.path).read_text())["lines"] == 8
    assert sorted(p.name for p in files_under(tmp_path)) == [
        "msgbatch_01abc.json",
        "msgbatch_01abc.jsonl.gz",
    ]


# -- results gone -----------------------------------------------------------------------------


@pytest.mark.parametrize(("policy", "ok"), [("keep", False), ("delete", True)])
async def test_results_archived_by_the_api_follow_the_missing_policy(
    tmp_path: Path, metrics: Metrics, policy: Literal["keep", "delete"], ok: bool
) -> None:
    """archived_at in the past: nothing to download; keep or delete as configured."""
    batch = make_batch(archived_at=NOW - timedelta(days=1))
    client = FakeResultsClient()

    with capture_logs() as logs:
        outcome = await make_archiver(tmp_path, metrics, missing=policy).archive(batch, client)

    assert outcome.outcome is Outcome.MISSING
    assert outcome.ok_to_delete is ok
    assert client.requests_made["results"] == 0
    assert archive_count(metrics, "missing") == 1
    assert files_under(tmp_path) == []
    assert logs[0]["event"] == "archive.missing"
    assert logs[0]["policy"] == policy


async def test_archived_at_in_the_future_still_downloads(tmp_path: Path, metrics: Metrics) -> None:
    """A batch whose archival time has not come yet has its results: archive them."""
    batch = make_batch(archived_at=NOW + timedelta(hours=1))
    client = FakeResultsClient()
    client.serve(batch)

    outcome = await make_archiver(tmp_path, metrics, missing="delete").archive(batch, client)

    assert outcome.outcome is Outcome.ARCHIVED


@pytest.mark.parametrize(("policy", "ok"), [("keep", False), ("delete", True)])
async def test_a_404_for_a_batch_archived_since_listing_is_missing(
    tmp_path: Path, metrics: Metrics, policy: Literal["keep", "delete"], ok: bool
) -> None:
    """Results 404 and the batch, asked again, says it was archived: missing."""
    batch = make_batch()
    client = FakeResultsClient()
    client.open_error[batch.id] = not_found(batch.id)
    client.fresh[batch.id] = make_batch(archived_at=NOW - timedelta(minutes=5))

    outcome = await make_archiver(tmp_path, metrics, missing=policy).archive(batch, client)

    assert outcome.outcome is Outcome.MISSING
    assert outcome.ok_to_delete is ok
    assert outcome.request_id == "req_404"
    assert client.requests_made == Counter({"results": 1, "retrieve": 1})
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("archived_at", [None, NOW + timedelta(hours=1)])
async def test_a_404_for_a_batch_not_archived_is_a_failure(
    tmp_path: Path, metrics: Metrics, archived_at: datetime | None
) -> None:
    """Transient 404s exist: a 404 on results that should be there never allows a delete."""
    batch = make_batch()
    client = FakeResultsClient()
    client.open_error[batch.id] = not_found(batch.id)
    client.fresh[batch.id] = make_batch(archived_at=archived_at)

    outcome = await make_archiver(tmp_path, metrics, missing="delete").archive(batch, client)

    assert outcome.outcome is Outcome.FAILED
    assert not outcome.ok_to_delete
    assert outcome.reason is not None
    assert outcome.reason.startswith("not_found:")
    assert outcome.request_id == "req_404"
    assert archive_count(metrics, "failed") == 1
    assert archive_count(metrics, "missing") == 0


async def test_a_404_and_a_failed_retrieve_is_a_failure(tmp_path: Path, metrics: Metrics) -> None:
    """When the batch cannot be asked again, nothing is concluded: failed."""
    batch = make_batch()
    client = FakeResultsClient()
    client.open_error[batch.id] = not_found(batch.id)
    client.fresh[batch.id] = NotFoundError(
        "retrieve", 404, "not_found_error", "gone", "req_r404", batch_id=batch.id
    )

    outcome = await make_archiver(tmp_path, metrics, missing="delete").archive(batch, client)

    assert outcome.outcome is Outcome.FAILED
    assert not outcome.ok_to_delete
    assert outcome.request_id == "req_r404"


# -- chunk boundaries -------------------------------------------------------------------------


@st.composite
def chunkings(draw: st.DrawFn) -> tuple[RequestCounts, list[bytes]]:
    counts = RequestCounts(
        succeeded=draw(st.integers(0, 12)),
        errored=draw(st.integers(0, 4)),
        canceled=draw(st.integers(0, 4)),
        expired=draw(st.integers(0, 4)),
    )
    body = results_body(counts)
    cuts = sorted(set(draw(st.lists(st.integers(0, len(body)), max_size=40))))
    edges = [0, *cuts, len(body)]
    # Empty chunks included: a transport may yield them.
    return counts, [body[a:b] for a, b in itertools.pairwise(edges)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=chunkings(), feed_bytes=st.sampled_from([1, 64, 1 << 20]))
def test_any_chunking_of_a_valid_stream_verifies(
    case: tuple[RequestCounts, list[bytes]], feed_bytes: int
) -> None:
    """However the body is cut into chunks (and batched for the thread), it verifies exactly."""
    counts, chunks = case
    batch = make_batch(counts=counts)
    client = FakeResultsClient()
    client.serve(batch, chunks)
    metrics = Metrics()
    with tempfile.TemporaryDirectory() as root:
        original = archive_module._FEED_BYTES
        setattr(archive_module, "_FEED_BYTES", feed_bytes)  # noqa: B010 - a Final, on purpose
        try:
            outcome = anyio.run(make_archiver(Path(root), metrics).archive, batch, client)
        finally:
            setattr(archive_module, "_FEED_BYTES", original)  # noqa: B010
        assert outcome.outcome is Outcome.ARCHIVED, outcome.reason
        assert outcome.lines == counts.total
        body = b"".join(chunks)
        assert gzip.decompress(outcome.path.read_bytes()) == body
        side = json.loads(sidecar_path(outcome.path).read_text())
        assert side["sha256"] == hashlib.sha256(body).hexdigest()
        assert side["result_types"] == {
            "succeeded": counts.succeeded,
            "errored": counts.errored,
            "canceled": counts.canceled,
            "expired": counts.expired,
        }


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_chunking_of_a_short_stream_fails(data: st.DataObject) -> None:
    """Dropping any whole number of trailing lines is caught, wherever the chunks are cut."""
    counts = RequestCounts(succeeded=6, errored=0, expired=2)
    lines = results_body(counts).splitlines(keepends=True)
    keep = data.draw(st.integers(0, len(lines) - 1))
    body = b"".join(lines[:keep])
    size = data.draw(st.integers(1, max(1, len(body))))
    batch = make_batch(counts=counts)
    client = FakeResultsClient()
    client.serve(batch, split(body, size))
    with tempfile.TemporaryDirectory() as root:
        outcome = anyio.run(make_archiver(Path(root), Metrics()).archive, batch, client)
        assert outcome.outcome is Outcome.FAILED
        assert files_under(Path(root)) == []


def test_the_sidecar_batch_object_round_trips() -> None:
    """The sidecar's batch object is the API's shape and reads back as the same batch."""
    batch = make_batch(archived_at=NOW, workspace="wrkspc_9")
    data = batch.to_api()
    assert set(data) == {
        "id",
        "type",
        "processing_status",
        "request_counts",
        "created_at",
        "expires_at",
        "ended_at",
        "cancel_initiated_at",
        "archived_at",
        "results_url",
    }
    assert Batch.from_api(data, "wrkspc_9") == batch


async def test_an_archive_on_disk_outlives_the_results_window(
    tmp_path: Path, metrics: Metrics
) -> None:
    """Archived ahead, then past 29 days: the batch may go (already), it is not 'missing'."""
    batch = make_batch()
    client = FakeResultsClient()
    client.serve(batch)
    archiver = make_archiver(tmp_path, metrics)
    assert (await archiver.archive(batch, client)).outcome is Outcome.ARCHIVED
    expired = msgspec.structs.replace(batch, archived_at=NOW - timedelta(days=1))

    outcome = await archiver.archive(expired, client)

    assert outcome.outcome is Outcome.ALREADY
    assert outcome.ok_to_delete
    assert archive_count(metrics, "missing") == 0
