"""Invariants of the policy under hypothesis: safety, order independence, guards at thresholds.

A deliberately naive reference (tests/policy_helpers.py: walk SPEC section 3's list, keep and
sort everything) is the oracle for every decision and every guard; the Planner's bounded memory
must agree with it on every generated listing.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, replace
from datetime import timedelta
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from reaper.explain import Disposition, explain
from reaper.models import Batch, Hold
from reaper.policy import (
    RULE_ACTION,
    SAMPLE_SIZE,
    Action,
    Decision,
    Guard,
    Plan,
    Planner,
    Policy,
    Rule,
    StopReason,
    plan,
)
from tests.policy_helpers import (
    DAY,
    HOUR,
    NOW,
    make_batch,
    reference_eligible,
    reference_plan,
    reference_rule,
)

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
    canceled_share: float | None = None  # where between creation and end its cancel came


_WAITING = ("in_progress",) * 6 + ("canceling",) * 2 + ("archiving",)
KINDS = (
    [Kind(status, 0.0, 0, 0) for status in _WAITING]
    + [
        Kind("ended", share, errored, expired)
        for share in (0.0, 0.25, 0.5, 0.9, 1.0)
        for errored, expired in ((0, 0), (0, 0), (1, 0), (0, 2))
    ]
    + [Kind("ended", share, 0, 0, canceled) for share in (0.0, 0.5) for canceled in (0.1, 0.9)]
)


def _make_batch(number: int, kind: Kind, age: int) -> Batch:
    """One generated batch, ``age`` seconds old at NOW, the rest from its kind."""
    created_ago = timedelta(seconds=age)
    ended_ago = timedelta(seconds=round(age * (1 - kind.ended_share)))
    canceled_after = None
    if kind.status == "ended" and kind.canceled_share is not None:
        canceled_after = (created_ago - ended_ago) * kind.canceled_share
    return make_batch(
        f"msgbatch_{number:04}",
        kind.status,
        created_ago=created_ago,
        ended_ago=ended_ago,
        succeeded=2,
        errored=kind.errored,
        expired=kind.expired,
        canceled_after=canceled_after,
    )


_BATCH = st.builds(_make_batch, st.integers(0, 999), st.sampled_from(KINDS), _offset())
# Unique ids; ties in created_at between batches come from the crowded offsets.
batches = st.integers(0, 30).flatmap(
    lambda n: st.lists(_BATCH, min_size=n, max_size=n, unique_by=lambda b: b.id)
)


def _duration() -> st.SearchStrategy[timedelta]:
    return st.sampled_from(THRESHOLDS).map(lambda s: timedelta(seconds=s))


_FRACTIONS = [0.0, 0.1, 0.25, 0.5, 1.0]


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
        max_delete_fraction=draw(st.sampled_from([*_FRACTIONS, 1.0, 1.0])),
        delete_canceled=draw(st.booleans()),
        max_cancel_fraction=draw(st.sampled_from([*_FRACTIONS, 1.0, 1.0])),
    )


@st.composite
def hold_maps(draw: st.DrawFn, listing: list[Batch]) -> dict[str, Hold]:
    """Holds on a few listed ids (and one unlisted): active, expired, or ending exactly now."""
    ids = [*sorted(b.id for b in listing), "msgbatch_unlisted"]
    held = draw(st.lists(st.sampled_from(ids), max_size=4, unique=True))
    offsets = st.sampled_from([-86400, -1, 0, 1, 3600])
    return {
        i: Hold(i, NOW + timedelta(seconds=draw(offsets)), reason="test", by="hypothesis")
        for i in held
    }


@dataclass(frozen=True)
class Scenario:
    listing: list[Batch]
    policy: Policy
    holds: dict[str, Hold]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    listing = draw(batches)
    return Scenario(listing, draw(policies(listing)), draw(hold_maps(listing)))


def decide(scenario: Scenario, *, complete: bool = True) -> tuple[Plan, dict[str, Decision]]:
    """Plan the scenario; return the plan and every decision streamed out of it, by id."""
    seen: dict[str, Decision] = {}
    result = plan(
        scenario.listing,
        NOW,
        scenario.policy,
        holds=scenario.holds,
        complete=complete,
        on_decision=lambda d: seen.__setitem__(d.batch.id, d),
    )
    return result, seen


@EXAMPLES
@given(scenarios())
def test_every_decision_matches_the_reference(scenario: Scenario) -> None:
    """The streaming planner decides exactly what SPEC section 3, read literally, says; planning
    has no side effects (listing and policy unchanged, a second run gives the same plan)."""
    before = copy.deepcopy((scenario.listing, scenario.policy, scenario.holds))
    result, decisions = decide(scenario)
    assert (scenario.listing, scenario.policy, scenario.holds) == before
    assert decide(scenario) == (result, decisions)
    assert set(decisions) == {b.id for b in scenario.listing}
    for batch in scenario.listing:
        expected = reference_rule(batch, scenario.listing, scenario.policy, NOW, scenario.holds)
        assert decisions[batch.id].rule is expected, batch
        assert decisions[batch.id].action is RULE_ACTION[expected]
        if expected is not Rule.STALE and RULE_ACTION[expected] is not Action.KEEP:
            eligible = reference_eligible(batch, expected, scenario.policy)
            assert decisions[batch.id].eligible_at == eligible
    assert sum(result.decision_counts.values()) == result.listed == len(scenario.listing)


@EXAMPLES
@given(scenarios())
def test_the_untouchable_are_never_touched(scenario: Scenario) -> None:
    """Never cancel or delete: a protected batch, an actively held one, a young one, a canceling
    one, a keep-last one; never delete an in_progress batch directly; cancel only in_progress."""
    listing, policy = scenario.listing, scenario.policy
    _, decisions = decide(scenario)
    ended = sorted(
        (b for b in listing if b.processing_status == "ended"),
        key=lambda b: (b.created_at, b.id),
        reverse=True,
    )
    keep_last = {b.id for b in ended[: policy.keep_last]}
    held = {i for i, hold in scenario.holds.items() if hold.until > NOW}
    for decision in decisions.values():
        if decision.action is Action.KEEP:
            continue
        batch = decision.batch
        assert batch.id not in policy.protect_ids
        assert batch.id not in held
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
    scenario: Scenario, rng: random.Random
) -> None:
    """Shuffled and cut into arbitrary pages, the listing gives the very same plan."""
    expected, decisions = decide(scenario)
    shuffled = scenario.listing[:]
    rng.shuffle(shuffled)
    seen: dict[str, Decision] = {}
    planner = Planner(
        scenario.policy,
        NOW,
        holds=scenario.holds,
        on_decision=lambda d: seen.__setitem__(d.batch.id, d),
    )
    position = 0
    while position < len(shuffled):
        size = rng.randint(1, 7)
        planner.add(shuffled[position : position + size])
        position += size
    assert planner.finish() == expected
    assert seen == decisions


@EXAMPLES
@given(scenarios(), st.booleans())
def test_the_guards_match_the_unbounded_reference(scenario: Scenario, complete: bool) -> None:
    """Acting, deferred and withheld are exactly the unbounded reference's, in the same order;
    a stop (incomplete listing, or either fraction guard) acts on nothing at all."""
    result, decisions = decide(scenario, complete=complete)
    ref = reference_plan(scenario.listing, scenario.policy, NOW, scenario.holds, complete=complete)
    acting = [d.batch.id for d in (*result.cancels, *result.deletes)]
    assert acting == ref.acting
    assert result.deferred == len(ref.deferred)
    assert [d.batch.id for d in result.deferred_sample] == ref.deferred[:SAMPLE_SIZE]
    assert result.withheld_total == len(ref.withheld)
    assert {d.batch.id for d in result.withheld} <= ref.withheld
    assert len(result.withheld) == min(len(ref.withheld), scenario.policy.max_actions_per_run)
    assert result.tripped == ref.tripped
    if result.stop is not None:
        assert result.cancels == result.deletes == ()
        assert result.stop is (
            StopReason.SAFETY_STOP if complete else StopReason.INCOMPLETE_LISTING
        )
    else:
        assert not ref.withheld
    # Every action streamed out is in exactly one of the three parts.
    planned = sum(1 for d in decisions.values() if d.action is not Action.KEEP)
    assert len(acting) + result.deferred + result.withheld_total == planned
    # Cancels go before any delete, and acted-on deletes are at least as overdue as deferred
    # ones: the last acted-on action comes before the first deferred one in priority order.
    if acting and result.deferred_sample:
        last, first = (*result.cancels, *result.deletes)[-1], result.deferred_sample[0]
        assert last.eligible_at is not None
        assert first.eligible_at is not None
        if last.action is first.action:
            assert last.eligible_at <= first.eligible_at
        else:
            assert (last.action, first.action) == (Action.CANCEL, Action.DELETE)


_CANCEL_KINDS = [k for k in KINDS if k.status in ("in_progress", "ended")]
_MANY = st.integers(0, 120).flatmap(
    lambda n: st.lists(
        st.builds(_make_batch, st.integers(0, 9999), st.sampled_from(_CANCEL_KINDS), _offset()),
        min_size=n,
        max_size=n,
        unique_by=lambda b: b.id,
    )
)


@EXAMPLES
@given(_MANY, st.integers(0, 40), st.integers(1, 60), st.randoms(use_true_random=False))
def test_the_bounded_planner_picks_what_the_unbounded_one_would(
    listing: list[Batch], cap: int, page: int, rng: random.Random
) -> None:
    """Over listings much longer than the cap (the buffer is cut many times), in any order and
    paging, the bounded planner acts on exactly the reference's first ``cap`` actions."""
    policy = Policy(
        min_age=timedelta(0),
        cancel_stale_after=timedelta(hours=12),
        delete_ended_after=timedelta(days=7),
        delete_failed_after=timedelta(days=7),
        max_actions_per_run=cap,
    )
    ref = reference_plan(listing, policy, NOW)
    shuffled = listing[:]
    rng.shuffle(shuffled)
    planner = Planner(policy, NOW)
    for start in range(0, len(shuffled), page):
        planner.add(shuffled[start : start + page])
    result = planner.finish()
    assert [d.batch.id for d in (*result.cancels, *result.deletes)] == ref.acting
    assert result.deferred == len(ref.deferred)
    assert [d.batch.id for d in result.deferred_sample] == ref.deferred[:SAMPLE_SIZE]


@EXAMPLES
@given(
    in_progress=st.integers(1, 40),
    stale_share=st.floats(0, 1),
    fraction=st.sampled_from(_FRACTIONS),
)
def test_the_cancel_fraction_guard_counts_in_progress_batches(
    in_progress: int, stale_share: float, fraction: float
) -> None:
    """Cancels over the in_progress batches listed (ended ones do not dilute it) above the
    limit stop the workspace: no cancel, and no delete either."""
    stale = round(stale_share * in_progress)
    listing = [
        make_batch(f"p{i:03}", "in_progress", created_ago=(20 if i < stale else 2) * HOUR)
        for i in range(in_progress)
    ] + [make_batch(f"e{i:03}", created_ago=40 * DAY) for i in range(50)]
    result = plan(listing, NOW, Policy(max_cancel_fraction=fraction, min_age=timedelta(0)))
    trips = stale > 0 and Fraction(stale, in_progress) > Fraction(str(fraction))
    assert (Guard.CANCEL_FRACTION in result.tripped) == trips
    if trips:
        assert result.stop is StopReason.SAFETY_STOP
        assert result.cancels == result.deletes == ()
        assert result.withheld_total == stale + 50


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
        make_batch(f"b{i:04}", created_ago=40 * DAY, ended_ago=39 * DAY)
        if i < deletes
        else make_batch(f"b{i:04}", "in_progress", created_ago=2 * HOUR)
        for i in range(listed)
    ]
    exact = deletes / listed  # listed divides 1000, so this is a short decimal
    at_limit = plan(listing, NOW, Policy(max_delete_fraction=exact))
    assert at_limit.stop is None
    assert len(at_limit.deletes) == deletes
    if deletes:
        below = plan(listing, NOW, Policy(max_delete_fraction=round(exact - 0.001, 3)))
        assert below.stop is StopReason.SAFETY_STOP
        assert below.tripped == (Guard.DELETE_FRACTION,)
        assert below.deletes == below.cancels == ()


@EXAMPLES
@given(actions=st.integers(0, 25), cap_offset=st.integers(-3, 3))
def test_the_cap_defers_exactly_what_is_past_it(actions: int, cap_offset: int) -> None:
    """At cap == actions nothing is deferred; one below, exactly one action is."""
    cap = max(0, actions + cap_offset)
    listing = [
        make_batch(f"b{i:04}", created_ago=(40 + i) * DAY, ended_ago=(39 + i) * DAY)
        for i in range(actions)
    ]
    result = plan(listing, NOW, Policy(max_actions_per_run=cap))
    assert len(result.deletes) == min(cap, actions)
    assert result.deferred == max(0, actions - cap)
    # The most overdue (oldest) go first; the sample names the next ones in line.
    overdue = [d.batch.id for d in (*result.deletes, *result.deferred_sample)]
    expected = [f"b{i:04}" for i in reversed(range(actions))]
    assert overdue == expected[: min(cap, actions) + SAMPLE_SIZE]


@EXAMPLES
@given(scenarios())
def test_explain_agrees_with_the_plan(scenario: Scenario) -> None:
    """For every batch, the first rule explain says matched is the rule the plan applied, and
    explain's disposition agrees with where the plan put the batch."""
    listing, policy = scenario.listing, scenario.policy
    result, decisions = decide(scenario)
    acting = {d.batch.id for d in (*result.cancels, *result.deletes)}
    for batch in listing[:3]:
        found = explain(batch.id, listing, NOW, policy, holds=scenario.holds)
        assert found is not None
        assert found.decision == decisions[batch.id]
        assert found.deciding.rule is decisions[batch.id].rule
        if decisions[batch.id].action is Action.KEEP:
            assert found.disposition is Disposition.KEEP
        elif result.stop is not None:
            assert found.disposition is Disposition.WITHHELD
        else:
            wanted = Disposition.ACT if batch.id in acting else Disposition.DEFERRED
            assert found.disposition is wanted


@EXAMPLES
@given(scenarios(), st.integers(1, 5))
def test_adding_protection_never_adds_actions(scenario: Scenario, extra: int) -> None:
    """Protecting more ids, holding more, raising min_age or keep_last only removes actions."""
    listing, policy = scenario.listing, scenario.policy

    def actions(policy: Policy, holds: dict[str, Hold]) -> set[str]:
        _, decisions = decide(Scenario(listing, policy, holds))
        return {i for i, d in decisions.items() if d.action is not Action.KEEP}

    base = actions(policy, scenario.holds)
    stricter = replace(
        policy,
        protect_ids=policy.protect_ids | {b.id for b in listing[:extra]},
        keep_last=policy.keep_last + extra,
        min_age=policy.min_age + timedelta(hours=extra),
    )
    more_holds = scenario.holds | {
        b.id: Hold(b.id, NOW + timedelta(days=1)) for b in listing[-extra:]
    }
    assert actions(stricter, more_holds) <= base
