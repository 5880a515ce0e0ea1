"""The API client against httpx.MockTransport fakes: requests, paging, errors, retries, pacing."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from reaper.client import (
    ApiError,
    BatchClient,
    ConnectionFailed,
    InvalidRequestError,
    NotFoundError,
    RateLimitError,
)
from reaper.metrics import Metrics
from reaper.models import Batch, RequestCounts
from tests.helpers import HOUR, Clock, make_batch

CANARY = "sk-ant-api03-CANARY-do-not-leak-0123456789abcdef"
BASE = "https://api.example.test"
WALL_START = datetime(2026, 1, 1, tzinfo=UTC)
LATENCY = 0.05  # fake seconds each request takes, so pacing at 6000 rpm never sleeps

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


def batch_json(batch_id: str, status: str = "ended", **extra: Any) -> dict[str, Any]:
    """The API's object for a batch created at WALL_START (ended an hour later), with ``extra``."""
    batch = make_batch(batch_id, status, created_ago=HOUR, now=WALL_START + HOUR, succeeded=3)
    body = batch.to_api()
    if batch.results_url is not None:
        body["results_url"] = BASE + batch.results_url
    body.update(extra)
    return body


def error_response(
    status: int,
    error_type: str,
    message: str = "boom",
    *,
    request_id: str | None = "req_abc",
    headers: dict[str, str] | None = None,
    body_request_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> httpx.Response:
    error: dict[str, Any] = {"type": error_type, "message": message}
    if details:
        error["details"] = details
    body = {"type": "error", "error": error, "request_id": body_request_id or request_id}
    all_headers = dict(headers or {})
    if request_id is not None:
        all_headers["request-id"] = request_id
    return httpx.Response(status, json=body, headers=all_headers)


class Fake:
    """A scripted API: answers come from a queue (or a function); every request is recorded."""

    def __init__(self, clock: Clock, *answers: httpx.Response | Exception) -> None:
        self.clock = clock
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.respond: Callable[[httpx.Request], httpx.Response] | None = None

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.clock.advance(LATENCY)
        if self.respond is not None:
            return self.respond(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def clock() -> Clock:
    return Clock(WALL_START)


def make_client(
    fake: Callable[[httpx.Request], Awaitable[httpx.Response]],
    clock: Clock,
    metrics: Metrics | None = None,
    **options: Any,
) -> BatchClient:
    settings: dict[str, Any] = {"max_rpm": 6000, "max_retries": 5, "concurrency": 4}
    settings.update(options)
    return BatchClient(
        api_key=settings.pop("api_key", CANARY),
        base_url=BASE,
        transport=httpx.MockTransport(fake),
        metrics=metrics,
        sleep=clock.sleep,
        clock=clock,
        wall_clock=clock.wall_clock,
        jitter=lambda: 0.0,
        **settings,
    )


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


# -- requests ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_every_request_carries_key_version_agent_and_workspace(clock: Clock) -> None:
    """x-api-key, anthropic-version, our user-agent; the workspace header only when given."""
    fake = Fake(
        clock,
        httpx.Response(200, json=batch_json("b1")),
        httpx.Response(200, json=batch_json("b1")),
    )
    async with make_client(fake, clock) as client:
        await client.retrieve("b1", "wrkspc_a")
        await client.retrieve("b1", None)
    first, second = fake.requests
    assert first.headers["x-api-key"] == CANARY
    assert first.headers["anthropic-version"] == "2023-06-01"
    assert first.headers["user-agent"].startswith("batch-reaper/")
    assert first.headers["anthropic-workspace-id"] == "wrkspc_a"
    assert "anthropic-workspace-id" not in second.headers
    assert str(first.url) == f"{BASE}/v1/messages/batches/b1"


@pytest.mark.anyio
async def test_retrieve_cancel_delete_use_the_documented_routes(clock: Clock) -> None:
    """GET /{id}, POST /{id}/cancel and DELETE /{id}; cancel returns the batch, delete nothing."""
    fake = Fake(
        clock,
        httpx.Response(200, json=batch_json("b1", "in_progress")),
        httpx.Response(
            200, json=batch_json("b1", "canceling", cancel_initiated_at="2026-01-01T02:00:00Z")
        ),
        httpx.Response(200, json={"id": "b1", "type": "message_batch_deleted"}),
    )
    async with make_client(fake, clock) as client:
        got = await client.retrieve("b1", "wrkspc_a")
        canceled = await client.cancel("b1", "wrkspc_a")
        deleted = await client.delete("b1", "wrkspc_a")  # type: ignore[func-returns-value]
    assert isinstance(got, Batch)
    assert (got.id, got.processing_status, got.workspace) == ("b1", "in_progress", "wrkspc_a")
    assert canceled.processing_status == "canceling"
    assert canceled.cancel_initiated_at is not None
    assert deleted is None
    assert [(r.method, r.url.path) for r in fake.requests] == [
        ("GET", "/v1/messages/batches/b1"),
        ("POST", "/v1/messages/batches/b1/cancel"),
        ("DELETE", "/v1/messages/batches/b1"),
    ]
    assert client.requests_made == {"retrieve": 1, "cancel": 1, "delete": 1}


@pytest.mark.anyio
async def test_an_odd_batch_id_cannot_address_another_path(clock: Clock) -> None:
    """The id is one quoted path segment: '../x?y' stays inside /v1/messages/batches/."""
    fake = Fake(clock, httpx.Response(200, json=batch_json("../x?y")))
    async with make_client(fake, clock) as client:
        await client.retrieve("../x?y", None)
    assert fake.requests[0].url.raw_path == b"/v1/messages/batches/..%2Fx%3Fy"


# -- listing -----------------------------------------------------------------------------------


def page(ids: list[str], has_more: bool) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "data": [batch_json(i) for i in ids],
            "has_more": has_more,
            "first_id": ids[0] if ids else None,
            "last_id": ids[-1] if ids else None,
        },
    )


@pytest.mark.anyio
async def test_list_pages_follows_last_id_until_has_more_is_false(clock: Clock) -> None:
    """Three pages at the page size, each asked with after_id = the previous page's last_id."""
    fake = Fake(clock, page(["c", "b"], True), page(["a", "z"], True), page(["y"], False))
    async with make_client(fake, clock, page_size=2) as client:
        pages = [p async for p in client.list_pages("wrkspc_a")]
    assert [[b.id for b in p] for p in pages] == [["c", "b"], ["a", "z"], ["y"]]
    assert all(b.workspace == "wrkspc_a" for p in pages for b in p)
    assert [dict(r.url.params) for r in fake.requests] == [
        {"limit": "2"},
        {"limit": "2", "after_id": "b"},
        {"limit": "2", "after_id": "z"},
    ]
    assert all(r.headers["anthropic-workspace-id"] == "wrkspc_a" for r in fake.requests)
    assert client.requests_made["list"] == 3


@pytest.mark.anyio
async def test_an_empty_listing_is_one_empty_page(clock: Clock) -> None:
    """No batches: one request, one empty page."""
    fake = Fake(clock, page([], False))
    async with make_client(fake, clock) as client:
        pages = [p async for p in client.list_pages(None)]
    assert pages == [[]]
    assert "anthropic-workspace-id" not in fake.requests[0].headers


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"{not json", "body is not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"data": [], "first_id": null, "last_id": null}', "has_more"),
        (b'{"has_more": false}', "data list"),
        (b'{"data": {}, "has_more": false}', "data list"),
        (b'{"data": [{"id": "x"}], "has_more": false, "last_id": "x"}', "bad batch object"),
        (b'{"data": [7], "has_more": false, "last_id": null}', "bad batch object"),
        (b'{"data": [], "has_more": true, "last_id": null}', "no cursor"),
        (b'{"data": [], "has_more": false, "last_id": 5}', "last_id"),
    ],
)
@pytest.mark.anyio
async def test_a_malformed_page_fails_the_listing(clock: Clock, body: bytes, why: str) -> None:
    """Fail closed: a page that is not a valid envelope of valid batches raises ApiError."""
    fake = Fake(clock, httpx.Response(200, content=body, headers={"request-id": "req_page"}))
    async with make_client(fake, clock) as client:
        with pytest.raises(ApiError, match=why) as caught:
            async for _ in client.list_pages(None):
                pass
    assert caught.value.error_type == "malformed_response"
    assert caught.value.status == 200
    assert caught.value.request_id == "req_page"
    assert len(fake.requests) == 1  # a malformed 200 is not retried


@pytest.mark.anyio
async def test_a_cursor_that_repeats_stops_the_listing(clock: Clock) -> None:
    """A server stuck on one cursor (the litellm bug) is an error, not an endless loop."""
    fake = Fake(clock, page(["b", "a"], True), page(["c", "a"], True))
    async with make_client(fake, clock, page_size=2) as client:
        with pytest.raises(ApiError, match="repeats"):
            async for _ in client.list_pages(None):
                pass


def dated_page(batches: list[tuple[str, str]], has_more: bool) -> httpx.Response:
    data = [batch_json(i, created_at=f"2026-01-01T{hour}:00:00Z") for i, hour in batches]
    return httpx.Response(
        200,
        json={
            "data": data,
            "has_more": has_more,
            "first_id": data[0]["id"],
            "last_id": data[-1]["id"],
        },
    )


@pytest.mark.parametrize(
    "second",
    [
        [("b", "08"), ("a", "07")],  # starts again at the cursor (after_id taken as inclusive)
        [("x", "12"), ("a", "07")],  # starts newer than the cursor
    ],
)
@pytest.mark.anyio
async def test_a_page_that_overlaps_the_previous_one_fails_the_listing(
    clock: Clock, second: list[tuple[str, str]]
) -> None:
    """A server that does not honour after_id would double-count batches: fail closed."""
    fake = Fake(clock, dated_page([("c", "09"), ("b", "08")], True), dated_page(second, False))
    async with make_client(fake, clock, page_size=2) as client:
        with pytest.raises(ApiError, match=r"^list after b: 200 malformed_response: page overlaps"):
            async for _ in client.list_pages(None):
                pass


@pytest.mark.anyio
async def test_last_id_must_name_the_last_batch(clock: Clock) -> None:
    """A last_id that is not the page's last batch is a malformed page."""
    body = {"data": [batch_json("b"), batch_json("a")], "has_more": True, "last_id": "b"}
    fake = Fake(clock, httpx.Response(200, json=body))
    async with make_client(fake, clock) as client:
        with pytest.raises(ApiError, match="last_id is not the last batch"):
            async for _ in client.list_pages(None):
                pass


@pytest.mark.anyio
async def test_a_page_that_keeps_failing_fails_the_listing(clock: Clock) -> None:
    """After the retries the first page's 500 surfaces; nothing was yielded."""
    fake = Fake(clock)
    fake.respond = lambda _: error_response(500, "api_error")
    yielded: list[list[Batch]] = []

    async def listing(client: BatchClient) -> None:
        async for p in client.list_pages(None):
            yielded.append(p)

    async with make_client(fake, clock, max_retries=2) as client:
        with pytest.raises(ApiError) as caught:
            await listing(client)
    assert yielded == []
    assert caught.value.status == 500
    assert str(caught.value) == "list: 500 api_error (request-id req_abc): boom"
    assert len(fake.requests) == 3


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_delete_of_a_missing_batch_raises_not_found_at_once(
    clock: Clock, metrics: Metrics
) -> None:
    """404 is final: one attempt, NotFoundError with the status, type and request id."""
    fake = Fake(
        clock, error_response(404, "not_found_error", "no such batch", request_id="req_404")
    )
    async with make_client(fake, clock, metrics) as client:
        with pytest.raises(NotFoundError) as caught:
            await client.delete("msgbatch_x", None)
    err = caught.value
    assert (err.endpoint, err.status, err.error_type, err.request_id, err.batch_id) == (
        "delete",
        404,
        "not_found_error",
        "req_404",
        "msgbatch_x",
    )
    assert str(err) == "delete msgbatch_x: 404 not_found_error (request-id req_404): no such batch"
    assert len(fake.requests) == 1
    assert sample(metrics, "reaper_api_requests_total", endpoint="delete", code="404") == 1


@pytest.mark.anyio
async def test_a_refused_delete_is_an_invalid_request_and_not_retried(clock: Clock) -> None:
    """400 (deleting an unfinished batch) is final."""
    fake = Fake(clock, error_response(400, "invalid_request_error", "not ended"))
    async with make_client(fake, clock) as client:
        with pytest.raises(InvalidRequestError, match="400 invalid_request_error"):
            await client.delete("b1", None)
    assert len(fake.requests) == 1


@pytest.mark.anyio
async def test_the_request_id_comes_from_the_body_when_the_header_is_missing(
    clock: Clock,
) -> None:
    """request_id in the error envelope stands in for a missing request-id header."""
    fake = Fake(
        clock,
        error_response(403, "permission_error", request_id=None, body_request_id="req_body"),
    )
    async with make_client(fake, clock) as client:
        with pytest.raises(ApiError) as caught:
            await client.retrieve("b1", None)
    assert caught.value.request_id == "req_body"
    assert type(caught.value) is ApiError
    assert str(caught.value) == "retrieve b1: 403 permission_error (request-id req_body): boom"


@pytest.mark.anyio
async def test_a_non_json_error_body_still_gives_a_readable_error(clock: Clock) -> None:
    """An HTML 413 from a proxy: status, a default type and the start of the body."""
    fake = Fake(clock, httpx.Response(413, text="<html>Request Entity Too Large</html>"))
    async with make_client(fake, clock) as client:
        with pytest.raises(ApiError) as caught:
            await client.cancel("b1", None)
    assert caught.value.status == 413
    assert caught.value.error_type == "invalid_request_error"
    assert "Too Large" in caught.value.message
    assert caught.value.request_id is None


@pytest.mark.anyio
async def test_the_key_never_appears_in_errors_or_logs(clock: Clock) -> None:
    """A server that echoes the key in its messages: str, repr, args and logs stay clean."""

    def echo_key(request: httpx.Request) -> httpx.Response:
        key = request.headers["x-api-key"]
        return error_response(500, "api_error", f"bad key {key}, or was it {key[10:30]}?")

    fake = Fake(clock)
    fake.respond = echo_key
    async with make_client(fake, clock, max_retries=2) as client:
        with capture_logs() as logs, pytest.raises(ApiError) as caught:
            await client.delete("b1", "wrkspc_a")
        client_repr = repr(client)
    err = caught.value
    for text in (str(err), repr(err), repr(err.args), err.message, repr(logs), client_repr):
        assert CANARY not in text
        assert CANARY[:16] not in text
        assert CANARY[10:30] not in text
    assert "[REDACTED]" in err.message
    assert [entry["event"] for entry in logs] == ["api.retry", "api.retry"]


@pytest.mark.anyio
async def test_a_connection_error_is_retried_then_reported_without_status(
    clock: Clock, metrics: Metrics
) -> None:
    """ConnectError is retried; if it persists, ConnectionFailed with status None."""
    fake = Fake(clock)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    fake.respond = refuse
    async with make_client(fake, clock, metrics, max_retries=2) as client:
        with pytest.raises(ConnectionFailed) as caught:
            await client.retrieve("b1", None)
    assert caught.value.status is None
    assert caught.value.error_type == "connection"
    assert str(caught.value) == "retrieve b1: no response connection: Connection refused"
    assert len(fake.requests) == 3
    assert sample(metrics, "reaper_api_requests_total", endpoint="retrieve", code="error") == 3
    assert (
        sample(metrics, "reaper_api_retries_total", endpoint="retrieve", reason="connection") == 2
    )


# -- retries -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_500_then_success_is_one_retry_after_the_backoff(
    clock: Clock, metrics: Metrics
) -> None:
    """The second attempt succeeds after 0.5 s; metrics count both attempts and one retry."""
    fake = Fake(clock, error_response(500, "api_error"), httpx.Response(200, json=batch_json("b1")))
    async with make_client(fake, clock, metrics) as client:
        with capture_logs() as logs:
            batch = await client.retrieve("b1", None)
    assert batch.id == "b1"
    assert clock.slept == [0.5]
    assert client.requests_made["retrieve"] == 2
    assert sample(metrics, "reaper_api_requests_total", endpoint="retrieve", code="500") == 1
    assert sample(metrics, "reaper_api_requests_total", endpoint="retrieve", code="200") == 1
    assert sample(metrics, "reaper_api_retries_total", endpoint="retrieve", reason="500") == 1
    assert sample(metrics, "reaper_api_request_duration_seconds_count", endpoint="retrieve") == 2
    assert sample(
        metrics, "reaper_api_request_duration_seconds_sum", endpoint="retrieve"
    ) == pytest.approx(2 * LATENCY)
    (entry,) = logs
    assert entry["event"] == "api.retry"
    assert entry["log_level"] == "warning"
    assert (entry["endpoint"], entry["status"], entry["wait"], entry["attempt"]) == (
        "retrieve",
        500,
        0.5,
        1,
    )
    assert entry["request_id"] == "req_abc"


@pytest.mark.anyio
async def test_backoff_doubles_across_retries(clock: Clock) -> None:
    """529, 503, 502, 408 without retry-after wait 0.5, 1, 2, 4 s."""
    fake = Fake(
        clock,
        error_response(529, "overloaded_error"),
        error_response(503, "api_error"),
        error_response(502, "api_error"),
        error_response(408, "timeout_error"),
        httpx.Response(200, json=batch_json("b1")),
    )
    async with make_client(fake, clock) as client:
        await client.retrieve("b1", None)
    assert clock.slept == [0.5, 1.0, 2.0, 4.0]


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after-ms": "1250"}, 1.25),
        ({"retry-after": "3", "retry-after-ms": "100"}, 0.1),
        ({"retry-after": "600"}, 60.0),
        ({}, 0.5),
    ],
)
@pytest.mark.anyio
async def test_a_429_waits_what_the_server_asks(
    clock: Clock, headers: dict[str, str], wait: float
) -> None:
    """retry-after-ms, then retry-after, capped at 60 s; otherwise the backoff."""
    fake = Fake(
        clock,
        error_response(429, "rate_limit_error", headers=headers),
        httpx.Response(200, json=batch_json("b1")),
    )
    async with make_client(fake, clock) as client:
        await client.retrieve("b1", None)
    assert clock.slept == [pytest.approx(wait)]


@pytest.mark.anyio
async def test_x_should_retry_false_makes_exactly_one_attempt(clock: Clock) -> None:
    """A 500 the server marks x-should-retry: false is final."""
    fake = Fake(clock, error_response(500, "api_error", headers={"x-should-retry": "false"}))
    async with make_client(fake, clock) as client:
        with pytest.raises(ApiError) as caught:
            await client.delete("b1", None)
    assert caught.value.status == 500
    assert len(fake.requests) == 1
    assert clock.slept == []


@pytest.mark.anyio
async def test_x_should_retry_true_retries_a_404(clock: Clock) -> None:
    """The server's override works the other way too."""
    fake = Fake(
        clock,
        error_response(404, "not_found_error", headers={"x-should-retry": "true"}),
        httpx.Response(200, json=batch_json("b1")),
    )
    async with make_client(fake, clock) as client:
        await client.retrieve("b1", None)
    assert len(fake.requests) == 2


@pytest.mark.anyio
async def test_the_spend_cap_429_is_not_retried(clock: Clock) -> None:
    """enforced_spend_limit_reached keeps failing until the month ends: one attempt."""
    fake = Fake(
        clock,
        error_response(
            429, "rate_limit_error", details={"error_code": "enforced_spend_limit_reached"}
        ),
    )
    async with make_client(fake, clock) as client:
        with pytest.raises(RateLimitError):
            await client.cancel("b1", None)
    assert len(fake.requests) == 1


@pytest.mark.parametrize("max_retries", [0, 1, 3])
@pytest.mark.anyio
async def test_at_most_max_retries_retries(
    clock: Clock, metrics: Metrics, max_retries: int
) -> None:
    """An endless 529 makes max_retries + 1 attempts and then raises it."""
    fake = Fake(clock)
    fake.respond = lambda _: error_response(529, "overloaded_error")
    async with make_client(fake, clock, metrics, max_retries=max_retries) as client:
        with pytest.raises(ApiError, match="529 overloaded_error"):
            await client.delete("b1", None)
    assert len(fake.requests) == max_retries + 1
    assert client.requests_made["delete"] == max_retries + 1
    assert (
        sample(metrics, "reaper_api_retries_total", endpoint="delete", reason="529") == max_retries
    )


@pytest.mark.anyio
async def test_a_timeout_is_retried_and_counted_as_error(clock: Clock, metrics: Metrics) -> None:
    """ReadTimeout, then success: code "error" once, a "timeout" retry."""
    fake = Fake(clock, httpx.ReadTimeout("timed out"), httpx.Response(200, json=batch_json("b1")))
    async with make_client(fake, clock, metrics) as client:
        await client.retrieve("b1", None)
    assert sample(metrics, "reaper_api_requests_total", endpoint="retrieve", code="error") == 1
    assert sample(metrics, "reaper_api_retries_total", endpoint="retrieve", reason="timeout") == 1


# -- pacing and concurrency ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_requests_are_paced_at_max_rpm(clock: Clock) -> None:
    """At 60 rpm, back-to-back calls start one second apart (minus the fake latency)."""
    fake = Fake(clock)
    fake.respond = lambda r: httpx.Response(200, json=batch_json("b1"))
    async with make_client(fake, clock, max_rpm=60) as client:
        for _ in range(4):
            await client.retrieve("b1", None)
    assert clock.slept == pytest.approx([1 - LATENCY] * 3)


@pytest.mark.anyio
async def test_a_429_slows_everyone_down_and_holds_them(clock: Clock) -> None:
    """After a 429 with retry-after 3 the pace halves and no request starts within 3 s."""
    fake = Fake(
        clock,
        error_response(429, "rate_limit_error", headers={"retry-after": "3"}),
        httpx.Response(200, json=batch_json("b1")),
    )
    async with make_client(fake, clock, max_rpm=600) as client:
        await client.retrieve("b1", None)
        assert client.pacer.rate_rpm == pytest.approx(300 * 1.05)  # cut, then one success
    assert clock.slept == [3.0]


@pytest.mark.anyio
async def test_a_held_worker_waits_for_another_workers_429() -> None:
    """Real time: a 429 with retry-after-ms 200 on one request delays a concurrent one too."""
    starts: list[tuple[str, float]] = []
    first = True

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal first
        starts.append((request.url.path, time.monotonic()))
        if first:
            first = False
            return error_response(429, "rate_limit_error", headers={"retry-after-ms": "200"})
        await asyncio.sleep(0.01)
        return httpx.Response(200, json=batch_json(request.url.path.rsplit("/", 1)[-1]))

    client = BatchClient(
        api_key=CANARY,
        base_url=BASE,
        transport=httpx.MockTransport(handler),
        max_rpm=60_000,
        concurrency=4,
    )
    async with client:
        t0 = time.monotonic()
        first_task = asyncio.create_task(client.retrieve("a", None))
        await asyncio.sleep(0.05)  # the 429 has arrived by now
        await client.retrieve("b", None)
        await first_task
    b_start = next(t for path, t in starts if path.endswith("/b"))
    assert b_start - t0 >= 0.19


@pytest.mark.anyio
async def test_no_more_than_concurrency_requests_are_in_flight() -> None:
    """Twenty concurrent calls with concurrency 4: the server never sees more than 4 at once."""
    in_flight = 0
    peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return httpx.Response(200, json=batch_json(request.url.path.rsplit("/", 1)[-1]))

    client = BatchClient(
        api_key=CANARY,
        base_url=BASE,
        transport=httpx.MockTransport(handler),
        max_rpm=600_000,
        concurrency=4,
    )
    async with client:
        await asyncio.gather(*(client.retrieve(f"b{i}", None) for i in range(20)))
    assert peak == 4


# -- results -----------------------------------------------------------------------------------


def results_batch(url: str | None) -> Batch:
    return Batch.from_api(batch_json("b1", results_url=url), "wrkspc_a")


@pytest.mark.parametrize(
    "url", [f"{BASE}/v1/messages/batches/b1/results", "/v1/messages/batches/b1/results"]
)
@pytest.mark.anyio
async def test_stream_results_yields_the_body(clock: Clock, url: str) -> None:
    """Absolute or relative results_url; the bytes arrive as sent; workspace header sent."""
    body = b'{"custom_id": "a"}\n{"custom_id": "b"}\n'
    fake = Fake(clock, error_response(500, "api_error"), httpx.Response(200, content=body))
    async with make_client(fake, clock, concurrency=1) as client:
        async with client.stream_results(results_batch(url)) as chunks:
            got = b"".join([c async for c in chunks])
        # The slot was given back: another call can go (concurrency is 1).
        fake.respond = lambda r: httpx.Response(200, json=batch_json("b1"))
        await asyncio.wait_for(client.retrieve("b1", None), 1)
    assert got == body
    assert str(fake.requests[1].url) == f"{BASE}/v1/messages/batches/b1/results"
    assert fake.requests[1].headers["anthropic-workspace-id"] == "wrkspc_a"
    assert fake.requests[1].headers["accept"] == "application/binary"
    assert client.requests_made["results"] == 2


@pytest.mark.anyio
async def test_missing_results_raise_not_found(clock: Clock) -> None:
    """404 on the results URL, or no results_url at all, is NotFoundError."""
    fake = Fake(clock, error_response(404, "not_found_error"))
    async with make_client(fake, clock, concurrency=1) as client:
        with pytest.raises(NotFoundError):
            async with client.stream_results(results_batch(f"{BASE}/r")):
                pass
        with pytest.raises(NotFoundError, match="no results_url"):
            async with client.stream_results(results_batch(None)):
                pass
        fake.respond = lambda r: httpx.Response(200, json=batch_json("b1"))
        await asyncio.wait_for(client.retrieve("b1", None), 1)
    assert client.requests_made["results"] == 1


# -- construction ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_from_settings_reads_the_client_fields(clock: Clock) -> None:
    """from_settings takes key, URL, page size, timeout, retries, rpm and concurrency."""
    settings = SimpleNamespace(
        base_url=BASE,
        page_size=7,
        max_retries=0,
        max_rpm=100,
        concurrency=3,
        request_timeout=timedelta(seconds=12),
        api_key_value=lambda: CANARY,
    )
    fake = Fake(clock, page([], False))
    client = BatchClient.from_settings(settings, transport=httpx.MockTransport(fake))  # type: ignore[arg-type]
    async with client:
        assert [p async for p in client.list_pages(None)] == [[]]
    request = fake.requests[0]
    assert request.url.params["limit"] == "7"
    assert request.headers["x-api-key"] == CANARY
    assert request.extensions["timeout"] == {"connect": 12, "read": 12, "write": 12, "pool": 12}
    assert CANARY not in repr(client)


@pytest.mark.anyio
async def test_without_a_key_no_auth_header_is_sent(clock: Clock) -> None:
    """The demo's emulator needs no key; none is invented."""
    fake = Fake(clock, httpx.Response(200, json=batch_json("b1")))
    async with make_client(fake, clock, api_key=None) as client:
        await client.retrieve("b1", None)
    assert "x-api-key" not in fake.requests[0].headers


@pytest.mark.parametrize(
    ("option", "value"),
    [("page_size", 0), ("page_size", 1001), ("concurrency", 0), ("max_retries", -1)],
)
def test_bad_options_are_refused(option: str, value: int) -> None:
    """Out-of-range options are a programming error, caught at construction."""
    with pytest.raises(ValueError, match=option):
        BatchClient(api_key=None, base_url=BASE, **{option: value})


@pytest.mark.anyio
async def test_a_url_without_a_scheme_fails_at_once() -> None:
    """A base URL like 'api.anthropic.com' is configuration: no retries, ConnectionFailed."""
    sleeps: list[float] = []

    async def record(seconds: float) -> None:
        sleeps.append(seconds)

    async with BatchClient(api_key=CANARY, base_url="api.example.test", sleep=record) as client:
        with pytest.raises(ConnectionFailed, match="unsupported_protocol") as caught:
            await client.retrieve("b1", None)
    assert sleeps == []
    assert client.requests_made["retrieve"] == 1
    assert CANARY not in str(caught.value)


class BreakingStream(httpx.AsyncByteStream):
    """A body that sends one line and then loses the connection."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'{"custom_id": "a"}\n'
        raise httpx.ReadError("connection reset by peer")


@pytest.mark.anyio
async def test_a_stream_that_breaks_raises_connection_failed(clock: Clock) -> None:
    """Mid-body failures are not retried; they surface as ConnectionFailed with the request id."""
    fake = Fake(
        clock, httpx.Response(200, stream=BreakingStream(), headers={"request-id": "req_res"})
    )
    got: list[bytes] = []

    async def download(client: BatchClient) -> str | None:
        async with client.stream_results(results_batch(f"{BASE}/r")) as body:
            async for chunk in body:
                got.append(chunk)
            return getattr(body, "request_id", None)

    async with make_client(fake, clock, concurrency=1) as client:
        with pytest.raises(ConnectionFailed, match="body broke off") as caught:
            await download(client)
        fake.respond = lambda r: httpx.Response(200, json=batch_json("b1"))
        await asyncio.wait_for(client.retrieve("b1", None), 1)  # the slot was given back
    assert got == [b'{"custom_id": "a"}\n']
    assert caught.value.endpoint == "results"
    assert client.requests_made["results"] == 1


@pytest.mark.anyio
async def test_the_results_body_carries_the_request_id(clock: Clock) -> None:
    """The archive records the request id of the download it stored."""
    fake = Fake(clock, httpx.Response(200, content=b"{}\n", headers={"request-id": "req_res"}))
    async with (
        make_client(fake, clock) as client,
        client.stream_results(results_batch(f"{BASE}/r")) as body,
    ):
        assert getattr(body, "request_id", None) == "req_res"
        assert [c async for c in body] == [b"{}\n"]


@pytest.mark.anyio
async def test_results_on_another_origin_are_asked_of_the_base_url_so_the_key_stays_home() -> None:
    """A results_url naming a foreign host is re-rooted: the key only goes to the base URL."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, content=b"", headers={"request-id": "req_1"})

    batch = Batch(
        id="msgbatch_1",
        processing_status="ended",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        request_counts=RequestCounts(errored=0, expired=0),
        results_url="https://elsewhere.example/v1/messages/batches/msgbatch_1/results?x=1",
    )
    async with (
        BatchClient(
            api_key="k", base_url="http://api.test/prefix", transport=httpx.MockTransport(handler)
        ) as client,
        client.stream_results(batch) as stream,
    ):
        assert [chunk async for chunk in stream] == []
    assert seen == ["http://api.test/prefix/v1/messages/batches/msgbatch_1/results?x=1"]


@pytest.mark.anyio
async def test_a_read_response_is_freed_without_the_cyclic_collector(clock: Clock) -> None:
    """A list page's body is freed as soon as the page is read, not when the collector runs.

    httpx leaves a response and its stream pointing at each other; without ``_unbind`` each
    page's response (and its body) would wait for the cyclic collector.
    """
    fake = Fake(clock, page(["c", "b"], True), page(["a"], False))
    gc.collect()
    gc.disable()
    try:
        async with make_client(fake, clock, page_size=2) as client:
            pages = [p async for p in client.list_pages(None)]
        assert [[b.id for b in p] for p in pages] == [["c", "b"], ["a"]]
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        lingering = [o for o in gc.garbage if isinstance(o, httpx.Response)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert lingering == []
