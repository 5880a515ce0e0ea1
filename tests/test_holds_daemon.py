"""Holds added, expired and broken between the cycles of a running daemon (no restart).

The daemon runs its real job (``reaper.commands.run.cycle_job``: the cycle, the holds file read at
its start) every second against the in-memory fake API. After each cycle, still inside the job so
that nothing races the next one, the test changes the world: the holds file, the batches, the
policy's clock. What must remain after each cycle is written by hand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from reaper.commands.run import cycle_job
from reaper.daemon import run_daemon
from reaper.metrics import Metrics
from reaper.models import Batch, format_time
from reaper.server import Health
from reaper.settings import load_settings
from tests.fake_api import FakeClient
from tests.helpers import T0, Clock, make_batch

pytestmark = pytest.mark.anyio

D = timedelta(days=1)


def hold(batch_id: str, until: timedelta, reason: str) -> str:
    return (
        f'{{"id": "{batch_id}", "until": "{format_time(T0 + until)}", '
        f'"reason": "{reason}", "by": "al"}}\n'
    )


def due(batch_id: str) -> Batch:
    return make_batch(batch_id, created_ago=20 * D, ended_ago=19 * D)


@pytest.mark.slow  # five cycles a second apart
async def test_holds_change_between_the_cycles_of_a_running_daemon(
    tmp_path: Path, metrics: Metrics
) -> None:
    """Added: kept at the next cycle; expired: deleted; broken: nothing done; mended: acts again."""
    holds = tmp_path / "holds.jsonl"
    holds.write_text(hold("kept", D, "legal review") + hold("old", -D, "long done"))
    clock = Clock()
    client = FakeClient([due("kept"), due("free")], clock=clock)
    settings = load_settings(
        {
            "REAPER_DRY_RUN": "false",
            "REAPER_INTERVAL": "1s",
            "REAPER_METRICS_PORT": "0",
            "REAPER_HOLDS_FILE": str(holds),
        },
        require_key=False,
    )
    health = Health()
    stop = asyncio.Event()
    seen: list[tuple[str, set[str], tuple[float | None, float | None]]] = []

    def add_a_held_batch() -> None:
        client.store[None]["late"] = due("late")
        holds.write_text(holds.read_text() + hold("late", D, "customer asked"))

    def let_the_holds_expire() -> None:
        clock.advance((2 * D).total_seconds())

    def break_the_file() -> None:
        client.store[None]["during_break"] = due("during_break")
        holds.write_text(holds.read_text() + '{"id": "x", "until": "soon"}\n')

    def mend_the_file() -> None:
        holds.write_text("")

    between: list[Callable[[], None]] = [
        add_a_held_batch,
        let_the_holds_expire,
        break_the_file,
        mend_the_file,
        stop.set,
    ]
    inner = cycle_job(settings, client, metrics=metrics, health=health, now=clock.now)

    async def job() -> str:
        outcome = await inner()
        gauges = tuple(
            metrics.registry.get_sample_value("reaper_holds", {"state": state})
            for state in ("active", "expired")
        )
        seen.append((outcome, client.ids(), (gauges[0], gauges[1])))
        between.pop(0)()
        return outcome

    with capture_logs() as logs:
        code = await run_daemon(
            settings,
            job,
            metrics=metrics,
            health=health,
            stop_event=stop,
            install_signal_handlers=False,
        )
    assert code == 0
    assert seen == [
        ("success", {"kept"}, (1, 1)),  # the hold keeps "kept"; "free" is deleted
        ("success", {"kept", "late"}, (2, 1)),  # a hold added without a restart keeps "late"
        ("success", set(), (0, 3)),  # both holds expired: both batches deleted
        ("failed", {"during_break"}, (0, 3)),  # a broken file: nothing done
        ("success", set(), (0, 0)),  # mended: the cycle acts again
    ]
    expired = [(e["id"], e["reason"], e["by"]) for e in logs if e["event"] == "hold.expired"]
    assert expired[:2] == [("old", "long done", "al"), ("old", "long done", "al")]
    assert sorted(expired[2:5]) == [
        ("kept", "legal review", "al"),
        ("late", "customer asked", "al"),
        ("old", "long done", "al"),
    ]
    assert len(expired) == 5  # once per cycle each; none from the broken or the empty file
    (unreadable,) = [e for e in logs if e["event"] == "holds.unreadable"]
    assert "line 4" in unreadable["error"]
