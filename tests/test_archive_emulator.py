"""The archiver against the emulator over loopback, through the real client (and the cycle)."""

from __future__ import annotations

import gzip
import json
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from reaper.archive import Archiver, Outcome, sidecar_path
from reaper.client import BatchClient
from reaper.cycle import run_cycle
from reaper.emulator.faults import Faults
from reaper.emulator.state import EmulatorState
from reaper.metrics import Metrics
from reaper.models import format_time
from reaper.settings import load_settings
from tests.test_archive import DiskFull, archive_count, files_under

pytestmark = pytest.mark.anyio

COUNTS = {"processing": 0, "succeeded": 40, "errored": 6, "canceled": 3, "expired": 1}


def seed(
    state: EmulatorState,
    batch_id: str,
    *,
    days_ago: float = 10,
    counts: dict[str, int] | None = None,
) -> None:
    created = state.now() - timedelta(days=days_ago)
    state.seed_objects(
        [
            {
                "id": batch_id,
                "processing_status": "ended",
                "created_at": format_time(created),
                "ended_at": format_time(created + timedelta(hours=2)),
                "request_counts": counts or COUNTS,
            }
        ]
    )


def archiver(
    root: Path,
    state: EmulatorState,
    metrics: Metrics,
    missing: Literal["keep", "delete"] = "keep",
    **kwargs: Any,
) -> Archiver:
    return Archiver(root, missing=missing, metrics=metrics, now=state.now, **kwargs)


def results_requests(state: EmulatorState) -> int:
    return state.stats.count("results")


async def test_archive_matches_what_the_emulator_serves(
    tmp_path: Path, emulator: tuple[str, EmulatorState], client: BatchClient, metrics: Metrics
) -> None:
    """The archive holds the results body byte for byte, with one line per counted request."""
    base_url, state = emulator
    seed(state, "msgbatch_e2e")
    batch = await client.retrieve("msgbatch_e2e", None)

    outcome = await archiver(tmp_path, state, metrics).archive(batch, client)

    assert outcome.outcome is Outcome.ARCHIVED, outcome.reason
    assert outcome.lines == 50
    assert outcome.request_id is not None
    assert outcome.request_id.startswith("req_")
    async with httpx.AsyncClient(base_url=base_url) as raw:
        served = await raw.get(
            "/v1/messages/batches/msgbatch_e2e/results", headers={"anthropic-version": "x"}
        )
    body = gzip.decompress(outcome.path.read_bytes())
    assert body == served.content
    kinds = [json.loads(line)["result"]["type"] for line in body.splitlines()]
    side = json.loads(sidecar_path(outcome.path).read_text())
    assert side["result_types"] == {
        kind: kinds.count(kind) for kind in COUNTS if kind != "processing"
    }
    assert side["result_types"] == {k: v for k, v in COUNTS.items() if k != "processing"}
    assert side["request_id"] == outcome.request_id
    assert client.requests_made["results"] == 1


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("results_short_ids", "short_stream:"),
        ("results_truncate_ids", "invalid_line:"),
        ("results_corrupt_ids", "invalid_line:"),
        ("results_abort_ids", "download: results msgbatch_bad: no response"),
    ],
)
async def test_a_damaged_stream_from_the_emulator_fails_and_leaves_no_file(
    tmp_path: Path,
    emulator: tuple[str, EmulatorState],
    client: BatchClient,
    metrics: Metrics,
    fault: str,
    reason: str,
) -> None:
    """Each of the emulator's results faults is caught; the batch may not be deleted."""
    _, state = emulator
    seed(state, "msgbatch_bad", counts={"succeeded": 3000, "errored": 20, "expired": 5})
    state.faults = Faults.from_json({fault: ["msgbatch_bad"]})
    batch = await client.retrieve("msgbatch_bad", None)

    outcome = await archiver(tmp_path, state, metrics).archive(batch, client)

    assert outcome.outcome is Outcome.FAILED
    assert not outcome.ok_to_delete
    assert outcome.reason is not None
    assert outcome.reason.startswith(reason), outcome.reason
    assert files_under(tmp_path) == []
    assert archive_count(metrics, "failed") == 1


async def test_disk_full_over_the_emulator_fails_cleanly(
    tmp_path: Path, emulator: tuple[str, EmulatorState], client: BatchClient, metrics: Metrics
) -> None:
    """ENOSPC half-way through a real download: failed, nothing on disk, next run succeeds."""
    _, state = emulator
    seed(state, "msgbatch_full", counts={"succeeded": 5000})
    batch = await client.retrieve("msgbatch_full", None)

    full = archiver(tmp_path, state, metrics, fs=DiskFull(100_000))
    first = await full.archive(batch, client)
    assert first.outcome is Outcome.FAILED
    assert first.reason == "write_error: ENOSPC: No space left on device"
    assert files_under(tmp_path) == []

    second = await archiver(tmp_path, state, metrics).archive(batch, client)
    assert second.outcome is Outcome.ARCHIVED
    assert results_requests(state) == 2


async def test_a_rerun_does_not_download_again(
    tmp_path: Path, emulator: tuple[str, EmulatorState], client: BatchClient, metrics: Metrics
) -> None:
    """The emulator sees one results request however many times the batch is archived."""
    _, state = emulator
    seed(state, "msgbatch_twice")
    batch = await client.retrieve("msgbatch_twice", None)
    saver = archiver(tmp_path, state, metrics)

    outcomes = [await saver.archive(batch, client) for _ in range(3)]

    assert [o.outcome for o in outcomes] == [Outcome.ARCHIVED, Outcome.ALREADY, Outcome.ALREADY]
    assert results_requests(state) == 1


@pytest.mark.parametrize(("policy", "ok"), [("keep", False), ("delete", True)])
async def test_results_past_retention_are_missing(
    tmp_path: Path,
    emulator: tuple[str, EmulatorState],
    client: BatchClient,
    metrics: Metrics,
    policy: Literal["keep", "delete"],
    ok: bool,
) -> None:
    """A batch older than 29 days has archived_at set: missing, no download, policy decides."""
    _, state = emulator
    seed(state, "msgbatch_old", days_ago=35)
    batch = await client.retrieve("msgbatch_old", None)
    assert batch.archived_at is not None

    outcome = await archiver(tmp_path, state, metrics, policy).archive(batch, client)

    assert outcome.outcome is Outcome.MISSING
    assert outcome.ok_to_delete is ok
    assert results_requests(state) == 0


async def test_results_archived_after_listing_are_missing(
    tmp_path: Path, emulator: tuple[str, EmulatorState], client: BatchClient, metrics: Metrics
) -> None:
    """Listed just before archival, then 404: the batch is asked again and found archived."""
    _, state = emulator
    seed(state, "msgbatch_edge", days_ago=29 - 1 / 24)
    batch = await client.retrieve("msgbatch_edge", None)
    assert batch.archived_at is None
    state.advance(2 * 3600)

    outcome = await archiver(tmp_path, state, metrics, "delete").archive(batch, client)

    assert outcome.outcome is Outcome.MISSING
    assert outcome.ok_to_delete
    assert client.requests_made["results"] == 1


async def test_a_transient_404_is_a_failure(
    tmp_path: Path, emulator: tuple[str, EmulatorState], client: BatchClient, metrics: Metrics
) -> None:
    """Results 404 for a batch the API does not call archived: keep it, whatever the policy."""
    _, state = emulator
    seed(state, "msgbatch_blip")
    batch = await client.retrieve("msgbatch_blip", None)
    state.faults = Faults(not_found_rate=1.0, endpoints=frozenset({"results"}))

    outcome = await archiver(tmp_path, state, metrics, "delete").archive(batch, client)

    assert outcome.outcome is Outcome.FAILED
    assert not outcome.ok_to_delete
    assert outcome.reason is not None
    assert outcome.reason.startswith("not_found:")
    assert outcome.request_id is not None


async def test_a_cycle_deletes_only_what_was_archived(
    tmp_path: Path, emulator: tuple[str, EmulatorState], client: BatchClient, metrics: Metrics
) -> None:
    """End to end: archive then delete; a damaged stream keeps its batch; dry run writes nothing."""
    _, state = emulator
    clean = {"succeeded": 47, "canceled": 3}  # no errors: rule 7's 7-day retention applies
    for name in ("msgbatch_a", "msgbatch_b", "msgbatch_broken"):
        seed(state, name, counts=clean)
    seed(state, "msgbatch_gone", days_ago=35)
    state.faults = Faults(results_truncate_ids=frozenset({"msgbatch_broken"}))
    env = {"REAPER_ARCHIVE_DIR": str(tmp_path), "REAPER_ARCHIVE_MISSING": "keep"}
    saver = archiver(tmp_path, state, metrics)

    dry = load_settings({**env, "REAPER_DRY_RUN": "true"}, require_key=False)
    await run_cycle(dry, client, metrics=metrics, now=state.now, archiver=saver)
    assert files_under(tmp_path) == []
    assert results_requests(state) == 0

    live = load_settings({**env, "REAPER_DRY_RUN": "false"}, require_key=False)
    await run_cycle(live, client, metrics=metrics, now=state.now, archiver=saver)

    remaining = {r.id for r in state.iter_records()}
    assert remaining == {"msgbatch_broken", "msgbatch_gone"}
    names = [path.name for path in files_under(tmp_path)]
    assert sorted(names) == [
        "msgbatch_a.json",
        "msgbatch_a.jsonl.gz",
        "msgbatch_b.json",
        "msgbatch_b.jsonl.gz",
        "msgbatch_gone.lost",  # its results expired unarchived: counted once, marked
    ]
    for path in files_under(tmp_path):
        if path.suffix == ".json":
            assert json.loads(path.read_text())["lines"] == 50
    assert archive_count(metrics, "archived") == 2
    assert archive_count(metrics, "failed") == 1
    assert archive_count(metrics, "missing") == 1
