"""Issue 12's eight failures, each reproduced against the emulator's fault switches, each refused.

In process (httpx over ASGI) on ONE clock: the emulator's manual clock is the cycle's ``now``,
the cycle's pauses and the client's own (pacing, retries) all move it, so "how long after the
last cancel did polling go on" is measured on the clock the deadline is kept on. Every request
that reached the emulator is recorded with that clock's time. Expectations are written by hand
from SPEC sections 1 to 4, not computed with the policy's code.

#6 (the key in error bodies) is in tests/chaos/test_secrets.py, over the real command line.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from reaper.client import BatchClient
from reaper.cycle import CycleOutcome, CycleReport, run_cycle
from reaper.emulator.faults import Faults
from reaper.emulator.harness import IN_PROCESS_BASE_URL, asgi_transport, new_state
from reaper.emulator.state import EmulatorState
from reaper.metrics import Metrics
from reaper.models import format_time
from reaper.settings import load_settings
from tests.chaos.conftest import KEY

pytestmark = pytest.mark.anyio

M = timedelta(minutes=1)
H = timedelta(hours=1)
D = timedelta(days=1)


def seed(
    batch_id: str,
    now: datetime,
    *,
    created_ago: timedelta,
    ended_ago: timedelta | None = None,
    ends_in: timedelta | None = None,
) -> dict[str, Any]:
    obj: dict[str, Any] = {"id": batch_id, "created_at": format_time(now - created_ago)}
    if ended_ago is not None:
        obj.update(
            processing_status="ended",
            ended_at=format_time(now - ended_ago),
            request_counts={"succeeded": 3},
        )
    else:
        obj.update(processing_status="in_progress", request_counts={"processing": 3})
        obj["_ends_at"] = format_time(now + (ends_in or D))
    return obj


class Recording(httpx.AsyncBaseTransport):
    """Pass requests on to the emulator; note each one's time on the emulator's clock."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.inner = asgi_transport(state)
        self.seen: list[tuple[datetime, str, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        self.seen.append((self.state.now(), request.method, request.url.path))
        return response

    def times(self, method: str, suffix: str = "") -> list[datetime]:
        return [t for t, m, path in self.seen if m == method and path.endswith(suffix)]


@dataclass
class Run:
    report: CycleReport
    events: list[dict[str, Any]]
    metrics: Metrics
    mutations: list[tuple[str, str | None, int]] = field(default_factory=list)

    def logged(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@asynccontextmanager
async def reaper_on(state: EmulatorState, **env: str) -> AsyncIterator[tuple[Recording, Any]]:
    """Yield the recording transport and a function running one cycle with ``env``."""
    transport = Recording(state)

    async def sleep(seconds: float) -> None:
        state.advance(max(0.0, seconds))
        await asyncio.sleep(0)

    settings = load_settings(
        {
            "ANTHROPIC_API_KEY": KEY,
            "ANTHROPIC_BASE_URL": IN_PROCESS_BASE_URL,
            "REAPER_DRY_RUN": "false",
            "REAPER_MAX_RPM": "100000",
            **{f"REAPER_{k.upper()}": v for k, v in env.items()},
        }
    )
    async with BatchClient(
        api_key=KEY,
        base_url=IN_PROCESS_BASE_URL,
        transport=transport,
        max_rpm=settings.max_rpm,
        concurrency=settings.concurrency,
        page_size=settings.page_size,
        max_retries=settings.max_retries,
        sleep=sleep,
        clock=lambda: state.now().timestamp(),
        wall_clock=lambda: state.now().timestamp(),
        jitter=lambda: 0.5,
    ) as client:

        async def cycle() -> Run:
            metrics = Metrics()
            before = len(state.stats.mutations)
            with capture_logs() as events:
                report = await run_cycle(
                    settings, client, metrics=metrics, now=state.now, sleep=sleep
                )
            mutations = [
                (m.endpoint, m.batch_id, m.status) for m in list(state.stats.mutations)[before:]
            ]
            return Run(report, events, metrics, mutations)

        yield transport, cycle


def ids(state: EmulatorState) -> set[str]:
    return {r.id for r in state.iter_records()}


async def test_1_the_guards_cover_the_cancel_path() -> None:
    """REAPER_CANCEL_STALE_AFTER=1h typed for 1d, REAPER_MAX_DELETE_FRACTION=0.2: 25 running
    batches of 35 would be canceled and deleted; the stale cancels count as planned deletes, the
    guard stops the workspace: not one cancel, not one delete, exit 3, the guard named."""
    state = new_state(api_key=KEY)
    now = state.now()
    state.seed_objects(
        [seed(f"run_{i:02}", now, created_ago=2 * H + i * M) for i in range(25)]
        + [seed(f"old_{i:02}", now, created_ago=3 * D, ended_ago=2 * D) for i in range(10)]
    )
    async with reaper_on(state, cancel_stale_after="1h", max_delete_fraction="0.2") as (_, cycle):
        run = await cycle()

    assert run.mutations == []
    assert run.report.outcome is CycleOutcome.SAFETY_STOP
    assert run.report.exit_code() == 3
    (stop,) = run.logged("safety.stop")
    assert "delete_fraction" in str(stop)
    assert (
        run.sample("reaper_safety_stops_total", workspace="default", reason="delete_fraction") == 1
    )
    assert "REAPER_MAX_DELETE_FRACTION" in run.report.summary_text()
    assert len(ids(state)) == 35


@pytest.mark.parametrize("ended_ok", [False, True], ids=["refused_400", "answered_200"])
async def test_2_a_batch_that_ends_as_the_cancel_arrives_is_not_deleted(ended_ok: bool) -> None:
    """The stale batch ends on its own at the very moment the cancel arrives (refused 400, or
    answered 200 ended with no cancel_initiated_at): the cancel is not needed, no delete, and
    the 7-day ended retention keeps the batch."""
    state = new_state(api_key=KEY)
    now = state.now()
    state.seed_objects([seed("racing", now, created_ago=13 * H)])
    state.faults = Faults(cancel_race_ids=frozenset({"racing"}), cancel_ended_ok=ended_ok)
    async with reaper_on(state) as (_, cycle):
        run = await cycle()

    assert [m[0] for m in run.mutations] == ["cancel"]
    assert ids(state) == {"racing"}
    assert state.find("racing").status == "ended"  # type: ignore[union-attr]
    (line,) = run.logged("batch.cancel")
    assert line["outcome"] == "not_needed"
    assert run.report.outcome is CycleOutcome.SUCCESS


async def test_3_an_api_clock_8_days_off_acts_on_nothing() -> None:
    """The API's Date 8 days ahead of the host's clock: listing refused, no request but the
    list, the cycle failed (exit 1), reaper_listing_rejected_total{reason=clock_skew}."""
    state = new_state(api_key=KEY)
    now = state.now()
    state.seed_objects(
        [seed(f"old_{i}", now, created_ago=20 * D, ended_ago=19 * D) for i in range(5)]
        + [seed("stale", now, created_ago=13 * H)]
    )
    state.faults = Faults(clock_skew_seconds=8 * 86400)
    async with reaper_on(state) as (transport, cycle):
        run = await cycle()

    assert run.mutations == []
    assert {m for _t, m, _p in transport.seen} == {"GET"}
    assert run.report.exit_code() == 1
    (failed,) = run.logged("listing.failed")
    assert failed["error_type"] == "clock_skew"
    assert (
        run.sample("reaper_listing_rejected_total", workspace="default", reason="clock_skew") == 1
    )


@pytest.mark.parametrize(
    ("faults", "reason"),
    [
        (Faults(list_repeat_row_rate=1.0), "duplicate_id"),
        (Faults(list_repeat_previous_rate=1.0), "malformed_response"),
    ],
    ids=["row_repeated_down_the_page", "previous_page_repeated"],
)
async def test_4_a_listing_that_repeats_a_batch_acts_on_nothing(
    faults: Faults, reason: str
) -> None:
    """A page that shows a batch twice, further down or from the page before: refused."""
    state = new_state(api_key=KEY)
    now = state.now()
    state.seed_objects(
        [seed(f"old_{i:02}", now, created_ago=20 * D + i * H, ended_ago=19 * D) for i in range(9)]
    )
    state.faults = faults
    async with reaper_on(state, page_size="4") as (_, cycle):
        run = await cycle()

    assert run.mutations == []
    assert run.report.exit_code() == 1
    assert [f.error_type for f in run.report.listing_failures] == [reason]
    assert len(ids(state)) == 9


async def test_5_a_cancel_answered_with_another_batch_touches_neither() -> None:
    """Cancels answered with a protected, 30-minute-old batch's object: the action fails as a
    malformed response; the protected batch is never deleted (nor anything else)."""
    state = new_state(api_key=KEY)
    now = state.now()
    state.seed_objects(
        [
            seed("stale_0", now, created_ago=13 * H),
            seed("stale_1", now, created_ago=14 * H),
            seed("precious", now, created_ago=30 * M, ended_ago=10 * M),
        ]
    )
    state.faults = Faults(
        wrong_batch_ids=frozenset({"stale_0", "stale_1"}), wrong_batch_answer_id="precious"
    )
    async with reaper_on(state, protect_ids="precious") as (_, cycle):
        run = await cycle()

    assert [m for m in run.mutations if m[0] == "delete"] == []
    assert "precious" in ids(state)
    failures = sorted((f.batch_id, f.error_type) for f in run.report.failures)
    assert failures == [("stale_0", "malformed_response"), ("stale_1", "malformed_response")]
    assert all(f.request_id for f in run.report.failures)
    assert run.report.exit_code() == 1


async def test_7_the_cancel_wait_keeps_its_word() -> None:
    """60 cancels that never end, REAPER_CANCEL_WAIT_TIMEOUT=5s, 300 rpm: no poll is sent more
    than 5 s after the last cancel was answered (overrun: one request, 0.2 s at that pace); the
    planned deletes left undone make the cycle partial and every id is named."""
    state = new_state(api_key=KEY, cancel_seconds=3600)
    now = state.now()
    state.seed_objects([seed(f"stale_{i:02}", now, created_ago=13 * H) for i in range(60)])
    async with reaper_on(state, cancel_wait_timeout="5s", max_rpm="300") as (transport, cycle):
        run = await cycle()

    last_cancel = max(transport.times("POST", "/cancel"))
    polls = transport.times("GET", "")[1:]  # after the listing
    assert polls, "no poll at all"
    assert max(polls) <= last_cancel + timedelta(seconds=5) + timedelta(seconds=0.2)
    assert run.report.outcome is CycleOutcome.PARTIAL
    assert run.report.exit_code() == 1
    named = {i for e in run.logged("cancel.wait_timeout") for i in e["ids"]}
    assert named == {f"stale_{i:02}" for i in range(60)}


async def test_8_a_batch_whose_cancel_outlived_the_wait_is_deleted_next_cycle() -> None:
    """Canceled as stale, not ended within the wait: the next cycle deletes it (rule
    canceled_stale), instead of keeping it 7 days from its fresh ended_at."""
    state = new_state(api_key=KEY, cancel_seconds=120)
    now = state.now()
    state.seed_objects([seed("slow_cancel", now, created_ago=13 * H)])
    async with reaper_on(state, cancel_wait_timeout="10s") as (_, cycle):
        first = await cycle()
        state.advance(15 * 60)
        second = await cycle()

    assert first.report.outcome is CycleOutcome.PARTIAL
    assert [m[0] for m in first.mutations] == ["cancel"]
    assert [(m[0], m[1]) for m in second.mutations] == [("delete", "slow_cancel")]
    (line,) = second.logged("batch.delete")
    assert line["rule"] == "canceled_stale"
    assert second.report.outcome is CycleOutcome.SUCCESS
    assert ids(state) == set()


async def test_an_answer_without_date_leaves_the_clock_unchecked() -> None:
    """No Date header at all: the clock cannot be checked; the cycle acts, and says so."""
    state = new_state(api_key=KEY)
    now = state.now()
    state.seed_objects([seed("old", now, created_ago=20 * D, ended_ago=19 * D)])
    state.faults = Faults(omit_date=True)
    async with reaper_on(state) as (_, cycle):
        run = await cycle()

    assert run.report.outcome is CycleOutcome.SUCCESS
    (listed,) = run.logged("workspace.listed")
    assert listed["clock_skew"] is None
    assert ids(state) == set()
