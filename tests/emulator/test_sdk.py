"""The official anthropic SDK drives the emulator over real HTTP: every endpoint, error and fault.

If the SDK cannot use the emulator, neither could it use the real API the same way: these tests keep
the emulator honest about shapes, headers, pagination and status codes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import anthropic
import httpx
import pytest

from reaper.emulator.faults import Faults
from reaper.emulator.records import format_us
from reaper.emulator.state import DEFAULT_WORKSPACE, EmulatorState

from .conftest import KEY

PARAMS: Any = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 32,
    "messages": [{"role": "user", "content": "hi"}],
}

# Batches do not support streaming: accepted at create, errored when processed.
STREAMING: Any = {**PARAMS, "stream": True}


@pytest.fixture
def control(served: str) -> Iterator[httpx.Client]:
    """Give a plain HTTP client for the control surface of the served emulator."""
    with httpx.Client(base_url=f"{served}/_emulator") as client:
        yield client


def test_auto_pagination_walks_every_page_forward(
    sdk: anthropic.Anthropic, state: EmulatorState
) -> None:
    """limit=10 over 45 batches: five requests, every batch once, newest first."""
    state.seed_random(45)
    expected = [r.id for r in state.iter_records()]
    assert [b.id for b in sdk.messages.batches.list(limit=10)] == expected
    assert state.stats.count("list", 200) == 5


def test_auto_pagination_walks_backward_from_before_id(
    sdk: anthropic.Anthropic, state: EmulatorState
) -> None:
    """The SDK keeps walking with before_id=first_id; each page stays newest first."""
    state.seed_random(45)
    expected = [r.id for r in state.iter_records()]
    pages = list(sdk.messages.batches.list(limit=10, before_id=expected[-1]).iter_pages())
    ids = [[b.id for b in page.data] for page in pages]
    assert [len(p) for p in ids] == [10, 10, 10, 10, 4]
    assert ids[0] == expected[34:44]
    assert ids[-1] == expected[:4]
    assert pages[0].has_more
    assert not pages[-1].has_more


def test_the_whole_lifecycle_through_every_endpoint(
    sdk: anthropic.Anthropic, state: EmulatorState, control: httpx.Client
) -> None:
    """create, retrieve, list, cancel, wait until ended, results, delete, then 404."""
    batch = sdk.messages.batches.create(
        requests=[{"custom_id": f"req-{i}", "params": PARAMS} for i in range(3)]
    )
    assert batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 3
    assert batch.results_url is None
    assert sdk.messages.batches.retrieve(batch.id) == batch
    assert next(iter(sdk.messages.batches.list())).id == batch.id

    canceling = sdk.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    with pytest.raises(anthropic.BadRequestError):
        sdk.messages.batches.delete(batch.id)  # not ended yet

    control.post("/clock", json={"advance_seconds": state.cancel_seconds}).raise_for_status()
    ended = sdk.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert ended.ended_at is not None
    assert ended.request_counts.canceled == 3
    assert ended.results_url is not None
    assert ended.results_url.startswith("http://127.0.0.1:")
    with pytest.raises(anthropic.BadRequestError):
        sdk.messages.batches.cancel(batch.id)  # already ended

    results = {r.custom_id: r.result.type for r in sdk.messages.batches.results(batch.id)}
    assert results == {"req-0": "canceled", "req-1": "canceled", "req-2": "canceled"}

    deleted = sdk.messages.batches.delete(batch.id)
    assert (deleted.id, deleted.type) == (batch.id, "message_batch_deleted")
    with pytest.raises(anthropic.NotFoundError):
        sdk.messages.batches.retrieve(batch.id)


def test_a_created_batch_ends_by_itself_with_errored_results_for_bad_params(
    sdk: anthropic.Anthropic, control: httpx.Client, state: EmulatorState
) -> None:
    """Bad params do not fail the create; they come back as errored results."""
    batch = sdk.messages.batches.create(
        requests=[
            {"custom_id": "fine", "params": PARAMS},
            {"custom_id": "streaming", "params": STREAMING},
        ]
    )
    control.post("/clock", json={"advance_seconds": state.processing_seconds * 2})
    ended = sdk.messages.batches.retrieve(batch.id)
    assert (ended.request_counts.succeeded, ended.request_counts.errored) == (1, 1)
    results = {r.custom_id: r.result for r in sdk.messages.batches.results(batch.id)}
    assert results["fine"].type == "succeeded"
    assert results["streaming"].type == "errored"
    errored = results["streaming"]
    assert isinstance(errored, anthropic.types.messages.MessageBatchErroredResult)
    assert errored.error.error.type == "invalid_request_error"


def test_a_seeded_batch_expires_past_expires_at(
    sdk: anthropic.Anthropic, control: httpx.Client, state: EmulatorState
) -> None:
    """Seeded in progress 23 h 59 m ago: two minutes later it has ended, every request expired."""
    created = format_us(
        state.now_us() - (timedelta(hours=23, minutes=59) // timedelta(microseconds=1))
    )
    seeded = control.post(
        "/seed", json=[{"created_at": created, "request_counts": {"processing": 4}}]
    )
    (batch_id,) = seeded.json()["ids"]
    assert sdk.messages.batches.retrieve(batch_id).processing_status == "in_progress"
    control.post("/clock", json={"advance_seconds": 120})
    ended = sdk.messages.batches.retrieve(batch_id)
    assert ended.processing_status == "ended"
    assert ended.ended_at == ended.expires_at
    assert ended.request_counts.expired == 4
    assert {r.result.type for r in sdk.messages.batches.results(batch_id)} == {"expired"}


def test_workspaces_are_selected_by_header_and_echoed(
    sdk: anthropic.Anthropic, state: EmulatorState
) -> None:
    """Each workspace lists and retrieves only its own batches; responses name the workspace."""
    (theirs,) = state.seed_objects(
        [{"workspace_id": "wrkspc_team_b", "ended_at": "2026-03-01T00:00:00Z"}]
    )
    mine = sdk.messages.batches.create(requests=[{"custom_id": "a", "params": PARAMS}])
    assert [b.id for b in sdk.messages.batches.list()] == [mine.id]
    assert [b.id for b in sdk.messages.batches.list(workspace_id="wrkspc_team_b")] == [theirs]
    raw = sdk.messages.batches.with_raw_response.retrieve(theirs, workspace_id="wrkspc_team_b")
    assert raw.headers["anthropic-workspace-id"] == "wrkspc_team_b"
    default = sdk.messages.batches.with_raw_response.list()
    assert default.headers["anthropic-workspace-id"] == DEFAULT_WORKSPACE
    with pytest.raises(anthropic.NotFoundError) as info:
        sdk.messages.batches.retrieve(theirs)
    assert info.value.workspace_id == DEFAULT_WORKSPACE
    assert sdk.messages.batches.delete(theirs, workspace_id="wrkspc_team_b").id == theirs


def _bad_create(sdk: anthropic.Anthropic, state: EmulatorState) -> None:
    sdk.messages.batches.create(requests=[])


def _wrong_key(sdk: anthropic.Anthropic, state: EmulatorState) -> None:
    with sdk.with_options(api_key="sk-ant-wrong") as other:
        other.messages.batches.list()


def _unknown_id(sdk: anthropic.Anthropic, state: EmulatorState) -> None:
    sdk.messages.batches.retrieve("msgbatch_01doesnotexist0000000000")


def _rate_limited(sdk: anthropic.Anthropic, state: EmulatorState) -> None:
    state.faults = Faults(rate_limit_rpm=1)
    sdk.messages.batches.list()
    sdk.messages.batches.list()


def _server_error(sdk: anthropic.Anthropic, state: EmulatorState) -> None:
    state.faults = Faults(error_rate=1.0, overloaded_share=0.0)
    sdk.messages.batches.list()


def _overloaded(sdk: anthropic.Anthropic, state: EmulatorState) -> None:
    state.faults = Faults(error_rate=1.0, overloaded_share=1.0)
    sdk.messages.batches.list()


@pytest.mark.parametrize(
    ("provoke", "status", "error_type", "exception"),
    [
        (_bad_create, 400, "invalid_request_error", anthropic.BadRequestError),
        (_wrong_key, 401, "authentication_error", anthropic.AuthenticationError),
        (_unknown_id, 404, "not_found_error", anthropic.NotFoundError),
        (_rate_limited, 429, "rate_limit_error", anthropic.RateLimitError),
        (_server_error, 500, "api_error", anthropic.InternalServerError),
        (_overloaded, 529, "overloaded_error", anthropic.OverloadedError),
    ],
)
def test_every_error_maps_to_the_sdks_exception_class(
    sdk: anthropic.Anthropic,
    state: EmulatorState,
    provoke: Any,
    status: int,
    error_type: str,
    exception: type[anthropic.APIStatusError],
) -> None:
    """400/401/404/429/500/529 raise the SDK's own classes with the request id and error type."""
    with pytest.raises(exception) as info:
        provoke(sdk, state)
    error = info.value
    assert type(error) is exception  # 500 is not mistaken for 529 nor the reverse
    assert error.status_code == status
    assert isinstance(error.body, dict)
    assert error.body["error"]["type"] == error_type
    assert error.request_id is not None
    assert error.request_id == error.body["request_id"]


def test_the_sdk_honours_retry_after_on_429(served: str, state: EmulatorState) -> None:
    """With the bucket empty the SDK waits the 1 s it is told, then succeeds."""
    state.faults = Faults(rate_limit_rpm=60)
    for _ in range(60):
        state.take_token()
    with anthropic.Anthropic(api_key=KEY, base_url=served, max_retries=2) as sdk:
        started = time.monotonic()
        sdk.messages.batches.list()
        waited = time.monotonic() - started
    assert state.stats.count("list", 429) == 1
    assert state.stats.count("list", 200) == 1
    assert 0.9 <= waited < 5


def test_the_sdk_retries_injected_errors_until_the_fault_limit(
    served: str, state: EmulatorState
) -> None:
    """Faults(limit=1): the first attempt fails with 500/529, the retry succeeds."""
    state.faults = Faults(error_rate=1.0, limit=1)
    with anthropic.Anthropic(api_key=KEY, base_url=served, max_retries=2) as sdk:
        sdk.messages.batches.list()
    assert state.stats.count("list") == 2
    assert state.stats.count("list", 200) == 1


def test_x_should_retry_false_stops_the_sdks_retries(served: str, state: EmulatorState) -> None:
    """One attempt only, though max_retries allows more."""
    state.faults = Faults(error_rate=1.0, overloaded_share=1.0, should_retry=False)
    with (
        anthropic.Anthropic(api_key=KEY, base_url=served, max_retries=3) as sdk,
        pytest.raises(anthropic.OverloadedError),
    ):
        sdk.messages.batches.list()
    assert state.stats.count("list") == 1


def test_latency_delays_every_answer(sdk: anthropic.Anthropic, state: EmulatorState) -> None:
    """latency_ms=150: a call takes at least that long."""
    state.faults = Faults(latency_ms=150)
    started = time.monotonic()
    sdk.messages.batches.list()
    assert time.monotonic() - started >= 0.15


def test_a_young_batch_can_be_transiently_404(
    sdk: anthropic.Anthropic, control: httpx.Client
) -> None:
    """The propagation delay of anthropic-sdk-python#1432: 404 seconds after create, then fine."""
    control.put("/faults", json={"not_found_young_seconds": 10}).raise_for_status()
    batch = sdk.messages.batches.create(requests=[{"custom_id": "a", "params": PARAMS}])
    with pytest.raises(anthropic.NotFoundError):
        sdk.messages.batches.retrieve(batch.id)
    control.post("/clock", json={"advance_seconds": 11})
    assert sdk.messages.batches.retrieve(batch.id).id == batch.id


def test_a_broken_results_stream_surfaces_as_a_protocol_error(
    sdk: anthropic.Anthropic, state: EmulatorState
) -> None:
    """results_abort_ids: the server drops the connection mid-body."""
    (batch_id,) = state.seed_objects(
        [{"processing_status": "ended", "request_counts": {"succeeded": 3000}}]
    )
    state.faults = Faults(results_abort_ids=frozenset({batch_id}))
    with pytest.raises(Exception, match=r"incomplete|peer closed") as info:
        list(sdk.messages.batches.results(batch_id))
    assert "ProtocolError" in type(info.value).__name__
