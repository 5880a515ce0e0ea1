"""What a cycle reports: how it ended, what became of each action, and the report itself.

Plain data and the one-paragraph summary ``once`` prints; no I/O. The cycle fills these in
through ``reaper.recorder``; ``reaper.daemon`` and the commands read them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from reaper.exits import cycle_exit_code
from reaper.metrics import workspace_label
from reaper.policy import Action, Plan, Rule


class CycleOutcome(StrEnum):
    """How a cycle ended (the ``outcome`` label of ``reaper_cycles_total``)."""

    SUCCESS = "success"
    PARTIAL = "partial"
    FAILED = "failed"
    SAFETY_STOP = "safety_stop"


class ActionOutcome(StrEnum):
    """What became of one planned action."""

    DONE = "done"
    FAILED = "failed"
    DRY_RUN = "dry_run"
    DEFERRED = "deferred"
    # Kept on purpose: the archive says the results are gone and REAPER_ARCHIVE_MISSING=keep.
    KEPT = "kept"
    # A cancel this cycle did not make: the batch ended (or was canceled) without it.
    NOT_NEEDED = "not_needed"


# The outcomes reaper_actions_total knows (SPEC §4); KEPT is counted by reaper_archive_total.
METRIC_OUTCOMES: Final = frozenset(
    {ActionOutcome.DONE, ActionOutcome.FAILED, ActionOutcome.DRY_RUN, ActionOutcome.DEFERRED}
)


@dataclass(frozen=True, slots=True)
class ActionFailure:
    """One action that failed, with what the API said (never a header, never the key)."""

    batch_id: str
    workspace: str | None
    action: Action
    error_type: str
    status: int | None
    request_id: str | None
    message: str


@dataclass(frozen=True, slots=True)
class ListingFailure:
    """A workspace whose listing could not be completed: nothing was done in it."""

    workspace: str | None
    pages_read: int
    batches_read: int
    error_type: str
    status: int | None
    request_id: str | None
    message: str


@dataclass(frozen=True, slots=True)
class SafetyStop:
    """A workspace where a fraction guard stopped every cancel and delete."""

    workspace: str | None
    planned_deletes: int
    listed: int
    max_delete_fraction: float
    reasons: tuple[str, ...] = ("delete_fraction",)  # the guards that tripped
    detail: str = ""  # which guard stopped what, with the numbers


# repr=False: the generated repr spells out every Decision of every plan (~150 MB for 100,000
# actions), and asyncio.run builds it whenever it returns a report (signal.signal formats the
# old SIGINT handler, which holds the finished task, into an error message it then discards).
@dataclass(frozen=True, repr=False)
class CycleReport:
    """What one cycle saw and did: ``summary_text`` for people, ``exit_code`` for ``once``."""

    cycle_id: str
    outcome: CycleOutcome
    dry_run: bool
    plans: tuple[Plan, ...]
    counts: Mapping[tuple[Action, Rule, ActionOutcome], int]
    failures: tuple[ActionFailure, ...]
    listing_failures: tuple[ListingFailure, ...]
    safety_stops: tuple[SafetyStop, ...]
    # Canceled batches not seen to end within the wait (still canceling, or answering 404 past
    # the tolerance): later cycles see them again and apply the policy.
    still_ending: int
    duration_seconds: float
    requests: Mapping[str, int]
    # The text of an unexpected exception that ended the cycle early, if any.
    error: str | None = None
    # A shutdown (SIGTERM/SIGINT) left planned work undone.
    interrupted: bool = False

    @property
    def listed(self) -> int:
        """Batches listed across every workspace."""
        return sum(plan.listed for plan in self.plans)

    def __repr__(self) -> str:
        """Name the report in one short line (see ``repr=False`` above)."""
        return (
            f"<CycleReport {self.cycle_id} {self.outcome} listed={self.listed}"
            f" failures={len(self.failures)} duration={self.duration_seconds:.3f}s>"
        )

    def count(self, action: Action | None = None, outcome: ActionOutcome | None = None) -> int:
        """Sum the action counts matching ``action`` and ``outcome`` (None matches any)."""
        return sum(
            n
            for (a, _rule, o), n in self.counts.items()
            if (action is None or a is action) and (outcome is None or o is outcome)
        )

    def exit_code(self) -> int:
        """Map the outcome to SPEC §1: 0 all done, 1 failed or partial, 3 safety stop."""
        return cycle_exit_code(self.outcome.value)

    def summary_text(self) -> str:
        """Describe the cycle in one paragraph for a person."""
        return " ".join(_summary_sentences(self))


def _summary_sentences(report: CycleReport) -> Iterable[str]:
    done, failed = ActionOutcome.DONE, ActionOutcome.FAILED
    workspaces = len(report.plans)
    if report.dry_run:
        yield "DRY RUN: nothing was changed (set REAPER_DRY_RUN=false to act)."
    yield (
        f"Listed {report.listed:,} batches in {workspaces} workspace{_s(workspaces)}"
        f" in {report.duration_seconds:.1f} s."
    )
    if report.dry_run:
        yield (
            f"Would cancel {report.count(Action.CANCEL, ActionOutcome.DRY_RUN):,}"
            f" and delete {report.count(Action.DELETE, ActionOutcome.DRY_RUN):,} batches."
        )
    else:
        after_cancel = sum(
            n
            for (a, rule, o), n in report.counts.items()
            if a is Action.DELETE and o is done and rule is Rule.STALE
        )
        yield (
            f"Canceled {report.count(Action.CANCEL, done):,} and deleted"
            f" {report.count(Action.DELETE, done):,} batches"
            + (f" ({after_cancel:,} of them once canceled)." if after_cancel else ".")
        )
    n_failed = report.count(outcome=failed)
    if n_failed:
        sample = "; ".join(
            f"{f.action} {f.batch_id}: {f.error_type}"
            + (f" {f.status}" if f.status is not None else "")
            + (f" (request {f.request_id})" if f.request_id else "")
            for f in report.failures[:3]
        )
        yield f"{n_failed:,} action{_s(n_failed)} failed, e.g. {sample}."
    deferred = report.count(outcome=ActionOutcome.DEFERRED)
    if deferred:
        yield (
            f"{deferred:,} action{_s(deferred)} deferred past REAPER_MAX_ACTIONS_PER_RUN"
            " to later cycles."
        )
    if report.still_ending:
        yield (
            f"{report.still_ending:,} canceled batch{_es(report.still_ending)} not seen to end"
            " within REAPER_CANCEL_WAIT_TIMEOUT: planned delete left undone, left to later"
            " cycles (rule canceled_stale)."
        )
    not_needed = report.count(outcome=ActionOutcome.NOT_NEEDED)
    if not_needed:
        yield (
            f"{not_needed:,} cancel{_s(not_needed)} not needed: the batch had ended without"
            " it (left to the retention rules, not deleted)."
        )
    if report.interrupted:
        yield "Interrupted by a signal: what had not started was left to later cycles."
    kept = report.count(outcome=ActionOutcome.KEPT)
    if kept:
        yield f"{kept:,} kept because their results are gone and REAPER_ARCHIVE_MISSING=keep."
    for stop in report.safety_stops:
        yield f"SAFETY STOP in workspace {workspace_label(stop.workspace)}: {stop.detail}."
    for lf in report.listing_failures:
        yield (
            f"LISTING FAILED in workspace {workspace_label(lf.workspace)} after"
            f" {lf.pages_read:,} page{_s(lf.pages_read)} ({lf.error_type}"
            + (f" {lf.status}" if lf.status is not None else "")
            + (f", request {lf.request_id}" if lf.request_id else "")
            + "): nothing was done there."
        )
    if report.error:
        yield f"The cycle stopped early: {report.error}."
    requests = ", ".join(f"{endpoint} {n:,}" for endpoint, n in sorted(report.requests.items()))
    yield f"Requests: {requests or 'none'}."
    yield f"Outcome: {report.outcome} (exit {report.exit_code()})."


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def _es(n: int) -> str:
    return "" if n == 1 else "es"
