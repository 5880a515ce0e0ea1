"""The fault switches the trust checks are tested against (issue 12), and the results window.

Each switch is checked in-process (httpx over ASGI) for its exact shape, and where the official
SDK would see it differently, over loopback with the SDK too.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import anthropic
import httpx
import pytest

from reaper.emulator.clock import http_date
from reaper.emulator.faults import Faults
from reaper.emulator.harness import asgi_client
from reaper.emulator.records import format_us, to_us
from reaper.emulator.state import DEFAULT_WORKSPACE, EmulatorState

from .conftest import KEY

BATCHES = "/v1/messages/batches"
PARAMS = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
EIGHT_DAYS = 8 * 86_400


@pytest.fixture
async def client(state: EmulatorState) -> AsyncIterator[httpx.AsyncClient]:
    """Give an in-process client sending the key and anthropic-version."""
    async with asgi_client(state, api_key=KEY) as http:
        yield http


@pytest.fixture
def control(served: str) -> Iterator[httpx.Client]:
    """Give a plain HTTP client for the control surface of the served emulator."""
    with httpx.Client(base_url=f"{served}/_emulator") as http:
        yield http


def date_of(response: httpx.Response) -> datetime:
    """Return the one Date header of a response, parsed."""
    (value,) = response.headers.get_list("date")
    return parsedate_to_datetime(value)


def whole(when: datetime) -> datetime:
    return when.replace(microsecond=0)


def seed_ended(state: EmulatorState, n: int) -> list[str]:
    """Seed n ended batches a minute apart (newest first in the returned list)."""
    now = state.now()
    return state.seed_objects(
        [
            {
                "created_at": (now - timedelta(hours=2, minutes=i)).isoformat(),
                "ended_at": (now - timedelta(hours=1, minutes=i)).isoformat(),
            }
            for i in range(n)
        ]
    )


def seed_running(state: EmulatorState, n: int) -> list[str]:
    """Seed n in-progress batches created an hour ago, a minute apart."""
    now = state.now()
    return state.seed_objects(
        [
            {
                "processing_status": "in_progress",
                "created_at": (now - timedelta(hours=1, minutes=i)).isoformat(),
                "request_counts": {"processing": 10},
            }
            for i in range(n)
        ]
    )


# -- Date follows the emulator's clock ---------------------------------------------------------


@pytest.mark.anyio
async def test_date_follows_the_emulators_clock_and_moves_with_it(
    state: EmulatorState, client: httpx.AsyncClient
) -> None:
    """Date is the emulator's now (a ManualClock in 2026-03), not the host's; it moves with it."""
    response = await client.get(BATCHES)
    assert date_of(response) == whole(state.now())
    state.advance(EIGHT_DAYS)
    assert date_of(await client.get(BATCHES)) == whole(state.now())
    # Errors and the control surface carry it too.
    assert date_of(await client.get(f"{BATCHES}/msgbatch_none")) == whole(state.now())
    assert date_of(await client.get("/_emulator/clock")) == whole(state.now())


@pytest.mark.anyio
async def test_clock_skew_moves_only_the_date_header(
    state: EmulatorState, client: httpx.AsyncClient
) -> None:
    """clock_skew_seconds offsets Date; batch timestamps stay on the emulator's clock."""
    state.faults = Faults(clock_skew_seconds=-EIGHT_DAYS)
    response = await client.post(BATCHES, json={"requests": [{"custom_id": "a", "params": PARAMS}]})
    assert response.status_code == 200
    assert date_of(response) == whole(state.now()) - timedelta(seconds=EIGHT_DAYS)
    assert response.json()["created_at"] == format_us(to_us(state.now()))
    state.faults = Faults(omit_date=True)
    assert "date" not in (await client.get(BATCHES)).headers


def test_over_http_there_is_one_date_from_the_emulator_and_no_server_header(
    state: EmulatorState, served: str, control: httpx.Client
) -> None:
    """uvicorn's own Date (the host's clock) and Server headers are off; the clock moves Date."""
    with httpx.Client(base_url=served, headers={"x-api-key": KEY, "anthropic-version": "1"}) as h:
        response = h.get(BATCHES)
        assert date_of(response) == whole(state.now())
        assert abs(date_of(response) - datetime.now(UTC)) > timedelta(days=100)
        assert "server" not in response.headers
        control.post("/clock", json={"advance_seconds": EIGHT_DAYS}).raise_for_status()
        assert date_of(h.get(BATCHES)) == whole(state.now())
        patched = control.patch("/faults", json={"clock_skew_seconds": 3600})
        assert patched.json()["clock_skew_seconds"] == 3600
        assert date_of(h.get(BATCHES)) == whole(state.now()) + timedelta(hours=1)


def test_the_sdk_sees_the_skewed_date(state: EmulatorState, sdk: anthropic.Anthropic) -> None:
    """What a client built on the official SDK reads from the raw response."""
    state.faults = Faults(clock_skew_seconds=EIGHT_DAYS)
    raw = sdk.messages.batches.with_raw_response.list()
    assert raw.headers["date"] == http_date(state.now() + timedelta(seconds=EIGHT_DAYS))


# -- list pages repeating a row -----------------------------------------------------------------


async def walk(client: httpx.AsyncClient, limit: int) -> list[list[dict[str, Any]]]:
    """Follow after_id=last_id to the end; return the pages."""
    pages: list[list[dict[str, Any]]] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit} | ({"after_id": after} if after else {})
        body = (await client.get(BATCHES, params=params)).json()
        pages.append(body["data"])
        assert len(body["data"]) <= limit
        assert body["last_id"] == body["data"][-1]["id"]
        if not body["has_more"]:
            return pages
        after = body["last_id"]


@pytest.mark.anyio
async def test_a_page_repeating_a_row_directly_below_itself(
    state: EmulatorState, client: httpx.AsyncClient
) -> None:
    """Every page shows one id twice, created_at still non-increasing; a full walk hides none."""
    ids = seed_ended(state, 12)
    state.faults = Faults(list_repeat_row_rate=1.0)
    pages = await walk(client, 5)
    for page in pages[:-1]:
        page_ids = [b["id"] for b in page]
        assert len(page_ids) == 5
        assert len(set(page_ids)) == 4
        created = [b["created_at"] for b in page]
        assert created == sorted(created, reverse=True)
    walked = [b["id"] for page in pages for b in page]
    assert set(walked) == set(ids)
    assert len(walked) > len(ids)


@pytest.mark.anyio
async def test_a_page_repeating_the_last_row_of_the_page_before(
    state: EmulatorState, client: httpx.AsyncClient
) -> None:
    """A page asked for with after_id starts with that batch again; a full walk hides none."""
    ids = seed_ended(state, 12)
    state.faults = Faults(list_repeat_previous_rate=1.0)
    pages = await walk(client, 5)
    assert len(pages) > 1
    for before, page in itertools.pairwise(pages):
        assert page[0]["id"] == before[-1]["id"]
        assert len({b["id"] for b in page}) == len(page)
    assert {b["id"] for page in pages for b in page} == set(ids)


def test_the_sdk_paginates_through_repeated_rows(
    state: EmulatorState, sdk: anthropic.Anthropic
) -> None:
    """The SDK's auto-pagination yields the repeats: a client must check ids itself."""
    ids = seed_ended(state, 12)
    state.faults = Faults(list_repeat_previous_rate=1.0)
    listed = [b.id for b in sdk.messages.batches.list(limit=4)]
    assert set(listed) == set(ids)
    assert len(listed) > len(ids)


# -- answers naming another batch ---------------------------------------------------------------


@pytest.mark.anyio
async def test_cancel_retrieve_and_delete_answer_naming_another_batch(
    state: EmulatorState, client: httpx.AsyncClient
) -> None:
    """The requested batch is acted on; the answer names its neighbour; the neighbour is intact."""
    running = seed_running(state, 3)
    ended = seed_ended(state, 3)
    state.faults = Faults(wrong_batch_ids=frozenset({running[1], ended[1]}))
    cancel = (await client.post(f"{BATCHES}/{running[1]}/cancel")).json()
    assert cancel["id"] in {running[0], running[2], *ended}
    assert state.get(DEFAULT_WORKSPACE, running[1]).status == "canceling"
    assert state.get(DEFAULT_WORKSPACE, cancel["id"]).cancel_at is None
    retrieved = (await client.get(f"{BATCHES}/{ended[1]}")).json()
    assert retrieved["id"] != ended[1]
    deleted = await client.delete(f"{BATCHES}/{ended[1]}")
    assert deleted.status_code == 200
    other = deleted.json()["id"]
    assert other != ended[1]
    assert state.find(ended[1]) is None
    assert state.find(other) is not None
    assert state.faults_injected == 3


@pytest.mark.anyio
async def test_a_wrong_answer_can_name_a_chosen_batch_and_is_limited(
    state: EmulatorState, client: httpx.AsyncClient
) -> None:
    """wrong_batch_answer_id names e.g. a protected batch; with limit 1 only the first answer."""
    ended = seed_ended(state, 3)
    state.faults = Faults(wrong_batch_rate=1.0, wrong_batch_answer_id=ended[2], limit=1)
    first = (await client.delete(f"{BATCHES}/{ended[0]}")).json()
    assert first == {"id": ended[2], "type": "message_batch_deleted"}
    second = (await client.delete(f"{BATCHES}/{ended[1]}")).json()
    assert second["id"] == ended[1]
    assert state.find(ended[2]) is not None


def test_the_sdk_returns_the_other_batch_as_if_it_were_the_one_asked_for(
    state: EmulatorState, sdk: anthropic.Anthropic
) -> None:
    running = seed_running(state, 2)
    state.faults = Faults(wrong_batch_rate=1.0, endpoints=frozenset({"cancel"}))
    answered = sdk.messages.batches.cancel(running[0])
    assert answered.id == running[1]
    assert answered.processing_status == "in_progress"
    assert sdk.messages.batches.retrieve(running[0]).processing_status == "canceling"


# -- error bodies echoing the credentials --------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("header", ["x-api-key", "authorization"])
async def test_errors_echo_the_credential_in_type_message_and_request_id(
    state: EmulatorState, header: str
) -> None:
    """As a careless proxy: the key shows in every field of the error (and the header)."""
    state.faults = Faults(echo_credentials=True, error_rate=1.0, overloaded_share=0.0)
    value = KEY if header == "x-api-key" else f"Bearer {KEY}"
    async with asgi_client(state, headers={header: value}) as http:
        response = await http.get(BATCHES)
    assert response.status_code == 500
    body = response.json()
    assert KEY in body["error"]["type"]
    assert KEY in body["error"]["message"]
    assert KEY in body["request_id"]
    assert KEY in response.headers["request-id"]


@pytest.mark.anyio
async def test_a_wrong_key_is_echoed_back_and_successes_are_untouched(
    state: EmulatorState, client: httpx.AsyncClient
) -> None:
    state.faults = Faults(echo_credentials=True)
    assert KEY not in (await client.get(BATCHES)).text
    async with asgi_client(state, api_key="sk-ant-wrong-key") as http:
        response = await http.get(BATCHES)
    assert response.status_code == 401
    assert "sk-ant-wrong-key" in response.json()["error"]["message"]


def test_the_sdk_error_carries_the_echoed_key(
    state: EmulatorState, sdk: anthropic.Anthropic
) -> None:
    """What an SDK-based client would print: the exception text holds the key."""
    state.faults = Faults(echo_credentials=True, not_found_ids=frozenset({"msgbatch_x"}))
    with pytest.raises(anthropic.NotFoundError) as caught:
        sdk.messages.batches.retrieve("msgbatch_x")
    assert KEY in str(caught.value)
    assert KEY in (caught.value.request_id or "")


# -- a batch that ends on its own as the cancel arrives -----------------------------------------


@pytest.mark.anyio
async def test_a_batch_ending_as_its_cancel_arrives_refuses_the_cancel(
    state: EmulatorState, client: httpx.AsyncClient
) -> None:
    """400 as already ended; it ended just now, naturally, and was never canceled."""
    (batch_id,) = seed_running(state, 1)
    state.faults = Faults(cancel_race_ids=frozenset({batch_id}))
    response = await client.post(f"{BATCHES}/{batch_id}/cancel")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "already ended" in response.json()["error"]["message"]
    shown = (await client.get(f"{BATCHES}/{batch_id}")).json()
    assert shown["processing_status"] == "ended"
    assert shown["ended_at"] == format_us(to_us(state.now()))
    assert shown["cancel_initiated_at"] is None
    assert shown["request_counts"]["succeeded"] == 10
    assert shown["request_counts"]["canceled"] == 0


@pytest.mark.anyio
async def test_the_race_answered_200_ended_without_cancel_initiated_at(
    state: EmulatorState, client: httpx.AsyncClient
) -> None:
    """With cancel_ended_ok the cancel answers 200 showing ended and no cancel_initiated_at."""
    running = seed_running(state, 2)
    state.faults = Faults(cancel_race_rate=1.0, cancel_ended_ok=True, limit=1)
    raced = await client.post(f"{BATCHES}/{running[0]}/cancel")
    assert raced.status_code == 200
    assert raced.json()["processing_status"] == "ended"
    assert raced.json()["cancel_initiated_at"] is None
    normal = (await client.post(f"{BATCHES}/{running[1]}/cancel")).json()
    assert normal["processing_status"] == "canceling"
    assert normal["cancel_initiated_at"] is not None


def test_the_sdk_gets_a_bad_request_for_the_raced_cancel(
    state: EmulatorState, sdk: anthropic.Anthropic, control: httpx.Client
) -> None:
    (batch_id,) = seed_running(state, 1)
    control.put("/faults", json={"cancel_race_ids": [batch_id]}).raise_for_status()
    with pytest.raises(anthropic.BadRequestError):
        sdk.messages.batches.cancel(batch_id)
    assert sdk.messages.batches.retrieve(batch_id).processing_status == "ended"


def test_every_new_switch_round_trips_through_the_control_surface(control: httpx.Client) -> None:
    faults = {
        "clock_skew_seconds": -691200,
        "omit_date": True,
        "list_repeat_row_rate": 0.5,
        "list_repeat_previous_rate": 0.25,
        "wrong_batch_rate": 0.1,
        "wrong_batch_ids": ["msgbatch_a"],
        "wrong_batch_answer_id": "msgbatch_b",
        "echo_credentials": True,
        "cancel_race_rate": 0.2,
        "cancel_race_ids": ["msgbatch_c"],
    }
    answered = control.put("/faults", json=faults).json()
    assert {name: answered[name] for name in faults} == faults
    refused = control.patch("/faults", json={"clock_skew_seconds": "8d"})
    assert refused.status_code == 400
    assert "clock_skew_seconds" in refused.json()["error"]


# -- the results window (issue 13) --------------------------------------------------------------


def test_results_expire_29_days_after_creation_under_the_emulators_clock(
    state: EmulatorState, sdk: anthropic.Anthropic, control: httpx.Client
) -> None:
    """A second before created_at + 29 d: results served, no archived_at; at it: 404, archived."""
    created = state.now() - timedelta(days=3)
    (batch_id,) = state.seed_objects(
        [
            {
                "created_at": created.isoformat(),
                "ended_at": (created + timedelta(hours=1)).isoformat(),
                "request_counts": {"succeeded": 4},
            }
        ]
    )
    window_ends = created + timedelta(days=29)
    almost = (window_ends - timedelta(seconds=1)).isoformat()
    control.post("/clock", json={"set": almost}).raise_for_status()
    assert sdk.messages.batches.retrieve(batch_id).archived_at is None
    assert len(list(sdk.messages.batches.results(batch_id))) == 4
    control.post("/clock", json={"advance_seconds": 1}).raise_for_status()
    shown = sdk.messages.batches.retrieve(batch_id)
    assert shown.archived_at == window_ends
    with pytest.raises(anthropic.NotFoundError):
        list(sdk.messages.batches.results(batch_id))
    assert batch_id in [b.id for b in sdk.messages.batches.list()]
    assert control.get("/state").json()["archived"] == 1
