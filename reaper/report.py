"""Render plans and explanations for people (tables, text) and machines (JSON Lines records).

Pure functions from policy objects to strings and JSON-ready dicts: no I/O, no clock (ages are
measured from the plan's own ``now``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Final

from reaper.durations import format_age
from reaper.explain import Explanation, rule_number, stop_text
from reaper.metrics import workspace_label
from reaper.models import KNOWN_STATUSES, format_time
from reaper.policy import Action, Decision, Plan, Rule, StopReason

_ACTION_ORDER: Final = {Action.CANCEL: 0, Action.DELETE: 1, Action.KEEP: 2}


def workspace_name(workspace: str | None) -> str:
    """Return how people see a workspace: its id, or ``default`` for the key's own.

    The same name the metrics label it with (an empty id is never configured:
    REAPER_WORKSPACE_IDS drops it).
    """
    return workspace_label(workspace)


def _time(value: datetime | None) -> str | None:
    return None if value is None else format_time(value)


def decision_record(decision: Decision, workspace: str | None = None) -> dict[str, Any]:
    """Return the JSON Lines object of one decision (SPEC section 1's keys, RFC 3339 times)."""
    batch = decision.batch
    return {
        "id": batch.id,
        "workspace": batch.workspace if batch.workspace is not None else workspace,
        "processing_status": batch.processing_status,
        "action": str(decision.action),
        "rule": str(decision.rule),
        "created_at": _time(batch.created_at),
        "ended_at": _time(batch.ended_at),
    }


def guarded_actions(plan: Plan) -> Iterator[tuple[Decision, str]]:
    """Yield the actions the plan names, in priority order, with what the guards did to each."""
    for decision in (*plan.cancels, *plan.deletes):
        yield decision, ""
    for decision in plan.withheld:
        yield decision, f"withheld: {plan.stop}"
    for decision in plan.deferred_sample:
        yield decision, "deferred"


def json_row(decision: Decision, workspace: str | None) -> str:
    """Return one line of ``plan --json``: the decision's record."""
    return json.dumps(decision_record(decision, workspace))


def _counts(plans: Sequence[Plan]) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    by_action = {str(action): 0 for action in Action}
    by_rule: dict[str, int] = {}
    by_action_rule: dict[str, int] = {}
    for plan in plans:
        for (action, rule), n in plan.decision_counts.items():
            by_action[str(action)] += n
            by_rule[str(rule)] = by_rule.get(str(rule), 0) + n
            key = f"{action}/{rule}"
            by_action_rule[key] = by_action_rule.get(key, 0) + n
    order = {str(rule): i for i, rule in enumerate(Rule)}
    by_rule = dict(sorted(by_rule.items(), key=lambda item: order[item[0]]))
    by_action_rule = dict(
        sorted(by_action_rule.items(), key=lambda item: order[item[0].split("/", 1)[1]])
    )
    return by_action, by_rule, by_action_rule


def overall_stop(plans: Iterable[Plan]) -> StopReason | None:
    """Return the most serious stop of any workspace (an incomplete listing, then a safety stop)."""
    stops = {plan.stop for plan in plans}
    for reason in (StopReason.INCOMPLETE_LISTING, StopReason.SAFETY_STOP):
        if reason in stops:
            return reason
    return None


def summary_record(plans: Sequence[Plan]) -> dict[str, Any]:
    """Return the summary object that ends ``plan --json``: counts by action and rule, guards."""
    by_action, by_rule, by_action_rule = _counts(plans)
    stop = overall_stop(plans)
    return {
        "summary": True,
        "listed": sum(plan.listed for plan in plans),
        "by_action": by_action,
        "by_rule": by_rule,
        "by_action_rule": by_action_rule,
        "stop": None if stop is None else str(stop),
        "acting": {
            "cancel": sum(len(plan.cancels) for plan in plans),
            "delete": sum(len(plan.deletes) for plan in plans),
        },
        "deferred": sum(plan.deferred for plan in plans),
        "withheld": sum(plan.withheld_total for plan in plans),
        "unknown_statuses": sum(plan.unknown_count for plan in plans),
        "workspaces": [
            {
                "workspace": plan.workspace,
                "listed": plan.listed,
                "stop": None if plan.stop is None else str(plan.stop),
                "tripped": [str(guard) for guard in plan.tripped],
                "by_action_rule": _counts([plan])[2],
                "deferred": plan.deferred,
                "withheld": plan.withheld_total,
            }
            for plan in plans
        ],
    }


def summary_line(plans: Sequence[Plan]) -> str:
    """Return the last line of ``plan --json``: the summary object."""
    return json.dumps(summary_record(plans))


def format_plan_table(
    plans: Sequence[Plan],
    *,
    kept: Sequence[tuple[Plan, Decision]] = (),
    kept_more: int = 0,
    include_kept: bool = False,
) -> str:
    """Return a table of the actions, then the summary.

    The actions are the plan's own, in priority order: those acted on (or withheld by a stop)
    and the first deferred ones; a line says how many more are deferred. ``kept`` (``--all``)
    adds kept batches, ``kept_more`` how many more were left out of the table.
    """
    header = ("ID", "WORKSPACE", "STATUS", "AGE", "ACTION", "RULE", "GUARD")
    rows: list[tuple[str, ...]] = []
    shown = [(plan, d, note) for plan in plans for d, note in guarded_actions(plan)]
    for plan, decision, note in (*shown, *((plan, d, "") for plan, d in kept)):
        batch = decision.batch
        rows.append(
            (
                batch.id,
                workspace_name(plan.workspace),
                batch.processing_status,
                format_age(plan.now - batch.created_at),
                str(decision.action),
                str(decision.rule),
                note,
            )
        )
    lines = []
    if rows:
        widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
        for row in (header, *rows):
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    else:
        lines.append("No batch to cancel or delete." if not include_kept else "No batch listed.")
    hidden = sum(plan.deferred - len(plan.deferred_sample) for plan in plans)
    if hidden:
        lines.append(f"... and {hidden:,} more deferred actions, not shown")
    if kept_more:
        lines.append(f"... and {kept_more:,} more kept batches, not shown (plan --json --all)")
    lines.append("")
    lines.extend(format_plan_summary(plans))
    return "\n".join(lines) + "\n"


def format_plan_summary(plans: Sequence[Plan]) -> list[str]:
    """Return the summary lines: per workspace, counts by action and rule, and the guards."""
    lines = []
    for plan in plans:
        statuses = ", ".join(f"{s} {n}" for s, n in sorted(plan.status_counts.items()))
        lines.append(
            f"workspace {workspace_name(plan.workspace)}: {plan.listed} listed"
            + (f" ({statuses})" if statuses else "")
        )
        by_action_rule = _counts([plan])[2]
        for action in (Action.CANCEL, Action.DELETE, Action.KEEP):
            parts = [
                f"{key.split('/', 1)[1]} {n}"
                for key, n in by_action_rule.items()
                if key.startswith(f"{action}/")
            ]
            total = plan.count(action)
            lines.append(f"  {action}: {total}" + (f" ({', '.join(parts)})" if parts else ""))
        lines.extend(f"  {line}" for line in guard_lines(plan))
    if len(plans) > 1:
        by_action, _, _ = _counts(plans)
        totals = ", ".join(f"{action} {n}" for action, n in by_action.items())
        lines.append(f"all workspaces: {sum(p.listed for p in plans)} listed; {totals}")
    return lines


def guard_lines(plan: Plan) -> list[str]:
    """Describe what the guards did to one workspace's plan."""
    lines = []
    deletes, cancels = plan.fraction_deletes, plan.count(Action.CANCEL)
    if plan.stop is StopReason.INCOMPLETE_LISTING:
        lines.append("guard: the listing was incomplete: nothing would be done")
    elif plan.stop is StopReason.SAFETY_STOP:
        lines.append(f"guard: SAFETY STOP: {stop_text(plan)}")
    else:
        if deletes:
            counted = " (stale cancels included)" if cancels and plan.delete_canceled else ""
            lines.append(
                f"guard: deletes{counted} are {deletes / plan.listed:.1%} of the listing, "
                f"within REAPER_MAX_DELETE_FRACTION={plan.max_delete_fraction}"
            )
        if cancels:
            lines.append(
                f"guard: cancels are {cancels / plan.in_progress:.1%} of the in_progress "
                f"batches, within REAPER_MAX_CANCEL_FRACTION={plan.max_cancel_fraction}"
            )
    if plan.deferred:
        lines.append(
            f"guard: {plan.deferred} actions deferred to later cycles, past "
            f"REAPER_MAX_ACTIONS_PER_RUN={plan.max_actions_per_run}"
        )
    if plan.unknown_count:
        statuses = sorted(s for s in plan.status_counts if s not in KNOWN_STATUSES)
        lines.append(
            f"warning: {plan.unknown_count} batches with an unknown status "
            f"({', '.join(statuses)}) are kept"
        )
    return lines


def explanation_record(explanation: Explanation) -> dict[str, Any]:
    """Return ``explain --json``'s object: the decision, every rule's verdict, the guards."""
    decision = explanation.decision
    record = decision_record(decision, explanation.plan.workspace)
    deciding = explanation.deciding
    record.update(
        eligible_at=_time(decision.eligible_at),
        age_seconds=int(explanation.age.total_seconds()),
        disposition=str(explanation.disposition),
        guard=explanation.guard,
        rules=[
            {
                "rule": str(check.rule),
                "matched": check.matched,
                "decides": check is deciding,
                "reason": check.reason,
            }
            for check in explanation.checks
        ],
    )
    return record


def format_explanation(explanation: Explanation) -> str:
    """Return the explanation for people: the decision, then rule by rule, then the guards."""
    decision = explanation.decision
    batch = decision.batch
    plan = explanation.plan
    facts = [f"{batch.processing_status}", f"created {format_age(explanation.age)} ago"]
    if batch.ended_at is not None:
        facts.append(f"ended {format_age(plan.now - batch.ended_at)} ago")
    counts = batch.request_counts
    facts.append(
        f"requests: {counts.succeeded} succeeded, {counts.errored} errored, "
        f"{counts.expired} expired, {counts.canceled} canceled, {counts.processing} processing"
    )
    lines = [
        f"batch {batch.id} (workspace {workspace_name(plan.workspace)}): " + "; ".join(facts),
        f"decision: {decision.action} (rule {decision.rule})",
    ]
    if decision.eligible_at is not None:
        overdue = format_age(plan.now - decision.eligible_at)
        lines.append(f"eligible since {format_time(decision.eligible_at)} ({overdue} ago)")
    lines.append("rules, in order; the first that matches decides:")
    deciding = explanation.deciding
    width = max(len(str(check.rule)) for check in explanation.checks)
    for check in explanation.checks:
        number = rule_number(check.rule)
        verdict = "MATCH" if check.matched else "no"
        marker = "  <- decides" if check is deciding else ""
        name = str(check.rule).ljust(width)
        lines.append(f"  {number.rjust(2)}. {name}  {verdict.ljust(5)}  {check.reason}{marker}")
    lines.append(f"guards: {explanation.guard}")
    return "\n".join(lines) + "\n"
