"""Chaos over real HTTP: every fault the API (or the network) can throw, cycle after cycle.

Each scenario seeds the population of ``tests.chaos.population`` into an emulator served over
loopback, switches a fault on and runs full cycles with a real BatchClient until one succeeds with
the expected end state. Then, whatever the fault:

- the end state is exactly the fault-free one (written by hand, not computed by the policy);
- no batch the policy keeps ever got a cancel or delete request (the emulator's mutation log);
- the failures were counted: the reaper's ``reaper_api_requests_total`` matches, code by code,
  what the emulator answered (or ``error`` when no answer arrived), retries are counted and
  logged, failed actions are counted and logged;
- every failure logged with an answer carries the answer's request id.

The number of cycles each fault took is bounded here and reported in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from reaper.cycle import CycleOutcome
from reaper.emulator.faults import Faults
from tests.chaos import population as pop
from tests.chaos.conftest import (
    Chaos,
    Run,
    assert_converged,
    assert_safe,
    chaos_emulator,
    chaos_settings,
    request_ids_of,
)
from tests.chaos.proxy import ProxyFaults, chaos_proxy

pytestmark = pytest.mark.anyio

REQUEST_ID = re.compile(r"req_[A-Za-z0-9]+")


@dataclass(frozen=True)
class Scenario:
    """An emulator fault, the cycles it may take, and the codes it must leave in the metrics."""

    faults: Faults
    max_cycles: int
    codes: frozenset[str] = frozenset()
    client: dict[str, Any] = field(default_factory=dict)
    failed_actions: bool = False
    failed_listing: bool = False
    drain_rate_limit: bool = False
    canceled_left: bool = False


SCENARIOS = {
    "errors_10pct": Scenario(Faults(error_rate=0.1), 2, frozenset({"500", "529"})),
    "errors_30pct": Scenario(Faults(error_rate=0.3), 2, frozenset({"500", "529"})),
    "errors_50pct": Scenario(Faults(error_rate=0.5), 3, frozenset({"500", "529"})),
    "overloaded_529_only": Scenario(
        Faults(error_rate=0.3, overloaded_share=1.0), 2, frozenset({"529"})
    ),
    "burst_of_429_without_retry_after": Scenario(
        Faults(throttle_rate=1.0, limit=8), 1, frozenset({"429"})
    ),
    "rate_limit_429_with_retry_after": Scenario(
        Faults(rate_limit_rpm=120), 2, frozenset({"429"}), drain_rate_limit=True
    ),
    "rate_limit_429_without_retry_after": Scenario(
        Faults(rate_limit_rpm=120, rate_limit_retry_after=False),
        2,
        frozenset({"429"}),
        drain_rate_limit=True,
    ),
    "500s_marked_x_should_retry_false": Scenario(
        Faults(
            error_rate=1.0,
            overloaded_share=0.0,
            should_retry=False,
            endpoints=frozenset({"delete"}),
            limit=5,
        ),
        2,
        frozenset({"500"}),
        failed_actions=True,
    ),
    "spend_cap_429_not_retried": Scenario(
        Faults(
            throttle_rate=1.0,
            throttle_error_code="enforced_spend_limit_reached",
            endpoints=frozenset({"delete"}),
            limit=5,
        ),
        2,
        frozenset({"429"}),
        failed_actions=True,
    ),
    "transient_404_on_existing_batches": Scenario(
        Faults(not_found_rate=0.3, endpoints=frozenset({"retrieve", "cancel", "delete"}), limit=12),
        4,
        frozenset({"404"}),
        canceled_left=True,
    ),
    "malformed_json_list_page": Scenario(
        Faults(malformed_list_rate=0.5, limit=2), 3, failed_listing=True
    ),
    "truncated_json_list_page": Scenario(
        Faults(truncated_list_rate=0.5, limit=2), 3, failed_listing=True
    ),
    "unknown_processing_status": Scenario(Faults(unknown_status_rate=0.3, limit=8), 4),
    "missing_created_at": Scenario(
        Faults(missing_fields_rate=0.2, limit=3), 4, failed_listing=True
    ),
    "missing_processing_status": Scenario(
        Faults(missing_fields_rate=0.2, missing_fields=("processing_status",), limit=3),
        4,
        failed_listing=True,
    ),
    "missing_ended_at": Scenario(
        Faults(missing_fields_rate=0.3, missing_fields=("ended_at",), limit=10), 3
    ),
    # Without its counts a failed batch would look clean and meet the shorter retention:
    # such a page must fail the listing like any unreadable batch.
    "missing_request_counts": Scenario(
        Faults(missing_fields_rate=0.2, missing_fields=("request_counts",), limit=3),
        4,
        failed_listing=True,
    ),
    "everything_at_once": Scenario(
        Faults(
            error_rate=0.2,
            throttle_rate=0.05,
            not_found_rate=0.05,
            unknown_status_rate=0.05,
            malformed_list_rate=0.05,
            endpoints=frozenset({"list", "retrieve", "cancel", "delete"}),
            limit=25,
        ),
        8,
        frozenset({"500", "529"}),
    ),
}


@asynccontextmanager
async def other_traffic(chaos: Chaos, every: float = 0.02) -> AsyncIterator[None]:
    """Spend the whole RPM budget every ``every`` real seconds, as the organisation's own batch
    traffic would in bursts: the reaper cannot foresee these, so it meets 429s."""

    async def spend() -> None:
        while True:
            while (verdict := chaos.state.take_token()) is not None and verdict[0]:
                pass
            await asyncio.sleep(every)

    task = asyncio.create_task(spend())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def emulator_codes(run: Run) -> Counter[tuple[str, str]]:
    """Count the emulator's answers by (endpoint, status code)."""
    counted: Counter[tuple[str, str]] = Counter()
    for (endpoint, status), n in run.state.stats.by_status.items():
        counted[(endpoint, str(status))] += n
    return counted


def reaper_codes(run: Run) -> Counter[tuple[str, str]]:
    """Count the reaper's ``reaper_api_requests_total`` by (endpoint, code)."""
    counted: Counter[tuple[str, str]] = Counter()
    for labels, value in run.samples("reaper_api_requests_total").items():
        d = dict(labels)
        counted[(d["endpoint"], d["code"])] += int(value)
    return counted


def assert_failures_counted_and_logged(run: Run) -> None:
    """Retries and failed actions: in the metrics, in the log, with the answer's request id."""
    retries = run.logged("api.retry")
    assert sum(run.samples("reaper_api_retries_total").values()) == len(retries)
    for event in retries:
        if event["status"] is not None:
            assert REQUEST_ID.fullmatch(event["request_id"] or ""), event
    failed = run.logged("action.failed")
    actions = run.samples("reaper_actions_total")
    failed_metric = sum(v for labels, v in actions.items() if ("outcome", "failed") in labels)
    assert failed_metric == len(failed) == sum(len(r.failures) for r in run.reports)
    for event in failed:
        if event["status"] is not None:
            endpoint = event["action"]
            assert event["request_id"] in request_ids_of(run, endpoint, event["status"]), event
    for event in run.logged("listing.failed"):
        if event["status"] is not None:
            assert REQUEST_ID.fullmatch(event["request_id"] or ""), event
    assert run.sample("reaper_cycles_total", outcome="success") >= 1


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_an_emulator_fault_converges_to_the_fault_free_end_state(name: str) -> None:
    """Under the fault, cycles converge on the exact end state; every failure is accounted for."""
    scenario = SCENARIOS[name]
    async with chaos_emulator() as chaos:
        chaos.state.faults = scenario.faults
        async with contextlib.AsyncExitStack() as stack:
            if scenario.drain_rate_limit:
                await stack.enter_async_context(other_traffic(chaos))
            run = await chaos.converge(max_cycles=scenario.max_cycles, **scenario.client)

    assert_safe(run)
    assert_converged(run, canceled_left=scenario.canceled_left)
    assert run.cycles <= scenario.max_cycles, run.outcomes
    # The client saw every answer the emulator gave, and counted it under its code.
    assert reaper_codes(run) == emulator_codes(run)
    for code in scenario.codes:
        assert sum(n for (_e, c), n in reaper_codes(run).items() if c == code) > 0, code
    assert_failures_counted_and_logged(run)
    if scenario.failed_actions:
        assert run.reports[0].outcome is CycleOutcome.PARTIAL
        assert run.logged("action.failed")
    if scenario.failed_listing:
        assert run.reports[0].outcome is CycleOutcome.FAILED
        assert run.logged("listing.failed")
        assert run.reports[0].requests.keys() == {"list"}  # fail closed: nothing done
    print(f"\n{name}: {run.cycles} cycle(s): {run.outcomes}")


PROXY_SCENARIOS = {
    "connection_resets": (ProxyFaults(reset_before=0.15, reset_after=0.1), {}, 2),
    "slow_answers_past_the_timeout": (
        ProxyFaults(stall=0.2, stall_seconds=0.3),
        {"timeout": 0.2},
        2,
    ),
    "truncated_answers": (ProxyFaults(truncate=0.2), {}, 2),
}


@pytest.mark.parametrize("name", list(PROXY_SCENARIOS))
async def test_a_broken_connection_converges_to_the_fault_free_end_state(name: str) -> None:
    """Resets, stalls past the timeout, truncated answers: the same end state, all counted."""
    faults, client_options, max_cycles = PROXY_SCENARIOS[name]
    async with chaos_emulator() as chaos:
        with chaos_proxy(chaos.base_url, faults) as proxy:
            run = await chaos.converge(base_url=proxy.url, **client_options)
            injected = dict(proxy.injected)

    assert sum(injected.values()) > 0
    assert_safe(run)
    assert_converged(run)
    assert run.cycles <= max_cycles, run.outcomes
    codes = reaper_codes(run)
    assert sum(n for (_e, c), n in codes.items() if c == "error") > 0
    reasons = {dict(labels)["reason"] for labels in run.samples("reaper_api_retries_total")}
    assert reasons & {"connection", "timeout"}
    assert_failures_counted_and_logged(run)
    # A delete the API performed but whose answer was lost is retried, meets a 404 and counts
    # as done ("already_gone"): no batch is reported deleted twice, none is left behind.
    deleted = [e["id"] for e in run.logged("batch.delete") if e["outcome"] == "done"]
    assert sorted(deleted) == sorted(pop.to_delete(run.seeded))
    print(f"\n{name}: injected {injected}; {run.cycles} cycle(s): {run.outcomes}")


async def test_failing_deletes_are_counted_then_redone_by_the_next_cycles() -> None:
    """Deletes whose connection resets past the retries fail, are counted, and are redone."""
    faults = ProxyFaults(reset_before=0.6, paths=("/v1/messages/batches/del_",), limit=12)
    async with chaos_emulator() as chaos:
        with chaos_proxy(chaos.base_url, faults) as proxy:
            run = await chaos.converge(base_url=proxy.url, max_retries=1)

    assert_safe(run)
    assert_converged(run)
    assert run.reports[0].outcome is CycleOutcome.PARTIAL
    failures = [f for r in run.reports for f in r.failures]
    assert failures
    assert {f.error_type for f in failures} <= {"connection"}
    assert run.sample(
        "reaper_actions_total", workspace="default", action="delete", outcome="failed"
    ) == len(failures)
    assert run.cycles <= 4, run.outcomes
    assert_failures_counted_and_logged(run)


def closed_port() -> int:
    """Return a loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_refused_connection_fails_closed_then_converges() -> None:
    """Nothing listening: the cycle fails with no action; once the API is back, it converges."""
    async with chaos_emulator() as chaos:
        refused = f"http://127.0.0.1:{closed_port()}"
        settings = chaos_settings(refused)
        async with chaos.client(base_url=refused, max_retries=2) as client:
            first = await chaos.cycle(client, settings)
        run = await chaos.converge()

    assert first.outcome is CycleOutcome.FAILED
    assert first.listing_failures[0].error_type == "connection"
    assert first.listing_failures[0].status is None
    assert (
        chaos.metrics.registry.get_sample_value(
            "reaper_api_requests_total", {"endpoint": "list", "code": "error"}
        )
        == 3
    )
    assert (
        chaos.metrics.registry.get_sample_value(
            "reaper_api_retries_total", {"endpoint": "list", "reason": "connection"}
        )
        == 2
    )
    assert_safe(run)
    assert_converged(run)
    assert run.cycles == 1


async def test_an_api_slower_than_the_timeout_fails_closed_then_converges() -> None:
    """Every answer past the timeout: nothing done, counted as timeouts; then it converges."""
    async with chaos_emulator() as chaos:
        chaos.state.faults = Faults(latency_ms=300)
        async with chaos.client(timeout=0.2, max_retries=1) as client:
            first = await chaos.cycle(client, chaos_settings(chaos.base_url))
        chaos.state.faults = Faults()
        run = await chaos.converge()

    assert first.outcome is CycleOutcome.FAILED
    assert first.listing_failures[0].error_type == "timeout"
    assert (
        chaos.metrics.registry.get_sample_value(
            "reaper_api_retries_total", {"endpoint": "list", "reason": "timeout"}
        )
        == 1
    )
    assert first.requests.keys() == {"list"}  # fail closed: nothing done
    assert_safe(run)
    assert_converged(run)


@pytest.mark.parametrize("minutes", [-5, 5], ids=["reaper_behind", "reaper_ahead"])
async def test_a_clock_a_few_minutes_off_the_apis_changes_nothing(minutes: int) -> None:
    """The reaper's clock 5 minutes off the API's, within REAPER_MAX_CLOCK_SKEW=10m: same end
    state in one cycle."""
    async with chaos_emulator() as chaos:
        settings = chaos_settings(chaos.base_url, REAPER_MAX_CLOCK_SKEW="10m")
        run = await chaos.converge(settings=settings, skew=timedelta(minutes=minutes))

    assert_safe(run)
    assert_converged(run)
    assert run.cycles == 1


@pytest.mark.parametrize("minutes", [-5, 5], ids=["reaper_behind", "reaper_ahead"])
async def test_a_clock_off_by_more_than_the_allowance_acts_on_nothing(minutes: int) -> None:
    """The same 5 minutes with the default REAPER_MAX_CLOCK_SKEW=2m: the listing is refused
    (clock_skew), not one cancel or delete is sent, and the cycle fails."""
    async with chaos_emulator() as chaos:
        settings = chaos_settings(chaos.base_url)
        run = await chaos.converge(settings=settings, skew=timedelta(minutes=minutes), max_cycles=1)

    (report,) = run.reports
    assert report.outcome is CycleOutcome.FAILED
    assert report.exit_code() == 1
    assert [f.error_type for f in report.listing_failures] == ["clock_skew"]
    assert list(run.state.stats.mutations) == []
    assert (
        run.sample("reaper_listing_rejected_total", workspace="default", reason="clock_skew") == 1
    )


async def test_batches_from_the_apis_future_are_kept() -> None:
    """The reaper's clock behind the API's: batches created 'in the future' are young: kept."""
    async with chaos_emulator() as chaos:
        now = chaos.state.now()
        chaos.state.seed_objects(
            [
                {
                    "id": "keep_future_ended",
                    "created_at": (now - timedelta(minutes=2)).isoformat(),
                    "ended_at": (now - timedelta(minutes=1)).isoformat(),
                    "processing_status": "ended",
                },
                {
                    "id": "keep_future_running",
                    "created_at": (now - timedelta(minutes=1)).isoformat(),
                    "processing_status": "in_progress",
                    "_ends_at": (now + timedelta(days=1)).isoformat(),
                },
            ]
        )
        chaos.seeded |= {"keep_future_ended", "keep_future_running"}
        # One more ended batch among the most recent: keep-last grows by one to keep its meaning.
        settings = chaos_settings(chaos.base_url, REAPER_KEEP_LAST="6", REAPER_MAX_CLOCK_SKEW="10m")
        run = await chaos.converge(settings=settings, skew=timedelta(minutes=-5))

    assert_safe(run)
    assert_converged(run)
    ages = run.samples("reaper_oldest_batch_age_seconds")
    assert all(v >= 0 for v in ages.values())
