"""The chaos suite's harness: an emulator over loopback, a fast clock, cycles until convergence.

Time: the batches live on the emulator's manual clock; a cycle's ``now`` reads it (plus an offset
when a test puts the two clocks apart) and the cycle's own pauses (the cancel wait) move it, so a
cancel that takes 30 s costs no real time. The client's pauses (retries, pacing, rate-limit holds)
run on a fast ``Clock``, ``FACTOR`` times faster than the wall clock, which the emulator's rate
limiter shares, so that both sides agree on what a second is.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from structlog.testing import capture_logs

from reaper.client import BatchClient
from reaper.cycle import CycleOutcome, CycleReport, run_cycle
from reaper.emulator.harness import new_state, running_emulator
from reaper.emulator.state import EmulatorState
from reaper.metrics import Metrics
from reaper.settings import Settings, load_settings
from tests.chaos import population as pop
from tests.helpers import Clock

# A canary: if any 8-character run of it shows up in an output, the key leaked.
KEY: Final = "sk-ant-api03-CANARY-Zq7Wx3Rv9Tb2Nm5Lk8Hj4Gf6Dc1Sa0Pe-QoUiYtRwXz_AAAA"
FACTOR: Final = 200.0
PAGE_SIZE: Final = 10


def fragments(secret: str, width: int = 8) -> set[str]:
    """Return every run of ``width`` characters of ``secret``."""
    return {secret[i : i + width] for i in range(len(secret) - width + 1)}


def leaks(text: str, secret: str = KEY) -> list[str]:
    """Return the 8-character fragments of ``secret`` found in ``text`` (empty: no leak)."""
    return sorted(f for f in fragments(secret) if f in text)


def chaos_settings(base_url: str, **env: str) -> Settings:
    """Return settings for the population's policy, acting for real, against ``base_url``."""
    values = {
        "ANTHROPIC_API_KEY": KEY,
        "ANTHROPIC_BASE_URL": base_url,
        "REAPER_DRY_RUN": "false",
        "REAPER_PAGE_SIZE": str(PAGE_SIZE),
        "REAPER_CONCURRENCY": "4",
        "REAPER_MAX_RPM": "100000",
        "REAPER_CANCEL_WAIT_TIMEOUT": "3m",
        **pop.POLICY_ENV,
    }
    values.update(env)
    return load_settings(values)


@dataclass
class Run:
    """What a chaos run saw: one report per cycle, the log events, the emulator's end state."""

    reports: list[CycleReport]
    events: list[dict[str, Any]]
    state: EmulatorState
    metrics: Metrics
    seeded: set[str]

    @property
    def cycles(self) -> int:
        """How many cycles ran."""
        return len(self.reports)

    @property
    def outcomes(self) -> list[str]:
        """The cycles' outcomes, in order."""
        return [r.outcome.value for r in self.reports]

    def remaining(self) -> set[str]:
        """Ids still stored by the emulator."""
        return {r.id for r in self.state.iter_records()}

    def logged(self, event: str) -> list[dict[str, Any]]:
        """Return the captured log events named ``event``."""
        return [e for e in self.events if e.get("event") == event]

    def sample(self, name: str, **labels: str) -> float:
        """Return a metric sample's value (0 when the series does not exist)."""
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def samples(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Return every sample of a metric, by its sorted labels."""
        found: dict[tuple[tuple[str, str], ...], float] = {}
        for family in self.metrics.registry.collect():
            for s in family.samples:
                if s.name == name:
                    found[tuple(sorted(s.labels.items()))] = s.value
        return found


@dataclass
class Chaos:
    """An emulator over loopback seeded with the population, and the means to run cycles on it."""

    base_url: str
    state: EmulatorState
    fast: Clock
    seeded: set[str]
    metrics: Metrics = field(default_factory=Metrics)

    def client(self, base_url: str | None = None, **options: Any) -> BatchClient:
        """Return a BatchClient on the fast clock (``options`` override its defaults)."""
        jitter = random.Random(7)
        kwargs: dict[str, Any] = {
            "api_key": KEY,
            "base_url": base_url or self.base_url,
            "page_size": PAGE_SIZE,
            "timeout": 5.0,
            "max_retries": 12,
            "max_rpm": 100_000,
            "concurrency": 4,
            "metrics": self.metrics,
            "sleep": self.fast.sleep,
            "clock": self.fast.monotonic,
            "wall_clock": lambda: self.state.now().timestamp(),
            "jitter": jitter.random,
        }
        kwargs.update(options)
        return BatchClient(**kwargs)

    def now(self, skew: timedelta = timedelta(0)) -> Callable[[], datetime]:
        """Return the reaper's clock: the emulator's, ``skew`` ahead (negative: behind)."""
        return lambda: self.state.now() + skew

    async def cycle(
        self,
        client: BatchClient,
        settings: Settings,
        *,
        skew: timedelta = timedelta(0),
    ) -> CycleReport:
        """Run one cycle; its cancel-wait pauses move the emulator's clock."""

        async def sleep(seconds: float) -> None:
            self.state.advance(seconds)
            await asyncio.sleep(0)

        return await run_cycle(
            settings, client, metrics=self.metrics, now=self.now(skew), sleep=sleep
        )

    async def converge(
        self,
        *,
        settings: Settings | None = None,
        max_cycles: int = 6,
        interval: float = 60.0,
        skew: timedelta = timedelta(0),
        before_cycle: Callable[[int], None] | None = None,
        **client_options: Any,
    ) -> Run:
        """Run cycles until one succeeds with the expected end state (or ``max_cycles`` ran)."""
        settings = settings or chaos_settings(self.base_url)
        reports: list[CycleReport] = []
        expected = self.seeded - pop.to_delete(self.seeded)
        with capture_logs() as events:
            async with self.client(**client_options) as client:
                for n in range(max_cycles):
                    if before_cycle is not None:
                        before_cycle(n)
                    report = await self.cycle(client, settings, skew=skew)
                    reports.append(report)
                    done = unsettled(self.state, self.seeded) == expected
                    if report.outcome is CycleOutcome.SUCCESS and done:
                        break
                    self.state.advance(interval)
        return Run(reports, events, self.state, self.metrics, self.seeded)


@asynccontextmanager
async def chaos_emulator(**state_options: Any) -> AsyncIterator[Chaos]:
    """Serve a fresh emulator seeded with the population over loopback; yield the harness."""
    fast = Clock(speedup=FACTOR)
    options: dict[str, Any] = {"api_key": KEY, "cancel_seconds": 30, "monotonic": fast.monotonic}
    options.update(state_options)
    state = new_state(**options)
    seeds = pop.population(state.now())
    state.seed_objects(seeds)
    with running_emulator(state) as (base_url, served):
        yield Chaos(base_url, served, fast, pop.ids(seeds))


def unsettled(state: EmulatorState, seeded: set[str]) -> set[str]:
    """Return the ids still stored, but for stale batches already canceled.

    A stale batch canceled, but whose delete a fault defeated, stays until the ended retention
    (SPEC section 3 deletes a canceled batch only within the cycle's wait): waiting for it would
    never end, so it does not count here; ``assert_converged`` says when it may remain.
    """
    stale = pop.to_cancel(seeded)
    return {r.id for r in state.iter_records() if r.id not in stale or r.status == "in_progress"}


def assert_safe(run: Run) -> None:
    """Assert no kept batch got a cancel or delete request, and what was done was due."""
    touched: dict[str, set[str]] = {"cancel": set(), "delete": set()}
    performed: dict[str, set[str]] = {"cancel": set(), "delete": set()}
    for m in run.state.stats.mutations:
        assert m.batch_id is not None
        touched[m.endpoint].add(m.batch_id)
        if m.status == 200:
            performed[m.endpoint].add(m.batch_id)
    assert not touched["cancel"] & pop.kept(run.seeded), "a kept batch was sent a cancel"
    assert not touched["delete"] & pop.kept(run.seeded), "a kept batch was sent a delete"
    assert touched["cancel"] <= pop.to_cancel(run.seeded)
    assert touched["delete"] <= pop.to_delete(run.seeded)
    assert performed["cancel"] <= pop.to_cancel(run.seeded)


def assert_converged(run: Run, *, canceled_left: bool = False) -> None:
    """Assert the end state is exactly the fault-free one: the kept remain, the rest is gone.

    With ``canceled_left``, a stale batch may remain if it was canceled and has ended (its delete
    answered 404 by a fault): SPEC section 3 deletes a canceled batch only within the cycle's
    wait; later cycles apply the ended retention to it.
    """
    if canceled_left:
        assert_canceled_leftovers(run.state, run.seeded)
    else:
        assert run.remaining() == pop.kept(run.seeded), run.outcomes
    assert run.reports[-1].outcome is CycleOutcome.SUCCESS, run.outcomes
    stored = {r.id: r for r in run.state.iter_records()}
    # Untouched: the canceling ones are still canceling, the running ones still running.
    assert {stored[i].status for i in stored if i.startswith("keep_running")} == {"in_progress"}
    assert {stored[i].status for i in stored if i.startswith("keep_canceling")} == {"canceling"}


def assert_canceled_leftovers(state: EmulatorState, seeded: set[str]) -> None:
    """Assert what remains beyond the kept batches is stale ones this run canceled, now ended."""
    remaining = {r.id for r in state.iter_records()}
    canceled = {m.batch_id for m in state.stats.mutations if m.endpoint == "cancel"}
    for batch_id in remaining - pop.kept(seeded):
        record = state.find(batch_id)
        assert record is not None, batch_id
        assert batch_id in pop.to_cancel(seeded), batch_id
        assert record.status in ("canceling", "ended"), batch_id
        assert batch_id in canceled, batch_id
    assert pop.kept(seeded) <= remaining


def request_ids_of(run: Run, endpoint: str, status: int) -> set[str]:
    """Return the request ids the emulator gave the mutating requests it answered ``status``."""
    return {
        m.request_id
        for m in run.state.stats.mutations
        if m.endpoint == endpoint and m.status == status
    }
