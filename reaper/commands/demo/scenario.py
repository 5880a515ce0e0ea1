"""The demo's story: its policy, its emulator's batches, and the steps that tell the rest.

The base scenario seeds a realistic mix over 40 days in two workspaces. Every other part of the
story is a ``Step``: it may add settings (shown with the policy), prepare files in the demo's
temporary folder, seed batches it wants to show, act on the emulator before each live cycle, and
add lines after each cycle and to the summary. To add a part to the demo, write a ``Step``
subclass in ``reaper.commands.demo.steps`` and add an instance to its ``steps()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Final

from reaper.emulator.harness import IN_PROCESS_BASE_URL
from reaper.emulator.state import EmulatorState
from reaper.outcomes import CycleReport
from reaper.settings import Settings, load_settings

WORKSPACES: Final = ("wrkspc_demo_prod", "wrkspc_demo_research")
RANDOM_BATCHES: Final = 300
PROTECTED_ID: Final = "msgbatch_demo_audit"
LIVE_CYCLES: Final = 5
CLOCK_STEP: Final = timedelta(hours=6)
# A canceled batch takes this long (emulated) to go from canceling to ended.
CANCEL_SECONDS: Final = 45.0
# Whatever happens, the demo ends well within the minute it promises.
DEADLINE_SECONDS: Final = 45.0
RANDOM_SEED: Final = 2026  # the same mix every run, so the demo reads the same each time

# (variable, value, what it does): printed up front, and the environment the demo's settings read.
POLICY: Final = (
    ("REAPER_DELETE_ENDED_AFTER", "7d", "delete an ended batch 7 days after it ended"),
    ("REAPER_DELETE_FAILED_AFTER", "14d", "... 14 days if it had errored or expired requests"),
    ("REAPER_CANCEL_STALE_AFTER", "12h", "cancel a batch still in progress after 12 hours"),
    ("REAPER_DELETE_CANCELED", "true", "... and delete it once it has ended"),
    ("REAPER_MIN_AGE", "1h", "never touch a batch younger than an hour"),
    ("REAPER_KEEP_LAST", "10", "always keep each workspace's 10 newest ended batches"),
    ("REAPER_PROTECT_IDS", PROTECTED_ID, "never touch this one"),
    ("REAPER_MAX_ACTIONS_PER_RUN", "60", "at most 60 actions a cycle per workspace"),
    ("REAPER_MAX_DELETE_FRACTION", "0.9", "delete nothing if a cycle would delete over 90%"),
    ("REAPER_INTERVAL", "4s", "a cycle every 4 seconds (the default is 15m)"),
    ("REAPER_MAX_RPM", "100000", "the emulator has no rate limit; keep 200 for the real API"),
)
_FIXED: Final = {
    # The emulator needs no key and is reached in-process: no ANTHROPIC_* of the user's is read.
    "ANTHROPIC_BASE_URL": IN_PROCESS_BASE_URL,
    "REAPER_SHUTDOWN_GRACE": "10s",
    # The demo serves the metrics itself, on a port the system picks: 0 keeps the daemon's off.
    "REAPER_METRICS_HOST": "127.0.0.1",
    "REAPER_METRICS_PORT": "0",
    "REAPER_WORKSPACE_IDS": ",".join(WORKSPACES),
}


@dataclass(frozen=True, slots=True)
class Stage:
    """What a step sees: the emulator and the demo's own temporary folder (gone at the end)."""

    state: EmulatorState
    workdir: Path


class Step:
    """One part of the demo's story. Every hook is optional; override those the step needs."""

    def settings(self, workdir: Path) -> Sequence[tuple[str, str, str]]:
        """Return the settings the step needs: (variable, value, what it does) as in POLICY."""
        del workdir
        return ()

    def prepare(self, workdir: Path) -> None:
        """Make what the step's settings name (a folder, a file) in ``workdir``."""

    def seed(self, stage: Stage) -> None:
        """Add the batches (or files) the step will show, before anything runs."""

    def rehearsal(self) -> Mapping[str, str]:
        """Return settings to try in a dry run of their own after the demo's (empty: none)."""
        return {}

    def after_rehearsal(self, stage: Stage, report: CycleReport) -> list[str]:
        """Return lines about that dry run (called only when ``rehearsal`` names settings)."""
        del stage, report
        return []

    def before_cycle(self, stage: Stage, number: int) -> list[str]:
        """Act before live cycle ``number`` (1-based; the clock has moved); return lines to say."""
        del stage, number
        return []

    def after_cycle(self, stage: Stage, number: int, report: CycleReport) -> list[str]:
        """Return lines about what live cycle ``number`` did for this step."""
        del stage, number, report
        return []

    def summary(self, stage: Stage, reports: Sequence[CycleReport]) -> list[str]:
        """Return the step's lines for the closing summary."""
        del stage, reports
        return []


def demo_settings(
    *,
    dry_run: bool,
    log_format: str,
    log_level: str,
    workdir: Path | None = None,
    story: Sequence[Step] = (),
    overrides: Mapping[str, str] | None = None,
) -> Settings:
    """Return the demo's settings: its policy, the in-process emulator, the user's log options.

    ``overrides`` replace variables of the policy (a step's rehearsal).
    """
    environ = {name: value for name, value, _ in POLICY}
    environ.update(_FIXED)
    if workdir is not None:
        environ.update({name: value for name, value, _ in step_settings(story, workdir)})
    environ.update(overrides or {})
    environ.update(
        REAPER_DRY_RUN="true" if dry_run else "false",
        REAPER_LOG_FORMAT=log_format,
        REAPER_LOG_LEVEL=log_level,
    )
    return load_settings(environ, require_key=False)


def step_settings(story: Sequence[Step], workdir: Path) -> list[tuple[str, str, str]]:
    """Return the settings every step of the story adds, in order."""
    return [row for step in story for row in step.settings(workdir)]


def seed(state: EmulatorState, story: Sequence[Step], workdir: Path = Path()) -> None:
    """Seed the random mix, then what each step of the story wants to show."""
    state.seed_random(RANDOM_BATCHES, workspaces=WORKSPACES)
    stage = Stage(state, workdir)
    for step in story:
        step.seed(stage)


def policy_value(name: str) -> str:
    """Return the demo's value of a policy variable."""
    return next(value for variable, value, _ in POLICY if variable == name)
