"""The emulator's store and lifecycle, in-process on a manual clock (fast, no HTTP)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reaper.emulator.clock import ManualClock
from reaper.emulator.errors import RequestRejected
from reaper.emulator.faults import Faults, TokenBucket
from reaper.emulator.harness import new_state
from reaper.emulator.records import format_us
from reaper.emulator.state import DEFAULT_WORKSPACE, EmulatorState

WS = DEFAULT_WORKSPACE
PARAMS = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "hi"}],
}


def requests(n: int, bad: frozenset[int] = frozenset()) -> list[dict[str, Any]]:
    """Build n batch requests; those at the indexes in ``bad`` lack max_tokens."""
    return [
        {"custom_id": f"r-{i}", "params": {"model": "m"} if i in bad else PARAMS} for i in range(n)
    ]


def view(state: EmulatorState, batch_id: str, workspace: str = WS) -> dict[str, Any]:
    """Return the API object of a batch as the API would show it now."""
    return state.get(workspace, batch_id).render(state.now_us(), "http://emu")


def rejected(call: Any, *args: Any) -> RequestRejected:
    """Run ``call`` expecting a RequestRejected; return it."""
    with pytest.raises(RequestRejected) as info:
        call(*args)
    return info.value


def iso(state: EmulatorState, delta: timedelta = timedelta()) -> str:
    """Format the emulator's now plus ``delta`` as the API does."""
    return format_us(state.now_us() + delta // timedelta(microseconds=1))


def test_a_created_batch_shows_only_processing_until_it_ends_by_itself(
    state: EmulatorState,
) -> None:
    """Counts other than processing stay 0 until the end; invalid params end up errored."""
    batch_id = state.create(WS, {"requests": requests(5, bad=frozenset({1}))}).id
    shown = view(state, batch_id)
    assert shown["processing_status"] == "in_progress"
    assert shown["request_counts"] == {
        "processing": 5,
        "succeeded": 0,
        "errored": 0,
        "canceled": 0,
        "expired": 0,
    }
    assert shown["ended_at"] is None
    assert shown["results_url"] is None
    assert shown["expires_at"] == iso(state, timedelta(hours=24))

    state.advance(state.processing_seconds * 1.5 + 1)
    shown = view(state, batch_id)
    assert shown["processing_status"] == "ended"
    assert shown["request_counts"] == {
        "processing": 0,
        "succeeded": 4,
        "errored": 1,
        "canceled": 0,
        "expired": 0,
    }
    assert shown["ended_at"] is not None
    assert shown["ended_at"] < iso(state)
    assert shown["results_url"] == f"http://emu/v1/messages/batches/{batch_id}/results"
    assert shown["archived_at"] is None
    assert shown["cancel_initiated_at"] is None


def test_cancel_goes_through_canceling_to_ended_after_cancel_seconds() -> None:
    """Unfinished requests count as canceled; those processed before the cancel do not."""
    state = new_state(processing_seconds=1000, cancel_seconds=30)
    batch_id = state.create(WS, {"requests": requests(100)}).id
    state.advance(300)
    canceled_at = iso(state)
    shown = state.cancel(WS, batch_id).render(state.now_us(), "http://emu")
    assert shown["processing_status"] == "canceling"
    assert shown["cancel_initiated_at"] == canceled_at
    assert shown["request_counts"]["processing"] == 100

    state.advance(29)
    assert view(state, batch_id)["processing_status"] == "canceling"
    state.advance(1)
    shown = view(state, batch_id)
    counts = shown["request_counts"]
    assert shown["processing_status"] == "ended"
    assert shown["ended_at"] == iso(state)
    assert shown["cancel_initiated_at"] == canceled_at
    assert counts["canceled"] > 0
    assert counts["succeeded"] > 0
    assert counts["succeeded"] + counts["canceled"] == 100
    assert counts["processing"] == 0


def test_a_batch_that_would_finish_before_the_cancel_completes_ends_with_nothing_canceled() -> None:
    """The natural end wins when it comes first (the docs allow nothing ending up canceled)."""
    state = new_state(processing_seconds=10, cancel_seconds=3600)
    batch_id = state.create(WS, {"requests": requests(3)}).id
    state.cancel(WS, batch_id)
    state.advance(16)
    counts = view(state, batch_id)["request_counts"]
    assert counts["succeeded"] == 3
    assert counts["canceled"] == 0


def test_cancel_of_canceling_is_unchanged_and_cancel_of_ended_is_refused(
    state: EmulatorState,
) -> None:
    """Canceling: 200 unchanged; ended: 400, or 200 unchanged in the cancel_ended_ok mode."""
    batch_id = state.create(WS, {"requests": requests(2)}).id
    first = state.cancel(WS, batch_id).render(state.now_us(), "x")
    state.advance(1)
    again = state.cancel(WS, batch_id).render(state.now_us(), "x")
    assert again == first

    state.advance(state.cancel_seconds)
    error = rejected(state.cancel, WS, batch_id)
    assert (error.status, error.error_type) == (400, "invalid_request_error")

    state.faults = Faults(cancel_ended_ok=True)
    assert state.cancel(WS, batch_id).status == "ended"


@pytest.mark.parametrize(
    ("faults", "status", "error_type"),
    [
        (Faults(), 400, "invalid_request_error"),
        (Faults(delete_unfinished_conflict=True), 409, "conflict_error"),
    ],
)
def test_delete_of_an_unfinished_batch_is_refused(
    state: EmulatorState, faults: Faults, status: int, error_type: str
) -> None:
    """in_progress and canceling batches cannot be deleted."""
    state.faults = faults
    batch_id = state.create(WS, {"requests": requests(2)}).id
    error = rejected(state.delete, WS, batch_id)
    assert (error.status, error.error_type) == (status, error_type)
    state.cancel(WS, batch_id)
    error = rejected(state.delete, WS, batch_id)
    assert (error.status, error.error_type) == (status, error_type)
    assert state.find(batch_id) is not None


def test_delete_of_an_ended_batch_removes_it_and_then_it_is_404(state: EmulatorState) -> None:
    """After delete: retrieve, cancel and a second delete all answer 404 not_found_error."""
    batch_id = state.create(WS, {"requests": requests(2)}).id
    state.advance(3600)
    state.delete(WS, batch_id)
    for call in (state.get, state.cancel, state.delete):
        error = rejected(call, WS, batch_id)
        assert (error.status, error.error_type) == (404, "not_found_error")
    assert state.page(WS, 1000, None, None).records == []
    assert len(state) == 0


def test_a_seeded_in_progress_batch_expires_at_expires_at_with_every_request_expired(
    state: EmulatorState,
) -> None:
    """Without _ends_at a seeded batch never finishes: at 24 h its requests expire."""
    created = iso(state, -timedelta(hours=23))
    (batch_id,) = state.seed_objects(
        [
            {
                "processing_status": "in_progress",
                "created_at": created,
                "request_counts": {"processing": 7},
            }
        ]
    )
    assert view(state, batch_id)["processing_status"] == "in_progress"
    state.advance(3600)
    shown = view(state, batch_id)
    assert shown["processing_status"] == "ended"
    assert shown["ended_at"] == shown["expires_at"] == iso(state)
    assert shown["request_counts"]["expired"] == 7


def test_archived_at_appears_29_days_after_creation(state: EmulatorState) -> None:
    """archived_at is null until created_at + 29 d, then that time; results_url stays set."""
    created = state.now() - timedelta(days=29) + timedelta(minutes=1)
    (batch_id,) = state.seed_objects(
        [
            {
                "created_at": created.isoformat(),
                "ended_at": (created + timedelta(hours=1)).isoformat(),
            }
        ]
    )
    assert view(state, batch_id)["archived_at"] is None
    assert not state.get(WS, batch_id).is_archived(state.now_us())
    state.advance(60)
    shown = view(state, batch_id)
    assert shown["archived_at"] == format_us(
        (created + timedelta(days=29) - datetime(1970, 1, 1, tzinfo=UTC))
        // timedelta(microseconds=1)
    )
    assert shown["results_url"] is not None
    assert state.get(WS, batch_id).is_archived(state.now_us())


def test_listing_is_newest_first_with_id_breaking_ties_and_lifecycle_does_not_reorder(
    state: EmulatorState,
) -> None:
    """Batches created at one instant list by id; ending or canceling them moves nothing."""
    same_instant = [state.create(WS, {"requests": requests(1)}).id for _ in range(5)]
    state.advance(1)
    newest = state.create(WS, {"requests": requests(1)}).id
    expected = [newest, *sorted(same_instant)]
    assert [r.id for r in state.page(WS, 20, None, None).records] == expected
    state.cancel(WS, same_instant[2])
    state.advance(600)
    assert [r.id for r in state.page(WS, 20, None, None).records] == expected
    assert {r.status for r in state.page(WS, 20, None, None).records} == {"ended"}


def test_after_id_and_before_id_walks_visit_every_batch_once() -> None:
    """Forward from the head and backward from the tail, pages of 7, has_more per direction."""
    state = new_state()
    state.seed_random(250)
    everything = [r.id for r in state.iter_records(WS)]
    assert len(everything) == 250

    forward: list[str] = []
    page = state.page(WS, 7, None, None)
    for _ in range(100):  # bounded: a cursor bug must fail, not hang
        forward += [r.id for r in page.records]
        if not page.has_more:
            break
        page = state.page(WS, 7, page.records[-1].id, None)
    assert forward == everything

    backward: list[list[str]] = []
    page = state.page(WS, 7, None, everything[-1])
    for _ in range(100):
        ids = [r.id for r in page.records]
        assert ids == sorted(ids, key=everything.index)  # each page newest first
        backward.append(ids)
        if not page.has_more:
            break
        page = state.page(WS, 7, None, ids[0])
    flat = [i for ids in reversed(backward) for i in ids]
    assert flat == everything[:-1]
    assert len(backward[-1]) == 249 % 7 or len(backward[-1]) == 7


@pytest.mark.parametrize("direction", ["after_id", "before_id"])
def test_unknown_deleted_or_foreign_cursors_are_refused(
    state: EmulatorState, direction: str
) -> None:
    """A cursor that names no batch of this workspace is 400 invalid_request_error."""
    state.seed_random(5)
    other = state.create("wrkspc_other", {"requests": requests(1)}).id
    doomed = state.create(WS, {"requests": requests(1)}).id
    state.advance(3600)
    state.delete(WS, doomed)
    for cursor in ("msgbatch_01nonexistent", doomed, other):
        kwargs = {"after_id": None, "before_id": None, direction: cursor}
        error = rejected(state.page, WS, 20, kwargs["after_id"], kwargs["before_id"])
        assert (error.status, error.error_type) == (400, "invalid_request_error")


def test_both_cursors_at_once_are_refused(state: EmulatorState) -> None:
    """after_id with before_id is 400."""
    ids = state.seed_objects([{}, {}])
    error = rejected(state.page, WS, 20, ids[0], ids[1])
    assert error.status == 400


def test_workspaces_see_only_their_own_batches(state: EmulatorState) -> None:
    """Another workspace's batch is neither listed nor retrievable (404)."""
    mine = state.create(WS, {"requests": requests(1)}).id
    theirs = state.seed_objects([{"workspace_id": "wrkspc_theirs"}])[0]
    assert [r.id for r in state.page(WS, 20, None, None).records] == [mine]
    assert [r.id for r in state.page("wrkspc_theirs", 20, None, None).records] == [theirs]
    assert rejected(state.get, WS, theirs).status == 404
    assert rejected(state.delete, "wrkspc_theirs", mine).status == 404


def test_a_key_limited_to_some_workspaces_gets_403_for_others() -> None:
    """With declared workspaces, another workspace id is 403 permission_error; none = default."""
    state = new_state(workspaces=["wrkspc_a"])
    assert state.resolve_workspace(None) == DEFAULT_WORKSPACE
    assert state.resolve_workspace("wrkspc_a") == "wrkspc_a"
    error = rejected(state.resolve_workspace, "wrkspc_b")
    assert (error.status, error.error_type) == (403, "permission_error")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ([], "JSON object"),
        ({}, "requests: Field required"),
        ({"requests": []}, "between 1 and 100000"),
        ({"requests": requests(1), "extra": 1}, "Extra inputs"),
        ({"requests": [{"custom_id": "a b", "params": PARAMS}]}, "pattern"),
        ({"requests": [{"custom_id": "x" * 65, "params": PARAMS}]}, "pattern"),
        ({"requests": [{"custom_id": "a", "params": PARAMS}] * 2}, "Duplicate custom_id"),
        ({"requests": [{"custom_id": "a"}]}, "params"),
        ({"requests": [{"custom_id": "a", "params": PARAMS, "x": 1}]}, "Extra inputs"),
        ({"requests": [{"custom_id": "a", "params": PARAMS}] * 100_001}, "between 1 and 100000"),
    ],
)
def test_create_validates_the_envelope(state: EmulatorState, body: Any, fragment: str) -> None:
    """Bad create bodies are 400 invalid_request_error naming the problem; nothing is stored."""
    error = rejected(state.create, WS, body)
    assert (error.status, error.error_type) == (400, "invalid_request_error")
    assert fragment in error.message
    assert len(state) == 0


def test_create_accepts_100000_requests(state: EmulatorState) -> None:
    """The documented maximum is accepted."""
    record = state.create(WS, {"requests": requests(100_000)})
    assert record.total == 100_000


def test_batch_and_request_ids_have_the_apis_shape(state: EmulatorState) -> None:
    """msgbatch_ / req_ followed by 24 characters."""
    batch_id = state.create(WS, {"requests": requests(1)}).id
    assert batch_id.startswith("msgbatch_01")
    assert len(batch_id) == len("msgbatch_") + 24
    assert batch_id[len("msgbatch_") :].isalnum()
    request_id = state.request_id()
    assert request_id.startswith("req_01")
    assert len(request_id) == len("req_") + 24


def test_manual_clock_moves_only_when_told() -> None:
    """advance() and set() move it; naive datetimes are refused."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    clock = ManualClock(start)
    assert clock() == start
    assert clock.advance(90) == start + timedelta(seconds=90)
    assert clock.advance(timedelta(days=1)) == start + timedelta(days=1, seconds=90)
    clock.set(start)
    assert clock() == start
    with pytest.raises(ValueError, match="aware"):
        clock.set(datetime(2026, 1, 1))


def test_state_time_offsets_work_over_any_clock(state: EmulatorState) -> None:
    """advance() and set_time() shift the emulator's time without touching the clock."""
    before = state.now()
    assert state.advance(60) == before + timedelta(seconds=60)
    target = datetime(2030, 5, 1, tzinfo=UTC)
    assert state.set_time(target) == target


def test_token_bucket_allows_rpm_at_once_then_one_per_interval() -> None:
    """60 rpm: 60 at once, then 429 with retry-after 1 until a second has passed."""
    now = [100.0]
    bucket = TokenBucket(60, lambda: now[0])
    assert all(bucket.take()[0] for _ in range(60))
    allowed, remaining, _ = bucket.take()
    assert not allowed
    assert remaining == 0
    assert bucket.retry_after() == 1
    now[0] += 1.0
    assert bucket.take()[0]


def test_fault_limit_stops_injecting_after_n(state: EmulatorState) -> None:
    """With limit 2 a rate of 1 injects exactly twice; setting faults restarts the count."""
    state.faults = Faults(error_rate=1.0, limit=2)
    assert [state.roll(1.0, "list") for _ in range(4)] == [True, True, False, False]
    state.faults = Faults(error_rate=1.0, limit=1)
    assert state.roll(1.0, "list")


def test_faults_restricted_to_endpoints_spare_the_others(state: EmulatorState) -> None:
    """endpoints={"delete"} injects on delete only."""
    state.faults = Faults(error_rate=1.0, endpoints=frozenset({"delete"}))
    assert not state.roll(1.0, "list")
    assert state.roll(1.0, "delete")


def test_faults_json_round_trips_and_bad_fields_are_named() -> None:
    """from_json(to_json()) is identity; a bad value names the field and what is accepted."""
    faults = Faults(
        error_rate=0.5, not_found_ids=frozenset({"a", "b"}), missing_fields=("ended_at",)
    )
    assert Faults.from_json(faults.to_json()) == faults
    with pytest.raises(ValueError, match="error_rate: expected a number from 0 to 1"):
        Faults.from_json({"error_rate": 2})
    with pytest.raises(ValueError, match="unknown fault field"):
        Faults.from_json({"eror_rate": 0.1})
    with pytest.raises(ValueError, match="endpoints"):
        Faults.from_json({"endpoints": ["purge"]})


def test_requests_are_counted_by_endpoint_and_status(state: EmulatorState) -> None:
    """stats.count and stats.mutating sum what was recorded."""
    state.stats.record("delete", 200, "req_1", batch_id="b1", workspace=WS)
    state.stats.record("delete", 404, "req_2", batch_id="b2", workspace=WS)
    state.stats.record("list", 200, "req_3")
    assert state.stats.count("delete") == 2
    assert state.stats.count(status=200) == 2
    assert state.stats.mutating() == {"create": 0, "cancel": 0, "delete": 2}
    assert state.stats.mutating(status=200)["delete"] == 1
    assert [m.batch_id for m in state.stats.mutations] == ["b1", "b2"]


def test_reset_forgets_everything(state: EmulatorState) -> None:
    """Batches, counters, faults and the clock offset are gone after reset."""
    state.seed_random(10)
    state.faults = Faults(error_rate=1.0)
    state.stats.record("list", 200, "req_1")
    before = state.now()
    state.advance(100)
    state.reset()
    assert len(state) == 0
    assert state.stats.count() == 0
    assert state.faults == Faults()
    assert state.now() == before


@settings(max_examples=60, deadline=None)
@given(
    offsets=st.lists(st.integers(min_value=0, max_value=5), min_size=0, max_size=40),
    limit=st.integers(min_value=1, max_value=12),
)
def test_cursor_walks_are_exact_whatever_the_ties_and_the_page_size(
    offsets: list[int], limit: int
) -> None:
    """Many batches share a created_at: both walks still see each batch exactly once, in order."""
    state = new_state()
    base = state.now_us()
    ids = state.seed_objects(
        [{"created_at": format_us(base - offset * 1_000_000)} for offset in offsets]
    )
    listing = [r.id for r in state.iter_records(WS)]
    assert sorted(listing) == sorted(ids)
    keys = [(-r.created, r.id) for r in state.iter_records(WS)]
    assert keys == sorted(keys)

    forward: list[str] = []
    after = None
    for _ in range(len(offsets) + 2):  # bounded: a cursor bug must fail, not hang
        page = state.page(WS, limit, after, None)
        forward += [r.id for r in page.records]
        if not page.has_more:
            break
        after = page.records[-1].id
    assert forward == listing

    if listing:
        backward: list[str] = []
        before = listing[-1]
        for _ in range(len(offsets) + 2):
            page = state.page(WS, limit, None, before)
            backward = [r.id for r in page.records] + backward
            if not page.has_more:
                break
            before = page.records[0].id
        assert backward == listing[:-1]
