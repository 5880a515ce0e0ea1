"""The retention policy of SPEC section 3: listed batches and ``now`` in, a plan out.

Pure: no I/O, no clock (``now`` is an argument), no logging. For each batch the first matching
rule wins:

1. ``protected``: its id is in ``REAPER_PROTECT_IDS`` -> keep;
2. ``min_age``: created less than ``REAPER_MIN_AGE`` ago -> keep (exactly ``min_age`` old is not
   protected by this rule);
3. ``stale``: ``in_progress`` and created at least ``REAPER_CANCEL_STALE_AFTER`` ago -> cancel;
4. ``not_ended``: ``in_progress`` or ``canceling`` -> keep (wait);
5. ``keep_last``: ``ended`` and among the ``REAPER_KEEP_LAST`` most recently created of ALL the
   ended batches listed (protected and young ones included: the SPEC ranks "the batches ended at
   listing time", not the ones left after rules 1-2), ties in ``created_at`` broken by id (the
   greater id counts as more recent) -> keep;
6. ``failed_retention``: ``ended`` with errored + expired > 0 and ``ended_at`` at least
   ``REAPER_DELETE_FAILED_AFTER`` ago -> delete;
7. ``ended_retention``: ``ended`` with no errored or expired request and ``ended_at`` at least
   ``REAPER_DELETE_ENDED_AFTER`` ago -> delete;
8. ``retained`` -> keep; ``unknown_status`` when the status is not one the reaper knows (an ended
   batch without ``ended_at`` is ``retained``: it cannot be aged).

A threshold of ``None`` ("never") switches its rule off. Then the guards, per workspace: an
incomplete listing acts on nothing; the fraction guard (planned deletes / listed > fraction ->
no deletes, a safety stop); the per-run cap (cancels first, then deletes most overdue first; 0
acts on nothing).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from fractions import Fraction
from typing import Final, Protocol

from reaper.models import CANCELING, ENDED, IN_PROGRESS, KNOWN_STATUSES, Batch


class Action(StrEnum):
    """What the reaper does with a batch."""

    KEEP = "keep"
    CANCEL = "cancel"
    DELETE = "delete"


class Rule(StrEnum):
    """The rule that decided; declaration order is SPEC section 3's order."""

    PROTECTED = "protected"
    MIN_AGE = "min_age"
    STALE = "stale"
    NOT_ENDED = "not_ended"
    KEEP_LAST = "keep_last"
    FAILED_RETENTION = "failed_retention"
    ENDED_RETENTION = "ended_retention"
    RETAINED = "retained"
    UNKNOWN_STATUS = "unknown_status"


# Every rule leads to exactly one action.
RULE_ACTION: Final[Mapping[Rule, Action]] = {
    Rule.PROTECTED: Action.KEEP,
    Rule.MIN_AGE: Action.KEEP,
    Rule.STALE: Action.CANCEL,
    Rule.NOT_ENDED: Action.KEEP,
    Rule.KEEP_LAST: Action.KEEP,
    Rule.FAILED_RETENTION: Action.DELETE,
    Rule.ENDED_RETENTION: Action.DELETE,
    Rule.RETAINED: Action.KEEP,
    Rule.UNKNOWN_STATUS: Action.KEEP,
}


class StopReason(StrEnum):
    """Why a workspace's plan acts on less than its decisions say."""

    INCOMPLETE_LISTING = "incomplete_listing"  # a page could not be read: act on nothing
    SAFETY_STOP = "safety_stop"  # the fraction guard tripped: delete nothing


class PolicySettings(Protocol):
    """The settings the policy reads (structural, so the pure core does not import settings)."""

    @property
    def protect_ids(self) -> frozenset[str]: ...
    @property
    def min_age(self) -> timedelta: ...
    @property
    def cancel_stale_after(self) -> timedelta | None: ...
    @property
    def keep_last(self) -> int: ...
    @property
    def delete_failed_after(self) -> timedelta | None: ...
    @property
    def delete_ended_after(self) -> timedelta | None: ...
    @property
    def max_actions_per_run(self) -> int: ...
    @property
    def max_delete_fraction(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Policy:
    """The thresholds of SPEC section 3; defaults are the SPEC's. None means never."""

    protect_ids: frozenset[str] = frozenset()
    min_age: timedelta = timedelta(hours=1)
    cancel_stale_after: timedelta | None = timedelta(hours=12)
    keep_last: int = 0
    delete_failed_after: timedelta | None = timedelta(days=30)
    delete_ended_after: timedelta | None = timedelta(days=7)
    max_actions_per_run: int = 10_000
    max_delete_fraction: float = 1.0

    @classmethod
    def from_settings(cls, settings: PolicySettings) -> Policy:
        """Take the policy's thresholds from the settings (dry run is the cycle's business)."""
        return cls(
            protect_ids=frozenset(settings.protect_ids),
            min_age=settings.min_age,
            cancel_stale_after=settings.cancel_stale_after,
            keep_last=settings.keep_last,
            delete_failed_after=settings.delete_failed_after,
            delete_ended_after=settings.delete_ended_after,
            max_actions_per_run=settings.max_actions_per_run,
            max_delete_fraction=settings.max_delete_fraction,
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """The action for one batch and the rule that chose it.

    ``eligible_at`` is when the batch became eligible for its action: ``ended_at`` + retention for
    a delete, ``created_at`` + the stale threshold for a cancel, None for a keep.
    """

    batch: Batch
    action: Action
    rule: Rule
    eligible_at: datetime | None = None


@dataclass(frozen=True)
class Plan:
    """The decisions for one workspace's listing, after the guards.

    ``cancels`` and ``deletes`` are what to act on now (sorted most overdue first), ``deferred``
    what the per-run cap pushed to later cycles (in priority order), ``withheld`` what a stop held
    back (every action for an incomplete listing, the deletes for a safety stop); none of these
    overlap. ``decision_counts`` counts every listed batch, whatever the guards did.
    """

    workspace: str | None
    now: datetime
    listed: int
    decision_counts: Mapping[tuple[Action, Rule], int]
    status_counts: Mapping[str, int]
    oldest_created: Mapping[str, datetime]
    cancels: tuple[Decision, ...] = ()
    deletes: tuple[Decision, ...] = ()
    deferred: tuple[Decision, ...] = ()
    withheld: tuple[Decision, ...] = ()
    kept: tuple[Decision, ...] = ()
    stop: StopReason | None = None
    unknown_statuses: tuple[Batch, ...] = ()
    # The guard thresholds this plan was made with, for reports.
    max_delete_fraction: float = 1.0
    max_actions_per_run: int = 10_000

    def count(self, action: Action) -> int:
        """Return how many batches the policy decided ``action`` for (before the guards)."""
        return sum(n for (a, _), n in self.decision_counts.items() if a is action)

    @property
    def actionable(self) -> tuple[Decision, ...]:
        """Return every cancel and delete decision, whatever the guards did, in priority order."""
        return _priority_order((*self.cancels, *self.deletes, *self.deferred, *self.withheld))


def _priority_key(decision: Decision) -> tuple[int, datetime, str]:
    # Cancels first (an in_progress batch keeps costing), then the most overdue.
    assert decision.eligible_at is not None
    return (0 if decision.action is Action.CANCEL else 1, decision.eligible_at, decision.batch.id)


def _priority_order(decisions: Iterable[Decision]) -> tuple[Decision, ...]:
    return tuple(sorted(decisions, key=_priority_key))


class Planner:
    """Decide batch by batch as pages arrive; independent of the listing's order.

    Memory is O(actions + keep_last): keep-last ranks through a bounded min-heap of the
    ``keep_last`` most recently created ended batches, and a batch pushed out of it is decided
    under rules 6-8 at once. Kept batches are only counted, not stored, unless ``record_kept``.
    """

    def __init__(
        self,
        policy: Policy,
        now: datetime,
        *,
        workspace: str | None = None,
        record_kept: bool = False,
    ) -> None:
        self.policy = policy
        self.now = now
        self.workspace = workspace
        # Thresholds as instants, so each rule is one datetime comparison:
        # age < min_age  <=>  created_at > now - min_age, and so on.
        self._young_after = now - policy.min_age
        self._stale_by = _before(now, policy.cancel_stale_after)
        self._failed_by = _before(now, policy.delete_failed_after)
        self._ended_by = _before(now, policy.delete_ended_after)
        self._listed = 0
        self._seq = itertools.count()
        self._rule_counts: dict[Rule, int] = dict.fromkeys(Rule, 0)
        self._status_counts: dict[str, int] = {}
        self._oldest: dict[str, datetime] = {}
        # Actions as plain tuples (eligible_at, id, seq, rule, batch): they sort natively, and
        # Decision objects are built once, in finish.
        self._actions: list[tuple[datetime, str, int, Rule, Batch]] = []
        self._kept: list[tuple[Rule, Batch]] | None = [] if record_kept else None
        self._unknown: list[Batch] = []
        self._heap: list[tuple[datetime, str, int, Batch]] = []
        self._finished = False

    def add(self, batches: Iterable[Batch]) -> None:
        """Decide every batch of ``batches`` (one page, or all of them)."""
        if self._finished:
            raise RuntimeError("Planner.add after finish")
        # Locals and one inlined loop body: this runs once per listed batch, millions per cycle.
        policy = self.policy
        protect = policy.protect_ids
        young_after = self._young_after
        stale_by = self._stale_by
        stale_after = policy.cancel_stale_after
        failed_by, failed_after = self._failed_by, policy.delete_failed_after
        ended_by, ended_after = self._ended_by, policy.delete_ended_after
        keep_last = policy.keep_last
        heap = self._heap
        seq = self._seq
        status_counts = self._status_counts
        oldest = self._oldest
        rule_counts = self._rule_counts
        actions = self._actions
        kept = self._kept
        unknown = self._unknown
        listed = 0
        for batch in batches:
            listed += 1
            status = batch.processing_status
            created = batch.created_at
            seen = status_counts.get(status)
            if seen is None:
                status_counts[status] = 1
                oldest[status] = created
            else:
                status_counts[status] = seen + 1
                if created < oldest[status]:
                    oldest[status] = created
            if status == ENDED:
                if keep_last:
                    # The heap holds the keep_last most recent; whoever falls out of it (this
                    # batch or an earlier one) is decided now, as not among the keep-last.
                    entry = (created, batch.id, next(seq), batch)
                    if len(heap) < keep_last:
                        heapq.heappush(heap, entry)
                        continue
                    if entry > heap[0]:
                        entry = heapq.heapreplace(heap, entry)
                        batch = entry[3]
                        created = entry[0]
                if batch.id in protect:
                    rule = Rule.PROTECTED
                elif created > young_after:
                    rule = Rule.MIN_AGE
                elif (ended_at := batch.ended_at) is None:
                    rule = Rule.RETAINED
                elif batch.request_counts.errored or batch.request_counts.expired:
                    if failed_by is not None and ended_at <= failed_by:
                        assert failed_after is not None
                        rule_counts[Rule.FAILED_RETENTION] += 1
                        actions.append(
                            (
                                ended_at + failed_after,
                                batch.id,
                                next(seq),
                                Rule.FAILED_RETENTION,
                                batch,
                            )
                        )
                        continue
                    rule = Rule.RETAINED
                elif ended_by is not None and ended_at <= ended_by:
                    assert ended_after is not None
                    rule_counts[Rule.ENDED_RETENTION] += 1
                    actions.append(
                        (ended_at + ended_after, batch.id, next(seq), Rule.ENDED_RETENTION, batch)
                    )
                    continue
                else:
                    rule = Rule.RETAINED
            elif batch.id in protect:
                rule = Rule.PROTECTED
            elif created > young_after:
                rule = Rule.MIN_AGE
            elif status == IN_PROGRESS:
                if stale_by is not None and created <= stale_by:
                    assert stale_after is not None
                    rule_counts[Rule.STALE] += 1
                    actions.append((created + stale_after, batch.id, next(seq), Rule.STALE, batch))
                    continue
                rule = Rule.NOT_ENDED
            elif status == CANCELING:
                rule = Rule.NOT_ENDED
            else:
                rule = Rule.UNKNOWN_STATUS
            if status not in KNOWN_STATUSES:
                unknown.append(batch)
            rule_counts[rule] += 1
            if kept is not None:
                kept.append((rule, batch))
        self._listed += listed

    def _keep(self, rule: Rule, batch: Batch) -> None:
        self._rule_counts[rule] += 1
        if self._kept is not None:
            self._kept.append((rule, batch))

    def finish(self, *, complete: bool = True) -> Plan:
        """Decide the keep-last survivors, apply the guards and return the plan."""
        if self._finished:
            raise RuntimeError("Planner.finish called twice")
        self._finished = True
        for created, batch_id, _, batch in self._heap:
            if batch_id in self.policy.protect_ids:
                self._keep(Rule.PROTECTED, batch)
            elif created > self._young_after:
                self._keep(Rule.MIN_AGE, batch)
            else:
                self._keep(Rule.KEEP_LAST, batch)
        self._heap.clear()

        # Most overdue first; the id settles ties so the order never depends on the listing's.
        self._actions.sort()
        cancels = tuple(
            [
                Decision(batch, Action.CANCEL, rule, eligible)
                for eligible, _, _, rule, batch in self._actions
                if rule is Rule.STALE
            ]
        )
        deletes = tuple(
            [
                Decision(batch, Action.DELETE, rule, eligible)
                for eligible, _, _, rule, batch in self._actions
                if rule is not Rule.STALE
            ]
        )
        self._actions.clear()
        withheld: tuple[Decision, ...] = ()
        deferred: tuple[Decision, ...] = ()
        stop: StopReason | None = None
        if not complete:
            stop = StopReason.INCOMPLETE_LISTING
            withheld, cancels, deletes = (*cancels, *deletes), (), ()
        else:
            if deletes and exceeds_fraction(
                len(deletes), self._listed, self.policy.max_delete_fraction
            ):
                stop = StopReason.SAFETY_STOP
                withheld, deletes = deletes, ()
            # Cancels first: a stale in_progress batch keeps costing; then the deletes.
            cap = self.policy.max_actions_per_run
            queue = (*cancels, *deletes)
            if len(queue) > cap:
                deferred = queue[cap:]
                cancels = cancels[:cap]
                deletes = deletes[: max(0, cap - len(cancels))]

        kept: tuple[Decision, ...] = ()
        if self._kept is not None:
            self._kept.sort(key=lambda item: (item[1].created_at, item[1].id))
            kept = tuple(Decision(batch, Action.KEEP, rule) for rule, batch in self._kept)
        unknown = tuple(sorted(self._unknown, key=lambda b: (b.created_at, b.id)))
        return Plan(
            workspace=self.workspace,
            now=self.now,
            listed=self._listed,
            decision_counts={
                (RULE_ACTION[rule], rule): n for rule, n in self._rule_counts.items() if n
            },
            status_counts=dict(self._status_counts),
            oldest_created=dict(self._oldest),
            cancels=cancels,
            deletes=deletes,
            deferred=deferred,
            withheld=withheld,
            kept=kept,
            stop=stop,
            unknown_statuses=unknown,
            max_delete_fraction=self.policy.max_delete_fraction,
            max_actions_per_run=self.policy.max_actions_per_run,
        )


def _before(now: datetime, threshold: timedelta | None) -> datetime | None:
    return None if threshold is None else now - threshold


def exceeds_fraction(deletes: int, listed: int, fraction: float) -> bool:
    """Return whether ``deletes / listed > fraction``, exactly (0.3 means three tenths).

    The float goes through its shortest decimal form, so ``3 / 10 > 0.3`` is false as a user
    reading ``REAPER_MAX_DELETE_FRACTION=0.3`` expects, not true as binary floating point says.
    """
    if listed <= 0:
        return False
    return Fraction(deletes, listed) > Fraction(repr(fraction))


def plan(
    batches: Iterable[Batch],
    now: datetime,
    policy: Policy,
    *,
    workspace: str | None = None,
    complete: bool = True,
    record_kept: bool = False,
) -> Plan:
    """Plan a whole listing at once (a Planner fed in one go)."""
    planner = Planner(policy, now, workspace=workspace, record_kept=record_kept)
    planner.add(batches)
    return planner.finish(complete=complete)
