"""``reaper plan``: list every batch of every workspace, decide, change nothing.

A table for people (actionable batches; ``--all`` adds the kept ones) with a summary by action and
rule and what the guards would do, or ``--json``: JSON Lines, one object per batch that gets a
cancel or delete (``--all``: every batch), then one summary object. Exit 0, 1 when the listing
fails (one line on stderr, no traceback), 78 for a bad environment (via ConfigError).

Logs (retries, say) go to stderr so that stdout carries nothing but the plan.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import TextIO

from reaper.client import BatchClient
from reaper.commands.wiring import command_settings, run_async, utc_now
from reaper.exits import EX_FAILED, EX_OK
from reaper.listing import BatchLister, plan_workspace
from reaper.outcomes import ListingFailure
from reaper.policy import Plan, Policy
from reaper.report import format_plan_table, plan_json_lines
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
            out=sys.stdout,
            err=sys.stderr,
        )
    )


async def collect_plans(
    settings: Settings, client: BatchLister, now: datetime, *, record_kept: bool = False
) -> tuple[list[Plan], ListingFailure | None]:
    """Plan every workspace on its own (SPEC section 3); stop at the first failed listing."""
    policy = Policy.from_settings(settings)
    plans: list[Plan] = []
    for workspace in settings.workspaces:
        listing = await plan_workspace(client, workspace, policy, now, record_kept=record_kept)
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
) -> int:
    """Plan with ``client`` (a BatchClient from the settings if None) and print the result."""
    if client is not None:
        plans, failure = await collect_plans(settings, client, now, record_kept=show_all)
    else:
        async with BatchClient.from_settings(settings) as own:
            plans, failure = await collect_plans(settings, own, now, record_kept=show_all)
    if failure is not None:
        print(f"reaper: listing failed: {failure.message}", file=err)
        return EX_FAILED
    if json_output:
        for line in plan_json_lines(plans, include_kept=show_all):
            out.write(line + "\n")
    else:
        out.write(format_plan_table(plans, include_kept=show_all))
        out.write("Nothing was changed: plan only lists and decides.\n")
    out.flush()
    return EX_OK
