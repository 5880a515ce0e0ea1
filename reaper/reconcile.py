"""Apply a reviewed plan: act on what was reviewed AND what the policy still says, nothing else.

``reaper apply FILE`` (SPEC section 3, Reviewed plans) lists again and plans again with the
current policy, then acts only on the intersection: the plan's batches to which the policy still
gives the same action. A :class:`Reconciler` sits between the planner and the executor of each
workspace: it sees every decision as the listing is planned (``observe``, keeping only those of
batches the plan names, so memory is O(plan)), then narrows the workspace's plan to the
intersection (``restrict``). The executor, the guards' stop, the archive and the ledger then run
as in any cycle, on the narrowed plan.

A planned batch is skipped, with its reason, when it is

- ``gone``: not listed any more (deleted or expired by someone else);
- ``held``: the policy now keeps it under rule ``held`` (an active hold in REAPER_HOLDS_FILE);
- ``now_kept``: the policy now keeps it under another rule (an id added to REAPER_PROTECT_IDS,
  a batch that became one of the REAPER_KEEP_LAST newest, ...);
- ``now_other_action``: the policy now gives it the other action (a stale batch planned for a
  cancel that has ended since, and is now due for a delete).

A batch the policy now picks but the plan does not name is never acted on: it is not even
remembered. The per-run cap counts the intersection (most urgent first, the rest deferred), and a
stop of the workspace's plan (an incomplete listing, a safety stop) holds all of it back, as in
a cycle. Pure: no I/O, no clock.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final, Protocol

from reaper.policy import SAMPLE_SIZE, Action, Decision, Plan, Rule
from reaper.reviewed import PlannedAction

_EARLIEST: Final = datetime.min.replace(tzinfo=UTC)


class PlanSelector(Protocol):
    """Narrow what a cycle acts on: sees each decision of a workspace, then narrows its plan."""

    def observe(self, decision: Decision, workspace: str | None) -> None:
        """See one decision of a workspace's plan as it is made."""
        ...

    def restrict(self, plan: Plan) -> Plan:
        """Return the workspace's plan narrowed to what may be acted on."""
        ...


class SkipReason(StrEnum):
    """Why a batch the reviewed plan names is not acted on."""

    GONE = "gone"
    HELD = "held"
    NOW_KEPT = "now_kept"
    NOW_OTHER_ACTION = "now_other_action"


# How people read the reasons (apply's report).
REASON_TEXT: Final = {
    SkipReason.GONE: "gone",
    SkipReason.HELD: "held",
    SkipReason.NOW_KEPT: "now kept",
    SkipReason.NOW_OTHER_ACTION: "now another action",
}


@dataclass(frozen=True, slots=True)
class Skipped:
    """A planned action not taken: the batch, what the plan said, and what the policy says now."""

    id: str
    workspace: str | None
    planned: str
    reason: SkipReason
    action_now: str | None = None  # None when the batch is gone
    rule_now: str | None = None


class Reconciler:
    """Narrow each workspace's fresh plan to the reviewed plan's batches that keep their action."""

    def __init__(self, actions: Iterable[PlannedAction]) -> None:
        self._planned: dict[str | None, dict[str, PlannedAction]] = {}
        for action in actions:
            self._planned.setdefault(action.workspace, {})[action.id] = action
        self._seen: dict[str, Decision] = {}
        self.skipped: list[Skipped] = []
        self.matched = 0

    @property
    def planned(self) -> int:
        """Return how many actions the reviewed plan names."""
        return sum(len(actions) for actions in self._planned.values())

    def names(self, workspace: str | None, batch_id: str) -> bool:
        """Return whether the reviewed plan names this batch in this workspace."""
        return batch_id in self._planned.get(workspace, {})

    def observe(self, decision: Decision, workspace: str | None) -> None:
        """See one decision of the fresh plan; only those of planned batches are kept."""
        if decision.batch.id in self._planned.get(workspace, {}):
            self._seen[decision.batch.id] = decision

    def restrict(self, plan: Plan) -> Plan:
        """Return ``plan`` acting only on the intersection; record what is skipped and why.

        Call once per workspace, after every decision of its listing was observed.
        """
        planned = self._planned.get(plan.workspace, {})
        seen, self._seen = self._seen, {}
        same: list[Decision] = []
        for batch_id, wanted in planned.items():
            now = seen.get(batch_id)
            reason = _skip_reason(wanted, now)
            if reason is None:
                assert now is not None
                same.append(now)
            else:
                self.skipped.append(
                    Skipped(
                        id=batch_id,
                        workspace=plan.workspace,
                        planned=wanted.action,
                        reason=reason,
                        action_now=None if now is None else str(now.action),
                        rule_now=None if now is None else str(now.rule),
                    )
                )
        self.matched += len(same)
        return narrow(plan, same)

    def skipped_by_reason(self) -> dict[str, int]:
        """Count the skipped actions by reason, every reason present (0 when none)."""
        counts = Counter(s.reason for s in self.skipped)
        return {str(reason): counts[reason] for reason in SkipReason}


def _skip_reason(wanted: PlannedAction, now: Decision | None) -> SkipReason | None:
    if now is None:
        return SkipReason.GONE
    if str(now.action) == wanted.action:
        return None
    if now.action is Action.KEEP:
        return SkipReason.HELD if now.rule is Rule.HELD else SkipReason.NOW_KEPT
    return SkipReason.NOW_OTHER_ACTION


def narrow(plan: Plan, same: Iterable[Decision]) -> Plan:
    """Return ``plan`` acting on ``same`` only (decisions of it), with its guards re-applied.

    A stop of the plan (an incomplete listing, a safety stop) withholds every one of them, as in
    a cycle; otherwise the per-run cap counts only these actions, cancels first and the most
    overdue first, and defers the rest.
    """
    chosen = sorted(same, key=_priority)
    cap = max(0, plan.max_actions_per_run)
    if plan.stop is not None:
        return dataclasses.replace(
            plan,
            cancels=(),
            deletes=(),
            deferred_counts={},
            deferred_sample=(),
            withheld_counts=_counts(chosen),
            withheld=tuple(chosen[:cap]),
        )
    acting, deferred = chosen[:cap], chosen[cap:]
    return dataclasses.replace(
        plan,
        cancels=tuple(d for d in acting if d.action is Action.CANCEL),
        deletes=tuple(d for d in acting if d.action is Action.DELETE),
        deferred_counts=_counts(deferred),
        deferred_sample=tuple(deferred[:SAMPLE_SIZE]),
        withheld_counts={},
        withheld=(),
    )


def _counts(decisions: Iterable[Decision]) -> dict[tuple[Action, Rule], int]:
    return dict(Counter((d.action, d.rule) for d in decisions))


def _priority(decision: Decision) -> tuple[int, datetime, str]:
    # Cancels first (an in_progress batch keeps costing), then the most overdue, as the policy.
    eligible = decision.eligible_at if decision.eligible_at is not None else _EARLIEST
    return (0 if decision.action is Action.CANCEL else 1, eligible, decision.batch.id)
