"""The HTTP surface in-process (httpx over ASGI): headers, envelopes, faults, control surface."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from reaper.emulator.app import create_app
from reaper.emulator.faults import Faults
from reaper.emulator.harness import asgi_client, new_state
from reaper.emulator.state import DEFAULT_ORGANIZATION, DEFAULT_WORKSPACE, EmulatorState

from .conftest import KEY

pytestmark = pytest.mark.anyio

BATCHES = "/v1/messages/batches"
PARAMS = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
REQUEST_ID = re.compile(r"req_[A-Za-z0-9]{24}")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


@pytest.fixture
async def client(state: EmulatorState) -> AsyncIterator[httpx.AsyncClient]:
    """Give an in-process client sending the key and anthropic-version."""
    async with asgi_client(state, api_key=KEY) as http:
        yield http


async def create(client: httpx.AsyncClient, n: int = 2) -> dict[str, Any]:
    """Create a batch of n valid requests; return its JSON."""
    response = await client.post(
        BATCHES, json={"requests": [{"custom_id": f"r{i}", "params": PARAMS} for i in range(n)]}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_error(response: httpx.Response, status: int, error_type: str) -> None:
    """Check the status and the API's error envelope, request id included."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"type", "error", "request_id"}
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    assert body["request_id"] == response.headers["request-id"]


async def test_every_batch_object_has_the_ten_fields_in_the_apis_formats(
    client: httpx.AsyncClient,
) -> None:
    """All ten keys, RFC 3339 with microseconds and Z, results_url on the emulator's origin."""
    created = await create(client)
    assert set(created) == {
        "id",
        "type",
        "processing_status",
        "request_counts",
        "ended_at",
        "created_at",
        "expires_at",
        "archived_at",
        "cancel_initiated_at",
        "results_url",
    }
    assert created["type"] == "message_batch"
    assert TIMESTAMP.fullmatch(created["created_at"])
    assert TIMESTAMP.fullmatch(created["expires_at"])
    listed = (await client.get(BATCHES, params={"limit": 1000})).json()
    assert listed["data"][0] == created


async def test_every_response_carries_request_organization_and_workspace_headers(
    client: httpx.AsyncClient, state: EmulatorState
) -> None:
    """Successes and errors alike; the request-id matches the error body's."""
    state.seed_random(3)
    for response in (
        await client.get(BATCHES),
        await client.get(f"{BATCHES}/msgbatch_nope"),
        await client.get(BATCHES, params={"limit": 0}),
        await client.get("/v1/unknown"),
    ):
        assert REQUEST_ID.fullmatch(response.headers["request-id"])
        assert response.headers["anthropic-organization-id"] == DEFAULT_ORGANIZATION
    assert (await client.get(BATCHES)).headers["anthropic-workspace-id"] == DEFAULT_WORKSPACE
    assert_error(await client.get("/v1/unknown"), 404, "not_found_error")
    assert_error(await client.put(BATCHES), 405, "invalid_request_error")


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"x-api-key": KEY}, 200),
        ({"authorization": f"Bearer {KEY}"}, 200),
        ({"x-api-key": "sk-wrong"}, 401),
        ({"authorization": "Bearer sk-wrong"}, 401),
        ({"authorization": f"Basic {KEY}"}, 401),
        ({}, 401),
    ],
)
async def test_the_key_is_accepted_as_x_api_key_or_bearer(
    state: EmulatorState, headers: dict[str, str], status: int
) -> None:
    """401 authentication_error otherwise, without a workspace header."""
    async with asgi_client(state, headers=headers) as http:
        response = await http.get(BATCHES)
    assert response.status_code == status
    if status == 401:
        assert_error(response, 401, "authentication_error")
        assert "anthropic-workspace-id" not in response.headers
        assert "request-id" in response.headers


async def test_no_key_configured_means_any_or_no_key_is_accepted() -> None:
    """Without --api-key the emulator authenticates nobody."""
    async with asgi_client(new_state()) as http:
        assert (await http.get(BATCHES)).status_code == 200


async def test_anthropic_version_must_be_present_but_any_value_is_accepted(
    state: EmulatorState,
) -> None:
    """Absent: 400 invalid_request_error; the SDK's 2026-10-21 or anything else: fine."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(state)), base_url="http://e"
    ) as http:
        missing = await http.get(BATCHES, headers={"x-api-key": KEY})
        assert_error(missing, 400, "invalid_request_error")
        assert "anthropic-version" in missing.json()["error"]["message"]
        for version in ("2023-06-01", "2026-10-21", "whatever"):
            ok = await http.get(BATCHES, headers={"x-api-key": KEY, "anthropic-version": version})
            assert ok.status_code == 200


async def test_cancel_and_delete_accept_an_empty_body_with_a_json_content_type(
    client: httpx.AsyncClient, state: EmulatorState
) -> None:
    """What the SDK sends: Content-Type application/json, Content-Length 0."""
    batch = await create(client)
    headers = {"content-type": "application/json"}
    canceled = await client.post(f"{BATCHES}/{batch['id']}/cancel", headers=headers, content=b"")
    assert canceled.json()["processing_status"] == "canceling"
    state.advance(state.cancel_seconds)
    deleted = await client.request("DELETE", f"{BATCHES}/{batch['id']}", headers=headers)
    assert deleted.json() == {"id": batch["id"], "type": "message_batch_deleted"}


async def test_create_rejects_a_body_that_is_not_json(client: httpx.AsyncClient) -> None:
    """400 invalid_request_error."""
    response = await client.post(
        BATCHES, content=b"{nope", headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "invalid_request_error")


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "ten", "1.5", ""])
async def test_a_bad_limit_is_refused(client: httpx.AsyncClient, limit: str) -> None:
    """limit must be a whole number from 1 to 1000."""
    assert_error(await client.get(BATCHES, params={"limit": limit}), 400, "invalid_request_error")


async def test_the_list_envelope_and_its_defaults(
    client: httpx.AsyncClient, state: EmulatorState
) -> None:
    """Default limit 20; data, has_more, first_id and last_id; an empty page has null ids."""
    async with asgi_client(state, api_key=KEY, workspace="wrkspc_empty") as other:
        assert (await other.get(BATCHES)).json() == {
            "data": [],
            "has_more": False,
            "first_id": None,
            "last_id": None,
        }
    state.seed_random(25)
    page = (await client.get(BATCHES)).json()
    assert set(page) == {"data", "has_more", "first_id", "last_id"}
    assert len(page["data"]) == 20
    assert page["has_more"] is True
    assert page["first_id"] == page["data"][0]["id"]
    assert page["last_id"] == page["data"][-1]["id"]
    created = [b["created_at"] for b in page["data"]]
    assert created == sorted(created, reverse=True)


async def test_results_are_served_as_json_lines_and_404_when_not_ended_or_archived(
    client: httpx.AsyncClient, state: EmulatorState
) -> None:
    """application/x-jsonl; before the end and after archival: 404 not_found_error."""
    batch = await create(client, 3)
    url = f"{BATCHES}/{batch['id']}/results"
    assert_error(await client.get(url), 404, "not_found_error")
    state.advance(3600)
    response = await client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-jsonl")
    assert len(response.text.splitlines()) == 3
    retrieved = (await client.get(f"{BATCHES}/{batch['id']}")).json()
    assert retrieved["results_url"] == f"http://emulator.test{url}"
    state.advance(29 * 86_400)
    assert_error(await client.get(url), 404, "not_found_error")
    assert (await client.get(f"{BATCHES}/{batch['id']}")).json()["archived_at"] is not None


async def test_rate_limit_answers_429_with_retry_after_and_the_ratelimit_headers(
    state: EmulatorState, client: httpx.AsyncClient
) -> None:
    """The trio on every response while the limit is on; retry-after in whole seconds."""
    state.faults = Faults(rate_limit_rpm=3)
    responses = [await client.get(BATCHES) for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert [r.headers["anthropic-ratelimit-requests-remaining"] for r in responses] == [
        "2",
        "1",
        "0",
        "0",
    ]
    for response in responses:
        assert response.headers["anthropic-ratelimit-requests-limit"] == "3"
        reset = response.headers["anthropic-ratelimit-requests-reset"]
        assert datetime.fromisoformat(reset).tzinfo is not None
    assert_error(responses[-1], 429, "rate_limit_error")
    assert int(responses[-1].headers["retry-after"]) >= 1

    state.faults = Faults(rate_limit_rpm=1, rate_limit_retry_after=False)
    await client.get(BATCHES)
    throttled = await client.get(BATCHES)
    assert throttled.status_code == 429
    assert "retry-after" not in throttled.headers


async def test_injected_errors_and_the_should_retry_header(
    state: EmulatorState, client: httpx.AsyncClient
) -> None:
    """500 api_error and 529 overloaded_error at the error rate, x-should-retry when asked."""
    state.faults = Faults(error_rate=1.0, overloaded_share=0.0, should_retry=False)
    response = await client.get(BATCHES)
    assert_error(response, 500, "api_error")
    assert response.headers["x-should-retry"] == "false"
    state.faults = Faults(error_rate=1.0, overloaded_share=1.0)
    response = await client.get(BATCHES)
    assert_error(response, 529, "overloaded_error")
    assert "x-should-retry" not in response.headers
    state.faults = Faults(throttle_rate=1.0, throttle_error_code="enforced_spend_limit_reached")
    response = await client.get(BATCHES)
    assert_error(response, 429, "rate_limit_error")
    assert response.json()["error"]["details"] == {"error_code": "enforced_spend_limit_reached"}
    assert "retry-after" not in response.headers


async def test_an_error_rate_answers_about_that_share_half_500_half_529(
    state: EmulatorState, client: httpx.AsyncClient
) -> None:
    """0.3 of 400 requests, split roughly evenly."""
    state.faults = Faults(error_rate=0.3)
    statuses = [(await client.get(BATCHES)).status_code for _ in range(400)]
    assert 80 <= statuses.count(500) + statuses.count(529) <= 160
    assert statuses.count(500) > 25
    assert statuses.count(529) > 25


async def test_transient_404s_for_named_ids_and_young_batches(
    state: EmulatorState, client: httpx.AsyncClient
) -> None:
    """not_found_ids and not_found_young_seconds hide a batch that exists."""
    batch = await create(client)
    url = f"{BATCHES}/{batch['id']}"
    state.faults = Faults(not_found_ids=frozenset({batch["id"]}))
    assert_error(await client.get(url), 404, "not_found_error")
    state.faults = Faults(not_found_young_seconds=5)
    assert_error(await client.get(url), 404, "not_found_error")
    state.advance(6)
    assert (await client.get(url)).status_code == 200


async def test_list_page_faults(state: EmulatorState, client: httpx.AsyncClient) -> None:
    """Malformed and truncated bodies; unknown statuses and missing fields inside a page."""
    state.seed_random(30)
    state.faults = Faults(malformed_list_rate=1.0)
    response = await client.get(BATCHES)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)
    state.faults = Faults(truncated_list_rate=1.0)
    with pytest.raises(json.JSONDecodeError):
        json.loads((await client.get(BATCHES)).content)
    state.faults = Faults(unknown_status_rate=1.0, unknown_status="archiving", limit=3)
    statuses = [b["processing_status"] for b in (await client.get(BATCHES)).json()["data"]]
    assert statuses[:3] == ["archiving"] * 3
    assert "archiving" not in statuses[3:]
    state.faults = Faults(missing_fields_rate=1.0, missing_fields=("created_at", "request_counts"))
    for batch in (await client.get(BATCHES)).json()["data"]:
        assert "created_at" not in batch
        assert "request_counts" not in batch
        assert "id" in batch


async def test_results_faults_over_the_in_process_transport(
    state: EmulatorState, client: httpx.AsyncClient
) -> None:
    """Short and corrupt streams arrive; an aborted one raises a protocol error."""
    (batch_id,) = state.seed_objects(
        [{"processing_status": "ended", "request_counts": {"succeeded": 8}}]
    )
    url = f"{BATCHES}/{batch_id}/results"
    state.faults = Faults(results_short_ids=frozenset({batch_id}))
    assert len((await client.get(url)).text.splitlines()) == 4
    state.faults = Faults(results_abort_ids=frozenset({batch_id}))
    with pytest.raises(httpx.RemoteProtocolError):
        await client.get(url)


async def test_requests_are_counted_including_faults(
    state: EmulatorState, client: httpx.AsyncClient
) -> None:
    """Counters by endpoint and status, and the log of mutating requests."""
    batch = await create(client)
    await client.post(f"{BATCHES}/{batch['id']}/cancel")
    await client.delete(f"{BATCHES}/{batch['id']}")  # 400: still canceling
    await client.get(f"{BATCHES}/{batch['id']}")
    assert state.stats.count("create", 200) == 1
    assert state.stats.count("delete", 400) == 1
    assert state.stats.mutating() == {"create": 1, "cancel": 1, "delete": 1}
    assert state.stats.mutating(status=200) == {"create": 1, "cancel": 1, "delete": 0}
    log = list(state.stats.mutations)
    assert [(m.endpoint, m.status) for m in log] == [
        ("create", 200),
        ("cancel", 200),
        ("delete", 400),
    ]
    assert log[1].batch_id == batch["id"]
    assert log[1].workspace == DEFAULT_WORKSPACE


async def test_the_control_surface(state: EmulatorState, client: httpx.AsyncClient) -> None:
    """seed, clock, faults, state, batches, mutations and reset, without auth or counting."""
    async with asgi_client(state) as bare:  # no key: the control surface needs none
        seeded = (await bare.post("/_emulator/seed", json={"random": 40})).json()
        assert seeded == {"seeded": 40, "ids": []}
        given = (await bare.post("/_emulator/seed", json=[{"id": "msgbatch_given"}])).json()
        assert given == {"seeded": 1, "ids": ["msgbatch_given"]}
        bad = await bare.post("/_emulator/seed", json=[{"created_at": "soon"}])
        assert bad.status_code == 400
        assert "created_at" in bad.json()["error"]

        before = (await bare.get("/_emulator/clock")).json()["now"]
        after = (await bare.post("/_emulator/clock", json={"advance_seconds": 90})).json()["now"]
        assert datetime.fromisoformat(after) - datetime.fromisoformat(before) == timedelta(
            seconds=90
        )
        moved = await bare.post("/_emulator/clock", json={"set": "2030-01-01T00:00:00Z"})
        assert moved.json()["now"] == "2030-01-01T00:00:00.000000Z"
        assert (await bare.post("/_emulator/clock", json={"advance": 1})).status_code == 400

        put = await bare.put(
            "/_emulator/faults", json={"error_rate": 0.25, "endpoints": ["delete"]}
        )
        assert put.json()["error_rate"] == 0.25
        assert put.json()["endpoints"] == ["delete"]
        assert state.faults == Faults(error_rate=0.25, endpoints=frozenset({"delete"}))
        assert (await bare.put("/_emulator/faults", json={"error_rate": 3})).status_code == 400
        await bare.put("/_emulator/faults", json={})

        await client.get(BATCHES)
        summary = (await bare.get("/_emulator/state")).json()
        assert summary["batches"] == 41
        assert summary["by_status"] == {"ended": 41}
        assert summary["requests"]["total"] == 1  # the control calls are not counted
        assert summary["by_workspace"] == {DEFAULT_WORKSPACE: {"ended": 41}}

        one = (await bare.get("/_emulator/batches/msgbatch_given")).json()
        assert one["workspace_id"] == DEFAULT_WORKSPACE
        assert one["batch"]["id"] == "msgbatch_given"
        assert (await bare.get("/_emulator/batches/msgbatch_none")).status_code == 404
        assert (await bare.get("/_emulator/mutations")).json() == []

        assert (await bare.post("/_emulator/reset")).json() == {"reset": True}
        assert len(state) == 0
        assert state.stats.count() == 0
