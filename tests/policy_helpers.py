"""Shared by the policy tests: batches aged relative to a fixed ``NOW``, and the oracle."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from functools import partial
from typing import Any

from reaper.models import Batch, Hold
from reaper.policy import RULE_ACTION, Action, Decision, Guard, Plan, Policy, Rule, plan
from tests import helpers
from tests.helpers import DAY, HOUR
from tests.helpers import SECOND as SECOND

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


# The policy tests' batches: the shared builder, aged relative to NOW.
make_batch = partial(helpers.make_batch, now=NOW)


def mixed_listing(deletes: int, keeps: int, cancels: int = 0) -> list[Batch]:
    """A listing with that many deletable, kept and stale batches (deletes most overdue first)."""
    batches = [make_batch(f"d{i:03}", created_ago=(100 - i) * DAY) for i in range(deletes)]
    batches += [make_batch(f"k{i:03}", "in_progress", created_ago=2 * HOUR) for i in range(keeps)]
    batches += [
        make_batch(f"c{i:03}", "in_progress", created_ago=(20 + i) * HOUR) for i in range(cancels)
    ]
    return batches


# -- the oracle: SPEC section 3 read literally, with no cleverness and no bound on memory


def reference_rule(
    batch: Batch,
    listing: list[Batch],
    policy: Policy,
    now: datetime,
    holds: Mapping[str, Hold] | None = None,
) -> Rule:
    """The rule SPEC section 3 gives ``batch``: walk the list, first match wins."""
    holds = holds or {}
    age = now - batch.created_at
    ended = sorted(
        (b for b in listing if b.processing_status == "ended"),
        key=lambda b: (b.created_at, b.id),
        reverse=True,
    )
    keep_last_ids = {b.id for b in ended[: policy.keep_last]}
    failures = batch.request_counts.errored + batch.request_counts.expired
    hold = holds.get(batch.id)
    if batch.id in policy.protect_ids:
        return Rule.PROTECTED
    if hold is not None and now < hold.until:
        return Rule.HELD
    if age < policy.min_age:
        return Rule.MIN_AGE
    if batch.processing_status == "in_progress":
        stale = policy.cancel_stale_after
        return Rule.STALE if stale is not None and age >= stale else Rule.NOT_ENDED
    if batch.processing_status == "canceling":
        return Rule.NOT_ENDED
    if batch.processing_status != "ended":
        return Rule.UNKNOWN_STATUS
    if batch.id in keep_last_ids:
        return Rule.KEEP_LAST
    if batch.ended_at is None:
        return Rule.RETAINED
    initiated = batch.cancel_initiated_at
    stale = policy.cancel_stale_after
    if (
        policy.delete_canceled
        and initiated is not None
        and stale is not None
        and initiated - batch.created_at >= stale
    ):
        return Rule.CANCELED_STALE
    since = now - batch.ended_at
    retention = policy.delete_failed_after if failures else policy.delete_ended_after
    if retention is not None and since >= retention:
        return Rule.FAILED_RETENTION if failures else Rule.ENDED_RETENTION
    return Rule.RETAINED


def reference_eligible(batch: Batch, rule: Rule, policy: Policy) -> datetime:
    """When ``batch`` became eligible for the action of ``rule`` (an action's rule)."""
    if rule is Rule.STALE:
        assert policy.cancel_stale_after is not None
        return batch.created_at + policy.cancel_stale_after
    assert batch.ended_at is not None
    if rule is Rule.CANCELED_STALE:
        return batch.ended_at
    retention = (
        policy.delete_failed_after if rule is Rule.FAILED_RETENTION else (policy.delete_ended_after)
    )
    assert retention is not None
    return batch.ended_at + retention


@dataclass(frozen=True)
class ReferencePlan:
    """The unbounded plan: every action sorted, then the guards, then the cap."""

    acting: list[str]  # ids in priority order
    deferred: list[str]  # ids in priority order
    withheld: set[str]
    tripped: tuple[Guard, ...]


def reference_plan(
    listing: list[Batch],
    policy: Policy,
    now: datetime,
    holds: Mapping[str, Hold] | None = None,
    *,
    complete: bool = True,
) -> ReferencePlan:
    """Decide everything, keep everything, sort everything: what the bounded Planner must match."""
    actions = []
    for batch in listing:
        rule = reference_rule(batch, listing, policy, now, holds)
        if RULE_ACTION[rule] is not Action.KEEP:
            kind = 0 if rule is Rule.STALE else 1
            actions.append((kind, reference_eligible(batch, rule, policy), batch.id))
    actions.sort()
    ids = [batch_id for _, _, batch_id in actions]
    cancels = sum(1 for kind, _, _ in actions if kind == 0)
    deletes = len(actions) - cancels
    in_progress = sum(1 for b in listing if b.processing_status == "in_progress")
    tripped: list[Guard] = []
    counted = deletes + (cancels if policy.delete_canceled else 0)
    if counted and Fraction(counted, len(listing)) > Fraction(str(policy.max_delete_fraction)):
        tripped.append(Guard.DELETE_FRACTION)
    if cancels and Fraction(cancels, in_progress) > Fraction(str(policy.max_cancel_fraction)):
        tripped.append(Guard.CANCEL_FRACTION)
    if not complete:
        return ReferencePlan([], [], set(ids), ())
    if tripped:
        return ReferencePlan([], [], set(ids), tuple(tripped))
    cap = policy.max_actions_per_run
    return ReferencePlan(ids[:cap], ids[cap:], set(), ())


def plan_all(
    batches: list[Batch], policy: Policy, now: datetime = NOW, **options: Any
) -> tuple[Plan, dict[str, Decision]]:
    """Plan ``batches``; return the plan and every decision streamed out of it, by id."""
    seen: dict[str, Decision] = {}
    result = plan(
        batches, now, policy, on_decision=lambda d: seen.__setitem__(d.batch.id, d), **options
    )
    return result, seen


def kept_rules(decisions: Mapping[str, Decision]) -> dict[str, Rule]:
    """The rule of every kept batch, by id."""
    return {i: d.rule for i, d in decisions.items() if d.action is Action.KEEP}
