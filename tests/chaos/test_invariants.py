"""Safety invariants under random workloads: hypothesis draws the batches, the policy, the faults.

Each example seeds an in-process emulator (``asgi_transport``, a ``ManualClock``) with a drawn
population, then runs one to three full cycles with a real BatchClient, each under its own drawn
fault configuration, the clock moving between them. Before each cycle the test takes the truth
from the emulator (every batch's status, times and counts, at the instant the cycle will list);
after it, every cancel and delete request the emulator received during that cycle (answered or
refused) is checked against that truth with the rules of SPEC section 3, written out here
independently of the policy's code:

- never a protected id, never a batch younger than ``min_age``, never a status the reaper does
  not know;
- a cancel only for a batch that was ``in_progress`` and stale (never a ``canceling`` one);
- a delete only for a batch that was ended, outside the keep-last window, and due by the
  retention its true counts call for, or one this very cycle canceled (and only if
  ``delete_canceled``); never an ``in_progress`` one otherwise;
- at most ``max_actions_per_run`` batches acted on per cycle; none deleted past a tripped
  fraction guard; a dry run sends no cancel and no delete at all.

Issue 12's faults are mixed in (an API clock days off, rows repeated, answers naming another
batch, batches ending just as their cancel arrives): never any mutation in a workspace whose
listing was refused or whose guard stopped (both fraction guards, computed here exactly); never a
delete by the cancel path of a batch that ended on its own.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reaper.client import BatchClient
from reaper.cycle import CycleReport, run_cycle
from reaper.emulator.faults import Faults
from reaper.emulator.harness import IN_PROCESS_BASE_URL, asgi_transport, new_state
from reaper.emulator.records import ENDED, IN_PROGRESS, KNOWN_STATUSES, from_us
from reaper.emulator.state import EmulatorState
from reaper.metrics import Metrics
from reaper.models import format_time
from reaper.settings import Settings, load_settings
from tests.chaos.conftest import KEY
from tests.helpers import Clock

pytestmark = pytest.mark.slow

S = timedelta(seconds=1)
M = timedelta(minutes=1)
H = timedelta(hours=1)
D = timedelta(days=1)

# The thresholds the policies are drawn from; batch ages are drawn around them, to the second.
MIN_AGES = {"0s": timedelta(0), "1h": H, "6h": 6 * H}
STALE = {"never": None, "1h": H, "12h": 12 * H}
ENDED_AFTER = {"never": None, "0s": timedelta(0), "2h": 2 * H, "7d": 7 * D}
FAILED_AFTER = {"never": None, "2h": 2 * H, "30d": 30 * D}
EDGES = sorted(
    {v for table in (MIN_AGES, STALE, ENDED_AFTER, FAILED_AFTER) for v in table.values() if v}
)


@dataclass(frozen=True)
class Policy:
    """A drawn configuration, as environment values and as the thresholds they mean."""

    env: dict[str, str]
    min_age: timedelta
    stale: timedelta | None
    ended_after: timedelta | None
    failed_after: timedelta | None
    keep_last: int
    protect: frozenset[str]
    cap: int
    fraction: float
    cancel_fraction: float
    dry_run: bool
    delete_canceled: bool


@st.composite
def ages(draw: st.DrawFn) -> timedelta:
    """An age: anywhere in 40 days, or one second either side of a threshold."""
    if draw(st.booleans()):
        return timedelta(seconds=draw(st.integers(0, 40 * 86400)))
    edge = draw(st.sampled_from(EDGES))
    return edge + draw(st.sampled_from([-S, timedelta(0), S]))


@st.composite
def populations(draw: st.DrawFn, now: datetime) -> list[dict[str, Any]]:
    """Seed objects: every status, failed or not, some ending soon, ages near the thresholds."""
    seeds = []
    for i in range(draw(st.integers(0, 30))):
        created_ago = draw(ages())
        status = draw(st.sampled_from([IN_PROGRESS, "canceling", ENDED, ENDED, ENDED, "paused"]))
        obj: dict[str, Any] = {
            "id": f"b{i:02}",
            "created_at": format_time(now - created_ago),
            "processing_status": status,
        }
        if status == ENDED:
            ended_ago = min(draw(ages()), created_ago)
            obj["ended_at"] = format_time(now - ended_ago)
            failed = draw(st.sampled_from(["none", "errored", "expired"]))
            counts = {"succeeded": 3}
            if failed != "none":
                counts[failed] = 1
            obj["request_counts"] = counts
        elif status in (IN_PROGRESS, "canceling"):
            if created_ago >= 24 * H:  # past the API's 24 h limit it would have expired: young it
                obj["created_at"] = format_time(now - created_ago % (24 * H))
            obj["request_counts"] = {"processing": 2}
            ends_in = draw(st.none() | st.integers(1, 48 * 3600))
            if ends_in is not None:
                obj["_ends_at"] = format_time(now + timedelta(seconds=ends_in))
            if status == "canceling":
                obj["cancel_initiated_at"] = format_time(now - M)
        seeds.append(obj)
    return seeds


@st.composite
def policies(draw: st.DrawFn, ids: list[str]) -> Policy:
    """A policy: thresholds, keep-last, protected ids, guards, dry run or not."""
    min_age = draw(st.sampled_from(sorted(MIN_AGES)))
    stale = draw(st.sampled_from(sorted(STALE)))
    ended_after = draw(st.sampled_from(sorted(ENDED_AFTER)))
    failed_after = draw(st.sampled_from(sorted(FAILED_AFTER)))
    keep_last = draw(st.integers(0, 4))
    protect = frozenset(draw(st.lists(st.sampled_from(ids), max_size=3))) if ids else frozenset()
    cap = draw(st.sampled_from([0, 1, 3, 10_000, 10_000]))
    fraction = draw(st.sampled_from([0.0, 0.3, 1.0, 1.0]))
    cancel_fraction = draw(st.sampled_from([0.0, 0.5, 1.0, 1.0]))
    dry_run = draw(st.booleans()) and draw(st.booleans())  # a quarter of the examples
    delete_canceled = draw(st.booleans())
    env = {
        "REAPER_MIN_AGE": min_age,
        "REAPER_CANCEL_STALE_AFTER": stale,
        "REAPER_DELETE_ENDED_AFTER": ended_after,
        "REAPER_DELETE_FAILED_AFTER": failed_after,
        "REAPER_KEEP_LAST": str(keep_last),
        "REAPER_PROTECT_IDS": ",".join(sorted(protect)),
        "REAPER_MAX_ACTIONS_PER_RUN": str(cap),
        "REAPER_MAX_DELETE_FRACTION": str(fraction),
        "REAPER_MAX_CANCEL_FRACTION": str(cancel_fraction),
        "REAPER_DRY_RUN": str(dry_run).lower(),
        "REAPER_DELETE_CANCELED": str(delete_canceled).lower(),
        "REAPER_CANCEL_WAIT_TIMEOUT": draw(st.sampled_from(["0s", "1m", "10m"])),
        "REAPER_CONCURRENCY": str(draw(st.integers(1, 4))),
        "REAPER_PAGE_SIZE": str(draw(st.integers(1, 10))),
        "REAPER_MAX_RETRIES": str(draw(st.integers(0, 3))),
    }
    return Policy(
        env=env,
        min_age=MIN_AGES[min_age],
        stale=STALE[stale],
        ended_after=ENDED_AFTER[ended_after],
        failed_after=FAILED_AFTER[failed_after],
        keep_last=keep_last,
        protect=protect,
        cap=cap,
        fraction=fraction,
        cancel_fraction=cancel_fraction,
        dry_run=dry_run,
        delete_canceled=delete_canceled,
    )


def rates(*values: float, none: int = 2) -> st.SearchStrategy[float]:
    """No fault ``none`` times out of ``none + len(values)``, else one of ``values``."""
    return st.sampled_from([0.0] * none + list(values))


# The API's clock off by this much: within REAPER_MAX_CLOCK_SKEW's default 2m, or days beyond it.
SKEWS: Final = (0.0, 0.0, 0.0, 30.0, -30.0, 8 * 86400.0, -8 * 86400.0)
CLOCK_LIMIT: Final = 121.0  # 2m, plus the Date header's one-second resolution


@st.composite
def fault_sets(draw: st.DrawFn, ids: list[str]) -> Faults:
    """One cycle's faults: any mix of what the emulator can do wrong."""
    raced = frozenset(draw(st.lists(st.sampled_from(ids), max_size=4))) if ids else frozenset()
    return Faults(
        clock_skew_seconds=draw(st.sampled_from(SKEWS)),
        list_repeat_row_rate=draw(rates(1.0, none=6)),
        list_repeat_previous_rate=draw(rates(1.0, none=6)),
        wrong_batch_rate=draw(rates(0.3, none=4)),
        cancel_race_ids=raced,
        error_rate=draw(rates(0.2, 0.5)),
        throttle_rate=draw(rates(0.2)),
        should_retry=draw(st.sampled_from([None, None, False])),
        not_found_rate=draw(rates(0.3)),
        endpoints=draw(
            st.sampled_from(
                [frozenset(), frozenset({"retrieve", "cancel", "delete"}), frozenset({"list"})]
            )
        ),
        malformed_list_rate=draw(rates(0.2, none=5)),
        truncated_list_rate=draw(rates(0.2, none=5)),
        unknown_status_rate=draw(rates(0.3)),
        missing_fields_rate=draw(rates(0.3, none=5)),
        missing_fields=draw(
            st.sampled_from(
                [
                    ("created_at",),
                    ("ended_at",),
                    ("request_counts",),
                    ("processing_status",),
                    ("expires_at", "archived_at", "cancel_initiated_at", "results_url"),
                ]
            )
        ),
        cancel_ended_ok=draw(st.booleans()),
        delete_unfinished_conflict=draw(st.booleans()),
        rate_limit_rpm=draw(st.sampled_from([0, 0, 0, 30])),
    )


@dataclass(frozen=True)
class Truth:
    """A batch as the emulator holds it at the instant a cycle lists."""

    status: str
    created: datetime
    ended: datetime | None
    failed: bool
    canceled: datetime | None = None  # cancel_initiated_at


def truth(state: EmulatorState) -> dict[str, Truth]:
    """Take every batch's true status, times and counts now."""
    found = {}
    for r in state.iter_records():
        ended = from_us(r.end) if r.status == ENDED and r.end is not None else None
        canceled = None if r.cancel_at is None else from_us(r.cancel_at)
        failed = r.errored + r.expired > 0
        found[r.id] = Truth(r.status, from_us(r.created), ended, failed, canceled)
    return found


def keep_last_window(batches: dict[str, Truth], n: int) -> set[str]:
    """The n most recently created ended batches (ties: the greater id is the more recent)."""
    ended = [(t.created, i) for i, t in batches.items() if t.status == ENDED]
    return {i for _c, i in sorted(ended, reverse=True)[:n]}


def due(t: Truth, now: datetime, p: Policy) -> bool:
    """Rules 5b, 6 and 7 on the truth: canceled once stale, or ended long enough ago for its
    kind of retention."""
    if t.status != ENDED or t.ended is None:
        return False
    stale = p.stale
    if p.delete_canceled and t.canceled and stale is not None and t.canceled - t.created >= stale:
        return True
    after = p.failed_after if t.failed else p.ended_after
    return after is not None and t.ended <= now - after


def check_cycle(
    p: Policy,
    before: dict[str, Truth],
    now: datetime,
    requests: list[tuple[str, str]],
    faults: Faults,
    report: CycleReport,
) -> None:
    """Hold one cycle's cancel and delete requests against the truth at its listing."""
    if p.dry_run:
        assert requests == [], "a dry run sent a cancel or a delete"
        return
    if abs(faults.clock_skew_seconds) > CLOCK_LIMIT:
        # Refused: as clock_skew, unless the first page could not even be read.
        assert report.listing_failures, "a listing accepted from an API whose clock is days off"
    if report.listing_failures:
        assert requests == [], f"mutations after a refused listing: {report.listing_failures}"
        return
    if not (faults.unknown_status_rate or faults.missing_fields_rate) and tripped(p, before, now):
        assert requests == [], "a cancel or delete in a workspace a guard stopped"
        return
    window = keep_last_window(before, p.keep_last)
    canceled: set[str] = set()
    acted: set[str] = set()
    deleted_due = 0
    for endpoint, batch_id in requests:
        t = before[batch_id]  # never an id the listing did not show
        acted.add(batch_id)
        assert batch_id not in p.protect, f"{endpoint} of protected {batch_id}"
        assert t.created <= now - p.min_age, f"{endpoint} of {batch_id}, younger than min_age"
        assert t.status in KNOWN_STATUSES, f"{endpoint} of {batch_id}, status {t.status}"
        if endpoint == "cancel":
            assert t.status == IN_PROGRESS, f"cancel of {batch_id}, {t.status}"
            assert p.stale is not None, f"cancel of {batch_id} with no stale rule"
            assert t.created <= now - p.stale, f"cancel of {batch_id}, not stale"
            canceled.add(batch_id)
            continue
        if batch_id in canceled:  # canceled by this cycle, now ended: rule 3's delete
            assert p.delete_canceled, f"delete of canceled {batch_id} without delete_canceled"
            assert batch_id not in faults.cancel_race_ids, f"{batch_id} ended on its own"
            continue
        assert t.status == ENDED, f"delete of {batch_id}, {t.status} and not canceled"
        assert batch_id not in window, f"delete of {batch_id}, among the keep-last"
        assert due(t, now, p), f"delete of {batch_id}, not due under its true retention"
        deleted_due += 1
    assert len(acted) <= p.cap, f"acted on {len(acted)} batches, cap {p.cap}"
    if deleted_due and not (faults.unknown_status_rate or faults.missing_fields_rate):
        listed = len(before)
        planned = sum(
            1
            for i, t in before.items()
            if i not in p.protect
            and t.created <= now - p.min_age
            and i not in window
            and due(t, now, p)
        )
        if p.delete_canceled and p.stale is not None:  # stale cancels count as deletes
            planned += sum(
                1
                for i, t in before.items()
                if i not in p.protect
                and t.status == IN_PROGRESS
                and t.created <= now - max(p.min_age, p.stale)
            )
        # Planned deletes beyond the fraction trip the guard: then no delete at all.
        assert planned <= p.fraction * listed, f"{deleted_due} deletes past the fraction guard"


def tripped(p: Policy, before: dict[str, Truth], now: datetime) -> bool:
    """Whether a fraction guard stops the workspace, from the truth (SPEC section 2, exactly)."""
    window = keep_last_window(before, p.keep_last)
    eligible = {
        i: t for i, t in before.items() if i not in p.protect and t.created <= now - p.min_age
    }
    stale = {
        i
        for i, t in eligible.items()
        if t.status == IN_PROGRESS and p.stale is not None and t.created <= now - p.stale
    }
    deletes = sum(1 for i, t in eligible.items() if i not in window and due(t, now, p))
    counted = deletes + (len(stale) if p.delete_canceled else 0)
    in_progress = sum(1 for t in before.values() if t.status == IN_PROGRESS)
    return bool(
        (counted and Fraction(counted, len(before)) > Fraction(repr(p.fraction)))
        or (stale and Fraction(len(stale), in_progress) > Fraction(repr(p.cancel_fraction)))
    )


async def run_example(
    seeds: list[dict[str, Any]],
    p: Policy,
    schedule: list[tuple[Faults, int]],
    cancel_seconds: float,
    random_seed: int,
) -> None:
    """Seed, then run a cycle per (faults, seconds to wait after) and check each one."""
    fake = Clock(monotonic_start=0.0)  # time passes only when somebody waits
    state = new_state(
        api_key=KEY,
        cancel_seconds=cancel_seconds,
        random_seed=random_seed,
        monotonic=fake.monotonic,
    )
    state.seed_objects(seeds)
    settings: Settings = load_settings(
        {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": IN_PROCESS_BASE_URL, **p.env}
    )

    async def cycle_sleep(seconds: float) -> None:
        state.advance(seconds)
        await asyncio.sleep(0)

    async with BatchClient(
        api_key=KEY,
        base_url=IN_PROCESS_BASE_URL,
        page_size=settings.page_size,
        max_retries=settings.max_retries,
        max_rpm=100_000,
        concurrency=settings.concurrency,
        metrics=Metrics(),
        transport=asgi_transport(state),
        sleep=fake.sleep,
        clock=fake.monotonic,
        wall_clock=lambda: state.now().timestamp(),
        jitter=lambda: 0.5,
    ) as client:
        for faults, wait in schedule:
            state.faults = faults
            before, now, seen = truth(state), state.now(), len(state.stats.mutations)
            report = await run_cycle(
                settings, client, metrics=Metrics(), now=state.now, sleep=cycle_sleep
            )
            requests = [(m.endpoint, m.batch_id or "") for m in list(state.stats.mutations)[seen:]]
            check_cycle(p, before, now, requests, faults, report)
            state.advance(wait)


@st.composite
def examples(
    draw: st.DrawFn,
) -> tuple[list[dict[str, Any]], Policy, list[tuple[Faults, int]], float, int]:
    """A whole example: population, policy, fault schedule, cancel duration, emulator seed."""
    now = new_state().now()
    seeds = draw(populations(now))
    ids = [str(s["id"]) for s in seeds]
    policy = draw(policies(ids))
    schedule = draw(
        st.lists(
            st.tuples(fault_sets(ids), st.sampled_from([0, 60, 3600, 86400])),
            min_size=1,
            max_size=3,
        )
    )
    return (
        seeds,
        policy,
        schedule,
        draw(st.sampled_from([0.0, 30.0, 900.0])),
        draw(st.integers(0, 2**16)),
    )


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(examples())
def test_what_was_canceled_and_deleted_was_always_allowed(
    example: tuple[list[dict[str, Any]], Policy, list[tuple[Faults, int]], float, int],
) -> None:
    """Whatever the batches, the policy and the faults: only what SPEC section 3 allows."""
    seeds, policy, schedule, cancel_seconds, random_seed = example
    asyncio.run(run_example(seeds, policy, schedule, cancel_seconds, random_seed))
