"""One reaper cycle: for each workspace, list and plan, record the plan, act on it.

For each configured workspace, one after another (reading as the design does)::

    listing = await plan_workspace(client, workspace, policy, now())   # reaper.listing
    recorder.record_plan(listing)                                      # reaper.recorder
    await executor.run(listing.plan)  or  recorder.record_dry_run(...) # reaper.executor

An incomplete listing acts on nothing (fail closed); the plan's guards (safety stop, per-run cap)
are applied once, by the policy, and trusted here. Every decision is acted on in the executor and
nowhere else, and the executor is called from here only: the dry-run switch has exactly one place
to live, and in a dry run not one cancel or delete request is sent.

``REAPER_HOLDS_FILE`` is read again at the start of every cycle (a mounted ConfigMap changes
without a restart); if it cannot be read or parsed the cycle acts on nothing and fails: a hold
someone wrote must never be ignored because of a typo nearby. ``run_cycle(select=...)`` narrows
each workspace's plan before anything is acted on (``reaper apply``: the reviewed plan's batches
that the policy still gives the same action, see ``reaper.reconcile``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial

import structlog

from reaper.archive import Archiver
from reaper.archive_ahead import ArchiveAhead
from reaper.confirm import NOT_FOUND_TOLERANCE
from reaper.executor import (
    POLL_FIRST_SECONDS,
    POLL_MAX_SECONDS,
    ArchiveHook,
    CycleClient,
    Executor,
)
from reaper.holds import NO_HOLDS, HoldsError, HoldSet, holds_for_cycle
from reaper.ledger import Ledger, open_ledger
from reaper.listing import plan_workspace
from reaper.logs import Redactor
from reaper.metrics import Metrics, workspace_label
from reaper.outcomes import (
    ActionFailure,
    ActionOutcome,
    CycleOutcome,
    CycleReport,
    ListingFailure,
    SafetyStop,
)
from reaper.policy import Policy
from reaper.progress import Progress
from reaper.reconcile import PlanSelector
from reaper.recorder import Recorder, Tally, record_cycle
from reaper.settings import Settings

# What callers of the cycle import from here (the report's types live in reaper.outcomes).
__all__ = [
    "NOT_FOUND_TOLERANCE",
    "POLL_FIRST_SECONDS",
    "POLL_MAX_SECONDS",
    "ActionFailure",
    "ActionOutcome",
    "ArchiveHook",
    "CycleClient",
    "CycleOutcome",
    "CycleReport",
    "ListingFailure",
    "PlanSelector",
    "SafetyStop",
    "run_cycle",
]

log = structlog.get_logger("reaper.cycle")


async def run_cycle(
    settings: Settings,
    client: CycleClient,
    *,
    metrics: Metrics,
    now: Callable[[], datetime],
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    progress: Progress | None = None,
    archiver: ArchiveHook | None = None,
    stop: asyncio.Event | None = None,
    ledger: Ledger | None = None,
    ahead: ArchiveAhead | None = None,
    select: PlanSelector | None = None,
) -> CycleReport:
    """Run one cycle over every configured workspace and return its report.

    Once ``stop`` is set (the daemon got SIGTERM), no new cancel and no backlog delete starts:
    requests in flight finish and are recorded, batches already canceled are still waited for
    and deleted, the rest is left to the next start (counted as deferred), and the cycle returns
    as soon as that is done instead of running into the shutdown grace.

    ``ledger`` records every cancel and delete (built by the command from ``REAPER_LEDGER_DIR``;
    when None, the settings' own). ``ahead`` archives every ended batch in scope after the
    workspace's actions (when None and ``archiver`` is an Archiver, one is made for this cycle).

    Never raises for a failure of the API or of one action; an unexpected exception ends the
    cycle early as ``failed`` (with the exception in the log and the report). ``now`` and
    ``sleep`` are the clock and the pause used for the cancel wait, so tests can drive both.
    """
    cycle_id = secrets.token_hex(4)
    started = time.monotonic()
    requests_before = Counter(client.requests_made)
    tally = Tally()
    # The report's error text (`once` prints it) may quote the key: one Redactor a cycle.
    redact = _redactor(settings)
    error: str | None = None
    with structlog.contextvars.bound_contextvars(cycle_id=cycle_id):
        log.info(
            "cycle.started",
            dry_run=settings.dry_run,
            workspaces=[workspace_label(ws) for ws in settings.workspaces],
        )
        try:
            # An archive directory with no archiver would delete results nobody saved.
            if settings.archive_dir is not None and archiver is None and not settings.dry_run:
                raise RuntimeError("REAPER_ARCHIVE_DIR is set but the cycle was given no archiver")
            policy = Policy.from_settings(settings)
            holds, error = _read_holds(settings, now(), metrics, redact)
            if ledger is None:
                ledger = open_ledger(settings.ledger_dir, dry_run=settings.dry_run, clock=now)
            if ahead is None and isinstance(archiver, Archiver):
                ahead = build_archive_ahead(settings, archiver, metrics)
            for workspace in settings.workspaces if error is None else ():
                if stop is not None and stop.is_set():
                    break  # shutting down: the next start sweeps the rest
                metrics.init_workspace(workspace)
                recorder = Recorder(
                    tally,
                    workspace,
                    metrics=metrics,
                    now=now,
                    dry_run=settings.dry_run,
                    redact=redact,
                    progress=progress,
                )
                executor = Executor(
                    client,
                    recorder,
                    settings=settings,
                    now=now,
                    sleep=sleep,
                    archiver=archiver,
                    stop=stop,
                    ledger=ledger,
                    cycle_id=cycle_id,
                )
                with structlog.contextvars.bound_contextvars(workspace=recorder.label):
                    await _sweep(
                        client, workspace, policy, now, recorder, executor, ahead, holds, select
                    )
        except asyncio.CancelledError:
            # Shutdown past its grace: say how far the cycle got before going.
            log.warning("cycle.cancelled", actions_done=tally.done(), failures=len(tally.failures))
            raise
        except Exception as exc:  # the daemon must survive a bug in one cycle; it is logged loudly
            error = redact(f"{type(exc).__name__}: {exc}")
            log.exception("cycle.crashed", error_type=type(exc).__name__, error=error)
        finally:
            if progress is not None:
                progress.close()
        tally.interrupted |= stop is not None and stop.is_set()  # a signal: never a success
        requests = Counter(client.requests_made)
        requests.subtract(requests_before)
        report = CycleReport(
            cycle_id=cycle_id,
            outcome=tally.outcome(crashed=error is not None),
            dry_run=settings.dry_run,
            plans=tuple(tally.plans),
            counts=dict(tally.counts),
            failures=tuple(tally.failures),
            listing_failures=tuple(tally.listing_failures),
            safety_stops=tuple(tally.safety_stops),
            still_ending=tally.still_ending,
            duration_seconds=time.monotonic() - started,
            requests={endpoint: n for endpoint, n in requests.items() if n > 0},
            error=error,
            interrupted=tally.interrupted,
        )
        record_cycle(report, metrics, now)
    return report


async def _sweep(
    client: CycleClient,
    workspace: str | None,
    policy: Policy,
    now: Callable[[], datetime],
    recorder: Recorder,
    executor: Executor,
    ahead: ArchiveAhead | None,
    holds: HoldSet,
    select: PlanSelector | None,
) -> None:
    """List and plan one workspace, record the plan, act on it (or report the dry run), archive."""
    settings = executor.settings
    listed_at = now()
    scout = None if ahead is None else ahead.scout(workspace, listed_at, dry_run=settings.dry_run)
    listing = await plan_workspace(
        client,
        workspace,
        policy,
        listed_at,
        max_clock_skew=settings.max_clock_skew,
        clock=now,
        progress=recorder.progress,
        holds=holds.active,
        on_decision=None if select is None else partial(select.observe, workspace=workspace),
        on_page=None if scout is None else scout.on_page,
    )
    if select is not None and listing.complete:
        listing = dataclasses.replace(listing, plan=select.restrict(listing.plan))
    recorder.record_plan(listing)
    if not listing.complete:
        return  # fail closed: nothing is done in a workspace that could not be listed
    plan = listing.plan
    if settings.dry_run:
        recorder.record_dry_run(plan, then_delete=settings.delete_canceled and plan.stop is None)
    else:
        await executor.run(plan, clock_skew=listing.clock_skew)
    if ahead is not None and scout is not None:
        # After the cycle's cancels and deletes: the results closest to expiry first.
        report = await ahead.run(
            scout,
            workspace,
            client,
            dry_run=settings.dry_run,
            now=now(),
            tried=frozenset(d.batch.id for d in plan.deletes),
            stop=executor.shutdown,
        )
        recorder.tally.archive_failures += report.failed


def build_archive_ahead(settings: Settings, archiver: Archiver, metrics: Metrics) -> ArchiveAhead:
    """Return the archive-ahead of the settings (scope, cap of downloads, concurrency)."""
    return ArchiveAhead(
        archiver,
        scope=settings.archive_scope,
        max_downloads=settings.max_actions_per_run,
        concurrency=settings.concurrency,
        metrics=metrics,
    )


def _read_holds(
    settings: Settings, now: datetime, metrics: Metrics, redact: Redactor
) -> tuple[HoldSet, str | None]:
    """Read the holds file; if it cannot be, log why and return the error (act on nothing)."""
    try:
        return holds_for_cycle(settings.holds_file, now, metrics.set_holds), None
    except HoldsError as exc:
        error = redact(str(exc))
        log.error("holds.unreadable", error=error, consequence="no action this cycle")
        return NO_HOLDS, error


def _redactor(settings: Settings) -> Redactor:
    """Return the masker of the settings' key."""
    key = settings.api_key_value()
    return Redactor([key] if key else [])
