"""``reaper explain BATCH_ID``: the decision for one batch and, rule by rule, why.

Lists each workspace in turn until the batch turns up (keep-last and the guards depend on the
whole listing), then prints the decision, every rule's verdict with the numbers (its age, the
threshold), and what the guards would do. Exit 0; 1 when the batch is not listed or the listing
fails; 78 for a bad environment.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import TextIO

from reaper.client import BatchClient
from reaper.commands.plan import hold_map
from reaper.commands.wiring import command_settings, run_async, utc_now
from reaper.exits import EX_FAILED, EX_OK
from reaper.explain import Explanation, explain
from reaper.holds import HoldsError
from reaper.listing import BatchLister, plan_workspace
from reaper.models import Batch
from reaper.outcomes import ListingFailure
from reaper.policy import Policy
from reaper.report import explanation_record, format_explanation, workspace_name
from reaper.settings import Settings


def main(args: argparse.Namespace) -> int:
    """Explain one batch's decision; return the exit code."""
    settings = command_settings(log_stream=sys.stderr)
    return run_async(
        run_explain(
            settings,
            args.batch_id,
            now=utc_now(),
            json_output=args.json,
            out=sys.stdout,
            err=sys.stderr,
        )
    )


async def find_explanation(
    settings: Settings, client: BatchLister, batch_id: str, now: datetime
) -> tuple[Explanation | None, ListingFailure | None]:
    """List workspace after workspace until ``batch_id`` shows up; explain it there.

    The explanation is None when no workspace lists it; the failure is that of the first listing
    that could not be read.
    """
    policy = Policy.from_settings(settings)
    holds = hold_map(settings, now)
    for workspace in settings.workspaces:
        batches: list[Batch] = []
        listing = await plan_workspace(
            client,
            workspace,
            policy,
            now,
            max_clock_skew=settings.max_clock_skew,
            on_page=batches.extend,
        )
        if listing.failure is not None:
            return None, listing.failure
        found = explain(batch_id, batches, now, policy, workspace=workspace, holds=holds)
        if found is not None:
            return found, None
    return None, None


async def run_explain(
    settings: Settings,
    batch_id: str,
    *,
    now: datetime,
    json_output: bool,
    out: TextIO,
    err: TextIO,
    client: BatchLister | None = None,
) -> int:
    """Explain ``batch_id`` with ``client`` (a BatchClient from the settings if None)."""
    try:
        if client is not None:
            found, failure = await find_explanation(settings, client, batch_id, now)
        else:
            async with BatchClient.from_settings(settings) as own:
                found, failure = await find_explanation(settings, own, batch_id, now)
    except HoldsError as exc:
        print(f"reaper: {exc}", file=err)
        return EX_FAILED
    if failure is not None:
        print(f"reaper: listing failed: {failure.message}", file=err)
        return EX_FAILED
    if found is None:
        searched = ", ".join(workspace_name(w) for w in settings.workspaces)
        print(f"reaper: batch {batch_id} is not listed in workspace(s) {searched}", file=err)
        return EX_FAILED
    dry_run = (
        "REAPER_DRY_RUN=true: run and once would only report this"
        if settings.dry_run
        else "REAPER_DRY_RUN=false: run and once would do this"
    )
    if json_output:
        record = explanation_record(found)
        record["dry_run"] = settings.dry_run
        out.write(json.dumps(record) + "\n")
    else:
        out.write(format_explanation(found))
        out.write(dry_run + "\n")
    out.flush()
    return EX_OK
