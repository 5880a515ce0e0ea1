"""Issue 13's "done when": across the API's 29-day results window, nothing in scope is lost.

The emulator's clock moves day by day over 40 days while new batches end every day (clean and
failed ones). The reaper runs once a day, live, with the archive and the ledger on, at the
default retentions (REAPER_DELETE_FAILED_AFTER=30d outlasts the window). No result in scope may
expire unarchived, and every cancel and delete must have its intent and its outcome in the ledger.
The control run (the archive only before a delete, as before issue 13) loses the failed batches'
results: the test can fail.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from reaper.archive import ArchiveOutcome, Archiver, ResultsClient
from reaper.client import BatchClient
from reaper.cycle import run_cycle
from reaper.emulator.state import EmulatorState
from reaper.ledger import FileLedger
from reaper.metrics import Metrics
from reaper.models import Batch, format_time
from reaper.settings import load_settings
from tests.test_archive import archive_count

pytestmark = pytest.mark.anyio

DAYS = 40
PER_DAY = 4
CLEAN = {"succeeded": 20}
FAILED = {"succeeded": 15, "errored": 4, "expired": 1}


@pytest.fixture
async def client(emulator: tuple[str, EmulatorState]) -> AsyncIterator[BatchClient]:
    base_url, _ = emulator
    async with BatchClient(
        api_key="sk-test", base_url=base_url, max_retries=1, max_rpm=100_000
    ) as api:
        yield api


class DeleteOnlyArchiver:
    """The archive as it was before issue 13: only just before a delete (no archive-ahead)."""

    def __init__(self, inner: Archiver) -> None:
        self.inner = inner

    async def archive(self, batch: Batch, client: ResultsClient) -> ArchiveOutcome:
        return await self.inner.archive(batch, client)


def seed_day(state: EmulatorState, day: int, rng: random.Random) -> list[str]:
    """Batches created over the last day, each ended within hours (half of them failed)."""
    ids = []
    for n in range(PER_DAY):
        created = state.now() - timedelta(hours=rng.uniform(2, 23))
        ended = min(created + timedelta(hours=rng.uniform(0.5, 20)), state.now())
        batch_id = f"msgbatch_d{day:02}n{n}"
        state.seed_objects(
            [
                {
                    "id": batch_id,
                    "processing_status": "ended",
                    "created_at": format_time(created),
                    "ended_at": format_time(ended),
                    "request_counts": FAILED if n % 2 else CLEAN,
                }
            ]
        )
        ids.append(batch_id)
    return ids


async def live_for_40_days(
    tmp_path: Path, state: EmulatorState, client: BatchClient, *, ahead: bool
) -> tuple[Metrics, list[str], Path, Path]:
    archive, ledger_dir = tmp_path / "archive", tmp_path / "ledger"
    archive.mkdir()
    ledger_dir.mkdir()
    settings = load_settings(
        {
            "REAPER_DRY_RUN": "false",
            "REAPER_ARCHIVE_DIR": str(archive),
            "REAPER_LEDGER_DIR": str(ledger_dir),
            "REAPER_MAX_RPM": "100000",
        },
        require_key=False,
    )
    metrics = Metrics()
    archiver = Archiver(archive, missing="keep", metrics=metrics, now=state.now)
    hook = archiver if ahead else DeleteOnlyArchiver(archiver)
    ledger = FileLedger(ledger_dir, clock=state.now)
    rng = random.Random(13)
    seeded: list[str] = []
    for day in range(DAYS):
        seeded += seed_day(state, day, rng)
        report = await run_cycle(
            settings,
            client,
            metrics=metrics,
            now=state.now,
            archiver=hook,  # type: ignore[arg-type]
            ledger=ledger,
        )
        assert report.outcome.value == "success", (day, report.failures)
        if ahead:
            lost = metrics.registry.get_sample_value(
                "reaper_results_lost_total", {"workspace": "default"}
            )
            assert lost == 0, f"day {day}: results lost"
        state.advance(timedelta(days=1, minutes=rng.uniform(-90, 90)).total_seconds())
    return metrics, seeded, archive, ledger_dir


async def test_with_the_archive_on_no_result_in_scope_expires_unarchived(
    tmp_path: Path, emulator: tuple[str, EmulatorState], client: BatchClient
) -> None:
    _, state = emulator
    metrics, seeded, archive, ledger_dir = await live_for_40_days(
        tmp_path, state, client, ahead=True
    )

    archived = {p.name.removesuffix(".jsonl.gz") for p in archive.rglob("*.jsonl.gz")}
    assert archived == set(seeded)  # every batch's results, the failed ones' included
    assert archive_count(metrics, "missing") == 0
    assert not list(archive.rglob("*.lost"))
    remaining = {r.id for r in state.iter_records()}
    deleted = set(seeded) - remaining
    assert any(b.endswith(("n1", "n3")) for b in deleted)  # failed batches went at 30 days
    assert any(b.endswith(("n0", "n2")) for b in deleted)

    lines = [
        json.loads(line)
        for path in sorted(ledger_dir.glob("ledger-*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    intents = [(r["cycle_id"], r["id"], r["action"]) for r in lines if r["phase"] == "intent"]
    outcomes = [(r["cycle_id"], r["id"], r["action"]) for r in lines if r["phase"] != "intent"]
    assert sorted(intents) == sorted(outcomes)  # each intent answered by one outcome
    seen: set[tuple[str, str, str]] = set()
    for r in lines:  # ... written after it
        key = (r["cycle_id"], r["id"], r["action"])
        if r["phase"] == "intent":
            seen.add(key)
        else:
            assert key in seen, r
    assert {batch_id for _, batch_id, action in intents if action == "delete"} == deleted
    assert all(r["phase"] in ("intent", "done") for r in lines)


async def test_the_control_archiving_only_before_deletes_loses_the_failed_batches_results(
    tmp_path: Path, emulator: tuple[str, EmulatorState], client: BatchClient
) -> None:
    """Without archive-ahead, REAPER_DELETE_FAILED_AFTER=30d finds every failed result gone."""
    _, state = emulator
    metrics, seeded, archive, _ = await live_for_40_days(tmp_path, state, client, ahead=False)
    archived = {p.name.removesuffix(".jsonl.gz") for p in archive.rglob("*.jsonl.gz")}
    failed_old = {b for b in seeded if b.endswith(("n1", "n3")) and int(b[10:12]) < DAYS - 30}
    assert failed_old
    assert not failed_old & archived
    assert archive_count(metrics, "missing") > 0
