"""The parts of the demo's story, one ``Step`` each; ``steps()`` is the story in order.

To add a part: write a ``Step`` subclass here (see ``reaper.commands.demo.scenario.Step`` for its
hooks) and add an instance to ``steps()``. Keep each part's text short: a line or two a cycle.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

from reaper.commands.demo.scenario import PROTECTED_ID, WORKSPACES, Stage, Step
from reaper.emulator.state import EmulatorState
from reaper.models import format_time
from reaper.outcomes import CycleReport


def steps() -> list[Step]:
    """Return the demo's steps, in the order they tell their part."""
    return [StaleAndProtected(), TypoCaught(), HoldExpires(), ArchiveAndLedger()]


class StaleAndProtected(Step):
    """Stuck and long-running batches for the stale rule, and one batch the policy protects."""

    def seed(self, stage: Stage) -> None:
        stage.state.seed_objects(stale_and_protected(stage.state))

    def summary(self, stage: Stage, reports: Sequence[CycleReport]) -> list[str]:
        kept = "still there" if stage.state.find(PROTECTED_ID) is not None else "GONE"
        return [
            f"Kept: the protected batch ({PROTECTED_ID}, 33 days old: {kept}), each workspace's"
            " 10 newest ended batches and those not yet past retention."
        ]


class TypoCaught(Step):
    """A typo's dry run: the cancel-fraction guard stops it and says what it withheld."""

    TYPO: Final = {"REAPER_CANCEL_STALE_AFTER": "1h", "REAPER_MAX_CANCEL_FRACTION": "0.5"}

    def rehearsal(self) -> Mapping[str, str]:
        return self.TYPO

    def after_rehearsal(self, stage: Stage, report: CycleReport) -> list[str]:
        lines = [
            "   A typo, rehearsed: REAPER_CANCEL_STALE_AFTER=1h (meant 1d), with the guard"
            " REAPER_MAX_CANCEL_FRACTION=0.5 set, in dry run:",
        ]
        for stop in report.safety_stops:
            lines.append(
                f"     SAFETY STOP in {stop.workspace} ({', '.join(stop.reasons)}): {stop.detail}"
            )
        if not report.safety_stops:
            lines.append("     no guard tripped")
        return [*lines, ""]


class HoldExpires(Step):
    """A batch held for an incident: kept while the hold lasts, deleted once it has ended."""

    BATCH: Final = "msgbatch_demo_incident"
    HOURS: Final = 15  # the hold ends between the third and the fourth cycle (6 h apart)

    def __init__(self) -> None:
        self.until: datetime | None = None
        self.told_gone = False

    def settings(self, workdir: Path) -> Sequence[tuple[str, str, str]]:
        return (("REAPER_HOLDS_FILE", str(workdir / "holds.jsonl"), "keep held batches"),)

    def prepare(self, workdir: Path) -> None:
        (workdir / "holds.jsonl").write_text("# people's holds, one a line\n", encoding="utf-8")

    def seed(self, stage: Stage) -> None:
        now = stage.state.now()
        stage.state.seed_objects(
            [
                {
                    "id": self.BATCH,
                    "workspace_id": WORKSPACES[0],
                    "processing_status": "ended",
                    "created_at": format_time(now - timedelta(days=21)),
                    "ended_at": format_time(now - timedelta(days=20, hours=23)),
                    "request_counts": {"succeeded": 500},
                }
            ]
        )
        self.until = now + timedelta(hours=self.HOURS)
        hold = {"id": self.BATCH, "until": format_time(self.until), "reason": "incident 42"}
        with (stage.workdir / "holds.jsonl").open("a", encoding="utf-8") as holds:
            holds.write(json.dumps({**hold, "by": "oncall"}) + "\n")

    def after_cycle(self, stage: Stage, number: int, report: CycleReport) -> list[str]:
        until = "?" if self.until is None else f"{self.until:%H:%M}"
        if stage.state.find(self.BATCH) is not None:
            return [f"hold: {self.BATCH} kept, 20 days past retention: held until {until} UTC"]
        if self.told_gone:
            return []
        self.told_gone = True
        return [f"hold: the hold on {self.BATCH} ended at {until} UTC: deleted this cycle"]

    def summary(self, stage: Stage, reports: Sequence[CycleReport]) -> list[str]:
        until = "?" if self.until is None else f"{self.until:%H:%M} UTC"
        if stage.state.find(self.BATCH) is not None:
            return [f"Hold: {self.BATCH} is still held (until {until})."]
        rules = [
            e.get("rule")
            for e in ledger_lines(stage.workdir)
            if e.get("id") == self.BATCH and e.get("phase") == "intent"
        ]
        rule = f" by rule {rules[0]}" if rules else ""
        return [f"Hold: {self.BATCH} was kept while held (until {until}), then deleted{rule}."]


class ArchiveAndLedger(Step):
    """Results archived ahead of deletion, and the ledger of every mutation, in the temp folder."""

    def __init__(self) -> None:
        self.saved = 0
        self.lines = 0

    def settings(self, workdir: Path) -> Sequence[tuple[str, str, str]]:
        return (
            ("REAPER_ARCHIVE_DIR", str(workdir / "archive"), "save ended batches' results"),
            ("REAPER_ARCHIVE_SCOPE", "failed", "... those with errored or expired requests"),
            ("REAPER_ARCHIVE_MISSING", "delete", "... delete one whose results the API lost"),
            ("REAPER_LEDGER_DIR", str(workdir / "ledger"), "write down every cancel and delete"),
        )

    def prepare(self, workdir: Path) -> None:
        (workdir / "archive").mkdir(exist_ok=True)
        (workdir / "ledger").mkdir(exist_ok=True)

    def after_cycle(self, stage: Stage, number: int, report: CycleReport) -> list[str]:
        saved, lines = len(sidecars(stage.workdir)), len(ledger_lines(stage.workdir))
        text = (
            f"archive: saved the results of {_batches(saved - self.saved)} ({saved} in all);"
            f" ledger: {lines - self.lines} lines ({lines} in all)"
        )
        self.saved, self.lines = saved, lines
        return [text]

    def summary(self, stage: Stage, reports: Sequence[CycleReport]) -> list[str]:
        workdir = stage.workdir
        entries = ledger_lines(workdir)
        phases = Counter(str(entry.get("phase")) for entry in entries)
        saved = [path.name.split(".")[0] for path in sidecars(workdir)]
        kept = sum(1 for batch_id in saved if stage.state.find(batch_id) is not None)
        lines = [
            f"Archive: the results of {_batches(len(saved))} in {workdir / 'archive'}, saved in"
            f" the first cycle after each ended; {kept} of them ahead: their batches are kept.",
            f"Ledger: {len(entries)} lines in {workdir / 'ledger'} ("
            + ", ".join(f"{n} {phase}" for phase, n in sorted(phases.items()))
            + "): an intent before each request, its outcome after.",
        ]
        example = _deleted_example(workdir, entries)
        if example:
            lines.append(example)
        lines.append("(The temp folder goes when the demo ends; point both at volumes for real.)")
        return lines


def _batches(n: int) -> str:
    return f"{n} batch" if n == 1 else f"{n} batches"


def sidecars(workdir: Path) -> list[Path]:
    """Return the archive's sidecars (one per batch archived and checked)."""
    return sorted((workdir / "archive").glob("*/*/*.json"))


def ledger_lines(workdir: Path) -> list[dict[str, Any]]:
    """Return every line of the ledger's day files, oldest day first."""
    entries: list[dict[str, Any]] = []
    for path in sorted((workdir / "ledger").glob("ledger-*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                entries.append(json.loads(line))
    return entries


def _deleted_example(workdir: Path, entries: list[dict[str, Any]]) -> str | None:
    """Describe one deleted batch as the ledger and the archive tell it."""
    intents = {(e.get("id"), e.get("action")): e for e in entries if e.get("phase") == "intent"}
    deleted = [e for e in entries if e.get("phase") == "done" and e.get("action") == "delete"]
    archived = {path.name.split(".")[0]: path for path in sidecars(workdir)}
    # Prefer a deleted batch whose results were saved: the whole story of one batch.
    deleted.sort(key=lambda e: e.get("id") not in archived)
    for entry in deleted[:1]:
        intent = intents.get((entry.get("id"), "delete"), {})
        sidecar = archived.get(str(entry.get("id")))
        where = (
            str(sidecar.with_suffix(".jsonl.gz").relative_to(workdir)) if sidecar else "not saved"
        )
        return (
            f"e.g. {entry.get('id')}: intent delete (rule {intent.get('rule')}),"
            f" done {entry.get('status')}; its results: {where}"
        )
    return None


def stale_and_protected(state: EmulatorState) -> list[dict[str, Any]]:
    """Return stuck and long-running batches in each workspace and one protected batch."""
    now = state.now()

    def ago(**delta: float) -> str:
        return format_time(now - timedelta(**delta))

    objects: list[dict[str, Any]] = []
    for workspace in WORKSPACES:
        # Stuck: in progress for 14 and 19 hours, already past REAPER_CANCEL_STALE_AFTER.
        objects += [
            {
                "workspace_id": workspace,
                "processing_status": "in_progress",
                "created_at": ago(hours=hours),
                "request_counts": {"processing": 2_000},
            }
            for hours in (14, 19)
        ]
        # Long-running: 3 hours old now, stale two clock jumps later.
        objects.append(
            {
                "workspace_id": workspace,
                "processing_status": "in_progress",
                "created_at": ago(hours=3),
                "request_counts": {"processing": 800},
            }
        )
    objects.append(
        {
            "id": PROTECTED_ID,
            "workspace_id": WORKSPACES[0],
            "processing_status": "ended",
            "created_at": ago(days=33),
            "ended_at": ago(days=32, hours=22),
            "request_counts": {"succeeded": 1_200},
        }
    )
    return objects
