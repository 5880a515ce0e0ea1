"""The cycle against an in-memory fake API: exact actions, dry run, failures, waits and guards."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from reaper.archive import ArchiveOutcome, Outcome, ResultsClient
from reaper.confirm import NOT_FOUND_TOLERANCE
from reaper.cycle import run_cycle
from reaper.metrics import Metrics
from reaper.models import CANCELING, IN_PROGRESS, Batch
from reaper.outcomes import ActionOutcome, CycleOutcome, CycleReport
from reaper.policy import Action, Rule
from reaper.settings import Settings, load_settings
from tests.fake_api import FakeClient, api_error
from tests.helpers import MINUTE, Clock, make_batch

pytestmark = pytest.mark.anyio

H = timedelta(hours=1)
D = timedelta(days=1)


def make_settings(**env: str) -> Settings:
    """Build settings from REAPER_* values given as keywords (dry_run= -> REAPER_DRY_RUN)."""
    base = {"REAPER_CANCEL_WAIT_TIMEOUT": "2m", "REAPER_CONCURRENCY": "4"}
    base.update({f"REAPER_{name.upper()}": value for name, value in env.items()})
    return load_settings(base, require_key=False)


def population(workspace: str | None = None) -> list[Batch]:
    """A hand-built mix under the default policy (7d ended, 30d failed, 12h stale, 1h min age)."""
    at = partial(make_batch, workspace=workspace)
    return [
        at("old_ok", created_ago=11 * D, ended_ago=10 * D),  # delete, rule 7
        at("recent_ok", created_ago=4 * D, ended_ago=3 * D),  # keep, rule 8
        at("old_errored", created_ago=11 * D, ended_ago=10 * D, errored=1),  # keep
        at("ancient_expired", created_ago=41 * D, ended_ago=40 * D, expired=2),
        at("stale_running", IN_PROGRESS, created_ago=13 * H),  # cancel, rule 3
        at("fresh_running", IN_PROGRESS, created_ago=2 * H),  # keep, rule 4
        at("stuck_canceling", CANCELING, created_ago=20 * H),  # keep, rule 4
        at("young_ended", created_ago=30 * MINUTE, ended_ago=5 * MINUTE),  # keep, rule 2
        at("new_status", "archiving", created_ago=40 * D),  # keep, rule 8 + warn
    ]


ACTION_EVENTS = ("batch.cancel", "batch.delete")

# Written by hand from the SPEC's rules, not computed with the policy.
EXPECTED_GONE = {"old_ok", "ancient_expired", "stale_running"}
EXPECTED_KEPT = {
    "recent_ok",
    "old_errored",
    "fresh_running",
    "stuck_canceling",
    "young_ended",
    "new_status",
}


async def cycle(
    settings: Settings,
    client: FakeClient,
    metrics: Metrics,
    **kwargs: Any,
) -> CycleReport:
    return await run_cycle(
        settings, client, metrics=metrics, now=client.clock.now, sleep=client.clock.sleep, **kwargs
    )


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def test_dry_run_sends_no_cancel_and_no_delete(metrics: Metrics) -> None:
    """A dry run lists and reports every would-be action, and sends not one mutating request."""
    client = FakeClient(population(), clock=Clock())
    with capture_logs() as logs:
        report = await cycle(make_settings(), client, metrics)

    assert client.mutating_calls() == []
    assert set(client.requests_made) == {"list"}
    assert client.ids() == EXPECTED_GONE | EXPECTED_KEPT
    assert report.outcome is CycleOutcome.SUCCESS
    assert report.exit_code() == 0
    assert report.count(Action.DELETE, ActionOutcome.DRY_RUN) == 2
    assert report.count(Action.CANCEL, ActionOutcome.DRY_RUN) == 1
    would = {(e["event"], e["id"]) for e in logs if e["event"] in ACTION_EVENTS}
    assert would == {
        ("batch.delete", "old_ok"),
        ("batch.delete", "ancient_expired"),
        ("batch.cancel", "stale_running"),
    }
    assert all(e["dry_run"] is True for e in logs if e["event"] in ACTION_EVENTS)
    assert report.summary_text().startswith("DRY RUN")
    assert "Would cancel 1 and delete 2 batches." in report.summary_text()
    assert (
        sample(
            metrics, "reaper_actions_total", workspace="default", action="delete", outcome="dry_run"
        )
        == 2
    )


async def test_live_cycle_does_exactly_the_planned_actions(metrics: Metrics) -> None:
    """Live: the stale batch is canceled then deleted, two ended ones deleted, all else kept."""
    client = FakeClient(population(), clock=Clock(), cancel_seconds=3)
    with capture_logs() as logs:
        report = await cycle(make_settings(dry_run="false"), client, metrics)

    assert client.ids() == EXPECTED_KEPT
    mutating = sorted((endpoint, what) for endpoint, _, what in client.mutating_calls())
    assert mutating == [
        ("cancel", "stale_running"),
        ("delete", "ancient_expired"),
        ("delete", "old_ok"),
        ("delete", "stale_running"),
    ]
    assert report.outcome is CycleOutcome.SUCCESS
    assert report.exit_code() == 0
    assert dict(report.counts) == {
        (Action.CANCEL, Rule.STALE, ActionOutcome.DONE): 1,
        (Action.DELETE, Rule.STALE, ActionOutcome.DONE): 1,
        (Action.DELETE, Rule.ENDED_RETENTION, ActionOutcome.DONE): 1,
        (Action.DELETE, Rule.FAILED_RETENTION, ActionOutcome.DONE): 1,
    }
    # Poll after 1 s and 2 s; the batch ends 3 s after its cancel.
    assert client.requests_made["retrieve"] == 2
    assert report.requests == {"list": 3, "cancel": 1, "retrieve": 2, "delete": 3}
    deleted = {e["id"]: e for e in logs if e["event"] == "batch.delete"}
    assert set(deleted) == {"old_ok", "ancient_expired", "stale_running"}
    assert deleted["old_ok"]["rule"] == "ended_retention"
    assert deleted["old_ok"]["age"] == 11 * 86400
    assert deleted["old_ok"]["dry_run"] is False
    assert deleted["old_ok"]["outcome"] == "done"
    assert deleted["stale_running"]["after_cancel"] is True
    warned = [e for e in logs if e["event"] == "batch.unknown_status"]
    assert warned
    assert warned[0]["ids"] == ["new_status"]
    assert warned[0]["log_level"] == "warning"
    assert next(e["event"] for e in logs) == "cycle.started"
    assert [e["event"] for e in logs][-1] == "cycle.finished"
    finished = logs[-1]
    assert finished["actions"] == {"cancel.done": 1, "delete.done": 3}
    assert finished["requests"] == {"cancel": 1, "delete": 3, "list": 3, "retrieve": 2}
    assert (
        sample(
            metrics, "reaper_actions_total", workspace="default", action="delete", outcome="done"
        )
        == 3
    )
    assert (
        sample(
            metrics, "reaper_decisions_total", workspace="default", action="keep", rule="not_ended"
        )
        == 2
    )
    assert sample(metrics, "reaper_batches", workspace="default", processing_status="ended") == 5
    assert (
        sample(metrics, "reaper_batches", workspace="default", processing_status="archiving") == 1
    )
    assert (
        sample(
            metrics,
            "reaper_oldest_batch_age_seconds",
            workspace="default",
            processing_status="in_progress",
        )
        == 13 * 3600
    )
    assert sample(metrics, "reaper_cycles_total", outcome="success") == 1
    assert (
        sample(metrics, "reaper_last_success_timestamp_seconds") == client.clock.now().timestamp()
    )
    assert sample(metrics, "reaper_delete_lag_seconds_count", workspace="default") == 3


async def test_the_delete_after_a_cancel_is_late_from_ended_at(metrics: Metrics) -> None:
    """The delete of a batch this cycle canceled has its own decision, eligible since it ended.

    Its delete lag is measured from ``ended_at`` (here the moment the poll saw it end, so zero),
    not from when the batch became stale (an hour and three seconds before).
    """
    client = FakeClient(
        [make_batch("stale", IN_PROGRESS, created_ago=13 * H)], clock=Clock(), cancel_seconds=3
    )
    with capture_logs() as logs:
        report = await cycle(make_settings(dry_run="false"), client, metrics)

    assert report.counts[(Action.DELETE, Rule.STALE, ActionOutcome.DONE)] == 1
    assert sample(metrics, "reaper_delete_lag_seconds_count", workspace="default") == 1
    assert sample(metrics, "reaper_delete_lag_seconds_sum", workspace="default") == 0.0
    (deleted,) = [e for e in logs if e["event"] == "batch.delete"]
    assert deleted["after_cancel"] is True


async def test_second_cycle_finds_nothing_to_do_and_clears_vanished_series(
    metrics: Metrics,
) -> None:
    """Once converged a cycle makes only list calls; a status no longer listed leaves the gauges."""
    client = FakeClient(population(), clock=Clock(), cancel_seconds=3)
    settings = make_settings(dry_run="false")
    await cycle(settings, client, metrics)
    del client.store[None]["new_status"]
    client.calls.clear()

    report = await cycle(settings, client, metrics)

    assert client.mutating_calls() == []
    assert report.counts == {}
    assert (
        sample(metrics, "reaper_batches", workspace="default", processing_status="archiving")
        is None
    )
    assert (
        sample(
            metrics,
            "reaper_oldest_batch_age_seconds",
            workspace="default",
            processing_status="archiving",
        )
        is None
    )
    assert (
        sample(metrics, "reaper_batches", workspace="default", processing_status="in_progress") == 1
    )


async def test_a_failing_page_fails_closed(metrics: Metrics) -> None:
    """If page 2 of 3 cannot be read, nothing at all is canceled or deleted and the cycle fails."""
    client = FakeClient(population(), clock=Clock())
    client.list_fault_page[None] = 2
    with capture_logs() as logs:
        report = await cycle(make_settings(dry_run="false"), client, metrics)

    assert client.mutating_calls() == []
    assert client.ids() == EXPECTED_GONE | EXPECTED_KEPT
    assert report.outcome is CycleOutcome.FAILED
    assert report.exit_code() == 1
    (failure,) = report.listing_failures
    assert (failure.pages_read, failure.status, failure.request_id) == (1, 500, "req_list_500")
    failed = [e for e in logs if e["event"] == "listing.failed"]
    assert failed
    assert failed[0]["request_id"] == "req_list_500"
    assert "LISTING FAILED in workspace default after 1 page" in report.summary_text()
    assert sample(metrics, "reaper_cycles_total", outcome="failed") == 1
    assert sample(metrics, "reaper_last_success_timestamp_seconds") == 0
    # A partial listing's decisions are not decisions: nothing counted.
    assert (
        sample(
            metrics,
            "reaper_decisions_total",
            workspace="default",
            action="delete",
            rule="ended_retention",
        )
        is None
    )


async def test_delete_answered_404_counts_as_done(metrics: Metrics) -> None:
    """Someone deleted the batch between listing and delete: done, not failed."""
    client = FakeClient(population(), clock=Clock())
    client.before[("delete", "old_ok")] = lambda: client.store[None].pop("old_ok")
    with capture_logs() as logs:
        report = await cycle(make_settings(dry_run="false"), client, metrics)

    assert report.outcome is CycleOutcome.SUCCESS
    assert report.counts[(Action.DELETE, Rule.ENDED_RETENTION, ActionOutcome.DONE)] == 1
    (line,) = [e for e in logs if e["event"] == "batch.delete" and e["id"] == "old_ok"]
    assert line["note"] == "already_gone"
    assert report.failures == ()
    # The 404 is checked: gone after four 404s in a row (the delete and three retrieves).
    assert [c[0] for c in client.calls if c[2] == "old_ok"] == ["delete"] + ["retrieve"] * 3


async def test_a_transient_404_on_delete_does_not_leave_the_batch_behind(
    metrics: Metrics,
) -> None:
    """The delete of an existing batch answers 404 once: a retrieve finds it, it is deleted."""
    client = FakeClient(population(), clock=Clock(), cancel_seconds=1)
    for batch_id in ("old_ok", "stale_running"):
        client.fail("delete", batch_id, api_error("delete", 404, "not_found_error"))
    with capture_logs() as logs:
        report = await cycle(make_settings(dry_run="false"), client, metrics)

    assert client.ids() == EXPECTED_KEPT
    assert [c[0] for c in client.calls if c[2] == "old_ok"] == ["delete", "retrieve", "delete"]
    assert report.outcome is CycleOutcome.SUCCESS
    assert not [e for e in logs if e.get("note") == "already_gone"]


async def test_a_delete_that_404s_while_the_batch_exists_fails(metrics: Metrics) -> None:
    """Every delete answers 404 yet every retrieve finds the batch: a failure, not done."""
    client = FakeClient(population(), clock=Clock())
    client.fail(
        "delete",
        "old_ok",
        *[api_error("delete", 404, "not_found_error") for _ in range(NOT_FOUND_TOLERANCE + 1)],
    )
    report = await cycle(make_settings(dry_run="false"), client, metrics)

    assert "old_ok" in client.ids()
    assert [(f.batch_id, f.status) for f in report.failures] == [("old_ok", 404)]
    assert client.requests_made["delete"] == 2 + NOT_FOUND_TOLERANCE + 1


async def test_cancel_of_a_batch_that_meanwhile_ended_is_not_needed(metrics: Metrics) -> None:
    """Issue 12 #2: the batch ended on its own before the cancel: refused (400), checked, kept.

    It ended a moment ago, so the ended retention keeps it: the cancel path deletes only what it
    canceled, and later cycles apply rules 5 to 8 to this one.
    """
    client = FakeClient(population(), clock=Clock())
    client.before[("cancel", "stale_running")] = lambda: client.end("stale_running")
    with capture_logs() as logs:
        report = await cycle(make_settings(dry_run="false"), client, metrics)

    assert report.outcome is CycleOutcome.SUCCESS
    assert report.failures == ()
    assert "stale_running" in client.ids()
    assert report.counts[(Action.CANCEL, Rule.STALE, ActionOutcome.NOT_NEEDED)] == 1
    assert report.count(Action.CANCEL, ActionOutcome.DONE) == 0
    (line,) = [e for e in logs if e["event"] == "batch.cancel"]
    assert line["outcome"] == "not_needed"
    assert line["request_id"] == "req_cancel_400"
    # cancel (400), retrieve to confirm, and nothing more: no poll, no delete.
    assert [c[0] for c in client.calls if c[2] == "stale_running"] == ["cancel", "retrieve"]
    assert "cancel not needed" in report.summary_text()


async def test_refused_cancel_of_a_running_batch_is_a_failure(metrics: Metrics) -> None:
    """A 400 on cancel while the batch still runs is a real failure, and nothing is deleted."""
    client = FakeClient(population(), clock=Clock())
    client.fail("cancel", "stale_running", api_error("cancel", 400, "invalid_request_error"))
    report = await cycle(make_settings(dry_run="false"), client, metrics)

    assert report.outcome is CycleOutcome.PARTIAL
    assert report.exit_code() == 1
    assert "stale_running" in client.ids()
    assert [(f.batch_id, f.action, f.status) for f in report.failures] == [
        ("stale_running", Action.CANCEL, 400)
    ]


async def test_transient_404s_while_waiting_are_tolerated(metrics: Metrics) -> None:
    """A 404 while polling a canceled batch is not proof of deletion: keep polling, then delete."""
    client = FakeClient(population(), clock=Clock(), cancel_seconds=5)
    not_found = [api_error("retrieve", 404, "not_found_error") for _ in range(NOT_FOUND_TOLERANCE)]
    client.fail("retrieve", "stale_running", *not_found)
    report = await cycle(make_settings(dry_run="false"), client, metrics)

    assert report.outcome is CycleOutcome.SUCCESS
    assert report.still_ending == 0
    assert "stale_running" not in client.ids()
    assert client.requests_made["retrieve"] == NOT_FOUND_TOLERANCE + 1


async def test_persistent_404s_while_waiting_leave_the_batch_alone(metrics: Metrics) -> None:
    """Past the tolerance the wait gives up on that batch: no delete, left to later cycles."""
    client = FakeClient(population(), clock=Clock(), cancel_seconds=5)
    client.fail(
        "retrieve",
        "stale_running",
        *[api_error("retrieve", 404, "not_found_error") for _ in range(NOT_FOUND_TOLERANCE + 1)],
    )
    with capture_logs() as logs:
        report = await cycle(make_settings(dry_run="false"), client, metrics)

    assert ("delete", None, "stale_running") not in client.calls
    assert report.still_ending == 1
    assert report.outcome is CycleOutcome.SUCCESS
    assert any(e["event"] == "cancel.wait_abandoned" for e in logs)


async def test_wait_timeout_leaves_the_rest_to_later_cycles(metrics: Metrics) -> None:
    """A cancel slower than the wait: polled with backoff up to the timeout, then left alone."""
    clock = Clock()
    client = FakeClient(population(), clock=clock, cancel_seconds=3600)
    start = clock.now()
    with capture_logs() as logs:
        report = await cycle(
            make_settings(dry_run="false", cancel_wait_timeout="60s"), client, metrics
        )

    assert clock.now() - start == timedelta(seconds=60)
    assert clock.slept == [1, 2, 4, 8, 16, 29]  # doubling, cut short at the deadline
    assert client.requests_made["retrieve"] == 6
    assert client.store[None]["stale_running"].processing_status == CANCELING
    assert report.still_ending == 1
    # The planned delete after the cancel was left undone: partial, exit 1 (SPEC section 1).
    assert report.outcome is CycleOutcome.PARTIAL
    assert report.exit_code() == 1
    assert {"old_ok", "ancient_expired"}.isdisjoint(client.ids())
    (line,) = [e for e in logs if e["event"] == "cancel.wait_timeout"]
    assert line["ids"] == ["stale_running"]
    assert "1 canceled batch not seen to end" in report.summary_text()


async def test_poll_backoff_caps_at_thirty_seconds(metrics: Metrics) -> None:
    """Polls double from 1 s and never wait longer than 30 s."""
    clock = Clock()
    client = FakeClient(population(), clock=clock, cancel_seconds=100)
    await cycle(make_settings(dry_run="false", cancel_wait_timeout="10m"), client, metrics)

    assert clock.slept == [1, 2, 4, 8, 16, 30, 30, 30]
    assert "stale_running" not in client.ids()


async def test_one_failure_does_not_stop_the_others(metrics: Metrics) -> None:
    """A delete failing for good is logged with its request id; every other action still runs."""
    client = FakeClient(population(), clock=Clock())
    client.fail("delete", "old_ok", api_error("delete", 500))
    with capture_logs() as logs:
        report = await cycle(make_settings(dry_run="false"), client, metrics)

    assert client.ids() == EXPECTED_KEPT | {"old_ok"}
    assert report.outcome is CycleOutcome.PARTIAL
    assert report.exit_code() == 1
    (failure,) = report.failures
    assert (failure.batch_id, failure.action, failure.status, failure.request_id) == (
        "old_ok",
        Action.DELETE,
        500,
        "req_delete_500",
    )
    (line,) = [e for e in logs if e["event"] == "action.failed"]
    assert line["id"] == "old_ok"
    assert line["error_type"] == "api_error"
    assert line["request_id"] == "req_delete_500"
    assert line["action"] == "delete"
    assert "1 action failed, e.g. delete old_ok: api_error 500 (request req_delete_500)" in (
        report.summary_text()
    )
    assert (
        sample(
            metrics, "reaper_actions_total", workspace="default", action="delete", outcome="failed"
        )
        == 1
    )
    assert sample(metrics, "reaper_cycles_total", outcome="partial") == 1


async def test_an_unexpected_error_in_one_action_fails_only_that_action(metrics: Metrics) -> None:
    """A bug surfacing in one delete (not an ApiError) is recorded as that action's failure."""
    client = FakeClient(population(), clock=Clock())
    client.fail("delete", "ancient_expired", RuntimeError("boom"))
    report = await cycle(make_settings(dry_run="false"), client, metrics)

    assert report.outcome is CycleOutcome.PARTIAL
    assert [(f.batch_id, f.error_type) for f in report.failures] == [
        ("ancient_expired", "RuntimeError")
    ]
    assert "old_ok" not in client.ids()


async def test_an_unexpected_error_in_the_listing_fails_the_cycle(metrics: Metrics) -> None:
    """A crash outside any action ends the cycle as failed, with the error in the report."""
    client = FakeClient(population(), clock=Clock())
    client.fail("list", "page1", RuntimeError("boom"))
    with capture_logs() as logs:
        report = await cycle(make_settings(dry_run="false"), client, metrics)

    assert report.outcome is CycleOutcome.FAILED
    assert report.error == "RuntimeError: boom"
    assert client.mutating_calls() == []
    (crashed,) = [e for e in logs if e["event"] == "cycle.crashed"]
    assert crashed["error_type"] == "RuntimeError"
    assert sample(metrics, "reaper_cycles_total", outcome="failed") == 1


async def test_concurrency_is_bounded_by_the_setting(metrics: Metrics) -> None:
    """Thirty deletes on four workers: four requests in flight at most, and at some point four."""
    deletable = [make_batch(f"b{i:02}", created_ago=20 * D, ended_ago=19 * D) for i in range(30)]
    client = FakeClient(deletable, clock=Clock(), page_size=100, call_seconds=0.002)
    report = await cycle(make_settings(dry_run="false", concurrency="4"), client, metrics)

    assert client.ids() == set()
    assert report.count(Action.DELETE, ActionOutcome.DONE) == 30
    assert client.max_in_flight == 4


async def test_a_stop_starts_no_new_action_and_defers_the_rest(metrics: Metrics) -> None:
    """SIGTERM mid-cycle: in-flight deletes finish and count, the rest wait for the next start."""
    stop = asyncio.Event()

    class StoppingClient(FakeClient):
        async def delete(self, batch_id: str, workspace: str | None) -> None:
            await super().delete(batch_id, workspace)
            if len(self.mutating_calls()) == 5:
                stop.set()

    deletable = [make_batch(f"b{i:02}", created_ago=20 * D, ended_ago=19 * D) for i in range(30)]
    client = StoppingClient(deletable, clock=Clock(), page_size=100, call_seconds=0.002)
    settings = make_settings(dry_run="false", concurrency="4")
    report = await cycle(settings, client, metrics, stop=stop)

    done = report.count(Action.DELETE, ActionOutcome.DONE)
    deferred = report.count(Action.DELETE, ActionOutcome.DEFERRED)
    # The four workers each finish the request they had in flight when the stop came.
    assert 5 <= done <= 8
    assert done + deferred == 30
    assert len(client.ids()) == 30 - done
    assert len(client.mutating_calls()) == done
    # Planned deletes left undone by the shutdown: partial, exit 1, and the summary says why.
    assert report.interrupted
    assert report.outcome is CycleOutcome.PARTIAL
    assert report.exit_code() == 1
    assert "Interrupted by a signal" in report.summary_text()


async def test_after_a_stop_a_batch_already_canceled_is_still_deleted(metrics: Metrics) -> None:
    """Stop right after the cancel: the wait goes on and the canceled batch is deleted, while the
    backlog delete that had not started yet is deferred."""
    stop = asyncio.Event()

    class StoppingClient(FakeClient):
        async def cancel(self, batch_id: str, workspace: str | None) -> Batch:
            canceled = await super().cancel(batch_id, workspace)
            stop.set()
            return canceled

    stale = make_batch("stale_running", IN_PROGRESS, created_ago=13 * H)
    old = make_batch("old_ok", created_ago=11 * D, ended_ago=10 * D)
    client = StoppingClient([stale, old], clock=Clock(), cancel_seconds=5)
    settings = make_settings(dry_run="false", concurrency="1")
    report = await cycle(settings, client, metrics, stop=stop)

    assert client.ids() == {"old_ok"}
    assert report.count(Action.DELETE, ActionOutcome.DONE) == 1
    assert report.count(Action.DELETE, ActionOutcome.DEFERRED) == 1


async def test_fraction_guard_stops_every_cancel_and_delete(metrics: Metrics) -> None:
    """2 deletes and a stale cancel (deleted once ended) of 9 exceed 0.2: a safety stop, exit 3;
    nothing is sent, the cancel included (SPEC section 3: a stop withholds every mutation)."""
    client = FakeClient(population(), clock=Clock(), cancel_seconds=1)
    with capture_logs() as logs:
        report = await cycle(
            make_settings(dry_run="false", max_delete_fraction="0.2"), client, metrics
        )

    assert client.mutating_calls() == []
    assert client.requests_made["retrieve"] == 0
    assert client.store[None]["stale_running"].processing_status == "in_progress"
    assert report.outcome is CycleOutcome.SAFETY_STOP
    assert report.exit_code() == 3
    (stop,) = [e for e in logs if e["event"] == "safety.stop"]
    assert (stop["planned_deletes"], stop["listed"]) == (3, 9)
    assert stop["reasons"] == ["delete_fraction"]
    assert (
        sample(metrics, "reaper_safety_stops_total", workspace="default", reason="delete_fraction")
        == 1
    )
    assert (
        "SAFETY STOP in workspace default: 3 of 9 listed batches (33.3%) would be deleted (stale"
        " cancels included), more than REAPER_MAX_DELETE_FRACTION=0.2: no cancel and no delete"
        " in this workspace."
    ) in report.summary_text()


async def test_cancel_fraction_guard_stops_the_workspace(metrics: Metrics) -> None:
    """1 stale of 2 in_progress is 50 %, above REAPER_MAX_CANCEL_FRACTION=0.4: nothing is sent,
    exit 3, the stop named cancel_fraction in the log, the metric and the summary."""
    client = FakeClient(population(), clock=Clock(), cancel_seconds=1)
    with capture_logs() as logs:
        report = await cycle(
            make_settings(dry_run="false", max_cancel_fraction="0.4"), client, metrics
        )

    assert client.mutating_calls() == []
    assert report.exit_code() == 3
    (stop,) = [e for e in logs if e["event"] == "safety.stop"]
    assert stop["reasons"] == ["cancel_fraction"]
    assert (stop["planned_cancels"], stop["in_progress"]) == (1, 2)
    assert (
        sample(metrics, "reaper_safety_stops_total", workspace="default", reason="cancel_fraction")
        == 1
    )
    assert "would be canceled, more than REAPER_MAX_CANCEL_FRACTION=0.4" in report.summary_text()


async def test_fraction_guard_trips_in_a_dry_run_too(metrics: Metrics) -> None:
    """A dry run shows the guard would stop the workspace (exit 3) and sends nothing."""
    client = FakeClient(population(), clock=Clock())
    report = await cycle(make_settings(max_delete_fraction="0.2"), client, metrics)

    assert client.mutating_calls() == []
    assert report.exit_code() == 3
    assert report.count(Action.DELETE) == 0
    assert report.count(Action.CANCEL, ActionOutcome.DRY_RUN) == 0


async def test_cap_of_zero_acts_on_nothing(metrics: Metrics) -> None:
    """REAPER_MAX_ACTIONS_PER_RUN=0 means nothing is done: every action deferred and counted."""
    client = FakeClient(population(), clock=Clock())
    with capture_logs() as logs:
        report = await cycle(
            make_settings(dry_run="false", max_actions_per_run="0"), client, metrics
        )

    assert client.mutating_calls() == []
    assert report.count(outcome=ActionOutcome.DEFERRED) == 3
    assert report.exit_code() == 0
    assert any(e["event"] == "actions.deferred" for e in logs)
    assert (
        sample(
            metrics,
            "reaper_actions_total",
            workspace="default",
            action="delete",
            outcome="deferred",
        )
        == 2
    )


async def test_cap_defers_the_least_urgent(metrics: Metrics) -> None:
    """A cap of 2 keeps the cancel and the most overdue delete; the other waits its turn."""
    client = FakeClient(population(), clock=Clock(), cancel_seconds=1)
    report = await cycle(make_settings(dry_run="false", max_actions_per_run="2"), client, metrics)

    assert client.ids() == EXPECTED_KEPT | {"old_ok"}
    assert report.counts[(Action.DELETE, Rule.ENDED_RETENTION, ActionOutcome.DEFERRED)] == 1


async def test_workspaces_are_planned_and_guarded_on_their_own(metrics: Metrics) -> None:
    """The guard trips in one workspace only; the other still deletes, the exit code is 3."""
    mostly_old = [
        make_batch(f"old{i}", created_ago=20 * D, ended_ago=19 * D, workspace="ws_a")
        for i in range(3)
    ] + [make_batch("keep_a", created_ago=2 * D, workspace="ws_a")]
    client = FakeClient([*mostly_old, *population("ws_b")], clock=Clock())
    with capture_logs() as logs:
        report = await cycle(
            make_settings(dry_run="false", workspace_ids="ws_a,ws_b", max_delete_fraction="0.5"),
            client,
            metrics,
        )

    assert client.ids("ws_a") == {"old0", "old1", "old2", "keep_a"}
    assert client.ids("ws_b") == EXPECTED_KEPT
    assert report.outcome is CycleOutcome.SAFETY_STOP
    assert [s.workspace for s in report.safety_stops] == ["ws_a"]
    assert {c[1] for c in client.calls} == {"ws_a", "ws_b"}
    assert [p.workspace for p in report.plans] == ["ws_a", "ws_b"]
    listed = [e for e in logs if e["event"] == "workspace.listed"]
    assert [(e["workspace"], e["listed"]) for e in listed] == [("ws_a", 4), ("ws_b", 9)]
    assert sample(metrics, "reaper_batches", workspace="ws_a", processing_status="ended") == 4
    assert "in 2 workspaces" in report.summary_text()


async def test_a_listing_failure_in_one_workspace_spares_the_others(metrics: Metrics) -> None:
    """Workspace a cannot be listed: it is left alone, workspace b is reaped, the cycle failed."""
    client = FakeClient([*population("ws_a"), *population("ws_b")], clock=Clock())
    client.list_fault_page["ws_a"] = 1
    report = await cycle(make_settings(dry_run="false", workspace_ids="ws_a,ws_b"), client, metrics)

    assert client.ids("ws_a") == EXPECTED_GONE | EXPECTED_KEPT
    assert client.ids("ws_b") == EXPECTED_KEPT
    assert report.outcome is CycleOutcome.FAILED
    assert report.exit_code() == 1


class FakeArchiver:
    """Says per batch id whether its results were saved."""

    def __init__(self, verdicts: dict[str, Outcome]) -> None:
        self.verdicts = verdicts
        self.seen: list[str] = []

    async def archive(self, batch: Batch, client: ResultsClient) -> ArchiveOutcome:
        self.seen.append(batch.id)
        outcome = self.verdicts.get(batch.id, Outcome.ARCHIVED)
        return ArchiveOutcome(
            outcome=outcome,
            ok_to_delete=outcome in (Outcome.ARCHIVED, Outcome.ALREADY),
            reason=None if outcome is Outcome.ARCHIVED else f"{outcome} for the test",
            request_id="req_results",
            bytes=0,
            lines=0,
            path=Path("/nonexistent"),
        )


async def test_archiver_is_asked_before_every_delete(metrics: Metrics, tmp_path: Path) -> None:
    """Only what the archive vouches for is deleted; a failed archive fails that delete."""
    client = FakeClient(population(), clock=Clock(), cancel_seconds=1)
    archiver = FakeArchiver({"old_ok": Outcome.FAILED, "ancient_expired": Outcome.MISSING})
    report = await cycle(
        make_settings(dry_run="false", archive_dir=str(tmp_path)),
        client,
        metrics,
        archiver=archiver,
    )

    assert sorted(archiver.seen) == ["ancient_expired", "old_ok", "stale_running"]
    assert client.ids() == EXPECTED_KEPT | {"old_ok", "ancient_expired"}
    assert report.counts[(Action.DELETE, Rule.FAILED_RETENTION, ActionOutcome.KEPT)] == 1
    assert [(f.batch_id, f.error_type) for f in report.failures] == [("old_ok", "archive_failed")]
    assert report.outcome is CycleOutcome.PARTIAL


async def test_an_archive_dir_without_an_archiver_deletes_nothing(
    metrics: Metrics, tmp_path: Path
) -> None:
    """Wiring mistake: results would be lost, so the cycle refuses to act at all."""
    client = FakeClient(population(), clock=Clock())
    report = await cycle(make_settings(dry_run="false", archive_dir=str(tmp_path)), client, metrics)

    assert client.calls == []
    assert report.outcome is CycleOutcome.FAILED


async def test_a_dry_run_never_archives(metrics: Metrics, tmp_path: Path) -> None:
    """Dry run writes nothing: the archiver is not called."""
    client = FakeClient(population(), clock=Clock())
    archiver = FakeArchiver({})
    await cycle(make_settings(archive_dir=str(tmp_path)), client, metrics, archiver=archiver)

    assert archiver.seen == []


async def test_progress_sees_pages_and_actions(metrics: Metrics) -> None:
    """Progress hears of every page and of every action, including the delete after a cancel."""
    progress = _Progress()
    client = FakeClient(population(), clock=Clock(), cancel_seconds=1)
    await cycle(make_settings(dry_run="false"), client, metrics, progress=progress)

    assert progress.pages == [(None, 1, 3), (None, 2, 6), (None, 3, 9)]
    assert (progress.planned_total, progress.done) == (4, 4)
    assert progress.closed


class _Progress:
    def __init__(self) -> None:
        self.pages: list[tuple[str | None, int, int]] = []
        self.planned_total = 0
        self.done = 0
        self.closed = False

    def listed(self, workspace: str | None, pages: int, batches: int) -> None:
        self.pages.append((workspace, pages, batches))

    def planned(self, actions: int) -> None:
        self.planned_total += actions

    def acted(self, actions: int = 1) -> None:
        self.done += actions

    def close(self) -> None:
        self.closed = True
