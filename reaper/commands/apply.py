"""``reaper apply FILE``: act on a reviewed plan, and on nothing it does not name (SPEC section 3).

The plan is read and checked first (``reaper.reviewed.load_plan``): unreadable, older than
``REAPER_PLAN_MAX_AGE``, or made for another base URL, workspace set or policy, and apply says so
in one line and exits 78 before a single request is sent. Otherwise it runs one cycle, as
``reaper once`` does (the one listing path, the guards, archive, ledger, rate and concurrency),
with a ``reaper.reconcile.Reconciler`` narrowing each workspace's fresh plan to the intersection:
the plan's batches to which the policy still gives the same action. ``REAPER_DRY_RUN=true`` (the
default) only reports. Exit codes as ``once``: 0, 1, 3; 78 for a bad environment or plan.

Logs go to stderr; what was done and what was skipped (by reason, then batch by batch) go to
stdout.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TextIO

import structlog

from reaper.commands.once import run_once
from reaper.commands.wiring import command_settings, run_async, utc_now
from reaper.cycle import CycleReport, PlanSelector
from reaper.durations import format_age
from reaper.exits import EX_CONFIG
from reaper.models import format_time
from reaper.outcomes import ActionOutcome
from reaper.policy import Action
from reaper.reconcile import REASON_TEXT, Reconciler, SkipReason
from reaper.report import workspace_name
from reaper.reviewed import PlanError, ReviewedPlan, load_plan
from reaper.settings import Settings

log = structlog.get_logger("reaper.apply")

# Runs the cycle that acts on the narrowed plans (run_once; tests pass one on the emulator).
CycleRunner = Callable[[PlanSelector], Awaitable[CycleReport]]


def main(args: argparse.Namespace) -> int:
    """Check the plan, act on what is still due in it, print the report; return the exit code."""
    settings = command_settings(log_stream=sys.stderr)
    return run_async(
        run_apply(settings, Path(args.plan), now=utc_now, out=sys.stdout, err=sys.stderr)
    )


async def run_apply(
    settings: Settings,
    path: Path,
    *,
    now: Callable[[], datetime],
    out: TextIO,
    err: TextIO,
    cycle: CycleRunner | None = None,
) -> int:
    """Apply the plan at ``path`` with ``cycle`` (``run_once`` if None); return the exit code."""
    try:
        reviewed = load_plan(path, settings, now())
    except PlanError as exc:
        print(f"reaper: {exc}", file=err)
        return EX_CONFIG
    reconciler = Reconciler(reviewed.actions)
    if cycle is None:
        report = await run_once(settings, now=now, select=reconciler)
    else:
        report = await cycle(reconciler)
    for skipped in reconciler.skipped:
        log.info(
            "apply.skipped",
            id=skipped.id,
            workspace=workspace_name(skipped.workspace),
            planned=skipped.planned,
            reason=str(skipped.reason),
            action_now=skipped.action_now,
            rule_now=skipped.rule_now,
        )
    out.write(format_apply(reviewed, reconciler, report, now()))
    out.flush()
    return report.exit_code()


def format_apply(
    reviewed: ReviewedPlan, reconciler: Reconciler, report: CycleReport, now: datetime
) -> str:
    """Describe for people what apply did with the plan, and what it skipped and why."""
    planned = reconciler.planned
    lines = [
        f"Plan {reviewed.path}, made {format_time(reviewed.created_at)}"
        f" ({format_age(now - reviewed.created_at)} ago): {planned:,} action{_s(planned)}.",
    ]
    verb = "Would act" if report.dry_run else "Acting"
    lines.append(
        f"{verb} on {reconciler.matched:,} of them: the policy still gives them the same action."
    )
    counts = reconciler.skipped_by_reason()
    skipped = sum(counts.values())
    lines.append(
        f"Skipped {skipped:,}: "
        + ", ".join(f"{counts[str(reason)]:,} {REASON_TEXT[reason]}" for reason in SkipReason)
        + "."
    )
    unseen = planned - reconciler.matched - skipped
    if unseen:
        lines.append(
            f"Not looked at: {unseen:,}, in workspaces that could not be listed"
            " (nothing done there)."
        )
    for s in sorted(reconciler.skipped, key=lambda s: (str(s.reason), s.id)):
        now_text = "" if s.action_now is None else f" (now {s.action_now}: {s.rule_now})"
        lines.append(
            f"  skipped {s.id} in {workspace_name(s.workspace)}: planned {s.planned},"
            f" {REASON_TEXT[s.reason]}{now_text}"
        )
    if not report.dry_run:
        lines.append(
            f"Done: {report.count(Action.CANCEL, ActionOutcome.DONE):,} canceled,"
            f" {report.count(Action.DELETE, ActionOutcome.DONE):,} deleted."
        )
    lines.append(report.summary_text())
    lines.append("Batches the plan does not name were left alone.")
    return "\n".join(lines) + "\n"


def _s(n: int) -> str:
    return "" if n == 1 else "s"
