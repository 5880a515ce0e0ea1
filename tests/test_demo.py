"""`reaper demo`: the main job on the embedded emulator, within a minute, with nothing to set up."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from reaper.client import BatchClient
from reaper.commands.demo.orchestration import Demo
from reaper.commands.demo.scenario import (
    CLOCK_STEP,
    PROTECTED_ID,
    WORKSPACES,
    Stage,
    Step,
    demo_settings,
    seed,
)
from reaper.commands.demo.steps import StaleAndProtected
from reaper.cycle import run_cycle
from reaper.emulator.harness import asgi_transport
from reaper.outcomes import ActionOutcome, CycleOutcome, CycleReport
from reaper.policy import Action, Rule

CANARY_KEY = "sk-ant-api03-DemoMustNeverUseThisKey0123456789"


def user_env(**extra: str) -> dict[str, str]:
    """Return an environment a user might have: a real-looking key, an unreachable API, typos."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "ANTHROPIC_API_KEY": CANARY_KEY,
        # TEST-NET-1: never routed. A demo that used it would hang on connect and miss the minute.
        "ANTHROPIC_BASE_URL": "http://192.0.2.1:9",
        "REAPER_INTERVAL": "not-a-duration",
        "REAPER_DRY_RUNN": "false",
    }
    env.update(extra)
    return env


def run_demo(env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run `reaper demo` as a user would; return the result and how long it took."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "reaper", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    return result, time.monotonic() - started


def metric(text: str, sample: str) -> float:
    """Return the value of the exposition line starting with ``sample`` in the demo's output."""
    match = re.search(re.escape(sample) + r" ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, f"no metric line {sample!r} in the output"
    return float(match.group(1))


def test_demo_finishes_within_a_minute_with_plan_live_cycles_summary_and_metrics() -> None:
    """Exit 0 in under 60 s, ignoring the user's ANTHROPIC_*/REAPER_*; plan, cycles, summary."""
    result, seconds = run_demo(user_env())
    assert result.returncode == 0, result.stderr
    assert seconds < 60
    assert result.stderr == ""
    out = result.stdout
    assert CANARY_KEY not in out
    # The dry-run plan, as `reaper plan` prints it.
    assert re.search(r"^\s+ID\s+WORKSPACE\s+STATUS\s+AGE\s+ACTION\s+RULE\s+GUARD$", out, re.M)
    assert re.search(r"in_progress\s+\S+\s+cancel\s+stale", out)
    assert re.search(r"ended\s+\S+( \S+)?\s+delete\s+ended_retention", out)
    # A typo rehearsed in dry run: the cancel-fraction guard names what it stopped.
    assert "A typo, rehearsed: REAPER_CANCEL_STALE_AFTER=1h" in out
    for workspace in WORKSPACES:
        assert re.search(
            rf"SAFETY STOP in {workspace} \(cancel_fraction\): \d+ of \d+ in_progress batches"
            r" \(\S+%\) would be canceled, more than REAPER_MAX_CANCEL_FRACTION=0.5",
            out,
        )
    # Live cycles, each described.
    assert len(re.findall(r"^\s+cycle \d+\s+emulator clock", out, re.M)) == 5
    assert "went canceling -> ended within the wait and were deleted" in out
    # The summary: what the reaper did is what the emulator saw.
    done = re.search(r"Canceled (\d+) stale batches; deleted (\d+)", out)
    assert done, out
    canceled, deleted = int(done.group(1)), int(done.group(2))
    assert canceled >= 6  # 2 stuck per workspace at start, 1 long-running per workspace later
    assert f"the emulator answered {canceled} cancels and {deleted} deletes" in out
    # Its own metrics endpoint answered during the run.
    assert metric(out, 'reaper_cycles_total{outcome="success"}') == 6  # the dry run + 5 live
    deletes_done = sum(
        metric(out, f'reaper_actions_total{{action="delete",outcome="done",workspace="{ws}"}}')
        for ws in WORKSPACES
    )
    assert deletes_done == deleted
    assert "/readyz answered 200." in out
    # A hold: kept while it lasts (three cycles), deleted in the cycle after it ended.
    assert out.count("hold: msgbatch_demo_incident kept, 20 days past retention") == 3
    assert re.search(
        r"cycle 4 [^\n]*\n(?:[^\n]*\n)*?\s+hold: the hold on msgbatch_demo_incident", out
    )
    assert "then deleted by rule ended_retention." in out
    # Archive-ahead and the ledger, in a temp folder that is gone once the demo ends.
    archive = re.search(r"Archive: the results of (\d+) batch(es)? in (\S+), .*; (\d+) of", out)
    ledger = re.search(r"Ledger: (\d+) lines in (\S+) \((\d+) done, (\d+) intent\)", out)
    assert archive, out
    assert ledger, out
    assert int(archive.group(4)) > 0  # saved ahead: batches the policy still keeps
    assert int(ledger.group(4)) == canceled + deleted == int(ledger.group(3))
    assert re.search(
        r"e\.g\. msgbatch_\S+: intent delete \(rule \w+\), done 200; its results: a", out
    )
    assert not Path(archive.group(3)).exists()
    assert not Path(ledger.group(2)).exists()


@pytest.mark.slow
def test_demo_with_json_logs_keeps_stdout_json_and_tells_the_story_on_stderr() -> None:
    """REAPER_LOG_FORMAT=json: every stdout line is a log object; the narration is on stderr."""
    result, seconds = run_demo(user_env(REAPER_LOG_FORMAT="json"))
    assert result.returncode == 0, result.stderr
    assert seconds < 60
    events = []
    for line in result.stdout.splitlines():
        record = json.loads(line)
        assert {"timestamp", "level", "event"} <= record.keys()
        events.append(record["event"])
    for event in ("cycle.started", "batch.cancel", "batch.delete", "cycle.finished"):
        assert event in events
    assert "5. Summary" in result.stderr
    assert CANARY_KEY not in result.stdout + result.stderr


def test_a_bad_log_format_exits_78_with_one_line() -> None:
    """The two variables the demo reads are validated like everywhere else."""
    result, _ = run_demo(user_env(REAPER_LOG_FORMAT="xml"))
    assert result.returncode == 78
    assert result.stderr.splitlines() == [
        "reaper: configuration error: REAPER_LOG_FORMAT=xml: json or console"
    ]


@pytest.mark.anyio
async def test_the_demo_scenario_cancels_deletes_defers_and_spares_the_protected_batch() -> None:
    """One live cycle of the seeded demo: stale ones canceled then deleted, the cap, protection."""
    live = demo_settings(dry_run=False, log_format="console", log_level="error")
    demo = Demo(
        demo_settings(dry_run=True, log_format="console", log_level="error"), live, io.StringIO()
    )
    seed(demo.state, [StaleAndProtected()])
    async with BatchClient.from_settings(
        live, metrics=demo.metrics, transport=asgi_transport(demo.state)
    ) as client:
        first = await run_cycle(
            live, client, metrics=demo.metrics, now=demo.state.now, sleep=demo.emulated_sleep
        )
        assert first.outcome is CycleOutcome.SUCCESS
        # The two stuck batches per workspace were canceled, ended within the (emulated) wait,
        # and were deleted in the same cycle.
        assert first.count(Action.CANCEL, ActionOutcome.DONE) == 4
        assert first.counts[(Action.CANCEL, Rule.STALE, ActionOutcome.DONE)] == 4
        assert first.counts[(Action.DELETE, Rule.STALE, ActionOutcome.DONE)] == 4
        assert first.still_ending == 0
        # The cap: 60 actions per workspace, the rest deferred.
        assert first.count(outcome=ActionOutcome.DONE) == 4 + 60 * len(WORKSPACES)
        assert first.count(outcome=ActionOutcome.DEFERRED) > 0
        # Two clock jumps later the long-running ones (one per workspace) are stale too.
        demo.state.advance(2 * CLOCK_STEP.total_seconds())
        third = await run_cycle(
            live, client, metrics=demo.metrics, now=demo.state.now, sleep=demo.emulated_sleep
        )
        assert third.count(Action.CANCEL, ActionOutcome.DONE) >= len(WORKSPACES)
    assert demo.state.find(PROTECTED_ID) is not None
    assert demo.state.counts_by_workspace().keys() == set(WORKSPACES)


class Marker(Step):
    """A step that seeds one batch, sets one variable and says something at every hook."""

    def settings(self, workdir: Path) -> Sequence[tuple[str, str, str]]:
        return (("REAPER_KEEP_LAST", "3", "keep 3"),)

    def prepare(self, workdir: Path) -> None:
        (workdir / "marker").touch()

    def seed(self, stage: Stage) -> None:
        stage.state.seed_objects([{"id": "msgbatch_marker", "workspace_id": WORKSPACES[1]}])

    def before_cycle(self, stage: Stage, number: int) -> list[str]:
        return [f"marker before {number} at {stage.state.now():%H:%M}"]

    def after_cycle(self, stage: Stage, number: int, report: CycleReport) -> list[str]:
        return [f"marker after {number}: {report.listed} listed"]

    def summary(self, stage: Stage, reports: Sequence[CycleReport]) -> list[str]:
        return [f"marker summary: {len(reports)} cycles"]


@pytest.mark.anyio
async def test_a_step_added_to_the_story_seeds_sets_and_narrates_at_each_hook(
    tmp_path: Path,
) -> None:
    """The extension point the demo's later parts use: environ, seed, the cycle hooks, summary."""
    story = [StaleAndProtected(), Marker()]
    options = {"log_format": "console", "log_level": "error", "workdir": tmp_path, "story": story}
    live = demo_settings(dry_run=False, **options)
    assert live.keep_last == 3
    out = io.StringIO()
    demo = Demo(demo_settings(dry_run=True, **options), live, out, story=story, workdir=tmp_path)
    seed(demo.state, story, tmp_path)
    assert demo.state.find("msgbatch_marker") is not None
    assert demo.state.find(PROTECTED_ID) is not None
    async with BatchClient.from_settings(
        live, metrics=demo.metrics, transport=asgi_transport(demo.state)
    ) as client:
        for number in (1, 2):
            await demo.cycle(client, number)
    demo.summary(demo.state.counts_by_workspace(), 1.0)
    text = out.getvalue()
    paragraph = r"cycle 1 [^\n]*\n(?:[^\n]*\n)*?"
    hooks = r"\s+marker before 1 at [^\n]*\n\s+marker after 1: \d+ listed\n\s+requests: "
    assert re.search(paragraph + hooks, text)
    assert "marker before 2" in text
    assert "marker summary: 2 cycles" in text
    assert "Kept: the protected batch" in text
