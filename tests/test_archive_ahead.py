"""Archive ahead of deletion and the ledger, wired into the cycle, against the emulator.

Every ended batch in scope is archived in the first cycle after it ends (most urgent first, capped,
after the cycle's actions); every cancel and delete has its intent line before the request and its
outcome line after; a missing or full archive or ledger directory deletes nothing unsaved and
sends nothing unrecorded.
"""

from __future__ import annotations

import asyncio
import errno
import json
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import pytest
from structlog.testing import capture_logs

from reaper.archive import Archiver, results_expire_at
from reaper.archive_ahead import ArchiveAhead
from reaper.archive_sink import FileLayer
from reaper.client import BatchClient
from reaper.commands.once import run_once
from reaper.cycle import build_archive_ahead, run_cycle
from reaper.emulator.state import EmulatorState
from reaper.ledger import FileLedger, ledger_path
from reaper.metrics import Metrics
from reaper.models import Batch, format_time
from reaper.settings import Settings, load_settings
from tests.test_archive import DiskFull, archive_count, files_under

pytestmark = pytest.mark.anyio

CLEAN = {"succeeded": 47, "canceled": 3}  # rule 7 (7 days)
FAILED = {"succeeded": 40, "errored": 6, "canceled": 3, "expired": 1}  # rule 6 (30 days)


def seed(
    state: EmulatorState,
    batch_id: str,
    *,
    days_ago: float,
    counts: dict[str, int] | None = None,
    ended: bool = True,
) -> None:
    created = state.now() - timedelta(days=days_ago)
    obj: dict[str, Any] = {
        "id": batch_id,
        "processing_status": "ended" if ended else "in_progress",
        "created_at": format_time(created),
        "request_counts": counts or CLEAN if ended else {"processing": 50},
    }
    if ended:
        obj["ended_at"] = format_time(created + timedelta(hours=2))
    state.seed_objects([obj])


def settings(base_url: str = "http://127.0.0.1:9", **env: str) -> Settings:
    return load_settings(
        {"REAPER_DRY_RUN": "false", "ANTHROPIC_BASE_URL": base_url, **env}, require_key=False
    )


def archived_ids(root: Path) -> set[str]:
    return {p.name.removesuffix(".jsonl.gz") for p in root.rglob("*.jsonl.gz")}


def sample(metrics: Metrics, name: str, workspace: str = "default") -> float | None:
    return metrics.registry.get_sample_value(name, {"workspace": workspace})


async def cycle(
    state: EmulatorState,
    client: BatchClient,
    metrics: Metrics,
    config: Settings,
    ahead: ArchiveAhead | None = None,
    *,
    fs: FileLayer | None = None,
) -> Any:
    saver = None
    if config.archive_dir is not None:
        layer = {} if fs is None else {"fs": fs}
        saver = ahead.archiver if ahead is not None else archiver(config, state, metrics, **layer)

    async def sleep(seconds: float) -> None:  # the cancel wait moves the emulator's clock
        state.advance(seconds)
        await asyncio.sleep(0)

    return await run_cycle(
        config, client, metrics=metrics, now=state.now, sleep=sleep, archiver=saver, ahead=ahead
    )


def archiver(config: Settings, state: EmulatorState, metrics: Metrics, **kw: Any) -> Archiver:
    assert config.archive_dir is not None
    return Archiver(config.archive_dir, missing="keep", metrics=metrics, now=state.now, **kw)


# -- archive ahead -------------------------------------------------------------------------------


async def test_every_ended_batch_in_scope_is_archived_in_its_first_cycle_deleted_or_not(
    tmp_path: Path, emulator: tuple[str, EmulatorState], client: BatchClient, metrics: Metrics
) -> None:
    """Kept batches are archived too; the next cycle checks files and downloads nothing."""
    _, state = emulator
    seed(state, "msgbatch_kept_clean", days_ago=2)
    seed(state, "msgbatch_kept_failed", days_ago=20, counts=FAILED)
    seed(state, "msgbatch_due", days_ago=10)
    seed(state, "msgbatch_running", days_ago=0.2, ended=False)
    config = settings(REAPER_ARCHIVE_DIR=str(tmp_path))

    report = await cycle(state, client, metrics, config)

    assert report.outcome.value == "success"
    assert archived_ids(tmp_path) == {"msgbatch_kept_clean", "msgbatch_kept_failed", "msgbatch_due"}
    assert {r.id for r in state.iter_records()} == {
        "msgbatch_kept_clean",
        "msgbatch_kept_failed",
        "msgbatch_running",
    }
    assert sample(metrics, "reaper_archive_backlog") == 0
    assert sample(metrics, "reaper_archive_backlog_min_expiry_seconds") is None
    downloads = state.stats.count("results")
    assert downloads == 3

    again = await cycle(state, client, metrics, config)
    assert again.outcome.value == "success"
    assert state.stats.count("results") == downloads  # a file check, no request


async def test_the_most_urgent_expiry_goes_first_within_the_cap(
    tmp_path: Path, emulator: tuple[str, EmulatorState], client: BatchClient, metrics: Metrics
) -> None:
    """At most REAPER_MAX_ACTIONS_PER_RUN downloads; the backlog and its soonest expiry show."""
    _, state = emulator
    for days in (1, 2, 3, 4, 5):
        seed(state, f"msgbatch_d{days}", days_ago=days, counts=FAILED)
    config = settings(REAPER_ARCHIVE_DIR=str(tmp_path), REAPER_MAX_ACTIONS_PER_RUN="2")

    await cycle(state, client, metrics, config)

    assert archived_ids(tmp_path) == {"msgbatch_d5", "msgbatch_d4"}
    assert state.stats.count("results") == 2
    assert sample(metrics, "reaper_archive_backlog") == 3
    soonest = state.now() - timedelta(days=3) + timedelta(days=29)
    expiry = sample(metrics, "reaper_archive_backlog_min_expiry_seconds")
    assert expiry == pytest.approx((soonest - state.now()).total_seconds(), abs=5)

    await cycle(state, client, metrics, config)
    await cycle(state, client, metrics, config)
    assert len(archived_ids(tmp_path)) == 5
    assert sample(metrics, "reaper_archive_backlog") == 0
    assert sample(metrics, "reaper_archive_backlog_min_expiry_seconds") is None


async def test_scope_failed_archives_failed_batches_and_deletes_the_others_unarchived(
    tmp_path: Path, emulator: tuple[str, EmulatorState], client: BatchClient, metrics: Metrics
) -> None:
    _, state = emulator
    seed(state, "msgbatch_clean_due", days_ago=10)
    seed(state, "msgbatch_clean_young", days_ago=2)
    seed(state, "msgbatch_failed_young", days_ago=2, counts=FAILED)
    config = settings(REAPER_ARCHIVE_DIR=str(tmp_path), REAPER_ARCHIVE_SCOPE="failed")

    await cycle(state, client, metrics, config)

    assert archived_ids(tmp_path) == {"msgbatch_failed_young"}
    assert "msgbatch_clean_due" not in {r.id for r in state.iter_records()}
    assert state.stats.count("results") == 1


async def test_results_gone_unarchived_are_counted_once_even_across_a_restart(
    tmp_path: Path, emulator: tuple[str, EmulatorState], client: BatchClient, metrics: Metrics
) -> None:
    _, state = emulator
    seed(state, "msgbatch_lost", days_ago=35, counts=FAILED)  # past 29 days: results gone
    config = settings(REAPER_ARCHIVE_DIR=str(tmp_path))

    with capture_logs() as logs:
        await cycle(state, client, metrics, config)
        await cycle(state, client, metrics, config)
    assert sample(metrics, "reaper_results_lost_total") == 1
    assert [e["id"] for e in logs if e["event"] == "archive.results_lost"] == ["msgbatch_lost"]

    restarted = Metrics()  # a new process: the marker on disk says it was counted
    await cycle(state, client, restarted, config)
    assert sample(restarted, "reaper_results_lost_total") == 0
    assert (tmp_path / "default").exists()


async def test_a_dry_run_downloads_and_writes_nothing_but_reports_the_backlog(
    tmp_path: Path, emulator: tuple[str, EmulatorState], client: BatchClient, metrics: Metrics
) -> None:
    _, state = emulator
    seed(state, "msgbatch_a", days_ago=2)
    seed(state, "msgbatch_lost", days_ago=40)
    archive, ledger = tmp_path / "archive", tmp_path / "ledger"
    archive.mkdir()
    ledger.mkdir()
    config = settings(
        REAPER_DRY_RUN="true", REAPER_ARCHIVE_DIR=str(archive), REAPER_LEDGER_DIR=str(ledger)
    )
    ahead = build_archive_ahead(config, archiver(config, state, metrics), metrics)

    await cycle(state, client, metrics, config, ahead)
    await cycle(state, client, metrics, config, ahead)

    assert files_under(tmp_path) == []
    assert state.stats.count("results") == 0
    assert sample(metrics, "reaper_archive_backlog") == 1
    assert sample(metrics, "reaper_results_lost_total") == 1  # once per process
    expiry = results_expire_at(Batch.from_api((await client.retrieve("msgbatch_a", None)).to_api()))
    assert sample(metrics, "reaper_archive_backlog_min_expiry_seconds") == pytest.approx(
        (expiry - state.now()).total_seconds(), abs=5
    )


async def test_the_scout_holds_a_bounded_number_of_candidates(
    tmp_path: Path, emulator: tuple[str, EmulatorState], client: BatchClient, metrics: Metrics
) -> None:
    """Memory: the candidates kept are 2 x cap + 1, however many batches are listed."""
    _, state = emulator
    for n in range(60):
        seed(state, f"msgbatch_{n:03}", days_ago=1 + n / 10, counts=FAILED)
    config = settings(REAPER_ARCHIVE_DIR=str(tmp_path), REAPER_MAX_ACTIONS_PER_RUN="3")
    ahead = build_archive_ahead(config, archiver(config, state, metrics), metrics)
    scout = ahead.scout(None, state.now(), dry_run=True)
    async for page in client.list_pages(None):
        scout.on_page(page)
    kept = scout.candidates()
    assert scout.backlog == 60
    assert len(kept) == 7
    assert [b.id for b in kept] == [f"msgbatch_{n:03}" for n in range(59, 52, -1)]


# -- the ledger ----------------------------------------------------------------------------------


def ledger_lines(directory: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted(directory.glob("ledger-*.jsonl"))
        for line in path.read_text().splitlines()
    ]


class WitnessLedger(FileLedger):
    """A file ledger that notes, at each intent, whether the batch was still untouched."""

    def __init__(self, directory: Path, state: EmulatorState) -> None:
        super().__init__(directory, clock=state.now)
        self.state = state
        self.untouched_at_intent: list[bool] = []

    def intent(self, *, cycle_id: str, batch: Batch, action: str, rule: str) -> None:
        record = {r.id: r for r in self.state.iter_records()}.get(batch.id)
        # Still there: a delete's intent precedes it (a cancel's batch is still in progress).
        self.untouched_at_intent.append(record is not None and record.status != "canceling")
        super().intent(cycle_id=cycle_id, batch=batch, action=action, rule=rule)


async def test_every_cancel_and_delete_has_its_intent_before_and_its_outcome_after(
    tmp_path: Path, emulator: tuple[str, EmulatorState], client: BatchClient, metrics: Metrics
) -> None:
    _, state = emulator
    seed(state, "msgbatch_due", days_ago=10)
    seed(state, "msgbatch_stale", days_ago=0.6, ended=False)  # 14 h: cancel, then delete
    config = settings(REAPER_LEDGER_DIR=str(tmp_path))
    ledger = WitnessLedger(tmp_path, state)

    async def sleep(seconds: float) -> None:
        state.advance(max(seconds, 60.0))
        await asyncio.sleep(0)

    report = await run_cycle(
        config, client, metrics=metrics, now=state.now, sleep=sleep, ledger=ledger
    )

    assert report.outcome.value == "success"
    assert not list(state.iter_records())
    lines = ledger_lines(tmp_path)
    pairs = [(r["phase"], r["action"], r["id"]) for r in lines]
    for action, batch_id in (
        ("delete", "msgbatch_due"),
        ("cancel", "msgbatch_stale"),
        ("delete", "msgbatch_stale"),
    ):
        intent = pairs.index(("intent", action, batch_id))
        assert pairs.index(("done", action, batch_id)) > intent
    assert len(lines) == 6
    assert all(ledger.untouched_at_intent)
    assert {r["cycle_id"] for r in lines} == {report.cycle_id}
    done = [r for r in lines if r["phase"] == "done"]
    assert all(r["status"] == 200 and r["request_id"].startswith("req_") for r in done)
    intents = [r for r in lines if r["phase"] == "intent"]
    assert {r["rule"] for r in intents} == {"ended_retention", "stale"}
    assert intents[0]["batch"]["id"] == intents[0]["id"]


async def test_a_404_on_delete_is_recorded_as_gone(
    tmp_path: Path, emulator: tuple[str, EmulatorState], client: BatchClient, metrics: Metrics
) -> None:
    _, state = emulator
    seed(state, "msgbatch_due", days_ago=10)

    class Faster(FileLedger):
        def intent(self, **fields: Any) -> None:
            super().intent(**fields)
            state.delete(state.default_workspace, "msgbatch_due")  # someone else deletes it first

    await run_cycle(
        settings(REAPER_LEDGER_DIR=str(tmp_path)),
        client,
        metrics=metrics,
        now=state.now,
        ledger=Faster(tmp_path, clock=state.now),
    )
    phases = [(r["phase"], r.get("status")) for r in ledger_lines(tmp_path)]
    assert phases == [("intent", None), ("gone", 404)]


async def test_a_crash_mid_request_leaves_an_intent_without_outcome(
    tmp_path: Path, emulator: tuple[str, EmulatorState], client: BatchClient, metrics: Metrics
) -> None:
    _, state = emulator
    seed(state, "msgbatch_due", days_ago=10)
    sent = asyncio.Event()

    class Hanging:
        """The client, whose delete reaches the API and then never answers (a crash)."""

        def __getattr__(self, name: str) -> Any:
            return getattr(client, name)

        async def delete(self, batch_id: str, workspace: str | None) -> None:
            await client.delete(batch_id, workspace)
            sent.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(
        run_cycle(
            settings(REAPER_LEDGER_DIR=str(tmp_path)),
            Hanging(),  # type: ignore[arg-type]
            metrics=metrics,
            now=state.now,
        )
    )
    await sent.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    lines = ledger_lines(tmp_path)
    assert [(r["phase"], r["id"]) for r in lines] == [("intent", "msgbatch_due")]
    assert not list(state.iter_records())  # it was carried out: the intent says to look


# -- bad input: missing, unwritable or full directories ------------------------------------------


async def test_a_ledger_that_cannot_be_written_sends_nothing_and_once_exits_1(
    tmp_path: Path, emulator: tuple[str, EmulatorState], metrics: Metrics
) -> None:
    base_url, state = emulator
    seed(state, "msgbatch_due", days_ago=10)
    seed(state, "msgbatch_due2", days_ago=11)
    for case in ("missing", "full", "unwritable"):
        directory = tmp_path / case
        if case != "missing":
            directory.mkdir()
            day_file = ledger_path(directory, state.now())
            if case == "full":
                day_file.symlink_to("/dev/full")  # every write: ENOSPC
            else:
                day_file.mkdir()  # a directory in the file's place
        config = settings(base_url, REAPER_LEDGER_DIR=str(directory))
        with capture_logs() as logs:
            report = await run_once(config, metrics=metrics, now=state.now)
        assert report.exit_code() == 1, case
        assert {r.id for r in state.iter_records()} == {"msgbatch_due", "msgbatch_due2"}, case
        assert state.stats.count("delete") == 0, case
        unwritable = [e for e in logs if e["event"] == "ledger.unwritable"]
        assert len(unwritable) == 1, case
        assert "REAPER_LEDGER_DIR=" in unwritable[0]["error"]
        assert {f.error_type for f in report.failures} == {"ledger_unwritable"}
    failed = metrics.registry.get_sample_value(
        "reaper_actions_total", {"workspace": "default", "action": "delete", "outcome": "failed"}
    )
    assert failed == 6


async def test_a_missing_archive_dir_deletes_nothing_says_so_once_and_once_exits_1(
    tmp_path: Path, emulator: tuple[str, EmulatorState], metrics: Metrics
) -> None:
    base_url, state = emulator
    seed(state, "msgbatch_due", days_ago=10)
    seed(state, "msgbatch_young", days_ago=2)
    seed(state, "msgbatch_young2", days_ago=3)
    config = settings(base_url, REAPER_ARCHIVE_DIR=str(tmp_path / "not-mounted"))

    with capture_logs() as logs:
        report = await run_once(config, metrics=metrics, now=state.now)

    assert report.exit_code() == 1
    assert len(list(state.iter_records())) == 3
    assert not (tmp_path / "not-mounted").exists()
    stopped = [e for e in logs if e["event"] == "archive.stopped"]
    assert len(stopped) == 1
    assert stopped[0]["reason"].startswith("no_archive_dir")
    assert archive_count(metrics, "failed") == 1  # the delete's; the ahead stops at once


async def test_a_full_archive_disk_deletes_nothing_and_stops_archiving(
    tmp_path: Path, emulator: tuple[str, EmulatorState], client: BatchClient, metrics: Metrics
) -> None:
    _, state = emulator
    seed(state, "msgbatch_due", days_ago=10)
    for n in range(4):
        seed(state, f"msgbatch_young{n}", days_ago=2 + n)
    config = settings(REAPER_ARCHIVE_DIR=str(tmp_path), REAPER_CONCURRENCY="1")
    saver = archiver(config, state, metrics, fs=DiskFull(100))
    ahead = build_archive_ahead(config, saver, metrics)

    report = await cycle(state, client, metrics, config, ahead)

    assert report.outcome.value == "partial"
    assert len(list(state.iter_records())) == 5
    assert [p for p in files_under(tmp_path) if p.suffix == ".gz"] == []
    assert archive_count(metrics, "failed") == 2
    assert sample(metrics, "reaper_archive_backlog") == 5


class ReadOnlyVolume(FileLayer):
    """A volume mounted read-only: EROFS for anything new, root or not (chmod binds no root)."""

    def makedirs(self, path: Path) -> None:
        if not path.is_dir():
            raise OSError(errno.EROFS, "Read-only file system", str(path))

    def create(self, path: Path) -> IO[bytes]:
        raise OSError(errno.EROFS, "Read-only file system", str(path))


async def test_a_read_only_archive_dir_deletes_nothing(
    tmp_path: Path, emulator: tuple[str, EmulatorState], client: BatchClient, metrics: Metrics
) -> None:
    _, state = emulator
    seed(state, "msgbatch_due", days_ago=10)
    config = settings(REAPER_ARCHIVE_DIR=str(tmp_path))
    report = await cycle(state, client, metrics, config, fs=ReadOnlyVolume())
    assert report.outcome.value == "partial"
    assert [r.id for r in state.iter_records()] == ["msgbatch_due"]
    assert files_under(tmp_path) == []
