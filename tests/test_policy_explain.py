"""``explain`` (reaper/explain.py): every rule's verdict with its numbers, and the guards."""

from __future__ import annotations

from dataclasses import replace

from reaper.explain import Disposition, explain
from reaper.models import Batch
from reaper.policy import Action, Policy, Rule
from tests.policy_helpers import DAY, HOUR, NOW, make_batch, mixed_listing

POLICY = Policy()


def explained(batch_id: str, batches: list[Batch], policy: Policy = POLICY) -> str:
    found = explain(batch_id, batches, NOW, policy)
    assert found is not None
    return "\n".join(f"{c.rule} {c.matched} {c.reason}" for c in found.checks)


def test_explain_gives_the_numbers_behind_a_delete() -> None:
    """'Why will this be deleted?': the ages and thresholds, rule by rule."""
    batch = make_batch("x", age=8 * DAY + 3 * HOUR, ended_ago=8 * DAY + 2 * HOUR)
    found = explain("x", [batch], NOW, POLICY)
    assert found is not None
    assert (found.decision.action, found.decision.rule) == (Action.DELETE, Rule.ENDED_RETENTION)
    assert found.deciding.rule is Rule.ENDED_RETENTION
    assert [c.rule for c in found.checks] == list(Rule)[:8]
    text = explained("x", [batch])
    assert "min_age False created 8d 3h ago, at least REAPER_MIN_AGE=1h" in text
    assert "ended 8d 2h ago, at least REAPER_DELETE_ENDED_AFTER=7d" in text
    assert found.disposition is Disposition.ACT


def test_explain_names_the_retention_rule_that_applies_instead() -> None:
    """Rule 6 points at rule 7 for a batch without failures, and rule 7 at rule 6 for one with."""
    clean = explained("x", [make_batch("x", age=9 * DAY, ended_ago=8 * DAY)])
    assert "failed_retention False 0 errored + 0 expired requests: rule 7 (no failures)" in clean
    failed = explained("y", [make_batch("y", age=9 * DAY, ended_ago=8 * DAY, errored=2)])
    assert "ended_retention False 2 errored + 0 expired requests: rule 6 (failures)" in failed


def test_explain_says_when_a_batch_becomes_eligible() -> None:
    """A kept batch's explanation says how long until its retention runs out."""
    text = explained("x", [make_batch("x", age=6 * DAY, ended_ago=5 * DAY)])
    assert "less than REAPER_DELETE_ENDED_AFTER=7d (eligible in 2d)" in text


def test_explain_ranks_keep_last() -> None:
    """Rule 5's verdict gives the batch's place among the ended batches."""
    batches = [make_batch(f"b{i}", age=(10 + i) * DAY) for i in range(4)]
    found = explain("b1", batches, NOW, replace(POLICY, keep_last=2))
    assert found is not None
    assert found.keep_last_rank == 2
    assert found.decision.rule is Rule.KEEP_LAST
    assert "number 2 of 4 ended batches, newest first, within REAPER_KEEP_LAST=2" in (
        found.deciding.reason
    )


def test_explain_reports_deferral_and_safety_stop() -> None:
    """The guards' effect on this batch: deferred past the cap, or withheld by a safety stop."""
    batches = mixed_listing(3, 1)
    deferred = explain("d002", batches, NOW, replace(POLICY, max_actions_per_run=2))
    stopped = explain("d002", batches, NOW, replace(POLICY, max_delete_fraction=0.5))
    assert deferred is not None
    assert stopped is not None
    assert deferred.disposition is Disposition.DEFERRED
    assert "number 3 of 3" in deferred.guard
    assert stopped.disposition is Disposition.WITHHELD
    assert "3 of 4 listed batches (75.0%)" in stopped.guard


def test_explain_an_unlisted_batch_is_none() -> None:
    """A batch that is not in the listing has no explanation."""
    assert explain("missing", mixed_listing(1, 1), NOW, POLICY) is None
