"""``reaper plan`` and ``reaper explain``: formatting, exit codes, and a run against the emulator.

The emulator runs over real HTTP; its expected plan is a table written by hand from SPEC
section 3 (which batch gets which action and rule), never recomputed with the policy's code.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reaper import cli
from reaper.commands.explain import run_explain
from reaper.commands.plan import run_plan
from reaper.emulator.clock import ManualClock
from reaper.emulator.harness import new_state, running_emulator
from reaper.errors import ApiError
from reaper.explain import explain
from reaper.logs import reset_logging
from reaper.models import Batch
from reaper.policy import Policy, plan
from reaper.report import (
    decision_record,
    format_explanation,
    format_plan_table,
    json_row,
    summary_line,
    summary_record,
)
from reaper.settings import Settings, load_settings
from tests.policy_helpers import DAY, HOUR, NOW, make_batch

KEY = "sk-ant-api03-plan-command-test-key"
RECORD_KEYS = {"id", "workspace", "processing_status", "action", "rule", "created_at", "ended_at"}


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """The commands configure the global logging pipeline; undo it after each test."""
    yield
    reset_logging()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def settings_for(**env: str) -> Settings:
    return load_settings({"ANTHROPIC_API_KEY": KEY, **env})


class FakeLister:
    """An in-memory listing per workspace, served page by page; optionally failing midway."""

    def __init__(self, listing: dict[str | None, list[Batch]], *, fail: bool = False) -> None:
        self.listing = listing
        self.fail = fail

    async def list_pages(self, workspace: str | None) -> AsyncIterator[list[Batch]]:
        # Newest first, as the API lists (a listing out of order is refused).
        batches = sorted(self.listing.get(workspace, []), key=lambda b: b.created_at, reverse=True)
        for start in range(0, max(len(batches), 1), 2):
            yield batches[start : start + 2]
            if self.fail:
                raise ApiError("list", 500, "api_error", "Internal server error", "req_0123")


def sample_listing() -> list[Batch]:
    return [
        make_batch("msgbatch_old", created_ago=20 * DAY),
        make_batch("msgbatch_failed", created_ago=40 * DAY, errored=2),
        make_batch("msgbatch_stale", "in_progress", created_ago=13 * HOUR),
        make_batch("msgbatch_running", "in_progress", created_ago=2 * HOUR),
        make_batch("msgbatch_fresh", created_ago=2 * DAY),
    ]


# -- report formatting (pure)


def test_a_decision_record_has_exactly_the_specs_keys() -> None:
    """id, workspace, processing_status, action, rule, created_at, ended_at (RFC 3339 or null)."""
    result = plan(sample_listing(), NOW, Policy())
    record = decision_record(result.deletes[1])
    assert set(record) == RECORD_KEYS
    assert record["id"] == "msgbatch_failed"
    assert (record["action"], record["rule"]) == ("delete", "failed_retention")
    assert record["created_at"] == "2026-01-21T09:30:00.000000Z"
    assert record["ended_at"] == "2026-01-21T10:30:00.000000Z"
    stale = decision_record(result.cancels[0])
    assert stale["ended_at"] is None


def test_json_lines_end_with_a_summary_by_action_and_rule() -> None:
    """One object per actionable batch, then {"summary": true, ...} with the counts."""
    result = plan(sample_listing(), NOW, Policy())
    lines = [json.loads(json_row(d, None)) for d in result.actionable]
    lines.append(json.loads(summary_line([result])))
    # Cancels first, then the most overdue delete: msgbatch_old's 7 days ran out 12d 23h ago,
    # msgbatch_failed's 30 days only 9d 23h ago.
    assert [line["id"] for line in lines[:-1]] == [
        "msgbatch_stale",
        "msgbatch_old",
        "msgbatch_failed",
    ]
    summary = lines[-1]
    assert summary["summary"] is True
    assert summary["listed"] == 5
    assert summary["by_action"] == {"keep": 2, "cancel": 1, "delete": 2}
    assert summary["by_rule"] == {
        "stale": 1,
        "not_ended": 1,
        "failed_retention": 1,
        "ended_retention": 1,
        "retained": 1,
    }
    assert summary["by_action_rule"]["delete/ended_retention"] == 1
    assert summary["stop"] is None


def test_the_table_shows_actions_and_the_guards() -> None:
    """Columns id, workspace, status, age, action, rule; deferred ones marked; a summary."""
    result = plan(sample_listing(), NOW, Policy(max_actions_per_run=1, max_delete_fraction=0.6))
    table = format_plan_table([result])
    lines = table.splitlines()
    assert lines[0].split() == ["ID", "WORKSPACE", "STATUS", "AGE", "ACTION", "RULE", "GUARD"]
    assert lines[1].split() == [
        "msgbatch_stale",
        "default",
        "in_progress",
        "13h",
        "cancel",
        "stale",
    ]
    assert lines[2].split()[-2:] == ["ended_retention", "deferred"]
    assert "workspace default: 5 listed (ended 3, in_progress 2)" in table
    assert "  delete: 2 (failed_retention 1, ended_retention 1)" in table
    assert "guard: 2 actions deferred to later cycles, past REAPER_MAX_ACTIONS_PER_RUN=1" in table


def test_the_table_announces_a_safety_stop() -> None:
    """A tripped fraction guard is spelled out with the numbers."""
    result = plan(sample_listing(), NOW, Policy(max_delete_fraction=0.2))
    table = format_plan_table([result])
    assert (
        "SAFETY STOP: 3 of 5 listed batches (60.0%) would be deleted (stale cancels included), "
        "more than REAPER_MAX_DELETE_FRACTION=0.2: no cancel and no delete in this workspace"
    ) in table
    assert table.count("withheld: safety_stop") == 3
    summary = json.loads(summary_line([result]))
    assert summary["stop"] == "safety_stop"
    assert summary["workspaces"][0]["tripped"] == ["delete_fraction"]


def test_the_summary_aggregates_workspaces_and_keeps_each() -> None:
    """Several workspaces: totals, plus one entry per workspace with its own stop."""
    listing = sample_listing()
    a = plan(listing, NOW, Policy(), workspace="wrkspc_a")
    b = plan(listing[:2], NOW, Policy(max_delete_fraction=0.1), workspace="wrkspc_b")
    summary = summary_record([a, b])
    assert summary["listed"] == 7
    assert summary["stop"] == "safety_stop"
    assert [w["stop"] for w in summary["workspaces"]] == [None, "safety_stop"]
    assert summary["withheld"] == 2
    assert "all workspaces: 7 listed" in format_plan_table([a, b])


def test_an_explanation_reads_rule_by_rule() -> None:
    """Eight numbered rules, the deciding one marked, and the guards' verdict."""
    found = explain("msgbatch_old", sample_listing(), NOW, Policy())
    assert found is not None
    text = format_explanation(found)
    assert "decision: delete (rule ended_retention)" in text
    assert "   7. ended_retention   MATCH  " in text
    assert "  5b. canceled_stale    no  " in text
    assert text.count("<- decides") == 1
    assert "created 20d ago" in text
    assert "ended 19d 23h ago, at least REAPER_DELETE_ENDED_AFTER=7d" in text
    assert "guards: acts this cycle" in text


# -- the commands with an in-memory listing


@pytest.mark.anyio
async def test_plan_json_with_a_fake_listing() -> None:
    """run_plan lists every page and prints JSON Lines; exit 0."""
    out, err = io.StringIO(), io.StringIO()
    code = await run_plan(
        settings_for(),
        now=NOW,
        json_output=True,
        show_all=False,
        out=out,
        err=err,
        client=FakeLister({None: sample_listing()}),
    )
    assert code == 0
    assert err.getvalue() == ""
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    # Streamed as the listing is decided (in its order: newest first), the summary last.
    assert [line["id"] for line in lines[:-1]] == [
        "msgbatch_stale",
        "msgbatch_old",
        "msgbatch_failed",
    ]
    assert all(set(line) == RECORD_KEYS for line in lines[:-1])
    assert lines[-1]["summary"] is True


@pytest.mark.anyio
async def test_plan_fails_closed_with_one_line_when_a_page_cannot_be_read() -> None:
    """A listing error: exit 1, one line on stderr; the rows streamed so far, but no summary."""
    out, err = io.StringIO(), io.StringIO()
    code = await run_plan(
        settings_for(),
        now=NOW,
        json_output=True,
        show_all=False,
        out=out,
        err=err,
        client=FakeLister({None: sample_listing()}, fail=True),
    )
    assert code == 1
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    # Page 1 (newest first): msgbatch_stale's cancel; msgbatch_running kept.
    assert [row["id"] for row in rows] == ["msgbatch_stale"]
    assert not any("summary" in row for row in rows)
    assert err.getvalue() == (
        "reaper: listing failed: list: 500 api_error (request-id req_0123): Internal server error\n"
    )


@pytest.mark.anyio
async def test_plan_plans_each_workspace_on_its_own() -> None:
    """Keep-last counts within a workspace: each keeps its own newest ended batch."""
    listing: dict[str | None, list[Batch]] = {
        "wrkspc_a": [make_batch("a1", created_ago=20 * DAY, workspace="wrkspc_a")],
        "wrkspc_b": [make_batch("b1", created_ago=30 * DAY, workspace="wrkspc_b")],
    }
    out = io.StringIO()
    settings = settings_for(REAPER_WORKSPACE_IDS="wrkspc_a,wrkspc_b", REAPER_KEEP_LAST="1")
    code = await run_plan(
        settings,
        now=NOW,
        json_output=True,
        show_all=True,
        out=out,
        err=io.StringIO(),
        client=FakeLister(listing),
    )
    assert code == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(x["id"], x["workspace"], x["rule"]) for x in lines[:-1]] == [
        ("a1", "wrkspc_a", "keep_last"),
        ("b1", "wrkspc_b", "keep_last"),
    ]


@pytest.mark.anyio
async def test_explain_an_unlisted_batch_exits_1() -> None:
    """A batch in no workspace: exit 1 with one line naming the workspaces searched."""
    err = io.StringIO()
    code = await run_explain(
        settings_for(),
        "msgbatch_nope",
        now=NOW,
        json_output=False,
        out=io.StringIO(),
        err=err,
        client=FakeLister({None: sample_listing()}),
    )
    assert code == 1
    assert err.getvalue() == "reaper: batch msgbatch_nope is not listed in workspace(s) default\n"


@pytest.mark.anyio
async def test_explain_json_gives_every_rule() -> None:
    """--json: the decision record plus the eight verdicts and the guard."""
    out = io.StringIO()
    code = await run_explain(
        settings_for(),
        "msgbatch_stale",
        now=NOW,
        json_output=True,
        out=out,
        err=io.StringIO(),
        client=FakeLister({None: sample_listing()}),
    )
    assert code == 0
    record = json.loads(out.getvalue())
    assert (record["action"], record["rule"], record["disposition"]) == ("cancel", "stale", "act")
    assert [r["rule"] for r in record["rules"] if r["decides"]] == ["stale"]
    assert len(record["rules"]) == 10  # 1, 1b, 2, 3, 4, 5, 5b, 6, 7, 8
    assert record["dry_run"] is True
    assert record["eligible_at"] == "2026-03-02T08:30:00.000000Z"


def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(("REAPER_", "ANTHROPIC_")):
            monkeypatch.delenv(name)


@pytest.mark.parametrize("command", [["plan"], ["plan", "--json"], ["explain", "msgbatch_x"]])
def test_plan_and_explain_need_a_key(
    command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a key: exit 78 and one line, before any request."""
    _clean_environment(monkeypatch)
    assert cli.main(command) == 78
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("reaper: configuration error: ANTHROPIC_API_KEY=(unset)")


# -- against the emulator, over real HTTP

S = timedelta(seconds=1)


def seed_objects(t0: datetime, slack: timedelta) -> list[dict[str, Any]]:
    """The hand-built mix. ``slack`` moves the boundary cases away from their thresholds (for a
    run whose ``now`` is read from the wall clock a little after ``t0``); 0 puts them exactly on
    (``at``: exactly the threshold ago) or one second inside (``before``)."""

    def at(threshold: timedelta) -> datetime:
        return t0 - threshold - slack

    def before(threshold: timedelta) -> datetime:
        return t0 - threshold + max(S, slack)

    def rfc(when: datetime) -> str:
        return when.astimezone(UTC).isoformat().replace("+00:00", "Z")

    def obj(
        batch_id: str,
        workspace: str,
        status: str,
        created: datetime,
        ended: datetime | None = None,
        **counts: int,
    ) -> dict[str, Any]:
        o: dict[str, Any] = {
            "id": batch_id,
            "workspace_id": workspace,
            "processing_status": status,
            "created_at": rfc(created),
            "request_counts": counts or ({"succeeded": 4} if ended else {"processing": 4}),
        }
        if ended is not None:
            o["ended_at"] = rfc(ended)
        return o

    h, d = HOUR, DAY
    a, b = "wrkspc_a", "wrkspc_b"
    # Younger than 24 h: an older one would have expired (ended) before the cancel.
    canceling = obj("msgbatch_a_canceling", a, "canceling", t0 - 20 * h)
    canceling.update(cancel_initiated_at=rfc(t0 - h), _ends_at=rfc(t0 + h))
    return [
        obj("msgbatch_a_protected", a, "ended", t0 - 40 * d, t0 - 39 * d),
        obj("msgbatch_a_young_ip", a, "in_progress", before(h)),
        obj("msgbatch_a_min_age_exact", a, "in_progress", at(h)),
        obj("msgbatch_a_stale_exact", a, "in_progress", at(12 * h)),
        obj("msgbatch_a_not_yet_stale", a, "in_progress", before(12 * h)),
        canceling,
        obj("msgbatch_a_young_ended", a, "ended", t0 - h / 2, t0 - h / 6),
        obj("msgbatch_a_kept_by_keep_last", a, "ended", t0 - 7 * d - 13 * h, t0 - 7 * d - 12 * h),
        obj("msgbatch_a_ended_exact", a, "ended", t0 - 8 * d, at(7 * d)),
        obj("msgbatch_a_ended_before", a, "ended", t0 - 8 * d, before(7 * d)),
        obj("msgbatch_a_failed_exact", a, "ended", t0 - 31 * d, at(30 * d), succeeded=3, errored=1),
        obj(
            "msgbatch_a_failed_before",
            a,
            "ended",
            t0 - 31 * d,
            before(30 * d),
            succeeded=1,
            expired=2,
        ),
        obj(
            "msgbatch_a_failed_past_7d",
            a,
            "ended",
            t0 - 11 * d,
            t0 - 10 * d,
            succeeded=2,
            errored=2,
        ),
        obj("msgbatch_a_mystery", a, "archiving", t0 - 50 * d),
        obj("msgbatch_b_old_1", b, "ended", t0 - 20 * d, t0 - 20 * d + h),
        obj("msgbatch_b_old_2", b, "ended", t0 - 21 * d, t0 - 21 * d + h),
        obj("msgbatch_b_old_3", b, "ended", t0 - 22 * d, t0 - 22 * d + h),
        obj("msgbatch_b_stale", b, "in_progress", t0 - 13 * h),
    ]


# Written by hand from SPEC section 3 with REAPER_KEEP_LAST=2 and
# REAPER_PROTECT_IDS=msgbatch_a_protected (other settings at their defaults).
EXPECTED = {
    "msgbatch_a_protected": ("wrkspc_a", "keep", "protected"),
    "msgbatch_a_young_ip": ("wrkspc_a", "keep", "min_age"),
    "msgbatch_a_min_age_exact": ("wrkspc_a", "keep", "not_ended"),
    "msgbatch_a_stale_exact": ("wrkspc_a", "cancel", "stale"),
    "msgbatch_a_not_yet_stale": ("wrkspc_a", "keep", "not_ended"),
    "msgbatch_a_canceling": ("wrkspc_a", "keep", "not_ended"),
    # the newest ended batch of wrkspc_a: young, and first in the keep-last ranking
    "msgbatch_a_young_ended": ("wrkspc_a", "keep", "min_age"),
    # the second newest: past its retention, but kept by keep-last
    "msgbatch_a_kept_by_keep_last": ("wrkspc_a", "keep", "keep_last"),
    "msgbatch_a_ended_exact": ("wrkspc_a", "delete", "ended_retention"),
    "msgbatch_a_ended_before": ("wrkspc_a", "keep", "retained"),
    "msgbatch_a_failed_exact": ("wrkspc_a", "delete", "failed_retention"),
    "msgbatch_a_failed_before": ("wrkspc_a", "keep", "retained"),
    "msgbatch_a_failed_past_7d": ("wrkspc_a", "keep", "retained"),
    "msgbatch_a_mystery": ("wrkspc_a", "keep", "unknown_status"),
    # keep-last counts within each workspace
    "msgbatch_b_old_1": ("wrkspc_b", "keep", "keep_last"),
    "msgbatch_b_old_2": ("wrkspc_b", "keep", "keep_last"),
    "msgbatch_b_old_3": ("wrkspc_b", "delete", "ended_retention"),
    "msgbatch_b_stale": ("wrkspc_b", "cancel", "stale"),
}
EXPECTED_BY_ACTION_RULE = {
    "keep/protected": 1,
    "keep/min_age": 2,
    "cancel/stale": 2,
    "keep/not_ended": 3,
    "keep/keep_last": 3,
    "delete/failed_retention": 1,
    "delete/ended_retention": 2,
    "keep/retained": 3,
    "keep/unknown_status": 1,
}
ENV = {
    "REAPER_WORKSPACE_IDS": "wrkspc_a,wrkspc_b",
    "REAPER_KEEP_LAST": "2",
    "REAPER_PROTECT_IDS": "msgbatch_a_protected",
}


def write_seed(path: Path, t0: datetime, slack: timedelta) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in seed_objects(t0, slack)))
    return path


def check_records(records: list[dict[str, Any]], expected_ids: set[str]) -> None:
    *batches, summary = records
    assert {r["id"] for r in batches} == expected_ids
    assert len(batches) == len(expected_ids)
    for record in batches:
        assert set(record) == RECORD_KEYS
        workspace, action, rule = EXPECTED[record["id"]]
        assert (record["workspace"], record["action"], record["rule"]) == (
            workspace,
            action,
            rule,
        ), record["id"]
    assert summary["summary"] is True
    assert summary["listed"] == len(EXPECTED)
    assert summary["by_action_rule"] == EXPECTED_BY_ACTION_RULE
    assert summary["by_action"] == {"keep": 13, "cancel": 2, "delete": 3}
    assert summary["stop"] is None


@pytest.mark.anyio
async def test_plan_against_the_emulator_at_the_exact_boundaries(tmp_path: Path) -> None:
    """Every seeded batch, listed over HTTP, gets the hand-written action and rule (--all)."""
    t0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    state = new_state(clock=ManualClock(t0), api_key=KEY)
    state.load_seed_file(write_seed(tmp_path / "seed.jsonl", t0, timedelta(0)))
    with running_emulator(state) as (base_url, _):
        out, err = io.StringIO(), io.StringIO()
        code = await run_plan(
            settings_for(ANTHROPIC_BASE_URL=base_url, REAPER_PAGE_SIZE="3", **ENV),
            now=t0,
            json_output=True,
            show_all=True,
            out=out,
            err=err,
        )
    assert (code, err.getvalue()) == (0, "")
    check_records([json.loads(line) for line in out.getvalue().splitlines()], set(EXPECTED))
    # plan changes nothing: every seeded batch is still there, in the state it was given.
    assert state.stats.mutating() == {} or sum(state.stats.mutating().values()) == 0


@pytest.mark.anyio
async def test_explain_against_the_emulator(tmp_path: Path) -> None:
    """explain finds the batch in its workspace and gives its keep-last rank."""
    t0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    state = new_state(clock=ManualClock(t0), api_key=KEY)
    state.load_seed_file(write_seed(tmp_path / "seed.jsonl", t0, timedelta(0)))
    with running_emulator(state) as (base_url, _):
        out = io.StringIO()
        code = await run_explain(
            settings_for(ANTHROPIC_BASE_URL=base_url, **ENV),
            "msgbatch_a_kept_by_keep_last",
            now=t0,
            json_output=False,
            out=out,
            err=io.StringIO(),
        )
    assert code == 0
    text = out.getvalue()
    assert "batch msgbatch_a_kept_by_keep_last (workspace wrkspc_a)" in text
    assert "decision: keep (rule keep_last)" in text
    assert "number 2 of 8 ended batches, newest first, within REAPER_KEEP_LAST=2" in text


def test_the_plan_command_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`reaper plan --json` from the environment, against the emulator on the wall clock."""
    t0 = datetime.now(UTC)
    state = new_state(clock=ManualClock(t0), api_key=KEY)
    state.load_seed_file(write_seed(tmp_path / "seed.jsonl", t0, timedelta(minutes=10)))
    with running_emulator(state) as (base_url, _):
        _clean_environment(monkeypatch)
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", base_url)
        for name, value in ENV.items():
            monkeypatch.setenv(name, value)
        code = cli.main(["plan", "--json"])
    out, err = capsys.readouterr()
    assert code == 0
    assert KEY not in out + err
    actionable = {i for i, (_, action, _) in EXPECTED.items() if action != "keep"}
    check_records([json.loads(line) for line in out.splitlines()], actionable)


def test_the_plan_command_exits_1_when_the_api_is_unreachable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing listens: exit 1, one line on stderr (no traceback), nothing on stdout."""
    _clean_environment(monkeypatch)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")  # discard port: refused
    monkeypatch.setenv("REAPER_MAX_RETRIES", "0")
    monkeypatch.setenv("REAPER_LOG_LEVEL", "error")
    assert cli.main(["plan"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("reaper: listing failed: list: no response")
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_keep_last_rank_ignores_listing_order_in_the_table() -> None:
    """Reversing the listing changes nothing in the printed table."""
    listing = sample_listing()
    policy = replace(Policy(), keep_last=1)
    assert format_plan_table([plan(listing, NOW, policy)]) == format_plan_table(
        [plan(listing[::-1], NOW, policy)]
    )
