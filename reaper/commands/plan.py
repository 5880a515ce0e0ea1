"""``reaper plan``: list every batch of every workspace, decide, change nothing.

A table for people (the actions, the first deferred ones and how many more; ``--all`` adds up to
1,000 kept batches) with a summary by action and rule and what the guards would do, or
``--json``: JSON Lines streamed as the listing is decided, one object per batch that gets a
cancel or delete (``--all``: every batch), then one summary object. ``--out FILE`` also writes,
as the listing is decided, every cancel and delete the policy picks to the plan for review
(``reaper.reviewed``: one JSON document, written atomically, discarded if a listing fails) that
``reaper apply FILE`` acts on. Exit 0, 1 when the listing fails or the file cannot be written
(one line on stderr, no traceback), 78 for a bad environment (via ConfigError).

Logs (retries, say) go to stderr so that stdout carries nothing but the plan.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Final, TextIO

from reaper.client import BatchClient
from reaper.commands.wiring import command_settings, run_async, utc_now
from reaper.exits import EX_FAILED, EX_OK
from reaper.holds import HoldsError, read_holds, split_holds
from reaper.listing import BatchLister, plan_workspace
from reaper.models import Hold
from reaper.outcomes import ListingFailure
from reaper.policy import Action, Decision, Plan, Policy
from reaper.report import format_plan_table, json_row, summary_line
from reaper.reviewed import PlanError, PlanWriter
from reaper.settings import Settings


def main(args: argparse.Namespace) -> int:
    """List, decide and print the plan; return the exit code."""
    settings = command_settings(log_stream=sys.stderr)
    return run_async(
        run_plan(
            settings,
            now=utc_now(),
            json_output=args.json,
            show_all=args.all,
            out_file=args.out,
            out=sys.stdout,
            err=sys.stderr,
        )
    )


TABLE_KEPT_ROWS: Final = 1000  # --all as a table: kept batches shown; the rest are counted


class Rows:
    """Where the plan's rows go while the listing is decided, so that memory stays bounded.

    ``--json`` writes each row as its batch is decided (the summary comes last, once every
    workspace is listed); the table keeps at most ``TABLE_KEPT_ROWS`` kept batches for ``--all``
    and counts the rest (its actions come from the plans, which hold the cap's worth).
    """

    def __init__(self, out: TextIO, *, json_output: bool, show_all: bool) -> None:
        self.out = out
        self.json_output = json_output
        self.show_all = show_all
        self.kept: list[tuple[str | None, Decision]] = []
        self.kept_more = 0
        self.reviewed: PlanWriter | None = None  # plan --out: every action goes there too

    def sink(self, workspace: str | None) -> Callable[[Decision], None] | None:
        """Return what receives each decision of ``workspace`` (None: nothing to stream)."""
        shown = self._shown(workspace)
        reviewed = self.reviewed
        if reviewed is None:
            return shown

        def both(decision: Decision) -> None:
            if decision.action is not Action.KEEP:
                reviewed.add(decision.batch, decision.action, decision.rule)
            if shown is not None:
                shown(decision)

        return both

    def _shown(self, workspace: str | None) -> Callable[[Decision], None] | None:
        if self.json_output:
            return lambda d: self._write(d, workspace)
        if self.show_all:
            return lambda d: self._sample(d, workspace)
        return None

    def _write(self, decision: Decision, workspace: str | None) -> None:
        if self.show_all or decision.action is not Action.KEEP:
            self.out.write(json_row(decision, workspace) + "\n")

    def _sample(self, decision: Decision, workspace: str | None) -> None:
        if decision.action is not Action.KEEP:
            return
        if len(self.kept) < TABLE_KEPT_ROWS:
            self.kept.append((workspace, decision))
        else:
            self.kept_more += 1


def hold_map(settings: Settings, now: datetime) -> dict[str, Hold]:
    """Read ``REAPER_HOLDS_FILE`` (raise HoldsError): each held id's active hold, else its last."""
    if settings.holds_file is None:
        return {}
    holds = split_holds(read_holds(settings.holds_file), now)
    found: dict[str, Hold] = {}
    for hold in sorted(holds.expired, key=lambda h: h.until):
        found[hold.id] = hold
    found.update(holds.active)
    return found


async def collect_plans(
    settings: Settings, client: BatchLister, now: datetime, rows: Rows | None = None
) -> tuple[list[Plan], ListingFailure | None]:
    """Plan every workspace on its own (SPEC section 3); stop at the first failed listing."""
    policy = Policy.from_settings(settings)
    holds = hold_map(settings, now)
    plans: list[Plan] = []
    for workspace in settings.workspaces:
        sink = None if rows is None else rows.sink(workspace)
        listing = await plan_workspace(
            client,
            workspace,
            policy,
            now,
            max_clock_skew=settings.max_clock_skew,
            holds=holds,
            on_decision=sink,
        )
        if listing.failure is not None:
            return plans, listing.failure
        plans.append(listing.plan)
    return plans, None


async def run_plan(
    settings: Settings,
    *,
    now: datetime,
    json_output: bool,
    show_all: bool,
    out: TextIO,
    err: TextIO,
    client: BatchLister | None = None,
    out_file: Path | None = None,
) -> int:
    """Plan with ``client`` (a BatchClient from the settings if None) and print the result.

    With ``--json`` the rows are already out when a listing fails: the summary line, missing
    then, is what says the plan is complete. With ``out_file`` the plan for review is written
    there too; nothing is written when a listing fails (a partial plan must not be applied).
    """
    rows = Rows(out, json_output=json_output, show_all=show_all)
    try:
        with contextlib.ExitStack() as stack:
            if out_file is not None:
                rows.reviewed = stack.enter_context(PlanWriter(out_file, settings, created_at=now))
            if client is not None:
                plans, failure = await collect_plans(settings, client, now, rows)
            else:
                async with BatchClient.from_settings(settings) as own:
                    plans, failure = await collect_plans(settings, own, now, rows)
            if failure is not None and rows.reviewed is not None:
                rows.reviewed.discard()
    except (HoldsError, PlanError) as exc:
        print(f"reaper: {exc}", file=err)
        return EX_FAILED
    if failure is not None:
        out.flush()
        print(f"reaper: listing failed: {failure.message}", file=err)
        return EX_FAILED
    if json_output:
        out.write(summary_line(plans) + "\n")
    else:
        by_workspace = {plan.workspace: plan for plan in plans}
        kept = [(by_workspace[workspace], d) for workspace, d in rows.kept]
        out.write(
            format_plan_table(plans, kept=kept, kept_more=rows.kept_more, include_kept=show_all)
        )
        out.write("Nothing was changed: plan only lists and decides.\n")
    if rows.reviewed is not None:
        print(f"reaper: wrote {rows.reviewed.count:,} actions for review to {out_file}", file=err)
    out.flush()
    return EX_OK
