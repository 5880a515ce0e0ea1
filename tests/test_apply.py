"""``plan --out`` then ``apply`` over real HTTP against the emulator (SPEC section 3).

The emulator counts every request it answers and logs every cancel and delete, so "nothing sent"
and "only the plan's batches were touched" are checked where the requests land. What must remain
is written by hand from the SPEC's rules, never recomputed with the policy's code.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reaper.cli import main
from reaper.client import BatchClient
from reaper.commands.apply import run_apply
from reaper.commands.explain import run_explain
from reaper.commands.plan import run_plan
from reaper.cycle import CycleReport, PlanSelector, run_cycle
from reaper.emulator.state import EmulatorState
from reaper.exits import EX_CONFIG
from reaper.listing import BatchLister
from reaper.logs import reset_logging
from reaper.metrics import Metrics
from reaper.models import format_time
from reaper.reviewed import PlanWriter
from reaper.settings import Settings, load_settings
from tests.fake_api import FakeClient
from tests.helpers import Clock, api_batch, make_batch
from tests.test_cycle_emulator import client_for, emulator, remaining, settings_for

pytestmark = pytest.mark.anyio

M = timedelta(minutes=1)
H = timedelta(hours=1)
D = timedelta(days=1)


def seed(state: EmulatorState) -> None:
    """Seed a small mix; the comment on each line is the SPEC rule that decides it at plan time."""
    now = state.now()
    state.seed_objects(
        [
            api_batch("old_a", now, created_ago=20 * D, ended_ago=19 * D),  # 7: delete
            api_batch("old_b", now, created_ago=19 * D, ended_ago=18 * D),  # 7: delete
            api_batch("old_c", now, created_ago=18 * D, ended_ago=17 * D),  # 7: delete
            api_batch("newest_ended", now, created_ago=3 * H, ended_ago=2 * H),  # 5: keep-last
            api_batch("stale", now, created_ago=13 * H),  # 3: cancel
            api_batch("almost_due", now, created_ago=30 * D, ended_ago=7 * D - H),  # 8: due in 1 h
            api_batch("running", now, created_ago=2 * H),  # 4
        ]
    )


async def emulator_sleep_for(state: EmulatorState) -> Any:
    async def sleep(seconds: float) -> None:
        state.advance(seconds)
        await asyncio.sleep(0)

    return sleep


@asynccontextmanager
async def reaper_on(
    settings: Settings, state: EmulatorState, warp: Clock
) -> AsyncIterator[BatchClient]:
    async with client_for(settings, state, warp, Metrics()) as client:
        yield client


async def plan_to(
    settings: Settings,
    client: BatchLister,
    now: datetime,
    out: io.StringIO,
    err: io.StringIO,
    *,
    json_output: bool,
    out_file: Path | None = None,
) -> int:
    """``reaper plan`` (``--json`` or a table; ``--out out_file`` if given) into out and err."""
    return await run_plan(
        settings,
        now=now,
        json_output=json_output,
        show_all=False,
        out=out,
        err=err,
        client=client,
        out_file=out_file,
    )


async def make_plan(settings: Settings, state: EmulatorState, warp: Clock, path: Path) -> str:
    out, err = io.StringIO(), io.StringIO()
    async with reaper_on(settings, state, warp) as client:
        code = await plan_to(
            settings, client, state.now(), out, err, json_output=False, out_file=path
        )
    assert code == 0, err.getvalue()
    return out.getvalue()


async def apply(
    settings: Settings, state: EmulatorState, warp: Clock, path: Path
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    sleep = await emulator_sleep_for(state)
    async with reaper_on(settings, state, warp) as client:

        async def cycle(select: PlanSelector) -> CycleReport:
            return await run_cycle(
                settings, client, metrics=Metrics(), now=state.now, sleep=sleep, select=select
            )

        code = await run_apply(settings, path, now=state.now, out=out, err=err, cycle=cycle)
    return code, out.getvalue(), err.getvalue()


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def touched(state: EmulatorState) -> set[str]:
    return {m.batch_id for m in state.stats.mutations if m.batch_id is not None}


async def test_plan_out_writes_the_actions_and_still_prints_the_table(tmp_path: Path) -> None:
    """plan --out writes one JSON document naming each action, and prints the table as before."""
    warp = Clock(speedup=50)
    with emulator(warp) as (base_url, state):
        seed(state)
        settings = settings_for(base_url, keep_last="1")
        table = await make_plan(settings, state, warp, tmp_path / "plan.json")
    document = json.loads((tmp_path / "plan.json").read_text())
    assert document["version"] == 1
    assert document["base_url"] == base_url
    assert document["workspaces"] == ["default"]
    assert document["policy"]["REAPER_KEEP_LAST"] == "1"
    actions = {a["id"]: (a["action"], a["rule"]) for a in document["actions"]}
    assert actions == {
        "old_a": ("delete", "ended_retention"),
        "old_b": ("delete", "ended_retention"),
        "old_c": ("delete", "ended_retention"),
        "stale": ("cancel", "stale"),
    }
    assert all(a["batch"]["id"] == a["id"] for a in document["actions"])
    assert "old_a" in table
    assert "Nothing was changed" in table
    assert leftovers(tmp_path) == ["plan.json"], "the temporary file was left behind"


async def test_apply_acts_on_the_intersection_only(tmp_path: Path) -> None:
    """Between plan and apply: one batch gone, one now kept, one newly due; only the rest acts."""
    warp = Clock(speedup=50)
    path = tmp_path / "plan.json"
    with emulator(warp) as (base_url, state):
        seed(state)
        dry = settings_for(base_url, keep_last="1")
        await make_plan(dry, state, warp, path)
        # In between: someone deletes old_a; newest_ended is deleted too, so old_c (the next
        # newest ended) becomes the one REAPER_KEEP_LAST=1 keeps; two hours pass, so almost_due
        # is now past its retention, but the plan does not name it.
        state.delete(state.default_workspace, "old_a")
        state.delete(state.default_workspace, "newest_ended")
        state.advance((2 * H).total_seconds())
        before = touched(state)
        live = settings_for(base_url, keep_last="1", dry_run="false")
        code, out, err = await apply(live, state, warp, path)
    assert code == 0, err
    assert touched(state) - before == {"old_b", "stale"}
    assert remaining(state) == {"old_c", "almost_due", "running"}
    assert "Skipped 2: 1 gone, 0 held, 1 now kept, 0 now another action." in out
    assert "skipped old_a in default: planned delete, gone" in out
    assert "skipped old_c in default: planned delete, now kept (now keep: keep_last)" in out
    assert "Done: 1 canceled, 2 deleted." in out  # the stale batch, canceled then deleted


async def test_a_hold_added_and_a_cancel_by_someone_else_are_skipped_by_reason(
    tmp_path: Path,
) -> None:
    """A hold written after the plan keeps its batch (held); a stale batch someone else canceled
    is now due for a delete by rule canceled_stale, not the planned cancel (now another action)."""
    warp = Clock(speedup=50)
    path = tmp_path / "plan.json"
    holds = tmp_path / "holds.jsonl"
    holds.write_text("# no holds yet\n")
    with emulator(warp) as (base_url, state):
        seed(state)
        env = {"keep_last": "1", "holds_file": str(holds)}
        await make_plan(settings_for(base_url, **env), state, warp, path)
        until = format_time(state.now() + D)
        holds.write_text(f'{{"id": "old_b", "until": "{until}", "reason": "audit", "by": "al"}}\n')
        state.cancel(state.default_workspace, "stale")
        state.advance(60)  # the emulator's cancel takes 45 s
        before = touched(state)
        code, out, err = await apply(
            settings_for(base_url, dry_run="false", **env), state, warp, path
        )
    assert code == 0, err
    assert touched(state) - before == {"old_a", "old_c"}
    assert remaining(state) >= {"old_b", "stale"}
    assert "Skipped 2: 0 gone, 1 held, 0 now kept, 1 now another action." in out
    assert "skipped old_b in default: planned delete, held (now keep: held)" in out
    assert "skipped stale in default: planned cancel, now another action" in out


async def test_apply_in_a_dry_run_reports_and_sends_nothing(tmp_path: Path) -> None:
    """REAPER_DRY_RUN=true: apply says what it would do, and not one cancel or delete is sent."""
    warp = Clock(speedup=50)
    path = tmp_path / "plan.json"
    with emulator(warp) as (base_url, state):
        seed(state)
        settings = settings_for(base_url, keep_last="1")
        await make_plan(settings, state, warp, path)
        code, out, err = await apply(settings, state, warp, path)
        assert state.stats.mutating() == {"create": 0, "cancel": 0, "delete": 0}
    assert code == 0, err
    assert "Would act on 4 of them" in out
    assert "DRY RUN" in out


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"delete_ended_after": "8d"}, "REAPER_DELETE_ENDED_AFTER: plan 7d, now 8d"),
        ({"protect_ids": "stale"}, "REAPER_PROTECT_IDS"),
        ({"workspace_ids": "wrkspc_other"}, "REAPER_WORKSPACE_IDS"),
        ({"base_url": "http://127.0.0.1:9"}, "ANTHROPIC_BASE_URL"),
    ],
)
async def test_a_plan_made_under_other_settings_is_refused_with_nothing_sent(
    tmp_path: Path, change: dict[str, str], named: str
) -> None:
    """Another policy, workspace set or API: exit 78, one line naming it, no request at all."""
    warp = Clock(speedup=50)
    path = tmp_path / "plan.json"
    with emulator(warp) as (base_url, state):
        seed(state)
        await make_plan(settings_for(base_url), state, warp, path)
        requests = state.stats.count()
        env = {"dry_run": "false", **change}
        url = env.pop("base_url", base_url)
        code, out, err = await apply(settings_for(url, **env), state, warp, path)
        assert state.stats.count() == requests, "apply sent a request"
    assert code == EX_CONFIG
    assert named in err
    assert err.count("\n") == 1
    assert out == ""


async def test_a_stale_or_unreadable_plan_is_refused_with_nothing_sent(tmp_path: Path) -> None:
    """Older than REAPER_PLAN_MAX_AGE, or not a plan at all: exit 78 and no request."""
    warp = Clock(speedup=50)
    path = tmp_path / "plan.json"
    garbage = tmp_path / "garbage.json"
    garbage.write_text('{"version": 1, "actions": [')
    with emulator(warp) as (base_url, state):
        seed(state)
        await make_plan(settings_for(base_url), state, warp, path)
        state.advance((3 * H).total_seconds())
        requests = state.stats.count()
        live = settings_for(base_url, dry_run="false", plan_max_age="2h")
        stale = await apply(live, state, warp, path)
        unreadable = await apply(live, state, warp, garbage)
        missing = await apply(live, state, warp, tmp_path / "nowhere.json")
        assert state.stats.count() == requests
    for code, out, err in (stale, unreadable, missing):
        assert code == EX_CONFIG
        assert out == ""
        assert err.startswith("reaper: plan ")
    assert "older than REAPER_PLAN_MAX_AGE=2h" in stale[2]
    assert "not a reviewed plan" in unreadable[2]
    assert "cannot read it" in missing[2]


@pytest.fixture
def _reset_logging() -> Iterator[None]:
    """The command configures logging to the captured stderr: undo that after the test."""
    yield
    reset_logging()


@pytest.mark.usefixtures("_reset_logging")
def test_the_apply_command_refuses_a_missing_plan_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``reaper apply FILE`` through the command line: exit 78, one line naming the file."""
    for name in [n for n in os.environ if n.startswith("REAPER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-cli-test-key-0000")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")  # never reached
    missing = tmp_path / "plan.json"
    assert main(["apply", str(missing)]) == EX_CONFIG
    err = capsys.readouterr().err
    assert err == f"reaper: plan {missing}: cannot read it: No such file or directory\n"


async def test_plan_counts_held_batches_and_explain_shows_the_hold(tmp_path: Path) -> None:
    """plan --json counts rule held; explain names until, reason and owner; neither acts."""
    holds = tmp_path / "holds.jsonl"
    warp = Clock(speedup=50)
    with emulator(warp) as (base_url, state):
        seed(state)
        until = format_time(state.now() + D)
        holds.write_text(
            f'{{"id": "old_a", "until": "{until}", "reason": "audit", "by": "al"}}\n'
            f'{{"id": "old_b", "until": "{format_time(state.now() - D)}", "reason": "done"}}\n'
        )
        settings = settings_for(base_url, holds_file=str(holds))
        out, err = io.StringIO(), io.StringIO()
        async with reaper_on(settings, state, warp) as client:
            code = await plan_to(settings, client, state.now(), out, err, json_output=True)
            explained = io.StringIO()
            explain_code = await run_explain(
                settings,
                "old_a",
                now=state.now(),
                json_output=False,
                out=explained,
                err=err,
                client=client,
            )
        assert state.stats.mutating() == {"create": 0, "cancel": 0, "delete": 0}
    assert (code, explain_code) == (0, 0), err.getvalue()
    summary = json.loads(out.getvalue().splitlines()[-1])
    assert summary["by_rule"]["held"] == 1
    rows = [json.loads(line) for line in out.getvalue().splitlines()[:-1]]
    assert "old_a" not in {row["id"] for row in rows}
    assert "old_b" in {row["id"] for row in rows}  # its hold expired: decided as if none
    text = explained.getvalue()
    assert f"held until {until}" in text
    assert "reason: audit; by: al" in text


async def test_plan_with_a_broken_holds_file_says_which_line_and_fails(tmp_path: Path) -> None:
    """A holds file that cannot be parsed: plan prints one line naming it and exits 1."""
    holds = tmp_path / "holds.jsonl"
    holds.write_text('# fine\n{"id": "old_a"}\n')
    warp = Clock(speedup=50)
    with emulator(warp) as (base_url, state):
        settings = settings_for(base_url, holds_file=str(holds))
        out, err = io.StringIO(), io.StringIO()
        async with reaper_on(settings, state, warp) as client:
            code = await plan_to(
                settings,
                client,
                state.now(),
                out,
                err,
                json_output=True,
                out_file=tmp_path / "plan.json",
            )
    assert code == 1
    assert err.getvalue() == (f"reaper: REAPER_HOLDS_FILE={holds}: line 2: 'until' is required\n")
    assert leftovers(tmp_path) == ["holds.jsonl"], "a plan was written"


async def test_plan_out_writes_nothing_when_a_listing_fails(tmp_path: Path) -> None:
    """A page that cannot be read: no plan file at all (half a plan must never be applied)."""
    clock = Clock()
    old = [make_batch(f"old_{i}", created_ago=20 * D, ended_ago=19 * D) for i in range(3)]
    client = FakeClient(old, clock=clock, page_size=1)
    client.list_fault_page[None] = 3
    out, err = io.StringIO(), io.StringIO()
    code = await plan_to(
        load_settings({}, require_key=False),
        client,
        clock.now(),
        out,
        err,
        json_output=False,
        out_file=tmp_path / "plan.json",
    )
    assert code == 1
    assert "listing failed" in err.getvalue()
    assert leftovers(tmp_path) == []


async def test_apply_acts_in_no_workspace_it_cannot_list_and_says_so(tmp_path: Path) -> None:
    """Two workspaces, the second's listing fails: the first acts, the second is not looked at."""
    clock = Clock()
    old = [
        make_batch(f"{ws}_old", created_ago=20 * D, ended_ago=19 * D, workspace=ws)
        for ws in ("wrkspc_a", "wrkspc_b")
    ]
    settings = load_settings(
        {"REAPER_WORKSPACE_IDS": "wrkspc_a,wrkspc_b", "REAPER_DRY_RUN": "false"},
        require_key=False,
    )
    path = tmp_path / "plan.json"
    with PlanWriter(path, settings, created_at=clock.now()) as writer:
        for b in old:
            writer.add(b, "delete", "ended_retention")
    client = FakeClient(old, clock=clock)
    client.list_fault_page["wrkspc_b"] = 1

    async def cycle(select: PlanSelector) -> CycleReport:
        return await run_cycle(
            settings, client, metrics=Metrics(), now=clock.now, sleep=clock.sleep, select=select
        )

    out, err = io.StringIO(), io.StringIO()
    code = await run_apply(settings, path, now=clock.now, out=out, err=err, cycle=cycle)
    assert code == 1
    assert client.mutating_calls() == [("delete", "wrkspc_a", "wrkspc_a_old")]
    assert "Not looked at: 1, in workspaces that could not be listed" in out.getvalue()
    assert "LISTING FAILED in workspace wrkspc_b" in out.getvalue()
