"""The retention policy of SPEC section 3: listed batches and ``now`` in, a plan out.

Pure: no I/O, no clock (``now`` is an argument), no logging. For each batch the first matching
rule wins:

1. ``protected``: its id is in ``REAPER_PROTECT_IDS`` -> keep;
1b. ``held``: it has an active hold (``now < until``) -> keep; expired holds are ignored;
2. ``min_age``: created less than ``REAPER_MIN_AGE`` ago -> keep (exactly ``min_age`` old is not
   protected by this rule);
3. ``stale``: ``in_progress`` and created at least ``REAPER_CANCEL_STALE_AFTER`` ago -> cancel;
4. ``not_ended``: ``in_progress`` or ``canceling`` -> keep (wait);
5. ``keep_last``: ``ended`` and among the ``REAPER_KEEP_LAST`` most recently created of ALL the
   ended batches listed (protected and young ones included: the SPEC ranks "the batches ended at
   listing time", not the ones left after rules 1-2), ties in ``created_at`` broken by id (the
   greater id counts as more recent) -> keep;
5b. ``canceled_stale``: ``ended``, ``REAPER_DELETE_CANCELED``, ``cancel_initiated_at`` set and at
   least ``REAPER_CANCEL_STALE_AFTER`` after ``created_at`` -> delete, eligible since ``ended_at``;
6. ``failed_retention``: ``ended`` with errored + expired > 0 and ``ended_at`` at least
   ``REAPER_DELETE_FAILED_AFTER`` ago -> delete;
7. ``ended_retention``: ``ended`` with no errored or expired request and ``ended_at`` at least
   ``REAPER_DELETE_ENDED_AFTER`` ago -> delete;
8. ``retained`` -> keep; ``unknown_status`` when the status is not one the reaper knows (an ended
   batch without ``ended_at`` is ``retained``: it cannot be aged).

A threshold of ``None`` ("never") switches its rule off. Then the guards, per workspace: an
incomplete listing acts on nothing; the two fraction guards (planned deletes, every stale cancel
counted as one when ``delete_canceled``, over the batches listed; cancels over the ``in_progress``
batches listed): either one tripping is a safety stop that withholds every cancel and delete; then
the per-run cap, which counts batches acted on (cancels first, then deletes most overdue first; 0
acts on nothing).

Memory is bounded by what a cycle acts on, not by the listing (issue 16): the cap's worth of the
most urgent actions, keep-last's N, counts, and fixed-size samples. Every decision can be streamed
out as it is made (``on_decision``) by whoever needs them all (``plan --json``, ``explain``).
"""

from __future__ import annotations

import heapq
import itertools
import operator
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, TypeAlias

from reaper.decisions import (
    RULE_ACTION,
    SAMPLE_SIZE,
    Action,
    Decision,
    Plan,
    Rule,
)
from reaper.guards import Guard, StopReason, exceeds_fraction, tripped
from reaper.models import CANCELING, ENDED, IN_PROGRESS, KNOWN_STATUSES, Batch, Hold

# Re-exported: the policy's vocabulary, importable from here as before.
__all__ = [
    "RULE_ACTION",
    "SAMPLE_SIZE",
    "Action",
    "Decision",
    "Guard",
    "Plan",
    "Planner",
    "Policy",
    "PolicySettings",
    "Rule",
    "StopReason",
    "exceeds_fraction",
    "plan",
]


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
    @property
    def delete_canceled(self) -> bool: ...
    @property
    def max_cancel_fraction(self) -> float: ...


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
    delete_canceled: bool = True
    max_cancel_fraction: float = 1.0

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
            delete_canceled=settings.delete_canceled,
            max_cancel_fraction=settings.max_cancel_fraction,
        )


# An action while planning: (0 cancel / 1 delete, eligible_at, id, seq, rule, batch). Plain
# tuples sort natively in priority order (cancels first, then the most overdue; the id settles
# ties so the order never depends on the listing's; seq makes every entry distinct).
_Entry: TypeAlias = tuple[int, datetime, str, int, Rule, Batch]
_RULE_OF_ENTRY: Callable[[_Entry], Rule] = operator.itemgetter(4)


def _decision(entry: _Entry) -> Decision:
    kind, eligible, _, _, rule, batch = entry
    return Decision(batch, Action.CANCEL if kind == 0 else Action.DELETE, rule, eligible)


class Planner:
    """Decide batch by batch as pages arrive; independent of the listing's order and paging.

    Memory is O(cap + keep_last + SAMPLE_SIZE), whatever the number listed: actions go to a
    buffer that is cut back to the cap's most urgent whenever it holds a quarter more (the cut
    ones are counted as deferred and the most urgent of them sampled); keep-last ranks through a
    bounded min-heap of the ``keep_last`` most recently created ended batches, and a batch pushed
    out of it is decided under rules 5b-8 at once. ``on_decision`` sees each decision as made.
    """

    def __init__(
        self,
        policy: Policy,
        now: datetime,
        *,
        workspace: str | None = None,
        holds: Mapping[str, Hold] | None = None,
        on_decision: Callable[[Decision], None] | None = None,
    ) -> None:
        self.policy = policy
        self.now = now
        self.workspace = workspace
        self._emit = on_decision
        # Only active holds keep a batch; an expired one is ignored (the shell logs it).
        self._held = frozenset(i for i, hold in (holds or {}).items() if hold.active(now))
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
        self._cap = max(0, policy.max_actions_per_run)
        # The buffer is cut back to the cap when it holds a quarter more: peak memory 1.25 x cap.
        self._limit = self._cap + max(self._cap // 4, 16)
        self._actions: list[_Entry] = []
        self._in_order = 0  # how many of _actions, from the front, are already sorted
        self._deferred: dict[tuple[Action, Rule], int] = {}
        self._sample: list[_Entry] = []
        self._unknown: list[tuple[datetime, str, Batch]] = []
        self._heap: list[tuple[datetime, str, int, Batch]] = []
        self._finished = False

    def add(self, batches: Iterable[Batch]) -> None:
        """Decide every batch of ``batches`` (one page, or all of them)."""
        if self._finished:
            raise RuntimeError("Planner.add after finish")
        # Locals and one inlined loop body: this runs once per listed batch, millions per cycle.
        policy = self.policy
        protect, held, emit = policy.protect_ids, self._held, self._emit
        young_after = self._young_after
        stale_by, stale_after = self._stale_by, policy.cancel_stale_after
        canceled_after = stale_after if policy.delete_canceled else None
        failed_by, failed_after = self._failed_by, policy.delete_failed_after
        ended_by, ended_after = self._ended_by, policy.delete_ended_after
        keep_last, heap, seq = policy.keep_last, self._heap, self._seq
        status_counts, oldest, rule_counts = self._status_counts, self._oldest, self._rule_counts
        actions, limit = self._actions, self._limit
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
            entry: _Entry | None = None
            if status == ENDED:
                if keep_last:
                    # The heap holds the keep_last most recent; whoever falls out of it (this
                    # batch or an earlier one) is decided now, as not among the keep-last.
                    ranked = (created, batch.id, next(seq), batch)
                    if len(heap) < keep_last:
                        heapq.heappush(heap, ranked)
                        continue
                    if ranked > heap[0]:
                        ranked = heapq.heapreplace(heap, ranked)
                        batch = ranked[3]
                        created = ranked[0]
                if batch.id in protect:
                    rule = Rule.PROTECTED
                elif batch.id in held:
                    rule = Rule.HELD
                elif created > young_after:
                    rule = Rule.MIN_AGE
                elif (ended_at := batch.ended_at) is None:
                    rule = Rule.RETAINED
                elif (
                    canceled_after is not None
                    and (initiated := batch.cancel_initiated_at) is not None
                    and initiated - created >= canceled_after
                ):
                    rule = Rule.CANCELED_STALE
                    entry = (1, ended_at, batch.id, next(seq), rule, batch)
                elif batch.request_counts.errored or batch.request_counts.expired:
                    rule = Rule.RETAINED
                    if failed_by is not None and ended_at <= failed_by:
                        assert failed_after is not None
                        rule = Rule.FAILED_RETENTION
                        entry = (1, ended_at + failed_after, batch.id, next(seq), rule, batch)
                elif ended_by is not None and ended_at <= ended_by:
                    assert ended_after is not None
                    rule = Rule.ENDED_RETENTION
                    entry = (1, ended_at + ended_after, batch.id, next(seq), rule, batch)
                else:
                    rule = Rule.RETAINED
            else:
                if status not in KNOWN_STATUSES:
                    self._unknown.append((created, batch.id, batch))
                if batch.id in protect:
                    rule = Rule.PROTECTED
                elif batch.id in held:
                    rule = Rule.HELD
                elif created > young_after:
                    rule = Rule.MIN_AGE
                elif status == IN_PROGRESS:
                    rule = Rule.NOT_ENDED
                    if stale_by is not None and created <= stale_by:
                        assert stale_after is not None
                        rule = Rule.STALE
                        entry = (0, created + stale_after, batch.id, next(seq), rule, batch)
                elif status == CANCELING:
                    rule = Rule.NOT_ENDED
                else:
                    rule = Rule.UNKNOWN_STATUS
            rule_counts[rule] += 1
            if entry is not None:
                actions.append(entry)
                if len(actions) >= limit:
                    self._cut()
                if emit is not None:
                    emit(_decision(entry))
            elif emit is not None:
                emit(Decision(batch, RULE_ACTION[rule], rule))
        self._listed += listed
        if len(self._unknown) > 2 * SAMPLE_SIZE:
            self._unknown.sort()
            del self._unknown[SAMPLE_SIZE:]

    def _cut(self) -> None:
        """Keep the cap's most urgent actions; count the rest as deferred, sample the first."""
        actions, cap = self._actions, self._cap
        # The front is the last cut's survivors, already in order: sort only what came since,
        # then one more sort sees two ascending runs and merges them in linear time. (The cuts
        # were half of the planner's time on a first run, when each sorted the whole buffer.)
        tail = actions[self._in_order :]
        tail.sort()
        actions[self._in_order :] = tail
        actions.sort()
        cut = actions[cap:]
        del actions[cap:]
        self._in_order = len(actions)
        deferred = self._deferred
        # Counted by rule in C (a rule has one action: stale cancels, the rest delete).
        for rule, n in Counter(map(_RULE_OF_ENTRY, cut)).items():
            key = (RULE_ACTION[rule], rule)
            deferred[key] = deferred.get(key, 0) + n
        self._sample = heapq.nsmallest(SAMPLE_SIZE, itertools.chain(self._sample, cut))

    def _keep(self, rule: Rule, batch: Batch) -> None:
        self._rule_counts[rule] += 1
        if self._emit is not None:
            self._emit(Decision(batch, Action.KEEP, rule))

    def finish(self, *, complete: bool = True) -> Plan:
        """Decide the keep-last survivors, apply the guards and return the plan."""
        if self._finished:
            raise RuntimeError("Planner.finish called twice")
        self._finished = True
        for created, batch_id, _, batch in sorted(self._heap):
            if batch_id in self.policy.protect_ids:
                self._keep(Rule.PROTECTED, batch)
            elif batch_id in self._held:
                self._keep(Rule.HELD, batch)
            elif created > self._young_after:
                self._keep(Rule.MIN_AGE, batch)
            else:
                self._keep(Rule.KEEP_LAST, batch)
        self._heap.clear()
        self._cut()
        chosen = [_decision(entry) for entry in self._actions]
        self._actions.clear()
        counts = {(RULE_ACTION[rule], rule): n for rule, n in self._rule_counts.items() if n}
        policy = self.policy
        guards = tripped(
            cancels=counts.get((Action.CANCEL, Rule.STALE), 0),
            deletes=sum(n for (action, _), n in counts.items() if action is Action.DELETE),
            listed=self._listed,
            in_progress=self._status_counts.get(IN_PROGRESS, 0),
            max_delete_fraction=policy.max_delete_fraction,
            max_cancel_fraction=policy.max_cancel_fraction,
            delete_canceled=policy.delete_canceled,
        )
        stop = None
        if not complete or guards:
            # A stop withholds every cancel and every delete of the workspace.
            stop = StopReason.SAFETY_STOP if complete else StopReason.INCOMPLETE_LISTING
        acting = () if stop is not None else tuple(chosen)
        return Plan(
            workspace=self.workspace,
            now=self.now,
            listed=self._listed,
            decision_counts=counts,
            status_counts=dict(self._status_counts),
            oldest_created=dict(self._oldest),
            cancels=tuple(d for d in acting if d.action is Action.CANCEL),
            deletes=tuple(d for d in acting if d.action is Action.DELETE),
            deferred_counts={} if stop is not None else _sorted_counts(self._deferred),
            deferred_sample=() if stop is not None else tuple(map(_decision, self._sample)),
            withheld_counts={k: n for k, n in counts.items() if k[0] is not Action.KEEP}
            if stop is not None
            else {},
            withheld=tuple(chosen) if stop is not None else (),
            stop=stop,
            tripped=guards if complete else (),
            unknown_sample=tuple(b for _, _, b in sorted(self._unknown)[:SAMPLE_SIZE]),
            max_delete_fraction=policy.max_delete_fraction,
            max_actions_per_run=policy.max_actions_per_run,
            max_cancel_fraction=policy.max_cancel_fraction,
            delete_canceled=policy.delete_canceled,
        )


def _sorted_counts(counts: Mapping[tuple[Action, Rule], int]) -> dict[tuple[Action, Rule], int]:
    order = {rule: i for i, rule in enumerate(Rule)}
    return dict(sorted(counts.items(), key=lambda item: order[item[0][1]]))


def _before(now: datetime, threshold: timedelta | None) -> datetime | None:
    return None if threshold is None else now - threshold


def plan(
    batches: Iterable[Batch],
    now: datetime,
    policy: Policy,
    *,
    workspace: str | None = None,
    holds: Mapping[str, Hold] | None = None,
    complete: bool = True,
    on_decision: Callable[[Decision], None] | None = None,
) -> Plan:
    """Plan a whole listing at once (a Planner fed in one go)."""
    planner = Planner(policy, now, workspace=workspace, holds=holds, on_decision=on_decision)
    planner.add(batches)
    return planner.finish(complete=complete)
