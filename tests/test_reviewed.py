"""Reviewed plans: written atomically, read back, refused when stale or made for other settings."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reaper.models import Batch
from reaper.reviewed import (
    POLICY_VARIABLES,
    PlanError,
    PlannedAction,
    PlanWriter,
    check_plan,
    load_plan,
    policy_of,
    read_plan,
)
from reaper.settings import Settings, load_settings
from tests.helpers import DAY, make_batch

KEY = "sk-ant-api03-TESTKEY0123456789abcdefXYZ"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def make_settings(**env: str) -> Settings:
    return load_settings({"ANTHROPIC_API_KEY": KEY, **env})


def listed(batch_id: str, workspace: str | None = None) -> Batch:
    """A batch as a plan lists it: ended nine days ago, ten days old."""
    return make_batch(
        batch_id, created_ago=10 * DAY, ended_ago=9 * DAY, now=NOW, workspace=workspace
    )


def write(
    path: Path, s: Settings, rows: list[tuple[Batch, str, str]], when: datetime = NOW
) -> Path:
    with PlanWriter(path, s, created_at=when) as plan:
        for batch, action, rule in rows:
            plan.add(batch, action, rule)
    assert plan.count == len(rows)
    return path


def test_the_document_has_the_specs_fields(tmp_path: Path) -> None:
    """version, created_at, base_url, workspaces, policy and actions with the batch as listed."""
    s = make_settings(REAPER_WORKSPACE_IDS="wrkspc_a,wrkspc_b")
    batch = listed("msgbatch_1", "wrkspc_a")
    path = write(tmp_path / "plan.json", s, [(batch, "delete", "ended")])
    document = json.loads(path.read_text())
    assert document == {
        "version": 1,
        "created_at": "2026-12-01T09:00:00.000000Z",
        "base_url": "https://api.anthropic.com",
        "workspaces": ["wrkspc_a", "wrkspc_b"],
        "policy": policy_of(s),
        "actions": [
            {
                "id": "msgbatch_1",
                "workspace": "wrkspc_a",
                "action": "delete",
                "rule": "ended",
                "batch": batch.to_api(),
            }
        ],
    }
    assert list(document["policy"]) == list(POLICY_VARIABLES)
    assert document["policy"]["REAPER_DELETE_ENDED_AFTER"] == "7d"
    assert document["policy"]["REAPER_MAX_CLOCK_SKEW"] == "2m"


def test_a_plan_reads_back_with_the_keys_own_workspace_as_none(tmp_path: Path) -> None:
    """What was written is what apply gets: ids, workspaces, actions and rules, in order."""
    s = make_settings()
    rows = [(listed("a"), "delete", "ended"), (listed("b"), "cancel", "stale")]
    plan = load_plan(write(tmp_path / "plan.json", s, rows), s, NOW + timedelta(hours=1))
    assert plan.created_at == NOW
    assert plan.workspaces == (None,)
    assert plan.actions == (
        PlannedAction("a", None, "delete", "ended"),
        PlannedAction("b", None, "cancel", "stale"),
    )
    assert json.loads((tmp_path / "plan.json").read_text())["workspaces"] == ["default"]


def test_an_empty_plan_is_a_plan(tmp_path: Path) -> None:
    """Nothing to do is a valid plan that apply can check and act on (not at all)."""
    s = make_settings()
    assert load_plan(write(tmp_path / "p.json", s, []), s, NOW).actions == ()


def test_actions_are_one_a_line(tmp_path: Path) -> None:
    """The streamed layout: a header line, one action a line, a closing line (greppable)."""
    s = make_settings()
    rows = [(listed(f"b{n}"), "delete", "ended") for n in range(3)]
    lines = write(tmp_path / "p.json", s, rows).read_text().splitlines()
    assert len(lines) == 5
    assert lines[0].endswith('"actions":[')
    assert [json.loads(line.rstrip(","))["id"] for line in lines[1:4]] == ["b0", "b1", "b2"]
    assert lines[4] == "]}"


def test_a_reformatted_plan_still_reads(tmp_path: Path) -> None:
    """A reviewer who pretty-prints the file (jq . plan.json > x) does not break it."""
    s = make_settings()
    path = write(tmp_path / "p.json", s, [(listed("a"), "delete", "ended")])
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(json.loads(path.read_text()), indent=2))
    assert read_plan(pretty).actions == read_plan(path).actions


def test_a_failed_write_leaves_the_previous_plan_and_no_temporary_file(tmp_path: Path) -> None:
    """An exception while writing discards the new plan; the old file is untouched."""
    s = make_settings()
    path = write(tmp_path / "plan.json", s, [(listed("old"), "delete", "ended")])
    before = path.read_bytes()

    def interrupted() -> None:
        with PlanWriter(path, s, created_at=NOW) as plan:
            plan.add(listed("new"), "delete", "ended")
            raise RuntimeError("listing failed half way")

    with pytest.raises(RuntimeError):
        interrupted()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]


def test_a_plan_in_a_missing_directory_is_a_plan_error(tmp_path: Path) -> None:
    """One line naming the file and the reason."""
    path = tmp_path / "nowhere" / "plan.json"
    with pytest.raises(PlanError, match="cannot write it: No such file or directory"):
        write(path, make_settings(), [])


def test_keep_is_not_a_planned_action(tmp_path: Path) -> None:
    """Only cancels and deletes go into a plan."""
    with pytest.raises(ValueError, match="cancels and deletes"):
        write(tmp_path / "p.json", make_settings(), [(listed("a"), "keep", "min_age")])


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "cannot read it: No such file or directory"),
        ("", "not a reviewed plan"),
        ("{not json", "not a reviewed plan"),
        ("[1, 2]", "not a JSON object"),
        ('{"version": 2, "actions": []}', "version 2; this reaper reads version 1"),
        ('{"version": 1, "actions": []}', "'created_at' is missing"),
    ],
)
def test_an_unreadable_plan_is_refused_in_one_line(
    tmp_path: Path, content: str | None, fragment: str
) -> None:
    """Missing, empty, not JSON, another version or incomplete: PlanError naming the file."""
    path = tmp_path / "plan.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(PlanError) as info:
        read_plan(path)
    assert str(info.value).startswith(f"plan {path}: ")
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_a_plan_cut_short_is_refused(tmp_path: Path) -> None:
    """A truncated copy (a full disk, a bad paste) never passes for a shorter plan."""
    s = make_settings()
    rows = [(listed(f"b{n}"), "delete", "ended") for n in range(3)]
    text = write(tmp_path / "p.json", s, rows).read_text()
    cut = tmp_path / "cut.json"
    cut.write_text(text[: text.index('"b2"') - 20])
    with pytest.raises(PlanError, match="not a reviewed plan"):
        read_plan(cut)
    cut.write_text("\n".join(text.splitlines()[:3]) + "\n")
    with pytest.raises(PlanError, match="ends before its actions do"):
        read_plan(cut)


def test_an_action_that_does_not_hold_its_batch_is_refused(tmp_path: Path) -> None:
    """An edited plan whose action and batch object disagree is not applied."""
    s = make_settings()
    text = write(tmp_path / "p.json", s, [(listed("a"), "delete", "ended")]).read_text()
    edited = tmp_path / "edited.json"
    edited.write_text(text.replace('"id":"a","workspace"', '"id":"z","workspace"'))
    with pytest.raises(PlanError, match="action 1: z: 'batch' is not this batch's object"):
        read_plan(edited)


# -- freshness and settings


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    return write(tmp_path / "plan.json", make_settings(), [(listed("a"), "delete", "ended")])


def test_a_plan_older_than_the_max_age_is_refused(plan_file: Path) -> None:
    """24h by default: a day and a minute later the plan is stale, saying how old and the limit."""
    s = make_settings()
    check_plan(read_plan(plan_file), s, NOW + timedelta(hours=24))
    with pytest.raises(PlanError) as info:
        load_plan(plan_file, s, NOW + timedelta(hours=24, minutes=1))
    assert "1d1m ago, older than REAPER_PLAN_MAX_AGE=1d" in str(info.value)
    short = make_settings(REAPER_PLAN_MAX_AGE="1h")
    with pytest.raises(PlanError, match="REAPER_PLAN_MAX_AGE=1h"):
        load_plan(plan_file, short, NOW + timedelta(hours=2))


def test_a_plan_from_the_future_is_refused(plan_file: Path) -> None:
    """A plan stamped well after this host's now points at a clock problem."""
    s = make_settings()
    check_plan(read_plan(plan_file), s, NOW - timedelta(minutes=4))
    with pytest.raises(PlanError, match="in the future"):
        check_plan(read_plan(plan_file), s, NOW - timedelta(hours=1))


def test_a_plan_for_another_api_is_refused(plan_file: Path) -> None:
    """The base URL must be the same: a plan for the emulator never runs against production."""
    s = make_settings(ANTHROPIC_BASE_URL="http://127.0.0.1:8080")
    with pytest.raises(PlanError) as info:
        load_plan(plan_file, s, NOW)
    assert str(info.value).endswith(
        "made for another API: ANTHROPIC_BASE_URL: plan https://api.anthropic.com, "
        "now http://127.0.0.1:8080"
    )


def test_a_plan_for_other_workspaces_is_refused(tmp_path: Path) -> None:
    """The workspace set must match (in any order)."""
    made = make_settings(REAPER_WORKSPACE_IDS="wrkspc_a,wrkspc_b")
    path = write(tmp_path / "p.json", made, [])
    load_plan(path, make_settings(REAPER_WORKSPACE_IDS="wrkspc_b,wrkspc_a"), NOW)
    with pytest.raises(PlanError) as info:
        load_plan(path, make_settings(REAPER_WORKSPACE_IDS="wrkspc_a"), NOW)
    assert "REAPER_WORKSPACE_IDS: plan wrkspc_a,wrkspc_b, now wrkspc_a" in str(info.value)
    with pytest.raises(PlanError, match=r"now \(empty: the key's own workspace\)"):
        load_plan(path, make_settings(), NOW)


def test_a_plan_under_another_policy_names_every_setting_that_differs(plan_file: Path) -> None:
    """Which setting, the plan's value and the current one."""
    s = make_settings(REAPER_DELETE_ENDED_AFTER="3d", REAPER_PROTECT_IDS="msgbatch_x")
    with pytest.raises(PlanError) as info:
        load_plan(plan_file, s, NOW)
    message = str(info.value)
    assert "made under another policy: " in message
    assert "REAPER_DELETE_ENDED_AFTER: plan 7d, now 3d" in message
    assert "REAPER_PROTECT_IDS: plan (empty), now msgbatch_x" in message
    assert "\n" not in message


def test_dry_run_and_the_max_age_itself_may_differ(plan_file: Path) -> None:
    """A plan is made in a dry run and applied for real, under the applier's age limit."""
    s = make_settings(REAPER_DRY_RUN="false", REAPER_PLAN_MAX_AGE="2d")
    assert load_plan(plan_file, s, NOW).actions[0].id == "a"


def test_a_plan_missing_a_policy_variable_is_refused(plan_file: Path) -> None:
    """A plan from an older reaper that did not record a setting cannot vouch for it."""
    document = json.loads(plan_file.read_text())
    del document["policy"]["REAPER_MAX_CANCEL_FRACTION"]
    plan_file.write_text(json.dumps(document))
    with pytest.raises(
        PlanError, match=r"REAPER_MAX_CANCEL_FRACTION: plan \(not recorded\), now 1"
    ):
        load_plan(plan_file, make_settings(), NOW)


ids = st.from_regex(r"msgbatch_[a-z0-9]{1,12}", fullmatch=True)
rows_strategy = st.lists(
    st.tuples(
        ids,
        st.sampled_from([None, "wrkspc_a"]),
        st.sampled_from(["cancel", "delete"]),
        st.sampled_from(["stale", "ended", "failed", "canceled_stale"]),
    ),
    max_size=30,
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=50)
@given(rows_strategy)
def test_any_plan_reads_back_exactly(
    tmp_path: Path, rows: list[tuple[str, str | None, str, str]]
) -> None:
    """Whatever actions go in come back, in order, as PlannedActions."""
    s = make_settings(REAPER_WORKSPACE_IDS="wrkspc_a")
    batches = [(listed(i, w), a, r) for i, w, a, r in rows]
    plan = read_plan(write(tmp_path / "p.json", s, batches))
    assert plan.actions == tuple(PlannedAction(i, w, a, r) for i, w, a, r in rows)
