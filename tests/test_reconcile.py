"""``apply``'s intersection: never outside the reviewed plan, never on what the policy now keeps.

The pure ``Reconciler`` is checked rule by rule, then under hypothesis twice: on its own (random
plans against random current decisions) and inside a real cycle on the fake API, where the batches
change between the plan and the apply (deleted, ended, aged) and every cancel and delete that
reaches the API is compared with the plan and with the policy's current decision.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reaper.cycle import run_cycle
from reaper.metrics import Metrics
from reaper.models import ENDED, IN_PROGRESS, Batch
from reaper.policy import Action, Decision, Plan, Policy, Rule, StopReason, plan
from reaper.reconcile import Reconciler, SkipReason, narrow
from reaper.reviewed import PlannedAction
from reaper.settings import load_settings
from tests.fake_api import FakeClient
from tests.helpers import T0, Clock, make_batch

H = timedelta(hours=1)
D = timedelta(days=1)


def planned(decision: Decision, action: str | None = None) -> PlannedAction:
    return PlannedAction(
        id=decision.batch.id,
        workspace=decision.batch.workspace,
        action=action or str(decision.action),
        rule=str(decision.rule),
    )


def decide(batch_id: str, action: Action, rule: Rule, *, workspace: str | None = None) -> Decision:
    b = make_batch(batch_id, created_ago=20 * D, ended_ago=19 * D, workspace=workspace)
    eligible = None if action is Action.KEEP else T0 - 12 * D
    return Decision(b, action, rule, eligible)


def empty_plan(workspace: str | None = None, cap: int = 10_000) -> Plan:
    return Plan(
        workspace=workspace,
        now=T0,
        listed=0,
        decision_counts={},
        status_counts={},
        oldest_created={},
        max_actions_per_run=cap,
    )


def run_restrict(
    reconciler: Reconciler, decisions: list[Decision], plan_: Plan | None = None
) -> Plan:
    base = plan_ if plan_ is not None else empty_plan()
    for d in decisions:
        reconciler.observe(d, base.workspace)
    return reconciler.restrict(base)


def test_each_skip_reason_is_given_by_what_the_policy_says_now() -> None:
    """Gone, now kept, now another action; the same action is acted on, with today's decision."""
    same = decide("same", Action.DELETE, Rule.ENDED_RETENTION)
    kept = decide("kept", Action.KEEP, Rule.KEEP_LAST)
    other = decide("other", Action.DELETE, Rule.ENDED_RETENTION)
    reconciler = Reconciler(
        [
            planned(same),
            planned(kept, "delete"),
            planned(other, "cancel"),
            PlannedAction("gone", None, "delete", "ended_retention"),
        ]
    )
    narrowed = run_restrict(reconciler, [same, kept, other])
    assert narrowed.deletes == (same,)
    assert narrowed.cancels == ()
    reasons = {s.id: s.reason for s in reconciler.skipped}
    assert reasons == {
        "kept": SkipReason.NOW_KEPT,
        "other": SkipReason.NOW_OTHER_ACTION,
        "gone": SkipReason.GONE,
    }
    assert reconciler.skipped_by_reason() == {
        "gone": 1,
        "held": 0,
        "now_kept": 1,
        "now_other_action": 1,
    }


def test_a_batch_of_another_workspace_is_not_taken_for_the_planned_one() -> None:
    """The plan names (workspace, id): the same id listed elsewhere is not acted on."""
    there = decide("twin", Action.DELETE, Rule.ENDED_RETENTION, workspace="wrkspc_b")
    reconciler = Reconciler([PlannedAction("twin", "wrkspc_a", "delete", "ended_retention")])
    narrowed = run_restrict(reconciler, [there], empty_plan("wrkspc_b"))
    assert narrowed.deletes == ()


def test_the_cap_counts_the_intersection_and_defers_the_rest() -> None:
    """REAPER_MAX_ACTIONS_PER_RUN applies to what apply acts on, cancels first."""
    deletes = [decide(f"d{i}", Action.DELETE, Rule.ENDED_RETENTION) for i in range(3)]
    cancel = Decision(
        make_batch("c", IN_PROGRESS, created_ago=13 * H), Action.CANCEL, Rule.STALE, T0
    )
    reconciler = Reconciler([planned(d) for d in (*deletes, cancel)])
    narrowed = run_restrict(reconciler, [*deletes, cancel], empty_plan(cap=2))
    assert [d.batch.id for d in (*narrowed.cancels, *narrowed.deletes)] == ["c", "d0"]
    assert [d.batch.id for d in narrowed.deferred_sample] == ["d1", "d2"]
    assert narrowed.deferred_counts == {(Action.DELETE, Rule.ENDED_RETENTION): 2}


def test_a_stop_of_the_fresh_plan_withholds_every_planned_action() -> None:
    """A safety stop now: nothing of the reviewed plan is acted on, as in a cycle."""
    d = decide("d", Action.DELETE, Rule.ENDED_RETENTION)
    c = Decision(make_batch("c", IN_PROGRESS, created_ago=13 * H), Action.CANCEL, Rule.STALE, T0)
    stopped = narrow(dataclasses.replace(empty_plan(), stop=StopReason.SAFETY_STOP), [d, c])
    assert (stopped.cancels, stopped.deletes) == ((), ())
    assert stopped.withheld == (c, d)
    assert stopped.withheld_total == 2


def test_a_batch_kept_by_a_hold_is_skipped_as_held() -> None:
    """A batch the policy now keeps under rule held is counted apart from other keeps."""
    held = decide("held", Action.KEEP, Rule.HELD)
    reconciler = Reconciler([planned(held, "delete")])
    run_restrict(reconciler, [held])
    assert [s.reason for s in reconciler.skipped] == [SkipReason.HELD]


ACTIONS = st.sampled_from([Action.KEEP, Action.CANCEL, Action.DELETE])


@given(
    plan_actions=st.dictionaries(
        st.sampled_from([f"b{i}" for i in range(12)]), st.sampled_from(["cancel", "delete"])
    ),
    now_actions=st.dictionaries(st.sampled_from([f"b{i}" for i in range(16)]), ACTIONS),
    cap=st.integers(0, 12),
)
def test_restrict_never_acts_outside_the_plan_or_on_a_kept_batch(
    plan_actions: dict[str, str], now_actions: dict[str, Action], cap: int
) -> None:
    """Acting is a subset of (planned) and (same action now); every planned batch is accounted."""
    rules = {Action.KEEP: Rule.RETAINED, Action.CANCEL: Rule.STALE}
    decisions = [
        decide(i, a, rules.get(a, Rule.ENDED_RETENTION)) for i, a in sorted(now_actions.items())
    ]
    reconciler = Reconciler(
        PlannedAction(i, None, a, "ended_retention") for i, a in plan_actions.items()
    )
    narrowed = run_restrict(reconciler, decisions, empty_plan(cap=cap))
    acting = [*narrowed.cancels, *narrowed.deletes]
    assert len(acting) <= cap
    assert len(acting) + narrowed.deferred == reconciler.matched
    for d in (*acting, *narrowed.deferred_sample):
        assert d.batch.id in plan_actions
        assert str(d.action) == plan_actions[d.batch.id] == str(now_actions[d.batch.id])
    assert reconciler.matched + len(reconciler.skipped) == len(plan_actions)


def _note(actions: dict[str, str], decision: Decision) -> None:
    if decision.action is not Action.KEEP:
        actions[decision.batch.id] = str(decision.action)


def _population() -> st.SearchStrategy[list[Batch]]:
    def one(i: int, kind: int, age_h: int, ended_h: int) -> Batch:
        if kind == 0:
            return make_batch(f"b{i:02}", IN_PROGRESS, created_ago=age_h * H)
        return make_batch(
            f"b{i:02}", ENDED, created_ago=age_h * H + ended_h * H, ended_ago=ended_h * H
        )

    return st.lists(
        st.builds(
            lambda kind, age_h, ended_h: (kind, age_h, ended_h),
            st.integers(0, 2),
            st.integers(0, 30),
            st.integers(0, 24 * 10),
        ),
        max_size=14,
    ).map(lambda rows: [one(i, *row) for i, row in enumerate(rows)])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches=_population(),
    deleted=st.sets(st.integers(0, 13)),
    ended=st.sets(st.integers(0, 13)),
    hours_later=st.integers(0, 23),
    keep_last=st.integers(0, 3),
    cap=st.integers(0, 10),
)
def test_apply_in_a_cycle_never_acts_outside_the_plan_or_on_a_kept_batch(
    batches: list[Batch],
    deleted: set[int],
    ended: set[int],
    hours_later: int,
    keep_last: int,
    cap: int,
) -> None:
    """Plan, change the batches, apply: each cancel or delete sent is planned and still due."""
    env = {
        "ANTHROPIC_API_KEY": "sk-ant-test-key-0000",
        "REAPER_DRY_RUN": "false",
        "REAPER_KEEP_LAST": str(keep_last),
        "REAPER_MAX_ACTIONS_PER_RUN": str(cap),
        "REAPER_DELETE_ENDED_AFTER": "3d",
        "REAPER_CANCEL_WAIT_TIMEOUT": "1m",
    }
    live = load_settings(env)
    policy = Policy.from_settings(live)
    planned_now: dict[str, str] = {}
    plan(batches, T0, policy, on_decision=lambda d: _note(planned_now, d))
    clock = Clock()
    client = FakeClient(batches, clock=clock, page_size=4)
    for i, b in enumerate(batches):
        if i in deleted:
            del client.store[None][b.id]
        elif i in ended and b.processing_status == IN_PROGRESS:
            client.end(b.id)
    clock.advance((hours_later * H).total_seconds())
    now_action: dict[str, Action] = {}
    plan(
        list(client.store[None].values()),
        clock.now(),
        policy,
        on_decision=lambda d: now_action.__setitem__(d.batch.id, d.action),
    )
    reconciler = Reconciler(
        PlannedAction(i, None, a, "from_the_plan") for i, a in planned_now.items()
    )
    asyncio.run(
        run_cycle(
            live, client, metrics=Metrics(), now=clock.now, sleep=clock.sleep, select=reconciler
        )
    )
    sent = client.mutating_calls()
    assert len({batch_id for _e, _w, batch_id in sent if _e == "cancel"}) <= cap
    for endpoint, _workspace, batch_id in sent:
        assert batch_id in planned_now, f"{endpoint} {batch_id}: not in the plan"
        assert now_action[batch_id] is not Action.KEEP, f"{endpoint} {batch_id}: kept now"
        assert str(now_action[batch_id]) == planned_now[batch_id]
