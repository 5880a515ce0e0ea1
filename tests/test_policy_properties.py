"""Invariants of the policy under hypothesis: safety, order independence, guards at thresholds.

A deliberately naive reference (sort everything, then walk SPEC section 3's list) is the oracle
for every decision; the Planner's streaming heap must agree with it on every generated listing.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from reaper.models import Batch, RequestCounts
from reaper.policy import Action, Decision, Plan, Planner, Policy, Rule, StopReason, plan
from tests.policy_helpers import NOW

EXAMPLES = settings(max_examples=300, deadline=None)
THRESHOLDS = [0, 3600, 12 * 3600, 7 * 86400, 30 * 86400]


def _offset() -> st.SearchStrategy[int]:
    """Seconds before NOW, crowded around the thresholds (at, one second off either way)."""
    near = st.sampled_from(THRESHOLDS).flatmap(lambda t: st.sampled_from([max(t - 1, 0), t, t + 1]))
    return st.one_of(near, st.integers(0, 60 * 86400))


@dataclass(frozen=True)
class Kind:
    """Everything about a generated batch but its id and age (one draw: generation stays fast)."""

    status: str
    ended_share: float  # where between its creation (1.0) and NOW (0.0) it ended
    errored: int
    expired: int


_WAITING = ("in_progress",) * 6 + ("canceling",) * 2 + ("archiving",)
KINDS = [Kind(status, 0.0, 0, 0) for status in _WAITING] + [
    Kind("ended", share, errored, expired)
    for share in (0.0, 0.25, 0.5, 0.9, 1.0)
    for errored, expired in ((0, 0), (0, 0), (1, 0), (0, 2))
]


def _make_batch(number: int, kind: Kind, age: int) -> Batch:
    ended = kind.status == "ended"
    return Batch(
        id=f"msgbatch_{number:04}",
        processing_status=kind.status,
        created_at=NOW - timedelta(seconds=age),
        request_counts=(
            RequestCounts(succeeded=2, errored=kind.errored, expired=kind.expired)
            if ended
            else RequestCounts(processing=5)
        ),
        ended_at=NOW - timedelta(seconds=round(age * (1 - kind.ended_share))) if ended else None,
    )


_BATCH = st.builds(_make_batch, st.integers(0, 999), st.sampled_from(KINDS), _offset())
# Unique ids; ties in created_at between batches come from the crowded offsets.
batches = st.integers(0, 30).flatmap(
    lambda n: st.lists(_BATCH, min_size=n, max_size=n, unique_by=lambda b: b.id)
)


def _duration() -> st.SearchStrategy[timedelta]:
    return st.sampled_from(THRESHOLDS).map(lambda s: timedelta(seconds=s))


@st.composite
def policies(draw: st.DrawFn, listing: list[Batch]) -> Policy:
    ids = sorted(b.id for b in listing)
    return Policy(
        protect_ids=frozenset(draw(st.lists(st.sampled_from(ids), max_size=4)) if ids else []),
        # Mostly short: a long min_age would protect nearly everything and test little.
        min_age=timedelta(seconds=draw(st.sampled_from([0, 3600, 3600, 12 * 3600, 7 * 86400]))),
        cancel_stale_after=draw(st.none() | _duration()),
        keep_last=draw(st.integers(0, 6)),
        delete_failed_after=draw(st.none() | _duration()),
        delete_ended_after=draw(st.none() | _duration()),
        max_actions_per_run=draw(st.integers(0, 8)),
        max_delete_fraction=draw(st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0])),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Batch], Policy]:
    listing = draw(batches)
    return listing, draw(policies(listing))


# -- the reference: SPEC section 3 read literally, with no cleverness


def reference_rule(batch: Batch, listing: list[Batch], policy: Policy, now: datetime) -> Rule:
    age = now - batch.created_at
    ended = sorted(
        (b for b in listing if b.processing_status == "ended"),
        key=lambda b: (b.created_at, b.id),
        reverse=True,
    )
    keep_last_ids = {b.id for b in ended[: policy.keep_last]}
    failures = batch.request_counts.errored + batch.request_counts.expired
    if batch.id in policy.protect_ids:
        return Rule.PROTECTED
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
    if batch.ended_at is not None:
        since = now - batch.ended_at
        retention = policy.delete_failed_after if failures else policy.delete_ended_after
        if retention is not None and since >= retention:
            return Rule.FAILED_RETENTION if failures else Rule.ENDED_RETENTION
    return Rule.RETAINED


def all_decisions(result: Plan) -> dict[str, Decision]:
    return {d.batch.id: d for d in (*result.actionable, *result.kept)}


@dataclass(frozen=True)
class Split:
    acting: set[str]
    deferred: set[str]
    withheld: set[str]


def split(result: Plan) -> Split:
    return Split(
        acting={d.batch.id for d in (*result.cancels, *result.deletes)},
        deferred={d.batch.id for d in result.deferred},
        withheld={d.batch.id for d in result.withheld},
    )


@EXAMPLES
@given(scenarios())
def test_every_decision_matches_the_reference(scenario: tuple[list[Batch], Policy]) -> None:
    """The streaming planner decides exactly what SPEC section 3, read literally, says; planning
    has no side effects (listing and policy unchanged, a second run gives the same plan)."""
    listing, policy = scenario
    before, policy_before = copy.deepcopy(listing), copy.deepcopy(policy)
    result = plan(listing, NOW, policy, record_kept=True)
    assert listing == before
    assert policy == policy_before
    assert plan(listing, NOW, policy, record_kept=True) == result
    decisions = all_decisions(result)
    assert set(decisions) == {b.id for b in listing}
    for batch in listing:
        assert decisions[batch.id].rule is reference_rule(batch, listing, policy, NOW), batch


@EXAMPLES
@given(scenarios())
def test_the_untouchable_are_never_touched(scenario: tuple[list[Batch], Policy]) -> None:
    """Never cancel or delete: a protected batch, a young one, a canceling one, a keep-last one;
    never delete an in_progress batch directly; cancel only in_progress ones."""
    listing, policy = scenario
    result = plan(listing, NOW, policy)
    ended = sorted(
        (b for b in listing if b.processing_status == "ended"),
        key=lambda b: (b.created_at, b.id),
        reverse=True,
    )
    keep_last = {b.id for b in ended[: policy.keep_last]}
    for decision in result.actionable:
        batch = decision.batch
        assert batch.id not in policy.protect_ids
        assert NOW - batch.created_at >= policy.min_age
        assert batch.processing_status != "canceling"
        assert batch.id not in keep_last
        if decision.action is Action.DELETE:
            assert batch.processing_status == "ended"
        else:
            assert decision.action is Action.CANCEL
            assert batch.processing_status == "in_progress"


@EXAMPLES
@given(scenarios(), st.randoms(use_true_random=False))
def test_the_plan_does_not_depend_on_the_listing_order_or_paging(
    scenario: tuple[list[Batch], Policy], rng: random.Random
) -> None:
    """Shuffled and cut into arbitrary pages, the listing gives the very same plan."""
    listing, policy = scenario
    expected = plan(listing, NOW, policy, record_kept=True)
    shuffled = listing[:]
    rng.shuffle(shuffled)
    planner = Planner(policy, NOW, record_kept=True)
    position = 0
    while position < len(shuffled):
        size = rng.randint(1, 7)
        planner.add(shuffled[position : position + size])
        position += size
    assert planner.finish() == expected


@EXAMPLES
@given(scenarios(), st.booleans())
def test_the_guards_partition_the_actions(
    scenario: tuple[list[Batch], Policy], complete: bool
) -> None:
    """Each cancel/delete decision is acted on, deferred or withheld: exactly one of them."""
    listing, policy = scenario
    result = plan(listing, NOW, policy, complete=complete)
    parts = split(result)
    planned = {d.batch.id for d in result.actionable}
    assert parts.acting | parts.deferred | parts.withheld == planned
    assert len(parts.acting) + len(parts.deferred) + len(parts.withheld) == len(planned)
    assert sum(result.decision_counts.values()) == result.listed == len(listing)
    cancels = result.count(Action.CANCEL)
    deletes = result.count(Action.DELETE)
    if not complete:
        assert result.stop is StopReason.INCOMPLETE_LISTING
        assert parts.acting == parts.deferred == set()
        return
    tripped = deletes > 0 and Fraction(deletes, len(listing)) > Fraction(
        str(policy.max_delete_fraction)
    )
    assert (result.stop is StopReason.SAFETY_STOP) == tripped
    allowed = cancels + (0 if tripped else deletes)
    assert len(parts.acting) == min(policy.max_actions_per_run, allowed)
    assert len(parts.deferred) == max(0, allowed - policy.max_actions_per_run)
    assert len(parts.withheld) == (deletes if tripped else 0)
    # Cancels go before any delete, and acted-on deletes are at least as overdue as deferred ones.
    if result.deferred and result.deletes:
        assert result.deletes[-1].eligible_at is not None
        assert result.deferred[-1].eligible_at is not None
        assert all(d.action is Action.DELETE for d in result.deferred)


_DIVISORS_OF_1000 = [1, 2, 4, 5, 8, 10, 20, 25, 40, 50, 100, 125, 200]


@EXAMPLES
@given(
    listed=st.sampled_from(_DIVISORS_OF_1000),
    share=st.floats(0, 1),
    cancels=st.integers(0, 3),
)
def test_the_fraction_guard_trips_exactly_above_its_threshold(
    listed: int, share: float, cancels: int
) -> None:
    """deletes/listed equal to the limit passes; the next decimal step below it trips."""
    deletes = round(share * listed)
    listing = [
        Batch(
            id=f"b{i:04}",
            processing_status="ended" if i < deletes else "in_progress",
            created_at=NOW - timedelta(days=40 if i < deletes else 1),
            request_counts=RequestCounts(succeeded=1),
            ended_at=NOW - timedelta(days=39) if i < deletes else None,
        )
        for i in range(listed)
    ]
    exact = deletes / listed  # listed divides 1000, so this is a short decimal
    at_limit = plan(listing, NOW, Policy(max_delete_fraction=exact))
    assert at_limit.stop is None
    assert len(at_limit.deletes) == deletes
    if deletes:
        below = plan(listing, NOW, Policy(max_delete_fraction=round(exact - 0.001, 3)))
        assert below.stop is StopReason.SAFETY_STOP
        assert below.deletes == ()


@EXAMPLES
@given(actions=st.integers(0, 25), cap_offset=st.integers(-3, 3))
def test_the_cap_defers_exactly_what_is_past_it(actions: int, cap_offset: int) -> None:
    """At cap == actions nothing is deferred; one below, exactly one action is."""
    cap = max(0, actions + cap_offset)
    listing = [
        Batch(
            id=f"b{i:04}",
            processing_status="ended",
            created_at=NOW - timedelta(days=40 + i),
            request_counts=RequestCounts(succeeded=1),
            ended_at=NOW - timedelta(days=39 + i),
        )
        for i in range(actions)
    ]
    result = plan(listing, NOW, Policy(max_actions_per_run=cap))
    assert len(result.deletes) == min(cap, actions)
    assert len(result.deferred) == max(0, actions - cap)
    # The most overdue (oldest) go first.
    overdue = [d.batch.id for d in (*result.deletes, *result.deferred)]
    assert overdue == [f"b{i:04}" for i in reversed(range(actions))]


@EXAMPLES
@given(scenarios())
def test_explain_agrees_with_the_plan(scenario: tuple[list[Batch], Policy]) -> None:
    """For every batch, the first rule explain says matched is the rule the plan applied."""
    from reaper.explain import explain

    listing, policy = scenario
    decisions = all_decisions(plan(listing, NOW, policy, record_kept=True))
    for batch in listing[:3]:
        found = explain(batch.id, listing, NOW, policy)
        assert found is not None
        assert found.decision == decisions[batch.id]
        assert found.deciding.rule is decisions[batch.id].rule


@EXAMPLES
@given(scenarios(), st.integers(1, 5))
def test_adding_protection_never_adds_actions(
    scenario: tuple[list[Batch], Policy], extra: int
) -> None:
    """Protecting more ids, raising min_age or keep_last only ever removes actions."""
    listing, policy = scenario
    base = {d.batch.id for d in plan(listing, NOW, policy).actionable}
    stricter = replace(
        policy,
        protect_ids=policy.protect_ids | {b.id for b in listing[:extra]},
        keep_last=policy.keep_last + extra,
        min_age=policy.min_age + timedelta(hours=extra),
    )
    assert {d.batch.id for d in plan(listing, NOW, stricter).actionable} <= base
