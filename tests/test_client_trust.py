"""The client trusts no answer and leaks no key, against the emulator's fault switches (issue 12).

- an answer naming another batch (``wrong_batch_ids``) is a ``malformed_response`` on retrieve,
  cancel and delete, with the answer's request id;
- an error that echoes the credential (``echo_credentials``) leaves no part of the key in any
  field of the ApiError: type, message, request id, nor its text;
- a 409 on cancel or delete is final, not retried.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest

from reaper.client import BatchClient
from reaper.emulator.faults import Faults
from reaper.emulator.harness import IN_PROCESS_BASE_URL, asgi_transport, new_state
from reaper.emulator.state import EmulatorState
from reaper.errors import ApiError
from tests.chaos.conftest import KEY, leaks

pytestmark = pytest.mark.anyio


@pytest.fixture
def state() -> EmulatorState:
    state = new_state(api_key=KEY)
    now = state.now()
    state.seed_objects(
        [
            {
                "id": f"msgbatch_{name}",
                "created_at": (now - timedelta(hours=h)).isoformat(),
                "processing_status": "in_progress",
                "request_counts": {"processing": 2},
            }
            for name, h in (("a", 20), ("b", 21))
        ]
        + [
            {
                "id": "msgbatch_old",
                "created_at": (now - timedelta(days=20)).isoformat(),
                "ended_at": (now - timedelta(days=19)).isoformat(),
            }
        ]
    )
    return state


@pytest.fixture
async def client(state: EmulatorState) -> AsyncIterator[BatchClient]:
    async def no_sleep(_seconds: float) -> None:
        return None

    async with BatchClient(
        api_key=KEY,
        base_url=IN_PROCESS_BASE_URL,
        transport=asgi_transport(state),
        max_rpm=100_000,
        sleep=no_sleep,
    ) as client:
        yield client


@pytest.mark.parametrize("endpoint", ["retrieve", "cancel", "delete"])
async def test_an_answer_naming_another_batch_is_malformed(
    client: BatchClient, state: EmulatorState, endpoint: str
) -> None:
    target = "msgbatch_old" if endpoint == "delete" else "msgbatch_a"
    state.faults = Faults(wrong_batch_ids=frozenset({target}), wrong_batch_answer_id="msgbatch_b")

    with pytest.raises(ApiError) as caught:
        await getattr(client, endpoint)(target, None)

    error = caught.value
    assert (error.endpoint, error.error_type, error.batch_id) == (
        endpoint,
        "malformed_response",
        target,
    )
    assert "msgbatch_b" in error.message
    assert error.request_id is not None
    assert error.request_id.startswith("req_")


async def test_an_error_echoing_the_key_leaves_no_part_of_it_in_any_field(
    client: BatchClient, state: EmulatorState
) -> None:
    state.faults = Faults(echo_credentials=True)

    with pytest.raises(ApiError) as caught:
        await client.retrieve("msgbatch_nope", None)

    error = caught.value
    assert error.status == 404
    fields = [error.error_type, error.message, error.request_id or "", str(error), repr(error)]
    assert [leaks(text) for text in fields] == [[]] * len(fields)
    assert "[REDACTED]" in error.error_type


async def test_a_409_on_delete_is_not_retried(client: BatchClient, state: EmulatorState) -> None:
    """The emulator answers 409 to a delete of an unfinished batch: one request, no retry."""
    state.faults = Faults(delete_unfinished_conflict=True)

    with pytest.raises(ApiError) as caught:
        await client.delete("msgbatch_a", None)

    assert caught.value.status == 409
    assert client.requests_made["delete"] == 1


async def test_a_409_on_cancel_is_not_retried() -> None:
    """A cancel answered 409 (a state conflict) is final: one request, no retry."""
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        body = {"type": "error", "error": {"type": "conflict_error", "message": "ended"}}
        return httpx.Response(409, json=body, headers={"request-id": "req_409"})

    async def no_sleep(_seconds: float) -> None:
        return None

    async with BatchClient(
        api_key=KEY,
        base_url=IN_PROCESS_BASE_URL,
        transport=httpx.MockTransport(answer),
        sleep=no_sleep,
    ) as client:
        with pytest.raises(ApiError) as caught:
            await client.cancel("msgbatch_a", None)

    assert (caught.value.status, caught.value.request_id) == (409, "req_409")
    assert len(seen) == 1
