"""``explain``: the decision for one batch, every rule's verdict with its numbers, and the guards.

Pure, like the policy it explains: the listing and ``now`` in, an Explanation out. It plans the
whole listing (keep-last and the guards depend on it) and then evaluates every rule on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from reaper.durations import format_age, format_duration
from reaper.models import CANCELING, ENDED, IN_PROGRESS, KNOWN_STATUSES, Batch, Hold, format_time
from reaper.policy import Action, Decision, Guard, Plan, Policy, Rule, StopReason, plan


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
    holds: Mapping[str, Hold] | None = None,
) -> Explanation | None:
    """Explain the decision for ``batch_id`` within its listing; None if it is not listed."""
    items = list(batches)
    target = next((b for b in items if b.id == batch_id), None)
    if target is None:
        return None
    holds = holds or {}
    decided: list[Decision] = []
    # Every action's priority key: the target's place in the queue (explain is a one-off command).
    keys: list[tuple[int, datetime, str]] = []

    def seen(decision: Decision) -> None:
        if decision.batch.id == batch_id:
            decided.append(decision)
        if decision.action is not Action.KEEP:
            keys.append(_priority(decision))

    result = plan(items, now, policy, workspace=workspace, holds=holds, on_decision=seen)
    ended = [b for b in items if b.processing_status == ENDED]
    rank = None
    if target.processing_status == ENDED:
        key = (target.created_at, target.id)
        rank = 1 + sum(1 for b in ended if (b.created_at, b.id) > key)
    decision = decided[0]
    disposition, guard = _locate(decision, result, keys)
    checks = _checks(target, now, policy, holds.get(target.id), rank, len(ended))
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


def _priority(decision: Decision) -> tuple[int, datetime, str]:
    assert decision.eligible_at is not None
    return (decision.action is Action.DELETE, decision.eligible_at, decision.batch.id)


def _locate(
    decision: Decision, result: Plan, keys: list[tuple[int, datetime, str]]
) -> tuple[Disposition, str]:
    if decision.action is Action.KEEP:
        return Disposition.KEEP, "nothing to do: the batch is kept"
    if result.stop is StopReason.INCOMPLETE_LISTING:
        return Disposition.WITHHELD, "withheld: the listing was incomplete"
    if result.stop is not None:
        return Disposition.WITHHELD, "withheld by a safety stop: " + stop_text(result)
    cap = result.max_actions_per_run
    planned = len(keys)
    mine = _priority(decision)
    position = 1 + sum(1 for key in keys if key < mine)
    if position <= cap:
        return (
            Disposition.ACT,
            f"acts this cycle: within REAPER_MAX_ACTIONS_PER_RUN={cap} ({planned} planned)",
        )
    return (
        Disposition.DEFERRED,
        (
            f"deferred: number {position} of {planned} in priority order (cancels first, then "
            f"the most overdue deletes), past REAPER_MAX_ACTIONS_PER_RUN={cap}"
        ),
    )


_NUMBERS = ("1", "1b", "2", "3", "4", "5", "5b", "6", "7", "8", "8")


def rule_number(rule: Rule) -> str:
    """Return the rule's number in SPEC section 3 (1b and 5b included)."""
    return _NUMBERS[list(Rule).index(rule)]


def stop_text(result: Plan) -> str:
    """Say which fraction guard(s) stopped the workspace, with the numbers."""
    parts = []
    if Guard.DELETE_FRACTION in result.tripped:
        deletes = result.fraction_deletes
        counted = " (stale cancels included)" if result.delete_canceled else ""
        parts.append(
            f"{deletes} of {result.listed} listed batches ({deletes / result.listed:.1%}) would be "
            f"deleted{counted}, more than REAPER_MAX_DELETE_FRACTION={result.max_delete_fraction}"
        )
    if Guard.CANCEL_FRACTION in result.tripped:
        cancels = result.count(Action.CANCEL)
        parts.append(
            f"{cancels} of {result.in_progress} in_progress batches "
            f"({cancels / result.in_progress:.1%}) would be canceled, more than "
            f"REAPER_MAX_CANCEL_FRACTION={result.max_cancel_fraction}"
        )
    return "; ".join(parts) + ": no cancel and no delete in this workspace"


def _threshold_text(name: str, threshold: timedelta | None) -> str:
    return f"{name}={format_duration(threshold)}"


def _checks(
    batch: Batch,
    now: datetime,
    policy: Policy,
    hold: Hold | None,
    rank: int | None,
    ended_listed: int,
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

    checks.append(_hold_check(hold, now))

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

    checks.append(_canceled_stale_check(batch, policy))

    checks.extend(_retention_checks(batch, now, policy))

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


def _hold_check(hold: Hold | None, now: datetime) -> RuleCheck:
    if hold is None:
        return RuleCheck(Rule.HELD, False, "no hold in REAPER_HOLDS_FILE")
    who = f"; reason: {hold.reason or '-'}; by: {hold.by or '-'}"
    until = format_time(hold.until)
    if hold.active(now):
        return RuleCheck(
            Rule.HELD,
            True,
            f"held until {until} (for {format_age(hold.until - now)} more){who}",
        )
    return RuleCheck(Rule.HELD, False, f"its hold expired at {until}: ignored{who}")


def _canceled_stale_check(batch: Batch, policy: Policy) -> RuleCheck:
    stale_after = policy.cancel_stale_after
    limit = _threshold_text("REAPER_CANCEL_STALE_AFTER", stale_after)
    initiated = batch.cancel_initiated_at
    if batch.processing_status != ENDED:
        return RuleCheck(Rule.CANCELED_STALE, False, f"status is {batch.processing_status}")
    if not policy.delete_canceled:
        return RuleCheck(Rule.CANCELED_STALE, False, "REAPER_DELETE_CANCELED=false")
    if initiated is None:
        return RuleCheck(Rule.CANCELED_STALE, False, "never canceled (no cancel_initiated_at)")
    after = format_age(initiated - batch.created_at)
    if stale_after is None:
        return RuleCheck(Rule.CANCELED_STALE, False, f"canceled {after} after creation; {limit}")
    if batch.ended_at is None:
        return RuleCheck(Rule.CANCELED_STALE, False, "ended, but the API gave no ended_at")
    if initiated - batch.created_at >= stale_after:
        return RuleCheck(
            Rule.CANCELED_STALE,
            True,
            f"canceled {after} after creation, at least {limit}: delete (eligible since it ended)",
        )
    return RuleCheck(
        Rule.CANCELED_STALE, False, f"canceled {after} after creation, less than {limit}"
    )


def _retention_checks(batch: Batch, now: datetime, policy: Policy) -> list[RuleCheck]:
    """Rules 6 and 7: each names the other when the batch's failures choose it instead."""
    status = batch.processing_status
    checks: list[RuleCheck] = []
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
    return checks
