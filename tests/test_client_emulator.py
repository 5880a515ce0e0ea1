"""The API client against the real emulator over loopback HTTP: paging, actions, faults, limits."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from reaper.client import (
    ApiError,
    BatchClient,
    InvalidRequestError,
    NotFoundError,
)
from reaper.emulator.faults import Faults
from reaper.emulator.harness import new_state, running_emulator
from reaper.emulator.state import EmulatorState
from reaper.metrics import Metrics
from reaper.models import format_time
from tests.helpers import Clock

KEY = "sk-ant-api03-emulator-test-key-0000000000"
WORKSPACE_A = "wrkspc_aaaaaaaaaaaaaaaaaaaaaaaa"
WORKSPACE_B = "wrkspc_bbbbbbbbbbbbbbbbbbbbbbbb"


@pytest.fixture
def emulator() -> Iterator[tuple[str, EmulatorState]]:
    with running_emulator(new_state(api_key=KEY, cancel_seconds=30)) as served:
        yield served


def client_for(base_url: str, **options: Any) -> BatchClient:
    settings: dict[str, Any] = {"max_rpm": 60_000, "concurrency": 4, "api_key": KEY}
    settings.update(options)
    return BatchClient(base_url=base_url, **settings)


def seed(state: EmulatorState, batch_id: str, status: str, **extra: Any) -> None:
    now = state.now()
    obj: dict[str, Any] = {
        "id": batch_id,
        "processing_status": status,
        "created_at": format_time(now - timedelta(hours=2)),
        "request_counts": {"succeeded": 3} if status == "ended" else {"processing": 3},
    }
    obj.update(extra)
    state.seed_objects([obj])


@pytest.mark.anyio
async def test_listing_walks_every_page_once(
    emulator: tuple[str, EmulatorState], metrics: Metrics
) -> None:
    """250 batches at 100 a page: three requests, every batch once, newest first."""
    base_url, state = emulator
    state.seed_random(250)
    async with client_for(base_url, page_size=100, metrics=metrics) as client:
        pages = [p async for p in client.list_pages(None)]
    assert [len(p) for p in pages] == [100, 100, 50]
    listed = [b for p in pages for b in p]
    assert len({b.id for b in listed}) == 250
    keys = [(b.created_at, b.id) for b in listed]
    assert keys == sorted(keys, key=lambda k: (-k[0].timestamp(), k[1]))
    assert client.requests_made == {"list": 3}
    assert state.stats.count("list", 200) == 3
    assert (
        metrics.registry.get_sample_value(
            "reaper_api_requests_total", {"endpoint": "list", "code": "200"}
        )
        == 3
    )


@pytest.mark.anyio
async def test_retrieve_cancel_then_delete_once_ended(emulator: tuple[str, EmulatorState]) -> None:
    """Cancel gives canceling; once ended the batch deletes; a second delete is 404."""
    base_url, state = emulator
    seed(state, "msgbatch_running", "in_progress")
    async with client_for(base_url) as client:
        assert (await client.retrieve("msgbatch_running", None)).processing_status == "in_progress"
        canceled = await client.cancel("msgbatch_running", None)
        assert canceled.processing_status == "canceling"
        with pytest.raises(InvalidRequestError) as refused:
            await client.delete("msgbatch_running", None)
        state.advance(31)
        ended = await client.retrieve("msgbatch_running", None)
        assert ended.processing_status == "ended"
        assert ended.request_counts.canceled == 3
        await client.delete("msgbatch_running", None)
        with pytest.raises(NotFoundError) as gone:
            await client.delete("msgbatch_running", None)
    assert refused.value.request_id is not None
    assert refused.value.request_id.startswith("req_")
    assert gone.value.status == 404
    assert gone.value.error_type == "not_found_error"
    assert gone.value.request_id is not None
    assert client.requests_made["delete"] == 3  # neither the 400 nor the 404 was retried


@pytest.mark.anyio
async def test_workspaces_are_swept_apart(emulator: tuple[str, EmulatorState]) -> None:
    """The workspace header selects what is listed, and each batch carries its workspace."""
    base_url, state = emulator
    seed(state, "msgbatch_in_a", "ended", workspace_id=WORKSPACE_A)
    seed(state, "msgbatch_in_b", "ended", workspace_id=WORKSPACE_B)
    seed(state, "msgbatch_default", "ended")
    async with client_for(base_url) as client:
        listed = {
            ws: [b for p in [p async for p in client.list_pages(ws)] for b in p]
            for ws in (WORKSPACE_A, WORKSPACE_B, None)
        }
        with pytest.raises(NotFoundError):
            await client.retrieve("msgbatch_in_a", WORKSPACE_B)
        await client.delete("msgbatch_in_b", WORKSPACE_B)
    assert [(b.id, b.workspace) for b in listed[WORKSPACE_A]] == [("msgbatch_in_a", WORKSPACE_A)]
    assert [(b.id, b.workspace) for b in listed[WORKSPACE_B]] == [("msgbatch_in_b", WORKSPACE_B)]
    assert [(b.id, b.workspace) for b in listed[None]] == [("msgbatch_default", None)]


@pytest.mark.anyio
async def test_a_wrong_key_is_refused_at_once(emulator: tuple[str, EmulatorState]) -> None:
    """401 is final and its text names neither key."""
    base_url, _ = emulator
    async with client_for(base_url, api_key="sk-ant-wrong-key-123456789") as client:
        with pytest.raises(ApiError) as caught:
            await client.retrieve("msgbatch_x", None)
    assert caught.value.status == 401
    assert caught.value.error_type == "authentication_error"
    assert client.requests_made["retrieve"] == 1
    assert "sk-ant" not in str(caught.value)


@pytest.mark.anyio
async def test_injected_500s_and_529s_are_retried_through(
    emulator: tuple[str, EmulatorState], metrics: Metrics
) -> None:
    """With a quarter of requests failing, listing and retrieving still succeed."""
    base_url, state = emulator
    state.seed_random(300)
    state.faults = Faults(error_rate=0.25)
    waits: list[float] = []

    async def quick(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(0)

    async with client_for(
        base_url, page_size=50, max_retries=10, metrics=metrics, sleep=quick
    ) as client:
        listed = [b for p in [p async for p in client.list_pages(None)] for b in p]
        again = await asyncio.gather(*(client.retrieve(b.id, None) for b in listed[:40]))
    assert len({b.id for b in listed}) == 300
    assert [b.id for b in again] == [b.id for b in listed[:40]]
    failures = state.stats.count(status=500) + state.stats.count(status=529)
    assert failures > 0
    retries = sum(
        metrics.registry.get_sample_value("reaper_api_retries_total", {"endpoint": e, "reason": r})
        or 0
        for e in ("list", "retrieve")
        for r in ("500", "529")
    )
    assert retries == failures
    assert sum(client.requests_made.values()) == state.stats.count()


@pytest.mark.anyio
async def test_a_429_is_waited_out_and_the_limit_learned() -> None:
    """Bucket empty: one 429, its retry-after slept; then the pace follows the advertised limit."""
    clock = Clock(monotonic_start=5000.0)  # shared by the pacer and the token bucket
    state = new_state(api_key=KEY, rate_limit_rpm=6, monotonic=clock)
    for _ in range(6):
        state.take_token()  # someone else spent the budget
    with running_emulator(state) as (base_url, _):
        state.seed_random(5)
        async with client_for(base_url, clock=clock, sleep=clock.sleep) as client:
            listed = [b for p in [p async for p in client.list_pages(None)] for b in p]
            for batch in listed:
                await client.retrieve(batch.id, None)
    assert state.stats.count(status=429) == 1
    assert clock.slept[0] == 10.0  # retry-after: one token of 6 a minute
    # Never faster than the advertised 6 a minute again (slower for a while after the 429).
    assert client.pacer.rate_rpm <= 6
    assert min(clock.slept[1:]) >= 10.0 - 1e-6
    assert state.stats.count(status=200) == 1 + len(listed)


@pytest.mark.anyio
async def test_results_stream_over_http(emulator: tuple[str, EmulatorState]) -> None:
    """The results of an ended batch arrive as JSON Lines, one line per request."""
    base_url, state = emulator
    seed(state, "msgbatch_done", "ended")
    async with client_for(base_url) as client:
        batch = await client.retrieve("msgbatch_done", None)
        assert batch.results_url is not None
        assert batch.results_url.startswith(base_url)
        async with client.stream_results(batch) as body:
            data = b"".join([chunk async for chunk in body])
    lines = [json.loads(line) for line in data.splitlines()]
    assert len(lines) == batch.request_counts.total == 3
    assert {line["result"]["type"] for line in lines} == {"succeeded"}


class CountingTransport(httpx.AsyncHTTPTransport):
    """Loopback HTTP that counts the requests in flight at once."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = 0
        self.most = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            response = await super().handle_async_request(request)
            await response.aread()
            return response
        finally:
            self.in_flight -= 1


@pytest.mark.anyio
async def test_concurrent_calls_overlap_the_latency(emulator: tuple[str, EmulatorState]) -> None:
    """64 deletes at 50 ms latency with concurrency 16 overlap, never more than 16 at once."""
    base_url, state = emulator
    for i in range(64):
        seed(state, f"msgbatch_{i:03d}", "ended")
    state.faults = Faults(latency_ms=50)
    transport = CountingTransport()
    async with client_for(base_url, concurrency=16, transport=transport) as client:
        await asyncio.gather(*(client.delete(f"msgbatch_{i:03d}", None) for i in range(64)))
    assert state.stats.count("delete", 200) == 64
    # Starts are 1 ms apart (60,000 rpm) and each answer takes 50 ms: they must overlap (bench/
    # measures the time saved, with the emulator in its own process).
    assert 1 < transport.most <= 16
