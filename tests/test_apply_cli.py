"""``reaper plan --out`` and ``reaper apply`` as subprocesses against a loopback emulator.

The README's workflow, command by command (the ``jq`` line included), with the ledger on, and
the guards stopping an apply as they stop a cycle (exit 3, nothing sent).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from reaper.emulator.state import EmulatorState
from tests.helpers import mixed_emulator, run_reaper

KEY = "sk-ant-apply-test-key-0123456789"
ROOT = Path(__file__).resolve().parent.parent
D = timedelta(days=1)
H = timedelta(hours=1)
# The README's review command, as printed there.
JQ_REVIEW = ".actions[] | [.action, .rule, .id] | @tsv"


@pytest.fixture
def emulator() -> Iterator[tuple[str, EmulatorState]]:
    with mixed_emulator(KEY, fresh_age=H / 2) as served:
        yield served


def reaper(base_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_reaper(base_url, KEY, *args, timeout=120, **env)


def mutations(state: EmulatorState) -> set[tuple[str, str | None]]:
    return {(m.endpoint, m.batch_id) for m in state.stats.mutations}


@pytest.mark.slow  # four interpreters
def test_plan_review_and_apply_as_the_readme_shows(
    emulator: tuple[str, EmulatorState], tmp_path: Path
) -> None:
    """plan --out, the jq review, apply for real: the plan's two batches, a ledger line each."""
    base_url, state = emulator
    plan_file = tmp_path / "plan.json"
    planned = reaper(base_url, "plan", "--out", str(plan_file))
    assert planned.returncode == 0, planned.stderr
    assert "Nothing was changed" in planned.stdout
    assert f"wrote 2 actions for review to {plan_file}" in planned.stderr
    assert f"jq -r '{JQ_REVIEW}' plan.json" in (ROOT / "README.md").read_text()
    if shutil.which("jq") is not None:
        review = subprocess.run(
            ["jq", "-r", JQ_REVIEW, str(plan_file)],
            capture_output=True,
            text=True,
            check=True,
        )
        assert sorted(review.stdout.splitlines()) == [
            "cancel\tstale\tstale_running",
            "delete\tended_retention\told_ended",
        ]
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    applied = reaper(
        base_url, "apply", str(plan_file), REAPER_DRY_RUN="false", REAPER_LEDGER_DIR=str(ledger)
    )
    assert applied.returncode == 0, applied.stderr
    assert "Done: 1 canceled, 2 deleted." in applied.stdout
    assert "Skipped 0:" in applied.stdout
    assert KEY not in applied.stdout + applied.stderr
    assert mutations(state) == {
        ("cancel", "stale_running"),
        ("delete", "stale_running"),
        ("delete", "old_ended"),
    }
    lines = [
        json.loads(line)
        for path in ledger.glob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    intents = {(r["action"], r["id"]) for r in lines if r["phase"] == "intent"}
    assert intents == {
        ("cancel", "stale_running"),
        ("delete", "stale_running"),
        ("delete", "old_ended"),
    }


@pytest.mark.slow  # two interpreters
def test_apply_exits_3_and_sends_nothing_when_a_guard_stops_it(
    emulator: tuple[str, EmulatorState], tmp_path: Path
) -> None:
    """The fraction guard is judged on the listing apply sees: two of two due now is a stop."""
    base_url, state = emulator
    plan_file = tmp_path / "plan.json"
    guard = {"REAPER_MAX_DELETE_FRACTION": "0.5"}
    planned = reaper(base_url, "plan", "--out", str(plan_file), **guard)
    assert planned.returncode == 0, planned.stderr
    # Someone else deletes the two batches nobody planned to touch: the planned two are now all.
    state.delete(state.default_workspace, "recent_ended")
    state.cancel(state.default_workspace, "fresh_running")
    state.advance(1)
    state.delete(state.default_workspace, "fresh_running")
    before = mutations(state)
    applied = reaper(base_url, "apply", str(plan_file), REAPER_DRY_RUN="false", **guard)
    assert applied.returncode == 3, applied.stdout + applied.stderr
    assert "SAFETY STOP" in applied.stdout
    assert mutations(state) == before
