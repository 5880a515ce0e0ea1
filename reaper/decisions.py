"""What the policy decides: actions, rules, one batch's decision, one workspace's plan.

Pure data (reaper.policy makes them): no I/O, no clock. A Plan holds what a cycle acts on and
counts of everything else, so its size is bounded by the per-run cap, not by the listing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Final, TypeAlias

from reaper.guards import Guard, StopReason
from reaper.models import IN_PROGRESS, KNOWN_STATUSES, Batch


class Action(StrEnum):
    """What the reaper does with a batch."""

    KEEP = "keep"
    CANCEL = "cancel"
    DELETE = "delete"


class Rule(StrEnum):
    """The rule that decided; declaration order is SPEC section 3's order."""

    PROTECTED = "protected"
    HELD = "held"
    MIN_AGE = "min_age"
    STALE = "stale"
    NOT_ENDED = "not_ended"
    KEEP_LAST = "keep_last"
    CANCELED_STALE = "canceled_stale"
    FAILED_RETENTION = "failed_retention"
    ENDED_RETENTION = "ended_retention"
    RETAINED = "retained"
    UNKNOWN_STATUS = "unknown_status"


# Every rule leads to exactly one action.
RULE_ACTION: Final[Mapping[Rule, Action]] = {
    Rule.PROTECTED: Action.KEEP,
    Rule.HELD: Action.KEEP,
    Rule.MIN_AGE: Action.KEEP,
    Rule.STALE: Action.CANCEL,
    Rule.NOT_ENDED: Action.KEEP,
    Rule.KEEP_LAST: Action.KEEP,
    Rule.CANCELED_STALE: Action.DELETE,
    Rule.FAILED_RETENTION: Action.DELETE,
    Rule.ENDED_RETENTION: Action.DELETE,
    Rule.RETAINED: Action.KEEP,
    Rule.UNKNOWN_STATUS: Action.KEEP,
}


@dataclass(frozen=True, slots=True)
class Decision:
    """The action for one batch and the rule that chose it.

    ``eligible_at`` is when the batch became eligible for its action: ``ended_at`` + retention for
    a delete (``ended_at`` for ``canceled_stale``), ``created_at`` + the stale threshold for a
    cancel, None for a keep.
    """

    batch: Batch
    action: Action
    rule: Rule
    eligible_at: datetime | None = None


SAMPLE_SIZE: Final = 10  # ids kept as a sample of the deferred (and of unknown statuses)
Counts: TypeAlias = Mapping[tuple[Action, Rule], int]


@dataclass(frozen=True)
class Plan:
    """The decisions for one workspace's listing, after the guards, in bounded memory.

    ``cancels`` and ``deletes`` are what to act on now (most overdue first, at most the cap's
    worth). The per-run cap pushes the rest to later cycles: ``deferred_counts`` counts them by
    (action, rule), ``deferred_sample`` names the next ``SAMPLE_SIZE`` in priority order. A stop
    (an incomplete listing, or a fraction guard: ``tripped`` says which) acts on nothing:
    ``withheld_counts`` counts every action it held back and ``withheld`` names the cap's worth
    that would have gone. ``decision_counts`` counts every listed batch, whatever the guards did.
    """

    workspace: str | None
    now: datetime
    listed: int
    decision_counts: Counts
    status_counts: Mapping[str, int]
    oldest_created: Mapping[str, datetime]
    cancels: tuple[Decision, ...] = ()
    deletes: tuple[Decision, ...] = ()
    deferred_counts: Counts = field(default_factory=dict)
    deferred_sample: tuple[Decision, ...] = ()
    withheld_counts: Counts = field(default_factory=dict)
    withheld: tuple[Decision, ...] = ()
    stop: StopReason | None = None
    tripped: tuple[Guard, ...] = ()  # the fraction guards that tripped (a SAFETY_STOP names one)
    unknown_sample: tuple[
        Batch, ...
    ] = ()  # the oldest batches of a status the reaper does not know
    # The guard thresholds this plan was made with, for reports.
    max_delete_fraction: float = 1.0
    max_actions_per_run: int = 10_000
    max_cancel_fraction: float = 1.0
    delete_canceled: bool = True

    def count(self, action: Action) -> int:
        """Return how many batches the policy decided ``action`` for (before the guards)."""
        return sum(n for (a, _), n in self.decision_counts.items() if a is action)

    @property
    def deferred(self) -> int:
        """Return how many actions the per-run cap deferred to later cycles."""
        return sum(self.deferred_counts.values())

    @property
    def withheld_total(self) -> int:
        """Return how many actions a stop held back."""
        return sum(self.withheld_counts.values())

    @property
    def unknown_count(self) -> int:
        """Return how many listed batches have a status the reaper does not know."""
        return sum(n for s, n in self.status_counts.items() if s not in KNOWN_STATUSES)

    @property
    def fraction_deletes(self) -> int:
        """Return the deletes the delete-fraction guard counts: stale cancels too if deleted."""
        cancels = self.count(Action.CANCEL) if self.delete_canceled else 0
        return self.count(Action.DELETE) + cancels

    @property
    def in_progress(self) -> int:
        """Return the in_progress batches listed: the cancel-fraction guard's denominator."""
        return self.status_counts.get(IN_PROGRESS, 0)

    @property
    def actionable(self) -> tuple[Decision, ...]:
        """Return the actions this plan names (acting, withheld, the deferred sample), in order."""
        return (*self.cancels, *self.deletes, *self.withheld, *self.deferred_sample)
