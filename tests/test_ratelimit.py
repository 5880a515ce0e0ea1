"""The pacer: even spacing, shared holds, and slowing down when the API says so."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime

import pytest

from reaper.ratelimit import MAX_HOLD, MIN_FACTOR, Pacer, budget_scale
from tests.helpers import Clock

WALL_START = datetime(2026, 1, 1, tzinfo=UTC)


def make_pacer(clock: Clock, rpm: float = 600) -> Pacer:
    return Pacer(rpm, clock=clock, sleep=clock.sleep, wall_clock=clock.wall_clock)


def reset_in(clock: Clock, seconds: float) -> str:
    return datetime.fromtimestamp(clock.wall_clock() + seconds, UTC).isoformat()


@pytest.mark.anyio
async def test_starts_are_spaced_evenly_at_the_rate() -> None:
    """At 600 rpm the first request goes at once and each next one 0.1 s after the previous."""
    clock = Clock(WALL_START)
    pacer = make_pacer(clock, 600)
    for _ in range(5):
        await pacer.wait_turn()
    assert clock.slept == pytest.approx([0.1] * 4)


@pytest.mark.anyio
async def test_an_idle_spell_earns_no_burst() -> None:
    """After a minute of silence two requests are still one interval apart (no bucket of credit)."""
    clock = Clock(WALL_START)
    pacer = make_pacer(clock, 60)
    await pacer.wait_turn()
    clock.advance(60)
    await pacer.wait_turn()
    await pacer.wait_turn()
    assert clock.slept == pytest.approx([1.0])


@pytest.mark.anyio
async def test_a_hold_delays_every_start_until_it_ends() -> None:
    """hold(3) makes the next start wait 3 s even though its slot is free."""
    clock = Clock(WALL_START)
    pacer = make_pacer(clock, 600)
    pacer.hold(3.0)
    await pacer.wait_turn()
    assert clock.slept == pytest.approx([3.0])


def test_a_hold_is_capped() -> None:
    """A hold longer than MAX_HOLD is cut to it."""
    clock = Clock(WALL_START)
    pacer = make_pacer(clock)
    pacer.hold(10_000)
    assert pacer.not_before == pytest.approx(clock() + MAX_HOLD)


@pytest.mark.anyio
async def test_a_hold_that_arrives_during_a_wait_is_honoured() -> None:
    """A worker asleep for its slot queues again behind a hold that came meanwhile."""
    clock = Clock(WALL_START)
    pacer: Pacer

    async def sleep_then_hold(seconds: float) -> None:
        await clock.sleep(seconds)
        if len(clock.slept) == 1:
            pacer.hold(5.0)  # another worker got a 429 while we slept

    pacer = Pacer(600, clock=clock, sleep=sleep_then_hold, wall_clock=clock.wall_clock)
    await pacer.wait_turn()
    start = clock()
    await pacer.wait_turn()
    assert clock() - start == pytest.approx(0.1 + 5.0)


@pytest.mark.anyio
async def test_concurrent_workers_are_spaced_never_in_a_burst() -> None:
    """Eight workers waiting at once at 3000 rpm start 20 ms apart, one after another."""
    clock = Clock()
    pacer = make_pacer(clock, 3000)
    starts: list[float] = []

    async def worker() -> None:
        await pacer.wait_turn()
        starts.append(clock())

    await asyncio.gather(*(worker() for _ in range(8)))
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps == pytest.approx([0.02] * 7)


def test_a_429_halves_the_rate_once_per_episode() -> None:
    """429s for requests sent before the cut are the same episode; a later one cuts again."""
    clock = Clock(WALL_START)
    pacer = make_pacer(clock, 600)
    sent_early = clock()
    clock.advance(1)
    pacer.on_response(429, {}, sent_at=sent_early)
    assert pacer.rate_rpm == pytest.approx(300)
    pacer.on_response(429, {}, sent_at=sent_early)  # in flight before the cut
    assert pacer.rate_rpm == pytest.approx(300)
    clock.advance(1)
    pacer.on_response(429, {}, sent_at=clock() - 0.5)  # sent after the cut
    assert pacer.rate_rpm == pytest.approx(150)


def test_the_rate_never_drops_below_the_floor() -> None:
    """However many 429s, the pacer keeps MIN_FACTOR of the configured rate."""
    clock = Clock(WALL_START)
    pacer = make_pacer(clock, 320)
    for _ in range(20):
        clock.advance(1)
        pacer.on_response(429, {}, sent_at=clock())
    assert pacer.rate_rpm == pytest.approx(320 * MIN_FACTOR)


def test_successes_win_the_rate_back_gradually() -> None:
    """After a cut, a few successes are not enough; about fifteen restore the full rate."""
    clock = Clock(WALL_START)
    pacer = make_pacer(clock, 600)
    pacer.on_response(429, {}, sent_at=clock())
    for _ in range(5):
        pacer.on_response(200, {}, sent_at=clock())
    assert 300 < pacer.rate_rpm < 600
    for _ in range(10):
        pacer.on_response(200, {}, sent_at=clock())
    assert pacer.rate_rpm == pytest.approx(600)


def test_the_api_limit_caps_the_rate() -> None:
    """A requests-limit below REAPER_MAX_RPM becomes the ceiling."""
    clock = Clock(WALL_START)
    pacer = make_pacer(clock, 1000)
    headers = {
        "anthropic-ratelimit-requests-limit": "600",
        "anthropic-ratelimit-requests-remaining": "590",
    }
    pacer.on_response(200, headers, sent_at=clock())
    assert pacer.rate_rpm == pytest.approx(600)


def test_a_low_remaining_budget_slows_down_until_reset() -> None:
    """Remaining at 5% of the limit halves the pace; after the reset time it is back."""
    clock = Clock(WALL_START)
    pacer = make_pacer(clock, 200)
    headers = {
        "anthropic-ratelimit-requests-limit": "1000",
        "anthropic-ratelimit-requests-remaining": "50",
        "anthropic-ratelimit-requests-reset": reset_in(clock, 10),
    }
    pacer.on_response(200, headers, sent_at=clock())
    assert pacer.rate_rpm == pytest.approx(100)
    clock.advance(11)
    assert pacer.rate_rpm == pytest.approx(200)


def test_a_healthy_budget_lifts_the_slow_down() -> None:
    """The next response with plenty remaining restores the pace at once."""
    clock = Clock(WALL_START)
    pacer = make_pacer(clock, 200)
    low = {
        "anthropic-ratelimit-requests-limit": "1000",
        "anthropic-ratelimit-requests-remaining": "0",
    }
    high = {**low, "anthropic-ratelimit-requests-remaining": "400"}
    pacer.on_response(200, low, sent_at=clock())
    assert pacer.rate_rpm == pytest.approx(200 * MIN_FACTOR)
    pacer.on_response(200, high, sent_at=clock())
    assert pacer.rate_rpm == pytest.approx(200)


def test_unreadable_budget_headers_change_nothing() -> None:
    """Garbage in the rate-limit headers is ignored."""
    clock = Clock(WALL_START)
    pacer = make_pacer(clock, 200)
    headers = {
        "anthropic-ratelimit-requests-limit": "lots",
        "anthropic-ratelimit-requests-remaining": "1",
        "anthropic-ratelimit-requests-reset": "tomorrow",
    }
    pacer.on_response(200, headers, sent_at=clock())
    assert pacer.rate_rpm == pytest.approx(200)


@pytest.mark.parametrize(
    ("limit", "remaining", "scale"),
    [
        (1000, 1000, 1.0),
        (1000, 100, 1.0),
        (1000, 99, 0.99),
        (1000, 50, 0.5),
        (1000, 10, 0.1),
        (1000, 5, MIN_FACTOR),
        (1000, 0, MIN_FACTOR),
        (1000, -3, MIN_FACTOR),
        (0, 0, 1.0),
    ],
)
def test_budget_scale(limit: int, remaining: int, scale: float) -> None:
    """Full pace above 10% remaining, proportionally less below, never under the floor."""
    assert budget_scale(limit, remaining) == pytest.approx(scale)


@pytest.mark.parametrize("rpm", [0, -1, float("inf"), float("nan")])
def test_a_rate_must_be_positive(rpm: float) -> None:
    """A pacer without a usable rate is a programming error."""
    clock = Clock(WALL_START)
    with pytest.raises(ValueError, match="max_rpm"):
        make_pacer(clock, rpm)


@pytest.mark.anyio
async def test_queued_workers_get_a_recovered_pace_at_once() -> None:
    """Workers queued while the pace was slow start at the new pace once it recovers."""
    clock = Clock(WALL_START)
    pacer: Pacer

    async def sleep_and_recover(seconds: float) -> None:
        await clock.sleep(seconds)
        for _ in range(100):  # successes meanwhile win the full rate back
            pacer.on_response(200, {}, sent_at=clock())
        await asyncio.sleep(0)

    pacer = Pacer(600, clock=clock, sleep=sleep_and_recover, wall_clock=clock.wall_clock)
    for _ in range(4):
        clock.advance(1)
        pacer.on_response(429, {}, sent_at=clock())  # down to 1/16: one start per 1.6 s
    starts: list[float] = []

    async def worker() -> None:
        await pacer.wait_turn()
        starts.append(clock())

    t0 = clock()
    await asyncio.gather(*(worker() for _ in range(4)))
    assert [s - t0 for s in starts] == pytest.approx([0.0, 1.6, 1.7, 1.8])
