"""The policy of SPEC section 3, rule by rule at its boundaries, then precedence and guards."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import msgspec
import pytest

from reaper.models import Batch, Hold
from reaper.policy import (
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
from reaper.settings import load_settings
from tests.policy_helpers import (
    DAY,
    HOUR,
    NOW,
    SECOND,
    kept_rules,
    make_batch,
    mixed_listing,
    plan_all,
)

POLICY = Policy()  # SPEC defaults: min_age 1h, stale 12h, ended 7d, failed 30d


def decide(batch: Batch, policy: Policy = POLICY, *others: Batch) -> Decision:
    """Plan ``batch`` (with ``others`` listed beside it) and return its decision."""
    return plan_all([batch, *others], policy)[1][batch.id]


CASES = [
    # rule 1: protected wins over everything
    (
        "protected stale",
        make_batch("p", "in_progress", created_ago=5 * DAY),
        Action.KEEP,
        Rule.PROTECTED,
    ),
    ("protected old ended", make_batch("p", created_ago=90 * DAY), Action.KEEP, Rule.PROTECTED),
    # rule 2: younger than min_age; exactly min_age old is not protected by it
    ("young", make_batch("a", "in_progress", created_ago=HOUR - SECOND), Action.KEEP, Rule.MIN_AGE),
    (
        "exactly min_age",
        make_batch("a", "in_progress", created_ago=HOUR),
        Action.KEEP,
        Rule.NOT_ENDED,
    ),
    # rule 3: stale at exactly the threshold, not one second before
    (
        "stale at 12h",
        make_batch("a", "in_progress", created_ago=12 * HOUR),
        Action.CANCEL,
        Rule.STALE,
    ),
    (
        "stale 1s before",
        make_batch("a", "in_progress", created_ago=12 * HOUR - SECOND),
        Action.KEEP,
        Rule.NOT_ENDED,
    ),
    # rule 4: canceling is only ever waited for, however old
    ("canceling", make_batch("a", "canceling", created_ago=20 * DAY), Action.KEEP, Rule.NOT_ENDED),
    # rule 6: failed retention at exactly 30d after ended_at
    (
        "failed at 30d",
        make_batch("a", created_ago=31 * DAY, ended_ago=30 * DAY, errored=1),
        Action.DELETE,
        Rule.FAILED_RETENTION,
    ),
    (
        "failed 1s before",
        make_batch("a", created_ago=31 * DAY, ended_ago=30 * DAY - SECOND, expired=2),
        Action.KEEP,
        Rule.RETAINED,
    ),
    # rule 7 does not apply to a failed batch, even past the ended retention
    (
        "failed past 7d",
        make_batch("a", created_ago=11 * DAY, ended_ago=10 * DAY, errored=3),
        Action.KEEP,
        Rule.RETAINED,
    ),
    # rule 7: ended retention at exactly 7d after ended_at
    (
        "ended at 7d",
        make_batch("a", created_ago=8 * DAY, ended_ago=7 * DAY),
        Action.DELETE,
        Rule.ENDED_RETENTION,
    ),
    (
        "ended 1s before",
        make_batch("a", created_ago=8 * DAY, ended_ago=7 * DAY - SECOND),
        Action.KEEP,
        Rule.RETAINED,
    ),
    # rule 8
    (
        "unknown status",
        make_batch("a", "archiving", created_ago=90 * DAY),
        Action.KEEP,
        Rule.UNKNOWN_STATUS,
    ),
    (
        "ended without ended_at",
        msgspec.structs.replace(make_batch("a", created_ago=90 * DAY), ended_at=None),
        Action.KEEP,
        Rule.RETAINED,
    ),
]


@pytest.mark.parametrize(
    ("batch", "action", "rule"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_each_rule_at_its_boundary(batch: Batch, action: Action, rule: Rule) -> None:
    """Exactly at a threshold the rule applies; one second before it does not."""
    policy = replace(POLICY, protect_ids=frozenset({"p"}))
    decision = decide(batch, policy)
    assert (decision.action, decision.rule) == (action, rule)


def test_min_age_boundary_for_an_ended_batch() -> None:
    """An ended batch exactly min_age old can be deleted; one second younger cannot."""
    policy = replace(POLICY, delete_ended_after=timedelta(0))
    exact = make_batch("a", created_ago=HOUR, ended_ago=timedelta(0))
    younger = make_batch("b", created_ago=HOUR - SECOND, ended_ago=timedelta(0))
    assert decide(exact, policy).rule is Rule.ENDED_RETENTION
    assert decide(younger, policy).rule is Rule.MIN_AGE


def test_eligible_at_is_when_the_threshold_was_crossed() -> None:
    """Delete: ended_at + retention; cancel: created_at + stale threshold; keep: None."""
    ended = make_batch("e", created_ago=20 * DAY, ended_ago=19 * DAY)
    failed = make_batch("f", created_ago=40 * DAY, ended_ago=35 * DAY, errored=1)
    stale = make_batch("s", "in_progress", created_ago=13 * HOUR)
    kept = make_batch("k", "in_progress", created_ago=2 * HOUR)
    assert ended.ended_at is not None
    assert failed.ended_at is not None
    assert decide(ended).eligible_at == ended.ended_at + 7 * DAY
    assert decide(failed).eligible_at == failed.ended_at + 30 * DAY
    assert decide(stale).eligible_at == stale.created_at + 12 * HOUR
    assert decide(kept).eligible_at is None


@pytest.mark.parametrize(
    ("field", "batch", "rule"),
    [
        (
            "cancel_stale_after",
            make_batch("a", "in_progress", created_ago=23 * HOUR),
            Rule.NOT_ENDED,
        ),
        ("delete_ended_after", make_batch("a", created_ago=900 * DAY), Rule.RETAINED),
        ("delete_failed_after", make_batch("a", created_ago=900 * DAY, errored=1), Rule.RETAINED),
    ],
)
def test_never_switches_a_rule_off(field: str, batch: Batch, rule: Rule) -> None:
    """A threshold of None (never) means the rule never matches."""
    never: dict[str, Any] = {field: None}
    assert decide(batch, replace(POLICY, **never)).rule is rule


def test_zero_thresholds_act_as_soon_as_possible() -> None:
    """0s retention deletes on ending; 0s stale cancels anything past min_age."""
    policy = replace(
        POLICY, delete_ended_after=timedelta(0), cancel_stale_after=timedelta(0), min_age=HOUR
    )
    assert decide(make_batch("a", created_ago=2 * HOUR, ended_ago=timedelta(0)), policy).rule is (
        Rule.ENDED_RETENTION
    )
    assert decide(make_batch("b", "in_progress", created_ago=HOUR), policy).rule is Rule.STALE


# -- precedence collisions


def test_an_active_hold_keeps_the_batch_right_after_protected() -> None:
    """Rule 1b: held until a moment after now keeps a stale or deletable batch; at ``until`` the
    hold has expired and is ignored; protection still names itself first."""
    stale = make_batch("h", "in_progress", created_ago=5 * DAY)
    old = make_batch("o", created_ago=90 * DAY)
    holds = {
        "h": Hold("h", NOW + SECOND, reason="audit", by="ana"),
        "o": Hold("o", NOW, reason="expired"),
    }
    _, decisions = plan_all([stale, old], POLICY, holds=holds)
    assert (decisions["h"].action, decisions["h"].rule) == (Action.KEEP, Rule.HELD)
    assert decisions["o"].rule is Rule.ENDED_RETENTION
    protected = replace(POLICY, protect_ids=frozenset({"h"}))
    assert plan_all([stale], protected, holds=holds)[1]["h"].rule is Rule.PROTECTED
    young = make_batch("y", created_ago=10 * 60 * SECOND, ended_ago=60 * SECOND)
    assert plan_all([young], POLICY, holds={"y": Hold("y", NOW + DAY)})[1]["y"].rule is Rule.HELD


def test_a_held_batch_still_takes_its_keep_last_place() -> None:
    """Keep-last ranks every ended batch, held ones included (like protected ones)."""
    batches = [make_batch(f"b{i}", created_ago=(20 + i) * DAY) for i in range(3)]
    holds = {"b0": Hold("b0", NOW + DAY)}
    _, decisions = plan_all(batches, replace(POLICY, keep_last=1), holds=holds)
    assert [decisions[f"b{i}"].rule for i in range(3)] == [
        Rule.HELD,
        Rule.ENDED_RETENTION,
        Rule.ENDED_RETENTION,
    ]


@pytest.mark.parametrize(
    ("canceled_after", "delete_canceled", "rule"),
    [
        (12 * HOUR, True, Rule.CANCELED_STALE),  # at exactly the stale threshold
        (12 * HOUR - SECOND, True, Rule.RETAINED),  # a person's early cancel: retention applies
        (12 * HOUR, False, Rule.RETAINED),  # REAPER_DELETE_CANCELED=false
        (None, True, Rule.RETAINED),  # never canceled
    ],
)
def test_canceled_stale_deletes_a_batch_canceled_once_stale_as_soon_as_it_ended(
    canceled_after: timedelta | None, delete_canceled: bool, rule: Rule
) -> None:
    """Rule 5b: ended a minute ago, canceled at least the stale threshold after creation ->
    delete, eligible since ended_at (not ended_at + a retention)."""
    batch = make_batch(
        "c", created_ago=2 * DAY, ended_ago=60 * SECOND, canceled_after=canceled_after
    )
    found = decide(batch, replace(POLICY, delete_canceled=delete_canceled))
    assert found.rule is rule
    if rule is Rule.CANCELED_STALE:
        assert found.action is Action.DELETE
        assert found.eligible_at == NOW - 60 * SECOND


def test_canceled_stale_comes_after_keep_last_and_min_age() -> None:
    """Rules 2 and 5 still keep a canceled-stale batch; it wins over rules 6 and 7."""
    batch = make_batch("c", created_ago=2 * DAY, ended_ago=60 * SECOND, canceled_after=13 * HOUR)
    assert decide(batch, replace(POLICY, keep_last=1)).rule is Rule.KEEP_LAST
    assert decide(batch, replace(POLICY, min_age=3 * DAY)).rule is Rule.MIN_AGE
    assert decide(batch, replace(POLICY, cancel_stale_after=None)).rule is Rule.RETAINED


def test_young_and_ended_long_ago_is_kept_by_min_age() -> None:
    """min_age (rule 2) wins over the retention rules, even with 0s retention."""
    policy = replace(POLICY, delete_ended_after=timedelta(0), delete_failed_after=timedelta(0))
    young = make_batch("a", created_ago=30 * 60 * SECOND, ended_ago=29 * 60 * SECOND, errored=1)
    assert decide(young, policy).rule is Rule.MIN_AGE


def test_keep_last_wins_over_failed_retention() -> None:
    """keep-last (rule 5) keeps the newest ended batches, failed or not; the older go."""
    policy = replace(POLICY, keep_last=2)
    batches = [make_batch(f"b{i}", created_ago=(40 + i) * DAY, errored=1) for i in range(3)]
    result, decisions = plan_all(batches, policy)
    assert kept_rules(decisions) == {"b0": Rule.KEEP_LAST, "b1": Rule.KEEP_LAST}
    assert [(d.batch.id, d.rule) for d in result.deletes] == [("b2", Rule.FAILED_RETENTION)]


def test_keep_last_ranks_all_ended_batches_protected_and_young_included() -> None:
    """SPEC's literal reading: 'the N most recently created of the batches ended at listing time'.

    A young ended batch and a protected one are the two newest ended batches, so with keep_last=2
    they fill the ranking; the old ones are not kept by rule 5.
    """
    policy = replace(POLICY, keep_last=2, protect_ids=frozenset({"protected"}))
    batches = [
        make_batch("young", created_ago=30 * 60 * SECOND, ended_ago=60 * SECOND),
        make_batch("protected", created_ago=10 * DAY),
        make_batch("old1", created_ago=20 * DAY),
        make_batch("old2", created_ago=21 * DAY),
    ]
    _, decisions = plan_all(batches, policy)
    rules = {i: d.rule for i, d in decisions.items()}
    assert rules == {
        "young": Rule.MIN_AGE,
        "protected": Rule.PROTECTED,
        "old1": Rule.ENDED_RETENTION,
        "old2": Rule.ENDED_RETENTION,
    }


def test_keep_last_counts_only_ended_batches() -> None:
    """Newer in_progress batches take no keep-last place."""
    policy = replace(POLICY, keep_last=1)
    batches = [
        make_batch("running", "in_progress", created_ago=2 * HOUR),
        make_batch("canceling", "canceling", created_ago=3 * HOUR),
        make_batch("newest_ended", created_ago=20 * DAY),
        make_batch("older_ended", created_ago=30 * DAY),
    ]
    _, decisions = plan_all(batches, policy)
    rules = {i: d.rule for i, d in decisions.items()}
    assert rules["newest_ended"] is Rule.KEEP_LAST
    assert rules["older_ended"] is Rule.ENDED_RETENTION


def test_keep_last_breaks_created_at_ties_by_id() -> None:
    """Two ended batches created at the same instant: the greater id counts as more recent."""
    policy = replace(POLICY, keep_last=1)
    a, b = (
        make_batch("msgbatch_a", created_ago=20 * DAY),
        make_batch("msgbatch_b", created_ago=20 * DAY),
    )
    for order in ([a, b], [b, a]):
        result, decisions = plan_all(order, policy)
        assert list(kept_rules(decisions)) == ["msgbatch_b"]
        assert [d.batch.id for d in result.deletes] == ["msgbatch_a"]


def test_canceling_is_never_acted_on() -> None:
    """A canceling batch is kept whatever the thresholds (0s everywhere)."""
    policy = Policy(
        min_age=timedelta(0),
        cancel_stale_after=timedelta(0),
        delete_ended_after=timedelta(0),
        delete_failed_after=timedelta(0),
    )
    assert (
        decide(make_batch("c", "canceling", created_ago=100 * DAY), policy).rule is Rule.NOT_ENDED
    )


def test_an_unknown_status_is_kept_and_reported_even_when_an_earlier_rule_decides() -> None:
    """Unknown statuses are kept (rule unknown_status unless protected or young) and listed."""
    policy = replace(POLICY, protect_ids=frozenset({"p"}))
    batches = [
        make_batch("p", "archiving", created_ago=90 * DAY),
        make_batch("y", "archiving", created_ago=10 * 60 * SECOND),
        make_batch("u", "archiving", created_ago=90 * DAY),
    ]
    result, decisions = plan_all(batches, policy)
    assert kept_rules(decisions) == {
        "p": Rule.PROTECTED,
        "y": Rule.MIN_AGE,
        "u": Rule.UNKNOWN_STATUS,
    }
    # Sampled oldest first (bounded memory), counted in full.
    assert [b.id for b in result.unknown_sample] == ["p", "u", "y"]
    assert result.unknown_count == 3
    assert not result.actionable


# -- the guards


def test_an_incomplete_listing_acts_on_nothing() -> None:
    """Fail closed: no cancels, no deletes, no deferrals; the decisions are still counted."""
    result = plan(mixed_listing(3, 2, 2), NOW, POLICY, complete=False)
    assert result.stop is StopReason.INCOMPLETE_LISTING
    assert (result.cancels, result.deletes, result.deferred) == ((), (), 0)
    assert len(result.withheld) == result.withheld_total == 5
    assert result.decision_counts[(Action.DELETE, Rule.ENDED_RETENTION)] == 3
    assert result.decision_counts[(Action.CANCEL, Rule.STALE)] == 2


def test_the_fraction_guard_allows_exactly_the_threshold() -> None:
    """3 deletes of 10 listed with a 0.3 limit: not more than the share, no stop."""
    result = plan(mixed_listing(3, 7), NOW, replace(POLICY, max_delete_fraction=0.3))
    assert result.stop is None
    assert len(result.deletes) == 3


def test_the_fraction_guard_trips_just_above_the_threshold() -> None:
    """4 deletes of 10 with 0.3: a safety stop; no delete and no cancel either; counts remain."""
    policy = replace(POLICY, max_delete_fraction=0.3, delete_canceled=False)
    result = plan(mixed_listing(4, 4, 2), NOW, policy)
    assert result.stop is StopReason.SAFETY_STOP
    assert result.tripped == (Guard.DELETE_FRACTION,)
    assert result.deletes == result.cancels == ()
    withheld = ["c001", "c000", "d000", "d001", "d002", "d003"]
    assert [d.batch.id for d in result.withheld] == withheld
    assert result.deferred == 0
    assert result.count(Action.DELETE) == 4


def test_stale_cancels_count_as_deletes_when_canceled_batches_are_deleted() -> None:
    """2 deletes + 2 stale cancels of 10 listed: 40 % with REAPER_DELETE_CANCELED, 20 % without."""
    listing = mixed_listing(2, 6, 2)
    stopped = plan(listing, NOW, replace(POLICY, max_delete_fraction=0.3))
    assert stopped.tripped == (Guard.DELETE_FRACTION,)
    assert stopped.fraction_deletes == 4
    policy = replace(POLICY, max_delete_fraction=0.3, delete_canceled=False)
    assert plan(listing, NOW, policy).stop is None


def test_the_cancel_fraction_is_measured_over_in_progress_batches() -> None:
    """2 stale of 4 in_progress (and 50 ended) is 50 %: above 0.4, whatever else is listed."""
    listing = mixed_listing(0, 2, 2) + [make_batch(f"e{i}", created_ago=2 * DAY) for i in range(50)]
    result = plan(listing, NOW, replace(POLICY, max_cancel_fraction=0.4))
    assert result.stop is StopReason.SAFETY_STOP
    assert result.tripped == (Guard.CANCEL_FRACTION,)
    assert result.cancels == ()
    assert plan(listing, NOW, replace(POLICY, max_cancel_fraction=0.5)).stop is None


def test_a_zero_fraction_trips_on_any_delete_and_not_without() -> None:
    """0 means: a single planned delete stops the cycle's deletions."""
    policy = replace(POLICY, max_delete_fraction=0.0)
    assert plan(mixed_listing(1, 50), NOW, policy).stop is StopReason.SAFETY_STOP
    assert plan(mixed_listing(0, 50), NOW, policy).stop is None
    assert plan(mixed_listing(0, 50, 3), NOW, policy).stop is StopReason.SAFETY_STOP
    assert plan(mixed_listing(0, 50, 3), NOW, replace(policy, delete_canceled=False)).stop is None


def test_an_empty_listing_plans_nothing() -> None:
    """No batches: nothing to do, no division by zero."""
    result = plan([], NOW, replace(POLICY, max_delete_fraction=0.0, max_actions_per_run=0))
    assert (result.listed, result.stop, result.actionable) == (0, None, ())


def test_a_zero_cap_acts_on_nothing_and_defers_everything_in_priority_order() -> None:
    """max_actions_per_run=0 means nothing, never unlimited; cancels come first."""
    result = plan(mixed_listing(2, 1, 2), NOW, replace(POLICY, max_actions_per_run=0))
    assert (result.cancels, result.deletes) == ((), ())
    assert [d.batch.id for d in result.deferred_sample] == ["c001", "c000", "d000", "d001"]
    assert result.deferred_counts == {
        (Action.CANCEL, Rule.STALE): 2,
        (Action.DELETE, Rule.ENDED_RETENTION): 2,
    }


@pytest.mark.parametrize(
    ("cap", "acting", "deferred"),
    [
        (1, ["c001"], ["c000", "d000", "d001", "d002"]),
        (2, ["c001", "c000"], ["d000", "d001", "d002"]),
        (3, ["c001", "c000", "d000"], ["d001", "d002"]),
        (5, ["c001", "c000", "d000", "d001", "d002"], []),
        (6, ["c001", "c000", "d000", "d001", "d002"], []),
    ],
)
def test_the_cap_takes_cancels_then_the_most_overdue_deletes(
    cap: int, acting: list[str], deferred: list[str]
) -> None:
    """Past the cap, actions are deferred: cancels first, then deletes by eligible_at."""
    result = plan(mixed_listing(3, 1, 2), NOW, replace(POLICY, max_actions_per_run=cap))
    assert [d.batch.id for d in (*result.cancels, *result.deletes)] == acting
    assert [d.batch.id for d in result.deferred_sample] == deferred
    assert result.deferred == len(deferred)


def test_a_safety_stop_and_the_cap_together() -> None:
    """A stop withholds every action and defers none; it names the cap's worth that would go."""
    policy = replace(POLICY, max_delete_fraction=0.1, max_actions_per_run=1)
    result = plan(mixed_listing(5, 0, 3), NOW, policy)
    assert result.stop is StopReason.SAFETY_STOP
    assert (result.cancels, result.deletes, result.deferred) == ((), (), 0)
    assert [d.batch.id for d in result.withheld] == ["c002"]
    assert result.withheld_total == 8


def test_the_deferred_sample_is_bounded_and_names_the_next_in_line() -> None:
    """Thousands deferred: counted in full, SAMPLE_SIZE of them named, the most overdue first."""
    batches = [make_batch(f"d{i:05}", created_ago=(10 + i / 100) * DAY) for i in range(5000)]
    result = plan(batches, NOW, replace(POLICY, max_actions_per_run=3))
    assert [d.batch.id for d in result.deletes] == ["d04999", "d04998", "d04997"]
    assert result.deferred == 4997
    assert len(result.deferred_sample) == SAMPLE_SIZE
    assert result.deferred_sample[0].batch.id == "d04996"


def test_deletes_are_ordered_by_eligibility_across_rules() -> None:
    """A failed batch eligible earlier goes before an ended one eligible later."""
    failed = make_batch(
        "failed", created_ago=70 * DAY, ended_ago=60 * DAY, errored=1
    )  # eligible 30d ago
    ended = make_batch("ended", created_ago=12 * DAY, ended_ago=10 * DAY)  # eligible 3d ago
    result = plan([ended, failed], NOW, POLICY)
    assert [d.batch.id for d in result.deletes] == ["failed", "ended"]


# -- the planner's bookkeeping


def test_pages_added_one_by_one_give_the_same_plan() -> None:
    """Planning page by page equals planning the whole listing at once."""
    batches = mixed_listing(5, 4, 3) + [
        make_batch(f"n{i}", created_ago=(9 + i) * DAY) for i in range(5)
    ]
    policy = replace(POLICY, keep_last=3, max_actions_per_run=4)
    planner = Planner(policy, NOW)
    for start in range(0, len(batches), 4):
        planner.add(batches[start : start + 4])
    assert planner.finish() == plan(batches, NOW, policy)


def test_the_planner_counts_statuses_and_the_oldest_batch() -> None:
    """Status counts and the oldest created_at per status, for the metrics."""
    batches = mixed_listing(2, 3)
    result = plan(batches, NOW, POLICY)
    assert result.status_counts == {"ended": 2, "in_progress": 3}
    assert result.oldest_created["ended"] == NOW - 100 * DAY
    assert result.oldest_created["in_progress"] == NOW - 2 * HOUR
    assert sum(result.decision_counts.values()) == result.listed == 5


def test_every_decision_is_streamed_once_and_none_is_stored() -> None:
    """on_decision sees each listed batch exactly once; the plan keeps only its actions."""
    batches = mixed_listing(2, 3) + [
        make_batch(f"n{i}", created_ago=(9 + i) * DAY) for i in range(3)
    ]
    seen: list[str] = []
    result = plan(
        batches, NOW, replace(POLICY, keep_last=2), on_decision=lambda d: seen.append(d.batch.id)
    )
    assert sorted(seen) == sorted(b.id for b in batches)
    assert {d.batch.id for d in result.actionable} == {"d000", "d001", "n2"}


def test_a_finished_planner_refuses_more_work() -> None:
    """add or finish after finish is a programming error."""
    planner = Planner(POLICY, NOW)
    planner.finish()
    with pytest.raises(RuntimeError):
        planner.add([])
    with pytest.raises(RuntimeError):
        planner.finish()


def test_policy_from_settings_takes_the_thresholds() -> None:
    """Policy.from_settings copies the policy variables, never dry_run."""
    settings = load_settings(
        {
            "ANTHROPIC_API_KEY": "sk-test-0123456789",
            "REAPER_MIN_AGE": "2h",
            "REAPER_CANCEL_STALE_AFTER": "never",
            "REAPER_KEEP_LAST": "4",
            "REAPER_PROTECT_IDS": "x,y",
            "REAPER_DELETE_FAILED_AFTER": "1d",
            "REAPER_DELETE_ENDED_AFTER": "0s",
            "REAPER_MAX_ACTIONS_PER_RUN": "7",
            "REAPER_MAX_DELETE_FRACTION": "0.5",
        }
    )
    assert Policy.from_settings(settings) == Policy(
        protect_ids=frozenset({"x", "y"}),
        min_age=2 * HOUR,
        cancel_stale_after=None,
        keep_last=4,
        delete_failed_after=DAY,
        delete_ended_after=timedelta(0),
        max_actions_per_run=7,
        max_delete_fraction=0.5,
    )


def test_plan_objects_compare_by_value() -> None:
    """Two plans of the same listing are equal (the basis of the permutation property)."""
    a: Plan = plan(mixed_listing(2, 2, 2), NOW, POLICY)
    assert a == plan(list(reversed(mixed_listing(2, 2, 2))), NOW, POLICY)


def test_actionable_lists_cancels_first_then_the_most_overdue() -> None:
    """Plan.actionable (what plan prints) is in priority order, whatever the guards did."""
    policy = replace(POLICY, max_actions_per_run=2)
    result = plan(mixed_listing(2, 0, 2), NOW, policy)
    assert [d.batch.id for d in result.actionable] == ["c001", "c000", "d000", "d001"]
