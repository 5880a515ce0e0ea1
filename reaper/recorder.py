"""Everything a cycle counts and says: the report's tallies, the metrics, the log lines.

``Tally`` adds up the workspaces of one cycle into its ``CycleReport``; a ``Recorder`` records
one workspace: its plan (gauges, decisions, the guards), then every action's outcome, each as one
count, one metric and one log line. The executor acts and calls the recorder; it never touches a
metric or a logger itself. The lines keep the ``reaper.cycle`` logger's name.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Final

import structlog
from prometheus_client import Gauge

from reaper.consistency import REASONS as REJECTION_REASONS
from reaper.explain import stop_text
from reaper.listing import Listing
from reaper.logs import Redactor
from reaper.metrics import Metrics, workspace_label
from reaper.models import KNOWN_STATUSES, Batch, format_time
from reaper.outcomes import (
    METRIC_OUTCOMES,
    ActionFailure,
    ActionOutcome,
    CycleOutcome,
    CycleReport,
    ListingFailure,
    SafetyStop,
)
from reaper.policy import Action, Decision, Plan, Rule, StopReason
from reaper.progress import Progress

# Log at most this many ids per summary line (deferred, left waiting, unknown statuses).
ID_SAMPLE: Final = 10

log = structlog.get_logger("reaper.cycle")


class Tally:
    """What the workspaces of one cycle add up to."""

    def __init__(self) -> None:
        self.plans: list[Plan] = []
        self.counts: Counter[tuple[Action, Rule, ActionOutcome]] = Counter()
        self.failures: list[ActionFailure] = []
        self.listing_failures: list[ListingFailure] = []
        self.safety_stops: list[SafetyStop] = []
        self.still_ending = 0
        # Archive-ahead downloads that failed: results in scope left unarchived this cycle.
        self.archive_failures = 0
        # Canceled batches whose planned delete the wait's timeout left undone.
        self.timed_out = 0
        # A shutdown left planned work undone (an action not started, a workspace not swept).
        self.interrupted = False

    def outcome(self, *, crashed: bool) -> CycleOutcome:
        """Say how the cycle ended: failed, safety stop, partial or success, in that order.

        Partial: an action failed, or one was left undone (a canceled batch not seen to end
        within the wait, so its planned delete was not done; a shutdown).
        """
        if crashed or self.listing_failures:
            return CycleOutcome.FAILED
        if self.safety_stops:
            return CycleOutcome.SAFETY_STOP
        if self.interrupted or self.timed_out:
            return CycleOutcome.PARTIAL
        if self.archive_failures or any(o is ActionOutcome.FAILED for (_a, _r, o) in self.counts):
            return CycleOutcome.PARTIAL
        return CycleOutcome.SUCCESS

    def done(self) -> int:
        """Count the actions done so far."""
        return sum(n for (_a, _r, o), n in self.counts.items() if o is ActionOutcome.DONE)


def record_cycle(report: CycleReport, metrics: Metrics, now: Callable[[], datetime]) -> None:
    """Record a finished cycle: its metrics and the ``cycle.finished`` line."""
    metrics.cycles.labels(outcome=report.outcome.value).inc()
    metrics.cycle_duration.observe(report.duration_seconds)
    if report.outcome is CycleOutcome.SUCCESS:
        metrics.last_success.set(now().timestamp())
    log.info(
        "cycle.finished",
        outcome=report.outcome.value,
        dry_run=report.dry_run,
        listed=report.listed,
        actions=count_by_outcome(report.counts),
        still_ending=report.still_ending,
        duration=round(report.duration_seconds, 3),  # seconds (SPEC section 5: "duration")
        requests=dict(sorted(report.requests.items())),
    )


class Recorder:
    """Count, measure and log what happens in one workspace of a cycle."""

    def __init__(
        self,
        tally: Tally,
        workspace: str | None,
        *,
        metrics: Metrics,
        now: Callable[[], datetime],
        dry_run: bool,
        redact: Redactor,
        progress: Progress | None = None,
    ) -> None:
        self.tally = tally
        self.workspace = workspace
        self.label = workspace_label(workspace)
        self.metrics = metrics
        self.now = now
        self.dry_run = dry_run
        self.redact = redact
        self.progress = progress
        self._ledger_warned: set[str] = set()
        # One line per action: bound once (as logging is configured now), not once per line.
        self._actions_log = log.bind()

    # -- the plan ------------------------------------------------------------------------------

    def record_plan(self, listing: Listing) -> None:
        """Record a workspace's listing and plan: gauges, decisions, and what the guards did."""
        plan = listing.plan
        self.tally.plans.append(plan)
        if listing.failure is not None:
            self._listing_failed(listing, listing.failure)
            return
        log.info(
            "workspace.listed",
            workspace=self.label,
            listed=plan.listed,
            pages=listing.pages,
            statuses=dict(sorted(plan.status_counts.items())),
            cancels=len(plan.cancels),
            deletes=len(plan.deletes),
            deferred=plan.deferred,
            stop=None if plan.stop is None else plan.stop.value,
            clock_skew=_seconds(listing.clock_skew),
            seconds=listing.seconds,
        )
        self._gauges(plan)
        self._guards(plan)
        if self.progress is not None:
            self.progress.planned(len(plan.cancels) + len(plan.deletes))

    def _listing_failed(self, listing: Listing, failure: ListingFailure) -> None:
        self.tally.listing_failures.append(failure)
        if failure.error_type in REJECTION_REASONS:  # refused, not unreadable: its own metric
            self.metrics.listing_rejected.labels(self.label, failure.error_type).inc()
        log.error(
            "listing.failed",
            workspace=self.label,
            pages_read=failure.pages_read,
            batches_read=failure.batches_read,
            error_type=failure.error_type,
            status=failure.status,
            request_id=failure.request_id,
            error=failure.message,
            seconds=listing.seconds,
            consequence="fail closed: no action in this workspace this cycle",
        )

    def _gauges(self, plan: Plan) -> None:
        now = plan.now  # ages as the policy saw them
        ws = self.label
        seen = set(plan.status_counts)
        for status in KNOWN_STATUSES | seen:
            self.metrics.batches.labels(ws, status).set(plan.status_counts.get(status, 0))
        # A status that vanished (an unknown one from an earlier cycle) must not linger as a series.
        for status in _series_statuses(self.metrics.batches, ws) - KNOWN_STATUSES - seen:
            self.metrics.batches.remove(ws, status)
        for status, created in plan.oldest_created.items():
            age = max(0.0, (now - created).total_seconds())
            self.metrics.oldest_batch_age.labels(ws, status).set(age)
        for status in _series_statuses(self.metrics.oldest_batch_age, ws) - set(
            plan.oldest_created
        ):
            self.metrics.oldest_batch_age.remove(ws, status)
        for (action, rule), n in plan.decision_counts.items():
            self.metrics.decisions.labels(ws, action.value, rule.value).inc(n)
        if plan.unknown_count:
            unknown = {s: n for s, n in plan.status_counts.items() if s not in KNOWN_STATUSES}
            log.warning(
                "batch.unknown_status",
                workspace=ws,
                count=plan.unknown_count,
                statuses=unknown,
                ids=[b.id for b in plan.unknown_sample[:ID_SAMPLE]],
                consequence="kept",
            )

    def _guards(self, plan: Plan) -> None:
        if plan.stop is StopReason.SAFETY_STOP:
            stop = SafetyStop(
                workspace=self.workspace,
                planned_deletes=plan.fraction_deletes,
                listed=plan.listed,
                max_delete_fraction=plan.max_delete_fraction,
                reasons=tuple(str(guard) for guard in plan.tripped),
                detail=stop_text(plan),
            )
            self.tally.safety_stops.append(stop)
            for guard in plan.tripped:
                self.metrics.safety_stops.labels(self.label, str(guard)).inc()
            _log_safety_stop(self.label, plan)
        if plan.deferred:
            for (action, rule), n in plan.deferred_counts.items():
                self.tally.counts[(action, rule, ActionOutcome.DEFERRED)] += n
                self.metrics.actions.labels(self.label, action.value, "deferred").inc(n)
            log.warning(
                "actions.deferred",
                workspace=self.label,
                cancels=sum(n for (a, _), n in plan.deferred_counts.items() if a is Action.CANCEL),
                deletes=sum(n for (a, _), n in plan.deferred_counts.items() if a is Action.DELETE),
                max_actions_per_run=plan.max_actions_per_run,
                ids=[d.batch.id for d in plan.deferred_sample[:ID_SAMPLE]],
            )

    def record_dry_run(self, plan: Plan, *, then_delete: bool) -> None:
        """Report what a live cycle would do with the plan: one line and one count an action."""
        for d in (*plan.cancels, *plan.deletes):
            # then_delete on a cancel's line only (a False field is left out of the line).
            cancel = d.action is Action.CANCEL
            self._log(d, ActionOutcome.DRY_RUN, then_delete=then_delete and cancel)
            self.count(d, ActionOutcome.DRY_RUN)
            self.acted()

    # -- actions -------------------------------------------------------------------------------

    def count(self, d: Decision, outcome: ActionOutcome) -> None:
        """Count one outcome of the decision's action (and its metric, if SPEC §4 has one)."""
        self.tally.counts[(d.action, d.rule, outcome)] += 1
        if outcome in METRIC_OUTCOMES:
            self.metrics.actions.labels(self.label, d.action.value, outcome.value).inc()

    def acted(self) -> None:
        """Tell the progress report that one more planned action is over."""
        if self.progress is not None:
            self.progress.acted()

    def planned(self, actions: int = 1) -> None:
        """Tell the progress report that the cycle has found more to do."""
        if self.progress is not None:
            self.progress.planned(actions)

    def done(self, d: Decision, *, lag: bool = False, **fields: object) -> None:
        """Record an action carried out; ``lag``: observe how long past eligible it was done."""
        self.count(d, ActionOutcome.DONE)
        if lag and d.eligible_at is not None:
            seconds = (self.now() - d.eligible_at).total_seconds()
            self.metrics.delete_lag.labels(self.label).observe(max(0.0, seconds))
        self._log(d, ActionOutcome.DONE, **fields)
        self.acted()

    def deferred(self, d: Decision) -> None:
        """Record an action not started because the daemon is shutting down."""
        self.tally.interrupted = True
        self.count(d, ActionOutcome.DEFERRED)

    def not_needed(
        self, d: Decision, batch: Batch, *, request_id: str | None = None, counted: bool = True
    ) -> None:
        """Record a cancel this cycle did not make: the batch ended (or was canceled) without it.

        Its batch is left to rules 5 to 8 in later cycles: no delete by the cancel path.
        ``counted`` False when the cancel was already counted done (a poll found this out).
        """
        if counted:
            self.count(d, ActionOutcome.NOT_NEEDED)
            self.acted()
        self._log(
            d,
            ActionOutcome.NOT_NEEDED,
            status=batch.processing_status,
            cancel_initiated_at=None
            if batch.cancel_initiated_at is None
            else format_time(batch.cancel_initiated_at),
            request_id=request_id,
            note="the batch ended without this cycle's cancel; left to rules 5 to 8",
        )

    def kept(self, d: Decision, reason: str | None) -> None:
        """Record a delete kept on purpose: its results are gone, REAPER_ARCHIVE_MISSING=keep."""
        self.count(d, ActionOutcome.KEPT)
        self._log(d, ActionOutcome.KEPT, note=reason)
        self.acted()

    def failed(
        self,
        d: Decision,
        *,
        error_type: str,
        error: str,
        status: int | None = None,
        request_id: str | None = None,
        unexpected: bool = False,
    ) -> None:
        """Record a failed action: in the report (redacted), the metric and one log line."""
        self.tally.failures.append(
            ActionFailure(
                batch_id=d.batch.id,
                workspace=self.workspace,
                action=d.action,
                error_type=error_type,
                status=status,
                request_id=request_id,
                message=self.redact(error),
            )
        )
        self.count(d, ActionOutcome.FAILED)
        log.warning(
            "action.failed",
            id=d.batch.id,
            action=d.action.value,
            rule=d.rule.value,
            workspace=self.label,
            error_type=error_type,
            status=status,
            request_id=request_id,
            error=error,
            exc_info=unexpected,
        )
        self.acted()

    def ledger_unwritable(self, d: Decision, error: str, *, phase: str) -> None:
        """Say once per workspace and phase that the ledger refused a line (each action counts)."""
        kind = "intent" if phase == "intent" else "outcome"
        if kind in self._ledger_warned:
            return
        self._ledger_warned.add(kind)
        log.error(
            "ledger.unwritable",
            workspace=self.label,
            id=d.batch.id,
            phase=phase,
            error=self.redact(error),
            consequence=(
                "no cancel or delete is sent while its intent cannot be written"
                if kind == "intent"
                else "the request was sent; its outcome line is missing from the ledger"
            ),
        )

    def interrupted(self, d: Decision) -> None:
        """Log an action cut short by shutdown: its request may have reached the API or not."""
        # Without this line a delete the API performed just before the cancellation would be
        # in no log at all; the next cycle finds out which it was (a 404 there counts as done).
        log.warning(
            f"batch.{d.action.value}",
            id=d.batch.id,
            rule=d.rule.value,
            dry_run=self.dry_run,
            workspace=self.label,
            outcome="interrupted",
            note="shutdown cut the request short; it may or may not have been carried out",
        )

    def _log(self, d: Decision, outcome: ActionOutcome, **fields: object) -> None:
        age = (self.now() - d.batch.created_at).total_seconds()
        self._actions_log.info(
            f"batch.{d.action.value}",
            id=d.batch.id,
            rule=d.rule.value,
            age=round(age),  # seconds since created_at (SPEC section 5: "age")
            dry_run=self.dry_run,
            workspace=self.label,
            outcome=outcome.value,
            **{k: v for k, v in fields.items() if v is not None and v is not False},
        )


def _seconds(delta: timedelta | None) -> float | None:
    return None if delta is None else round(delta.total_seconds(), 3)


def _series_statuses(gauge: Gauge, workspace: str) -> set[str]:
    """Return the statuses a gauge currently has a series for in a workspace."""
    return {
        sample.labels["processing_status"]
        for family in gauge.collect()
        for sample in family.samples
        if sample.labels.get("workspace") == workspace
    }


def count_by_outcome(counts: Mapping[tuple[Action, Rule, ActionOutcome], int]) -> dict[str, int]:
    """Sum counts as ``action.outcome`` keys, sorted (the ``actions`` field of cycle.finished)."""
    by_outcome: Counter[str] = Counter()
    for (action, _rule, outcome), n in counts.items():
        by_outcome[f"{action}.{outcome}"] += n
    return dict(sorted(by_outcome.items()))


def _log_safety_stop(label: str, plan: Plan) -> None:
    """Log which fraction guard(s) stopped a workspace, with both guards' numbers."""
    planned, cancels = plan.fraction_deletes, plan.count(Action.CANCEL)
    log.warning(
        "safety.stop",
        workspace=label,
        reasons=[str(guard) for guard in plan.tripped],
        planned_deletes=planned,
        listed=plan.listed,
        fraction=round(planned / plan.listed, 4) if plan.listed else 0.0,
        max_delete_fraction=plan.max_delete_fraction,
        planned_cancels=cancels,
        in_progress=plan.in_progress,
        cancel_fraction=round(cancels / plan.in_progress, 4) if plan.in_progress else 0.0,
        max_cancel_fraction=plan.max_cancel_fraction,
        consequence="no cancel and no delete in this workspace this cycle",
    )
