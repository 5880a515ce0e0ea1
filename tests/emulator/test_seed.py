"""Seeding: API-shaped objects and seed files kept as given, gaps filled, and the random mix."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from reaper.emulator.harness import new_state
from reaper.emulator.records import DAY, format_us
from reaper.emulator.seed import SeedError
from reaper.emulator.state import DEFAULT_WORKSPACE, EmulatorState

WS = DEFAULT_WORKSPACE


def view(state: EmulatorState, batch_id: str) -> dict[str, Any]:
    """Return the API object of any batch as of now."""
    record = state.find(batch_id)
    assert record is not None
    return record.render(state.now_us(), "http://emu")


def write_lines(path: Path, objects: list[Any]) -> Path:
    """Write objects (or raw strings) as JSON Lines."""
    path.write_text(
        "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objects),
        encoding="utf-8",
    )
    return path


def test_a_seed_file_keeps_ids_timestamps_and_counts_as_given(
    state: EmulatorState, tmp_path: Path
) -> None:
    """An ended batch with every field comes back field for field (results_url: the emulator's)."""
    batch: dict[str, Any] = {
        "id": "msgbatch_013Zva2CMHLNnXjNJJKqJ2EF",
        "type": "message_batch",
        "processing_status": "ended",
        "request_counts": {
            "processing": 0,
            "succeeded": 95,
            "errored": 3,
            "canceled": 0,
            "expired": 2,
        },
        "ended_at": "2026-02-25T18:37:24.100435Z",
        "created_at": "2026-02-24T18:37:24.100435Z",
        "expires_at": "2026-02-25T18:37:24.100435Z",
        "archived_at": None,
        "cancel_initiated_at": None,
        "results_url": "https://api.anthropic.com/v1/messages/batches/x/results",
    }
    assert state.load_seed_file(write_lines(tmp_path / "seed.jsonl", [batch, ""])) == 1
    shown = view(state, "msgbatch_013Zva2CMHLNnXjNJJKqJ2EF")
    assert shown == {
        **batch,
        "results_url": f"http://emu/v1/messages/batches/{batch['id']}/results",
    }


def test_missing_fields_are_filled_sensibly(state: EmulatorState) -> None:
    """{} is a one-request batch in progress created now; counts imply the rest."""
    now = format_us(state.now_us())
    blank, ended, expired = state.seed_objects(
        [
            {},
            {"ended_at": now},
            {"processing_status": "ended", "request_counts": {"expired": 3, "succeeded": 1}},
        ]
    )
    shown = view(state, blank)
    assert shown["processing_status"] == "in_progress"
    assert shown["created_at"] == now
    assert shown["request_counts"]["processing"] == 1
    assert view(state, ended)["processing_status"] == "ended"
    assert view(state, ended)["request_counts"]["succeeded"] == 1
    shown = view(state, expired)
    assert shown["ended_at"] == shown["expires_at"]
    record = state.find(blank)
    assert record is not None
    assert record.workspace == WS


def test_a_canceling_seed_ends_after_cancel_seconds_with_its_requests_canceled(
    state: EmulatorState,
) -> None:
    """cancel_initiated_at defaults to now; the batch ends cancel_seconds later."""
    (batch_id,) = state.seed_objects(
        [{"processing_status": "canceling", "request_counts": {"processing": 4}}]
    )
    assert view(state, batch_id)["cancel_initiated_at"] == format_us(state.now_us())
    state.advance(state.cancel_seconds)
    shown = view(state, batch_id)
    assert shown["processing_status"] == "ended"
    assert shown["request_counts"]["canceled"] == 4


def test_ends_at_and_final_counts_decide_how_an_in_progress_seed_ends(
    state: EmulatorState,
) -> None:
    """_ends_at gives the time; _final_counts the outcome (default: all succeeded)."""
    ends = format_us(state.now_us() + 3_600_000_000)
    plain, counted = state.seed_objects(
        [
            {"request_counts": {"processing": 5}, "_ends_at": ends},
            {
                "request_counts": {"processing": 5},
                "_ends_at": ends,
                "_final_counts": {"succeeded": 2, "errored": 1, "expired": 2},
                "workspace_id": "wrkspc_elsewhere",
            },
        ]
    )
    state.advance(3599)
    assert view(state, plain)["processing_status"] == "in_progress"
    state.advance(1)
    assert view(state, plain)["ended_at"] == ends
    assert view(state, plain)["request_counts"]["succeeded"] == 5
    assert view(state, counted)["request_counts"] == {
        "processing": 0,
        "succeeded": 2,
        "errored": 1,
        "canceled": 0,
        "expired": 2,
    }
    assert state.find(counted).workspace == "wrkspc_elsewhere"  # type: ignore[union-attr]


def test_an_unknown_status_is_kept_forever(state: EmulatorState) -> None:
    """A status the API may add later never changes (the reaper must keep such batches)."""
    (batch_id,) = state.seed_objects([{"processing_status": "archiving"}])
    state.advance(40 * 86_400)
    assert view(state, batch_id)["processing_status"] == "archiving"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"_end_at": "2026-01-01T00:00:00Z"}', "unknown field '_end_at'"),
        ('{"created_at": "yesterday"}', "created_at: expected an RFC 3339 time"),
        ('{"created_at": "2026-01-01T00:00:00"}', "created_at: expected an RFC 3339 time"),
        (
            '{"processing_status": "in_progress", "request_counts": {"succeeded": 2}}',
            "_final_counts",
        ),
        ('{"processing_status": "ended", "request_counts": {"processing": 2}}', "'processing' 0"),
        ('{"request_counts": {"processing": -1}}', "request_counts.processing"),
        ('{"request_counts": {"pending": 1}}', "unknown key 'pending'"),
        ('{"request_counts": {"processing": 3}, "_final_counts": {"succeeded": 2}}', "add up to 2"),
        ('{"id": "has space"}', "id: expected letters"),
        ('{"id": "msgbatch_dup"}', "duplicate batch id msgbatch_dup (first on line 1)"),
        (
            '{"processing_status": "ended", "_ends_at": "2026-01-01T00:00:00Z"}',
            "only for in_progress",
        ),
    ],
)
def test_a_broken_seed_line_is_named_by_file_and_line(
    state: EmulatorState, tmp_path: Path, line: str, reason: str
) -> None:
    """The error says file:line and why; nothing of the file is loaded."""
    path = write_lines(tmp_path / "seed.jsonl", [{"id": "msgbatch_dup"}, "", line])
    with pytest.raises(SeedError) as info:
        state.load_seed_file(path)
    assert str(info.value).startswith(f"{path}:3: ")
    assert reason in str(info.value)
    assert len(state) == 0


def test_a_seed_id_that_already_exists_is_refused(state: EmulatorState) -> None:
    """Seeding the same id twice fails the second time."""
    state.seed_objects([{"id": "msgbatch_once"}])
    with pytest.raises(SeedError, match="already exists"):
        state.seed_objects([{"id": "msgbatch_once"}])
    with pytest.raises(SeedError, match="duplicate"):
        state.seed_objects([{"id": "msgbatch_twice"}, {"id": "msgbatch_twice"}])


def test_the_random_mix_looks_like_an_organisations_batches() -> None:
    """Mostly ended at every age over 40 days, some in progress and canceling, consistent counts."""
    state = new_state()
    state.seed_random(2000)
    now = state.now_us()
    shown = [r.render(now, "http://emu") for r in state.iter_records()]
    statuses = Counter(b["processing_status"] for b in shown)
    assert statuses["in_progress"] == 80
    assert statuses["canceling"] >= 25
    assert statuses["ended"] >= 1850
    records = list(state.iter_records())
    ages = [(now - r.created) / DAY for r in records]
    assert max(ages) <= 40
    assert min(ages) >= 0
    assert sum(1 for a in ages if a < 1) >= 100  # young ones
    assert sum(1 for r in records if r.is_archived(now)) > 400  # older than 29 days
    for batch in shown:
        counts = batch["request_counts"]
        if batch["processing_status"] == "ended":
            assert counts["processing"] == 0
            assert batch["ended_at"] <= format_us(now)
            assert batch["results_url"] is not None
        else:
            assert counts["processing"] == sum(counts.values())
            assert batch["created_at"] > format_us(now - DAY)
    ended = [b["request_counts"] for b in shown if b["processing_status"] == "ended"]
    assert sum(1 for c in ended if c["errored"]) > 50
    assert sum(1 for c in ended if c["expired"]) > 50
    assert sum(1 for c in ended if c["canceled"]) > 50
    assert any(b["cancel_initiated_at"] for b in shown if b["processing_status"] == "ended")


def test_the_random_mix_spreads_over_workspaces_only_when_asked() -> None:
    """One workspace by default; several when given."""
    state = new_state()
    state.seed_random(300)
    assert set(state.counts_by_workspace()) == {WS}
    state.seed_random(300, workspaces=[WS, "wrkspc_b", "wrkspc_c"])
    assert set(state.counts_by_workspace()) == {WS, "wrkspc_b", "wrkspc_c"}


def test_random_in_progress_and_canceling_batches_end_by_themselves() -> None:
    """A day later nothing is unfinished; canceling ones end within cancel_seconds."""
    state = new_state()
    state.seed_random(500)
    state.advance(state.cancel_seconds)
    assert "canceling" not in state.counts()
    state.advance(timedelta(days=1).total_seconds())
    assert set(state.counts()) == {"ended"}
