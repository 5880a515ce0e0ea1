"""REAPER_HOLDS_FILE in the cycle: read every cycle, expired ones logged, a bad file stops all.

Against the in-memory fake API (holds changing between the cycles of a running daemon are
tested in tests/test_holds_daemon.py).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from reaper.cycle import run_cycle
from reaper.metrics import Metrics
from reaper.models import format_time
from reaper.outcomes import CycleOutcome
from reaper.settings import Settings, load_settings
from tests.fake_api import FakeClient
from tests.helpers import T0, Clock, make_batch

pytestmark = pytest.mark.anyio

H = timedelta(hours=1)
D = timedelta(days=1)


def settings_with(holds: Path, **env: str) -> Settings:
    values = {"REAPER_HOLDS_FILE": str(holds), "REAPER_DRY_RUN": "false"}
    values.update({f"REAPER_{k.upper()}": v for k, v in env.items()})
    return load_settings(values, require_key=False)


def hold_line(batch_id: str, until: timedelta, reason: str = "incident 42", by: str = "al") -> str:
    return (
        f'{{"id": "{batch_id}", "until": "{format_time(T0 + until)}",'
        f' "reason": "{reason}", "by": "{by}"}}\n'
    )


def gauge(metrics: Metrics, state: str) -> float | None:
    return metrics.registry.get_sample_value("reaper_holds", {"state": state})


async def test_expired_holds_are_logged_with_reason_and_owner_and_counted(
    tmp_path: Path, metrics: Metrics
) -> None:
    """Each expired hold gives one hold.expired line a cycle; reaper_holds counts both states."""
    holds = tmp_path / "holds.jsonl"
    holds.write_text(
        "# holds for the incident\n"
        + hold_line("gone_by", -H, reason="postmortem", by="bo")
        + hold_line("kept_on", 10 * D)
    )
    clock = Clock()
    client = FakeClient([], clock=clock)
    with capture_logs() as logs:
        report = await run_cycle(
            settings_with(holds), client, metrics=metrics, now=clock.now, sleep=clock.sleep
        )
    assert report.outcome is CycleOutcome.SUCCESS
    expired = [e for e in logs if e["event"] == "hold.expired"]
    assert [(e["id"], e["reason"], e["by"]) for e in expired] == [("gone_by", "postmortem", "bo")]
    assert expired[0]["until"] == format_time(T0 - H)
    assert gauge(metrics, "active") == 1
    assert gauge(metrics, "expired") == 1


async def test_a_holds_file_that_cannot_be_parsed_makes_the_cycle_act_on_nothing(
    tmp_path: Path, metrics: Metrics
) -> None:
    """A broken line: no cancel, no delete, the cycle failed (exit 1), the line named in the log."""
    holds = tmp_path / "holds.jsonl"
    holds.write_text(hold_line("a", D) + '{"id": "b", "until": "tomorrow"}\n')
    clock = Clock()
    due = make_batch("due", created_ago=20 * D, ended_ago=19 * D)
    client = FakeClient([due], clock=clock)
    with capture_logs() as logs:
        report = await run_cycle(
            settings_with(holds), client, metrics=metrics, now=clock.now, sleep=clock.sleep
        )
    assert client.mutating_calls() == []
    assert client.requests_made["list"] == 0
    assert report.outcome is CycleOutcome.FAILED
    assert report.exit_code() == 1
    unreadable = [e for e in logs if e["event"] == "holds.unreadable"]
    assert len(unreadable) == 1
    assert "line 2" in unreadable[0]["error"]
    assert metrics.registry.get_sample_value("reaper_cycles_total", {"outcome": "failed"}) == 1
    assert "REAPER_HOLDS_FILE" in report.summary_text()


async def test_the_holds_file_is_read_again_at_every_cycle(
    tmp_path: Path, metrics: Metrics
) -> None:
    """Edited, broken, missing, mended between cycles: each cycle acts on the file as it is then."""
    holds = tmp_path / "holds.jsonl"
    holds.write_text(hold_line("a", D))
    clock = Clock()
    client = FakeClient([], clock=clock)
    settings = settings_with(holds)

    async def cycle() -> CycleOutcome:
        report = await run_cycle(
            settings, client, metrics=metrics, now=clock.now, sleep=clock.sleep
        )
        return report.outcome

    assert await cycle() is CycleOutcome.SUCCESS
    assert (gauge(metrics, "active"), gauge(metrics, "expired")) == (1, 0)
    holds.write_text(hold_line("a", D) + hold_line("b", D) + hold_line("c", -D))
    assert await cycle() is CycleOutcome.SUCCESS
    assert (gauge(metrics, "active"), gauge(metrics, "expired")) == (2, 1)
    holds.write_text("not json\n")
    assert await cycle() is CycleOutcome.FAILED
    holds.unlink()
    assert await cycle() is CycleOutcome.FAILED
    holds.write_text("")
    assert await cycle() is CycleOutcome.SUCCESS
    assert (gauge(metrics, "active"), gauge(metrics, "expired")) == (0, 0)
