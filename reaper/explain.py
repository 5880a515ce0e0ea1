"""``explain``: the decision for one batch, every rule's verdict with its numbers, and the guards.

Pure, like the policy it explains: the listing and ``now`` in, an Explanation out. It plans the
whole listing (keep-last and the guards depend on it) and then evaluates every rule on its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from reaper.durations import format_age, format_duration
from reaper.models import CANCELING, ENDED, IN_PROGRESS, KNOWN_STATUSES, Batch
from reaper.policy import Action, Decision, Plan, Policy, Rule, StopReason, plan


class Disposition(StrEnum):
    """What happens to one batch's decision once the guards have run."""

    KEEP = "keep"  # no action decided
    ACT = "act"  # acted on this cycle (unless dry run)
    DEFERRED = "deferred"  # past the per-run cap: a later cycle
    WITHHELD = "withheld"  # a stop held it back


@dataclass(frozen=True, slots=True)
class RuleCheck:
    """Whether one rule matches a batch, and why, with the numbers."""

    rule: Rule
    matched: bool
    reason: str


@dataclass(frozen=True)
class Explanation:
    """The decision for one batch, every rule's verdict in SPEC order, and the guards' effect."""

    decision: Decision
    checks: tuple[RuleCheck, ...]
    disposition: Disposition
    guard: str
    age: timedelta
    keep_last_rank: int | None
    ended_listed: int
    plan: Plan

    @property
    def deciding(self) -> RuleCheck:
        """Return the first matching rule's check: the one that decided."""
        return next(check for check in self.checks if check.matched)


def explain(
    batch_id: str,
    batches: Iterable[Batch],
    now: datetime,
    policy: Policy,
    *,
    workspace: str | None = None,
) -> Explanation | None:
    """Explain the decision for ``batch_id`` within its listing; None if it is not listed."""
    items = list(batches)
    target = next((b for b in items if b.id == batch_id), None)
    if target is None:
        return None
    result = plan(items, now, policy, workspace=workspace, record_kept=True)
    ended = [b for b in items if b.processing_status == ENDED]
    rank = None
    if target.processing_status == ENDED:
        key = (target.created_at, target.id)
        rank = 1 + sum(1 for b in ended if (b.created_at, b.id) > key)
    decision, disposition, guard = _locate(target, result)
    checks = _checks(target, now, policy, rank, len(ended))
    return Explanation(
        decision=decision,
        checks=checks,
        disposition=disposition,
        guard=guard,
        age=now - target.created_at,
        keep_last_rank=rank,
        ended_listed=len(ended),
        plan=result,
    )


def _locate(target: Batch, result: Plan) -> tuple[Decision, Disposition, str]:
    def find(decisions: tuple[Decision, ...]) -> Decision | None:
        return next((d for d in decisions if d.batch.id == target.id), None)

    cap = result.max_actions_per_run
    planned = len(result.cancels) + len(result.deletes) + len(result.deferred)
    if (found := find(result.cancels) or find(result.deletes)) is not None:
        guard = f"acts this cycle: within REAPER_MAX_ACTIONS_PER_RUN={cap} ({planned} planned)"
        if result.stop is StopReason.SAFETY_STOP:
            guard += "; a safety stop holds back deletes, but cancels still go"
        return found, Disposition.ACT, guard
    if (found := find(result.deferred)) is not None:
        position = len(result.cancels) + len(result.deletes) + result.deferred.index(found) + 1
        return (
            found,
            Disposition.DEFERRED,
            (
                f"deferred: number {position} of {planned} in priority order (cancels first, then "
                f"the most overdue deletes), past REAPER_MAX_ACTIONS_PER_RUN={cap}"
            ),
        )
    if (found := find(result.withheld)) is not None:
        if result.stop is StopReason.INCOMPLETE_LISTING:
            return found, Disposition.WITHHELD, "withheld: the listing was incomplete"
        deletes = result.count(Action.DELETE)
        return (
            found,
            Disposition.WITHHELD,
            (
                f"withheld by a safety stop: {deletes} of {result.listed} listed batches "
                f"({deletes / result.listed:.1%}) would be deleted, more than "
                f"REAPER_MAX_DELETE_FRACTION={result.max_delete_fraction}"
            ),
        )
    found = next(d for d in result.kept if d.batch.id == target.id)
    return found, Disposition.KEEP, "nothing to do: the batch is kept"


def _threshold_text(name: str, threshold: timedelta | None) -> str:
    return f"{name}={format_duration(threshold)}"


def _checks(
    batch: Batch, now: datetime, policy: Policy, rank: int | None, ended_listed: int
) -> tuple[RuleCheck, ...]:
    """Evaluate every rule on its own (independently of precedence), with readable numbers."""
    status = batch.processing_status
    age = now - batch.created_at
    age_text = f"created {format_age(age)} ago"
    checks = []

    protected = batch.id in policy.protect_ids
    checks.append(
        RuleCheck(
            Rule.PROTECTED,
            protected,
            "its id is in REAPER_PROTECT_IDS"
            if protected
            else f"its id is not in REAPER_PROTECT_IDS ({len(policy.protect_ids)} ids)",
        )
    )

    young = age < policy.min_age
    limit = _threshold_text("REAPER_MIN_AGE", policy.min_age)
    checks.append(
        RuleCheck(
            Rule.MIN_AGE,
            young,
            f"{age_text}, less than {limit}" if young else f"{age_text}, at least {limit}",
        )
    )

    stale_after = policy.cancel_stale_after
    limit = _threshold_text("REAPER_CANCEL_STALE_AFTER", stale_after)
    if status != IN_PROGRESS:
        checks.append(RuleCheck(Rule.STALE, False, f"status is {status}, not in_progress"))
    elif stale_after is None:
        checks.append(RuleCheck(Rule.STALE, False, f"in_progress, {age_text}; {limit}"))
    elif age >= stale_after:
        checks.append(RuleCheck(Rule.STALE, True, f"in_progress, {age_text}, at least {limit}"))
    else:
        due = format_age(stale_after - age)
        checks.append(
            RuleCheck(
                Rule.STALE,
                False,
                f"in_progress, {age_text}, less than {limit} (stale in {due})",
            )
        )

    waiting = status in (IN_PROGRESS, CANCELING)
    checks.append(
        RuleCheck(
            Rule.NOT_ENDED,
            waiting,
            f"status is {status}: wait until it ends" if waiting else f"status is {status}",
        )
    )

    limit = f"REAPER_KEEP_LAST={policy.keep_last}"
    if status != ENDED or rank is None:
        checks.append(RuleCheck(Rule.KEEP_LAST, False, f"status is {status}, not ended"))
    else:
        within = rank <= policy.keep_last
        where = "within" if within else "beyond"
        checks.append(
            RuleCheck(
                Rule.KEEP_LAST,
                within,
                f"number {rank} of {ended_listed} ended batches, newest first, {where} {limit}",
            )
        )

    failed = batch.request_counts.errored + batch.request_counts.expired > 0
    counts = (
        f"{batch.request_counts.errored} errored + {batch.request_counts.expired} expired requests"
    )
    for rule, wants_failed, threshold, name in (
        (Rule.FAILED_RETENTION, True, policy.delete_failed_after, "REAPER_DELETE_FAILED_AFTER"),
        (Rule.ENDED_RETENTION, False, policy.delete_ended_after, "REAPER_DELETE_ENDED_AFTER"),
    ):
        limit = _threshold_text(name, threshold)
        if status != ENDED:
            checks.append(RuleCheck(rule, False, f"status is {status}, not ended"))
        elif failed != wants_failed:
            other = "6 (failures)" if failed else "7 (no failures)"
            checks.append(RuleCheck(rule, False, f"{counts}: rule {other} applies instead"))
        elif batch.ended_at is None:
            checks.append(RuleCheck(rule, False, "ended, but the API gave no ended_at"))
        else:
            ended_age = now - batch.ended_at
            ended_text = f"{counts}, ended {format_age(ended_age)} ago"
            if threshold is None:
                checks.append(RuleCheck(rule, False, f"{ended_text}; {limit}"))
            elif ended_age >= threshold:
                checks.append(RuleCheck(rule, True, f"{ended_text}, at least {limit}"))
            else:
                due = format_age(threshold - ended_age)
                checks.append(
                    RuleCheck(rule, False, f"{ended_text}, less than {limit} (eligible in {due})")
                )

    if status in KNOWN_STATUSES:
        # "Otherwise" matches only when no earlier rule did.
        earlier = any(check.matched for check in checks)
        reason = "an earlier rule decided" if earlier else "no earlier rule matched: keep"
        checks.append(RuleCheck(Rule.RETAINED, not earlier, reason))
    else:
        checks.append(
            RuleCheck(Rule.UNKNOWN_STATUS, True, f"unknown status {status!r}: kept, with a warning")
        )
    return tuple(checks)
