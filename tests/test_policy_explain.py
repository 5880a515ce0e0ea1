"""``explain`` (reaper/explain.py): every rule's verdict with its numbers, and the guards."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

from reaper.commands.explain import run_explain
from reaper.explain import Disposition, explain
from reaper.models import Batch, Hold
from reaper.policy import Action, Policy, Rule
from reaper.settings import load_settings
from tests.policy_helpers import DAY, HOUR, NOW, make_batch, mixed_listing

POLICY = Policy()


def explained(batch_id: str, batches: list[Batch], policy: Policy = POLICY) -> str:
    found = explain(batch_id, batches, NOW, policy)
    assert found is not None
    return "\n".join(f"{c.rule} {c.matched} {c.reason}" for c in found.checks)


def test_explain_gives_the_numbers_behind_a_delete() -> None:
    """'Why will this be deleted?': the ages and thresholds, rule by rule."""
    batch = make_batch("x", created_ago=8 * DAY + 3 * HOUR, ended_ago=8 * DAY + 2 * HOUR)
    found = explain("x", [batch], NOW, POLICY)
    assert found is not None
    assert (found.decision.action, found.decision.rule) == (Action.DELETE, Rule.ENDED_RETENTION)
    assert found.deciding.rule is Rule.ENDED_RETENTION
    assert [c.rule for c in found.checks] == list(Rule)[:10]
    text = explained("x", [batch])
    assert "min_age False created 8d 3h ago, at least REAPER_MIN_AGE=1h" in text
    assert "ended 8d 2h ago, at least REAPER_DELETE_ENDED_AFTER=7d" in text
    assert found.disposition is Disposition.ACT


def test_explain_names_the_retention_rule_that_applies_instead() -> None:
    """Rule 6 points at rule 7 for a batch without failures, and rule 7 at rule 6 for one with."""
    clean = explained("x", [make_batch("x", created_ago=9 * DAY, ended_ago=8 * DAY)])
    assert "failed_retention False 0 errored + 0 expired requests: rule 7 (no failures)" in clean
    failed = explained("y", [make_batch("y", created_ago=9 * DAY, ended_ago=8 * DAY, errored=2)])
    assert "ended_retention False 2 errored + 0 expired requests: rule 6 (failures)" in failed


def test_explain_says_when_a_batch_becomes_eligible() -> None:
    """A kept batch's explanation says how long until its retention runs out."""
    text = explained("x", [make_batch("x", created_ago=6 * DAY, ended_ago=5 * DAY)])
    assert "less than REAPER_DELETE_ENDED_AFTER=7d (eligible in 2d)" in text


def test_explain_ranks_keep_last() -> None:
    """Rule 5's verdict gives the batch's place among the ended batches."""
    batches = [make_batch(f"b{i}", created_ago=(10 + i) * DAY) for i in range(4)]
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


def test_explain_shows_the_hold_with_until_reason_and_owner() -> None:
    """An active hold decides (rule held) and explain says until when, why and who; an expired
    one is named as ignored."""
    batch = make_batch("x", created_ago=90 * DAY)
    holds = {"x": Hold("x", NOW + 2 * DAY, reason="legal review", by="ana@example.com")}
    found = explain("x", [batch], NOW, POLICY, holds=holds)
    assert found is not None
    assert found.decision.rule is Rule.HELD
    assert found.deciding.reason == (
        "held until 2026-03-04T09:30:00.000000Z (for 2d more); reason: legal review; "
        "by: ana@example.com"
    )
    expired = {"x": Hold("x", NOW - HOUR, reason="done", by="bo")}
    found = explain("x", [batch], NOW, POLICY, holds=expired)
    assert found is not None
    assert found.decision.rule is Rule.ENDED_RETENTION
    held = next(c for c in found.checks if c.rule is Rule.HELD)
    assert not held.matched
    assert "expired at 2026-03-02T08:30:00.000000Z: ignored; reason: done; by: bo" in held.reason


def test_explain_shows_canceled_stale() -> None:
    """Rule 5b: canceled once stale, so deleted as soon as it ended, with the numbers."""
    batch = make_batch("x", created_ago=2 * DAY, ended_ago=HOUR, canceled_after=13 * HOUR)
    found = explain("x", [batch], NOW, POLICY)
    assert found is not None
    assert found.decision.rule is Rule.CANCELED_STALE
    assert found.deciding.reason == (
        "canceled 13h after creation, at least REAPER_CANCEL_STALE_AFTER=12h: delete "
        "(eligible since it ended)"
    )
    early = make_batch("y", created_ago=2 * DAY, ended_ago=HOUR, canceled_after=2 * HOUR)
    found = explain("y", [early], NOW, POLICY)
    assert found is not None
    check = next(c for c in found.checks if c.rule is Rule.CANCELED_STALE)
    assert (check.matched, check.reason) == (
        False,
        "canceled 2h after creation, less than REAPER_CANCEL_STALE_AFTER=12h",
    )


def test_explain_names_the_guard_that_stopped_the_workspace() -> None:
    """A cancel withheld by the cancel-fraction guard says so, with its numbers."""
    batches = mixed_listing(0, 2, 2)
    found = explain("c000", batches, NOW, replace(POLICY, max_cancel_fraction=0.25))
    assert found is not None
    assert found.disposition is Disposition.WITHHELD
    assert found.guard == (
        "withheld by a safety stop: 2 of 4 in_progress batches (50.0%) would be canceled, "
        "more than REAPER_MAX_CANCEL_FRACTION=0.25: no cancel and no delete in this workspace"
    )
    found = explain("c000", batches, NOW, replace(POLICY, max_delete_fraction=0.25))
    assert found is not None
    assert found.guard.startswith(
        "withheld by a safety stop: 2 of 4 listed batches (50.0%) would be deleted "
        "(stale cancels included), more than REAPER_MAX_DELETE_FRACTION=0.25"
    )


class _Lister:
    """One page with the given batches: what explain lists."""

    def __init__(self, batches: list[Batch]) -> None:
        self.batches = batches

    async def list_pages(self, workspace: str | None) -> AsyncIterator[list[Batch]]:
        yield self.batches


def test_the_explain_command_reads_the_holds_file(tmp_path: Path) -> None:
    """``reaper explain`` reads REAPER_HOLDS_FILE and shows the hold; a broken file: exit 1."""
    holds = tmp_path / "holds.jsonl"
    holds.write_text(
        '{"id": "x", "until": "2026-03-09T00:00:00Z", "reason": "audit", "by": "ana"}\n'
    )
    settings = load_settings({"ANTHROPIC_API_KEY": "sk-ant-x", "REAPER_HOLDS_FILE": str(holds)})
    out, err = io.StringIO(), io.StringIO()
    lister = _Lister([make_batch("x", created_ago=90 * DAY)])
    run = run_explain(settings, "x", now=NOW, json_output=False, out=out, err=err, client=lister)
    assert asyncio.run(run) == 0
    assert "decision: keep (rule held)" in out.getvalue()
    assert "held until 2026-03-09T00:00:00.000000Z (for 6d 14h more); reason: audit" in (
        out.getvalue()
    )
    holds.write_text("{not json\n")
    out, err = io.StringIO(), io.StringIO()
    run = run_explain(settings, "x", now=NOW, json_output=False, out=out, err=err, client=lister)
    assert asyncio.run(run) == 1
    assert out.getvalue() == ""
    assert err.getvalue().startswith("reaper: REAPER_HOLDS_FILE=")
    assert err.getvalue().count("\n") == 1
