"""The cycle over real HTTP against the emulator: exact end states, with and without faults.

The expected end state is a table written by hand from the SPEC's rules (which ids must remain),
never recomputed with the policy's code. The emulator counts every request it answers, so "dry run
sends nothing" and "no list cursor was ever refused" are checked where the requests land.

Time: the batches live on the emulator's manual clock; the cycle's ``now`` reads it and the cycle's
pauses (the cancel wait) move it, so a 45-second cancel takes no real time. The client's own
pauses (retries, pacing, rate-limit holds) run on a warped clock, 50 times faster than the wall
clock, shared with the emulator's rate limiter so that the limit and the client agree on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest

from reaper.client import BatchClient
from reaper.cycle import CycleOutcome, CycleReport, run_cycle
from reaper.emulator.faults import Faults
from reaper.emulator.harness import new_state, running_emulator
from reaper.emulator.state import EmulatorState
from reaper.metrics import Metrics
from reaper.models import format_time
from reaper.settings import Settings, load_settings
from tests.helpers import Clock, api_batch

pytestmark = pytest.mark.anyio

KEY = "sk-ant-emulator-test-key"
PAGE_SIZE = 7
M = timedelta(minutes=1)
H = timedelta(hours=1)
D = timedelta(days=1)


def seeded_mix(
    now: datetime, workspace: str | None = None, prefix: str = ""
) -> list[dict[str, Any]]:
    """A hand-made mix; the comment on each line is the SPEC rule that decides it."""
    ws, p = workspace, prefix
    mix = [
        api_batch(f"{p}ended_old_1", now, created_ago=20 * D, ended_ago=19 * D, workspace=ws),  # 7
        api_batch(f"{p}ended_old_2", now, created_ago=9 * D, ended_ago=8 * D, workspace=ws),  # 7
        api_batch(f"{p}ended_recent", now, created_ago=6 * D, ended_ago=5 * D, workspace=ws),  # 8
        api_batch(
            f"{p}failed_recent",
            now,
            created_ago=11 * D,
            ended_ago=10 * D,
            workspace=ws,
            succeeded=3,
            errored=2,
        ),  # 8: failed batches keep 30 days
        api_batch(
            f"{p}failed_old",
            now,
            created_ago=35 * D,
            ended_ago=34 * D,
            workspace=ws,
            succeeded=3,
            errored=1,
        ),  # 6
        api_batch(
            f"{p}expired_old", now, created_ago=40 * D, ended_ago=39 * D, workspace=ws, expired=4
        ),  # 6
        api_batch(
            f"{p}protected_old", now, created_ago=20 * D, ended_ago=19 * D, workspace=ws
        ),  # 1
        api_batch(f"{p}stale_1", now, created_ago=13 * H, workspace=ws),  # 3: cancel, then delete
        api_batch(f"{p}stale_2", now, created_ago=23 * H, workspace=ws),  # 3
        api_batch(f"{p}running_fresh", now, created_ago=2 * H, workspace=ws),  # 4
        api_batch(
            f"{p}canceling_slow", now, created_ago=20 * H, status="canceling", workspace=ws
        ),  # 4
        api_batch(f"{p}young_ended", now, created_ago=30 * M, ended_ago=10 * M, workspace=ws),  # 2
        api_batch(f"{p}mystery", now, created_ago=50 * D, status="paused", workspace=ws),  # 8
    ]
    for i in range(30):  # enough for several pages of 7
        mix.append(
            api_batch(
                f"{p}bulk_old_{i:02}",
                now,
                created_ago=15 * D + i * H,
                ended_ago=14 * D,
                workspace=ws,
            )
        )  # 7
        mix.append(
            api_batch(
                f"{p}bulk_recent_{i:02}",
                now,
                created_ago=4 * D + i * H,
                ended_ago=3 * D,
                workspace=ws,
            )
        )  # 8
    # A canceling batch that does not end while the test runs: its end is a day away.
    slow = next(obj for obj in mix if obj["id"] == f"{p}canceling_slow")
    slow["cancel_initiated_at"] = format_time(now - M)
    slow["_ends_at"] = format_time(now + D)
    return mix


# The end state, by hand: these ids remain; every other seeded id is gone.
REMAINING_NAMES = {
    "ended_recent",
    "failed_recent",
    "protected_old",
    "running_fresh",
    "canceling_slow",
    "young_ended",
    "mystery",
    *(f"bulk_recent_{i:02}" for i in range(30)),
}
GONE_NAMES = {
    "ended_old_1",
    "ended_old_2",
    "failed_old",
    "expired_old",
    "stale_1",
    "stale_2",
    *(f"bulk_old_{i:02}" for i in range(30)),
}
STALE_NAMES = {"stale_1", "stale_2"}
EXPECTED_REMAINING = REMAINING_NAMES
EXPECTED_GONE = GONE_NAMES
STALE = STALE_NAMES


def prefixed(prefix: str, names: set[str]) -> set[str]:
    return {prefix + name for name in names}


def settings_for(base_url: str, **env: str) -> Settings:
    values = {
        "ANTHROPIC_API_KEY": KEY,
        "ANTHROPIC_BASE_URL": base_url,
        "REAPER_PROTECT_IDS": "protected_old",
        "REAPER_PAGE_SIZE": str(PAGE_SIZE),
        "REAPER_CONCURRENCY": "4",
        "REAPER_MAX_RPM": "100000",
        "REAPER_MAX_RETRIES": "8",
        "REAPER_CANCEL_WAIT_TIMEOUT": "2m",
    }
    values.update({f"REAPER_{name.upper()}": value for name, value in env.items()})
    return load_settings(values)


@contextmanager
def emulator(warp: Clock, **kwargs: Any) -> Iterator[tuple[str, EmulatorState]]:
    state = new_state(api_key=KEY, cancel_seconds=45, monotonic=warp.monotonic, **kwargs)
    with running_emulator(state) as (base_url, running):
        yield base_url, running


@asynccontextmanager
async def client_for(
    settings: Settings, state: EmulatorState, warp: Clock, metrics: Metrics
) -> AsyncIterator[BatchClient]:
    async with BatchClient(
        api_key=settings.api_key_value(),
        base_url=settings.base_url,
        page_size=settings.page_size,
        max_retries=settings.max_retries,
        max_rpm=settings.max_rpm,
        concurrency=settings.concurrency,
        metrics=metrics,
        sleep=warp.sleep,
        clock=warp.monotonic,
        wall_clock=lambda: state.now().timestamp(),
    ) as client:
        yield client


@asynccontextmanager
async def other_traffic(
    state: EmulatorState, every: float = 0.25, burst: float = 0.02
) -> AsyncIterator[None]:
    """Spend the rate-limit budget in bursts, as the organisation's own batch traffic would.

    The first burst lasts until the reaper has met a 429, the next ones ``burst`` seconds every
    ``every`` seconds (real time): the reaper cannot foresee them, however well it paces itself.
    """

    def drain() -> None:
        while (verdict := state.take_token()) is not None and verdict[0]:
            pass

    async def spend() -> None:
        until = time.monotonic() + 5
        while state.stats.count(status=429) == seen and time.monotonic() < until:
            drain()
            await asyncio.sleep(0.001)
        while True:
            await asyncio.sleep(every)
            until = time.monotonic() + burst
            while time.monotonic() < until:
                drain()
                await asyncio.sleep(0.001)

    seen = state.stats.count(status=429)
    drain()
    task = asyncio.create_task(spend())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def one_cycle(
    settings: Settings, state: EmulatorState, warp: Clock, metrics: Metrics
) -> CycleReport:
    async def emulator_sleep(seconds: float) -> None:
        state.advance(seconds)
        await asyncio.sleep(0)

    async with client_for(settings, state, warp, metrics) as client:
        return await run_cycle(
            settings, client, metrics=metrics, now=state.now, sleep=emulator_sleep
        )


def remaining(state: EmulatorState, workspace: str | None = None) -> set[str]:
    return {record.id for record in state.iter_records(workspace)}


def successful_mutations(state: EmulatorState, endpoint: str) -> list[str]:
    return [
        m.batch_id or ""
        for m in state.stats.mutations
        if m.endpoint == endpoint and m.status == 200
    ]


async def test_seeded_mix_reaches_the_exact_end_state_in_one_cycle(metrics: Metrics) -> None:
    """Fault-free: one cycle deletes exactly the expected ids with the minimum of requests."""
    warp = Clock(speedup=50)
    with emulator(warp) as (base_url, state):
        state.seed_objects(seeded_mix(state.now()))
        start = state.now()
        report = await one_cycle(settings_for(base_url, dry_run="false"), state, warp, metrics)

        assert remaining(state) == EXPECTED_REMAINING
        assert report.outcome is CycleOutcome.SUCCESS
        assert sorted(successful_mutations(state, "cancel")) == sorted(STALE)
        assert sorted(successful_mutations(state, "delete")) == sorted(EXPECTED_GONE)
        assert state.stats.count("list", 400) == 0  # no cursor was ever refused
        # The cancel takes 45 s; polls at 1, 3, 7, 15, 31 and 61 s find it ended at the sixth.
        assert state.now() - start == timedelta(seconds=61)
        pages = -(-(len(EXPECTED_REMAINING) + len(EXPECTED_GONE)) // PAGE_SIZE)
        assert report.requests == {
            "list": pages,
            "cancel": 2,
            "retrieve": 2 * 6,
            "delete": len(EXPECTED_GONE),
        }
        assert state.stats.count() == sum(report.requests.values())
        actions = 2 + len(EXPECTED_GONE)
        print(
            f"\nrequests {report.requests}: list pages {pages} + one per action {actions}"
            f" + cancel polls 12 = {pages + actions + 12};"
            f" the emulator answered {state.stats.count()}"
        )


async def test_dry_run_makes_zero_mutating_requests(metrics: Metrics) -> None:
    """A dry run against the emulator: only list requests arrive, and nothing changes."""
    warp = Clock(speedup=50)
    with emulator(warp) as (base_url, state):
        state.seed_objects(seeded_mix(state.now()))
        before = remaining(state)
        report = await one_cycle(settings_for(base_url), state, warp, metrics)

        assert state.stats.mutating() == {"create": 0, "cancel": 0, "delete": 0}
        assert state.stats.count() == state.stats.count("list")
        assert remaining(state) == before
        assert report.summary_text().startswith("DRY RUN")


# name -> (faults, settings): the client's retries absorb the first four within one cycle; the
# last fails actions and whole listings for good, and takes a few cycles.
FAULTS: dict[str, tuple[Faults, dict[str, str]]] = {
    "errors_500_529": (Faults(error_rate=0.2), {}),
    "latency": (Faults(latency_ms=15), {}),
    "rate_limited": (Faults(rate_limit_rpm=600), {}),
    "everything": (
        Faults(error_rate=0.2, latency_ms=5, rate_limit_rpm=600, throttle_rate=0.05),
        {},
    ),
    "errors_past_retries": (Faults(error_rate=0.3), {"max_retries": "2"}),
}


@pytest.mark.parametrize("name", list(FAULTS))
async def test_with_faults_the_end_state_is_still_exact(metrics: Metrics, name: str) -> None:
    """Under faults a few cycles converge on the same end state, and nothing else is touched."""
    faults, env = FAULTS[name]
    warp = Clock(speedup=50)
    with emulator(warp) as (base_url, state):
        state.seed_objects(seeded_mix(state.now()))
        state.faults = faults
        settings = settings_for(base_url, dry_run="false", **env)
        outcomes = []
        for _ in range(8):
            async with other_traffic(state):
                report = await one_cycle(settings, state, warp, metrics)
            outcomes.append(report.outcome)
            if report.outcome is CycleOutcome.SUCCESS and remaining(state) == EXPECTED_REMAINING:
                break

        print(
            f"\n{name}: {len(outcomes)} cycle(s) {[str(o) for o in outcomes]},"
            f" 429s {state.stats.count(status=429)},"
            f" 5xx {state.stats.count(status=500) + state.stats.count(status=529)},"
            f" requests {state.stats.count()}"
        )
        assert remaining(state) == EXPECTED_REMAINING, outcomes
        # Never a wrong deletion or cancel, whatever was retried.
        assert set(successful_mutations(state, "delete")) <= EXPECTED_GONE
        assert set(successful_mutations(state, "cancel")) <= STALE
        assert state.stats.count("list", 400) == 0
        if faults.error_rate:
            assert state.stats.count(status=500) + state.stats.count(status=529) > 0
        if faults.rate_limit_rpm:
            assert state.stats.count(status=429) > 0
        if not env:
            assert outcomes == [CycleOutcome.SUCCESS]  # the retries absorbed every fault


async def test_cancel_wait_timeout_leaves_the_batch_canceling(metrics: Metrics) -> None:
    """A cancel slower than the wait: the batch is left canceling, the rest is done; its planned
    delete left undone makes the cycle partial (exit 1)."""
    warp = Clock(speedup=50)
    with emulator(warp) as (base_url, state):
        state.cancel_seconds = 600
        state.seed_objects(seeded_mix(state.now()))
        report = await one_cycle(
            settings_for(base_url, dry_run="false", cancel_wait_timeout="60s"),
            state,
            warp,
            metrics,
        )

        assert remaining(state) == EXPECTED_REMAINING | STALE
        assert {state.find(i).status for i in STALE} == {"canceling"}  # type: ignore[union-attr]
        assert report.still_ending == 2
        assert report.outcome is CycleOutcome.PARTIAL
        assert report.exit_code() == 1


async def test_workspaces_are_swept_one_after_another(metrics: Metrics) -> None:
    """Both configured workspaces reach the expected state; the unconfigured one is untouched."""
    warp = Clock(speedup=50)
    with emulator(warp) as (base_url, state):
        now = state.now()
        state.seed_objects([*seeded_mix(now, "wrkspc_a", "a_"), *seeded_mix(now, "wrkspc_b", "b_")])
        state.seed_objects([api_batch("default_old", now, created_ago=20 * D, ended_ago=19 * D)])
        settings = settings_for(
            base_url,
            dry_run="false",
            workspace_ids="wrkspc_a,wrkspc_b",
            protect_ids="a_protected_old,b_protected_old",
        )
        report = await one_cycle(settings, state, warp, metrics)

        assert remaining(state, "wrkspc_a") == prefixed("a_", REMAINING_NAMES)
        assert remaining(state, "wrkspc_b") == prefixed("b_", REMAINING_NAMES)
        assert remaining(state, state.default_workspace) == {"default_old"}
        assert report.outcome is CycleOutcome.SUCCESS
        by_workspace = {m.workspace for m in state.stats.mutations}
        assert by_workspace == {"wrkspc_a", "wrkspc_b"}
