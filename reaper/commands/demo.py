"""``reaper demo``: the daemon's job on an in-process emulator, with nothing to set up.

What a new user sees, in order: the emulator's batches (a realistic mix over 40 days in two
workspaces), the demo's policy as the environment variables that would set it, the dry-run plan
as ``reaper plan`` prints it, then the daemon itself (scheduler, metrics server, live cycles)
while the emulator's clock jumps six hours before each cycle, so that stale batches are canceled
and deleted and retention catches up with batches as they age. A summary closes it: batches by
status before and after, the actions, the requests, and lines of the metrics the server answered.

Nothing leaves the process but the metrics server on a free loopback port: the client reaches the
emulator through an in-process transport, and no ``ANTHROPIC_*`` or ``REAPER_*`` variable is read
except ``REAPER_LOG_FORMAT`` and ``REAPER_LOG_LEVEL``. The text is for people; with
``REAPER_LOG_FORMAT=json`` the daemon's log lines take stdout and the text moves to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TextIO

from reaper.client import BatchClient
from reaper.commands.run import ReadinessProgress
from reaper.cycle import ActionOutcome, CycleReport, run_cycle
from reaper.daemon import run_daemon
from reaper.emulator.clock import ManualClock
from reaper.emulator.harness import IN_PROCESS_BASE_URL, asgi_transport
from reaper.emulator.state import EmulatorState
from reaper.logs import configure_logging, flush_logging
from reaper.metrics import Metrics
from reaper.models import format_time
from reaper.policy import Action, Plan, Rule
from reaper.report import format_plan_summary, format_plan_table
from reaper.server import Health, start_server
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
_RANDOM_SEED: Final = 2026  # the same mix every run, so the demo reads the same each time
_STATUSES: Final = ("in_progress", "canceling", "ended")
# The narration tells what the cycles did; on a console the log shows only what went wrong.
_DEFAULT_LEVEL: Final = {"console": "error", "json": "info"}

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
_METRIC_EXCERPT: Final = (
    "reaper_cycles_total{",
    "reaper_batches{",
    "reaper_actions_total{",
    "reaper_api_requests_total{",
    "reaper_delete_lag_seconds_count{",
    "reaper_last_success_timestamp_seconds ",
)


def _in_excerpt(line: str) -> bool:
    """Whether a line of the exposition goes into the summary's excerpt (actions: done only)."""
    if not line.startswith(_METRIC_EXCERPT):
        return False
    return not line.startswith("reaper_actions_total{") or 'outcome="done"' in line


def demo_settings(*, dry_run: bool, log_format: str, log_level: str) -> Settings:
    """Return the demo's settings: its policy, the in-process emulator, the user's log options."""
    environ = {name: value for name, value, _ in POLICY}
    environ.update(_FIXED)
    environ.update(
        REAPER_DRY_RUN="true" if dry_run else "false",
        REAPER_LOG_FORMAT=log_format,
        REAPER_LOG_LEVEL=log_level,
    )
    return load_settings(environ, require_key=False)


def main(args: argparse.Namespace) -> int:
    """Run the demo; return 0 (78 through ConfigError for a bad REAPER_LOG_FORMAT/LEVEL)."""
    del args  # no flags
    # Only the two observability variables are the user's; everything else is the demo's own.
    log_format = os.environ.get("REAPER_LOG_FORMAT", "").strip().lower() or "console"
    log_level = os.environ.get("REAPER_LOG_LEVEL", "").strip() or _DEFAULT_LEVEL.get(
        log_format, "info"
    )
    plan_settings = demo_settings(dry_run=True, log_format=log_format, log_level=log_level)
    live_settings = demo_settings(dry_run=False, log_format=log_format, log_level=log_level)
    configure_logging(live_settings.log_level, live_settings.log_format)
    out = sys.stdout if live_settings.log_format == "console" else sys.stderr
    try:
        asyncio.run(Demo(plan_settings, live_settings, out).run())
    finally:
        flush_logging()
    return 0


class Demo:
    """One run of the demo: the emulator, the metrics, the narration."""

    def __init__(self, plan_settings: Settings, live_settings: Settings, out: TextIO) -> None:
        self.plan_settings = plan_settings
        self.live_settings = live_settings
        self.out = out
        start = datetime.now(UTC).replace(second=0, microsecond=0)
        self.state = EmulatorState(
            clock=ManualClock(start),
            cancel_seconds=CANCEL_SECONDS,
            rng=random.Random(_RANDOM_SEED),
        )
        self.metrics = Metrics()
        self.health = Health()
        self.live_reports: list[CycleReport] = []
        self.cycles_started = 0
        self.scrape: list[str] = []
        self.readyz: int | None = None

    def say(self, *lines: str) -> None:
        """Print lines of the narration."""
        for line in lines:
            print(line, file=self.out, flush=True)

    async def run(self) -> None:
        """Seed, show the policy and the plan, run the daemon for a few cycles, sum up."""
        started = time.monotonic()
        seed(self.state)
        before = self.state.counts_by_workspace()
        self.say(
            "batch-reaper demo: the daemon's job against an in-process Message Batches emulator.",
            "No API key, no network: the emulator runs inside this process with a clock of its"
            " own.",
            "",
            f"1. The emulator holds {len(self.state)} batches created over the last 40 days, in"
            f" two workspaces (REAPER_WORKSPACE_IDS={','.join(WORKSPACES)}):",
            *indent(status_table(before)),
            f"   {self.state.archived_count()} ended over 29 days ago: the API has archived their"
            " results.",
            "",
            "2. The demo's policy (set by environment variables; see `reaper check-config`):",
            *indent(policy_lines()),
            "",
        )
        transport = asgi_transport(self.state)
        async with BatchClient.from_settings(
            self.live_settings, metrics=self.metrics, transport=transport
        ) as client:
            dry_run = await run_cycle(
                self.plan_settings,
                client,
                metrics=self.metrics,
                now=self.state.now,
                progress=ReadinessProgress(self.health),
            )
            self.say(
                "3. The dry run first (REAPER_DRY_RUN=true, the default): decide, change nothing.",
                "   This is what `reaper plan` prints (a sample of the rows):",
                "",
                *indent(plan_table(dry_run.plans)),
                "",
            )
            await self.live(client)
        self.summary(before, time.monotonic() - started)

    async def live(self, client: BatchClient) -> None:
        """Run the daemon, acting for real, for LIVE_CYCLES cycles; serve metrics meanwhile."""
        server = start_server(self.metrics.registry, self.health, host="127.0.0.1", port=0)
        url = server.url
        self.say(
            f"4. Now the daemon, live (REAPER_DRY_RUN=false): {LIVE_CYCLES} cycles, one every"
            f" {self.live_settings.interval.total_seconds():g} s.",
            f"   Before each cycle after the first, the emulator's clock jumps"
            f" {CLOCK_STEP.total_seconds() / 3600:g} hours.",
            f"   Metrics meanwhile: {url}/metrics  (health: {url}/healthz, {url}/readyz)",
            "",
        )
        stop = asyncio.Event()

        async def cycle_job() -> str:
            self.cycles_started += 1
            number = self.cycles_started
            try:
                if number > 1:
                    self.state.advance(CLOCK_STEP.total_seconds())
                report = await run_cycle(
                    self.live_settings,
                    client,
                    metrics=self.metrics,
                    now=self.state.now,
                    sleep=self.emulated_sleep,
                    progress=ReadinessProgress(self.health),
                )
                self.live_reports.append(report)
                self.say(*cycle_lines(number, report, self.state.now()), "")
                if number >= LIVE_CYCLES:
                    await self.read_own_metrics(url)
                return report.outcome.value
            finally:
                if number >= LIVE_CYCLES:
                    stop.set()

        deadline = asyncio.get_running_loop().call_later(DEADLINE_SECONDS, stop.set)
        try:
            await run_daemon(
                self.live_settings,
                cycle_job,
                metrics=self.metrics,
                health=self.health,
                stop_event=stop,
            )
        finally:
            deadline.cancel()
            await asyncio.to_thread(server.close)

    async def emulated_sleep(self, seconds: float) -> None:
        """Let a cycle's wait for canceled batches pass on the emulator's clock, not for real."""
        self.state.advance(seconds)
        await asyncio.sleep(0)

    async def read_own_metrics(self, url: str) -> None:
        """Scrape the demo's own metrics endpoint, as Prometheus would."""
        try:
            status, body = await asyncio.to_thread(http_get, url, "/metrics")
            self.readyz = (await asyncio.to_thread(http_get, url, "/readyz"))[0]
        except OSError as exc:  # the summary says so; the demo itself goes on
            self.scrape = [f"(the metrics endpoint could not be read: {exc})"]
            return
        if status == 200:
            self.scrape = [line for line in body.splitlines() if _in_excerpt(line)]

    def summary(self, before: Mapping[str, Mapping[str, int]], seconds: float) -> None:
        """Print what changed: batches by status, actions, requests, the metrics served."""
        reports = self.live_reports
        after = self.state.counts_by_workspace()
        outcomes = Counter(str(r.outcome) for r in reports)
        deleted = rule_counts(reports, Action.DELETE)
        requests: Counter[str] = Counter()
        for report in reports:
            requests.update(report.requests)
        seen = self.state.stats.mutating(status=200)
        self.say(
            f"5. Summary: {len(reports)} live cycles ("
            + ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items()))
            + f"); the demo took {seconds:.1f} s.",
            "   Batches by status, before -> after:",
            *indent(status_table(before, after), 2),
            f"   Canceled {sum(r.count(Action.CANCEL, ActionOutcome.DONE) for r in reports)}"
            f" stale batches; deleted {sum(deleted.values())}"
            + (f" ({join_counts(deleted)})" if deleted else "")
            + ".",
            "   Kept: the protected batch, each workspace's 10 newest ended batches and those"
            " not yet past retention.",
            f"   Requests the reaper made: {join_counts(requests) or 'none'}"
            f" (the emulator answered {seen['cancel']} cancels and {seen['delete']} deletes).",
        )
        if self.scrape:
            self.say(
                "   The metrics endpoint answered (excerpt; Prometheus scrapes the same):",
                *indent(self.scrape, 2),
                f"   /readyz answered {self.readyz}." if self.readyz else "",
            )
        self.say(
            "",
            "Next:",
            "  REAPER_LOG_FORMAT=json reaper demo   the same run with the daemon's JSON log lines",
            "  reaper emulator --seed 1000          a standing emulator to point"
            " ANTHROPIC_BASE_URL at, then `reaper plan`",
            "  REAPER_ARCHIVE_DIR=/some/dir         keep every batch's results before deleting it",
        )


def seed(state: EmulatorState) -> None:
    """Seed the random mix, plus stale and long-running batches and one that is protected."""
    state.seed_random(RANDOM_BATCHES, workspaces=WORKSPACES)
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
    state.seed_objects(objects)


def indent(lines: Iterable[str], levels: int = 1) -> list[str]:
    """Indent lines by three spaces a level (blank lines stay blank)."""
    pad = "   " * levels
    return [pad + line if line else "" for line in lines]


def policy_lines() -> list[str]:
    """Return the policy as ``VARIABLE=value  meaning`` lines."""
    settings = [f"{name}={value}" for name, value, _ in POLICY]
    width = max(len(s) for s in settings)
    return [f"{s.ljust(width)}  {what}" for s, (_, _, what) in zip(settings, POLICY, strict=True)]


def status_table(
    before: Mapping[str, Mapping[str, int]], after: Mapping[str, Mapping[str, int]] | None = None
) -> list[str]:
    """Return batches by workspace and status; with ``after``, cells read ``before -> after``."""
    columns = (*_STATUSES, "total")
    workspaces = sorted(set(before) | set(after or {}))

    def cell(counts: Mapping[str, Mapping[str, int]], workspace: str, column: str) -> int:
        row = counts.get(workspace, {})
        return sum(row.values()) if column == "total" else row.get(column, 0)

    rows = []
    for workspace in workspaces:
        cells = []
        for column in columns:
            old = cell(before, workspace, column)
            cells.append(
                str(old) if after is None else f"{old} -> {cell(after, workspace, column)}"
            )
        rows.append((workspace, *cells))
    header = ("workspace", *columns)
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return [
        "  ".join(
            text.ljust(width) if i == 0 else text.rjust(width)
            for i, (text, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in (header, *rows)
    ]


def plan_table(plans: Sequence[Plan], *, per_rule: int = 3) -> list[str]:
    """Return ``reaper plan``'s table for a sample of the actions, then its full summary."""
    sampled = [_sample(plan, per_rule) for plan in plans]
    table = format_plan_table(sampled).split("\n\n", 1)[0].splitlines()
    shown = len(table) - 1
    total = sum(len(plan.actionable) for plan in plans)
    return [
        *table,
        f"... {shown} of {total} cancels and deletes shown; `reaper plan` lists them all.",
        "",
        *format_plan_summary(plans),
    ]


def _sample(plan: Plan, per_rule: int) -> Plan:
    """Keep a few decisions of each (action, rule) and a few deferred ones: rows to read."""

    def few(decisions: Iterable[Any]) -> tuple[Any, ...]:
        taken: Counter[Rule] = Counter()
        kept = []
        for decision in decisions:
            if taken[decision.rule] < per_rule:
                taken[decision.rule] += 1
                kept.append(decision)
        return tuple(kept)

    return replace(
        plan,
        cancels=few(plan.cancels),
        deletes=few(plan.deletes),
        deferred=plan.deferred[:2],
        withheld=plan.withheld[:2],
    )


def rule_counts(reports: Iterable[CycleReport], action: Action) -> Counter[str]:
    """Count the ``action``s done by rule over several cycles."""
    counts: Counter[str] = Counter()
    for report in reports:
        for (a, rule, outcome), n in report.counts.items():
            if a is action and outcome is ActionOutcome.DONE:
                counts[str(rule)] += n
    return counts


def join_counts(counts: Mapping[str, int]) -> str:
    """Render counts as ``a 1, b 2`` (largest first)."""
    return ", ".join(f"{key} {n}" for key, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def cycle_lines(number: int, report: CycleReport, now: datetime) -> list[str]:
    """Describe one live cycle in a few lines."""
    canceled = report.count(Action.CANCEL, ActionOutcome.DONE)
    deleted = rule_counts([report], Action.DELETE)
    after_cancel = deleted.get(str(Rule.STALE), 0)
    deferred = report.count(outcome=ActionOutcome.DEFERRED)
    failed = report.count(outcome=ActionOutcome.FAILED)
    clock = now.strftime("%Y-%m-%d %H:%M UTC")
    per_workspace = ", ".join(f"{plan.workspace} {plan.listed}" for plan in report.plans)
    lines = [
        f"   cycle {number}  emulator clock {clock}  listed {report.listed} ({per_workspace})",
    ]
    if canceled:
        lines.append(
            f"     canceled {canceled} stale batch{'es' if canceled != 1 else ''};"
            f" {after_cancel} went canceling -> ended within the wait and were deleted"
        )
    if deleted:
        lines.append(f"     deleted {sum(deleted.values())} ({join_counts(deleted)})")
    if deferred:
        lines.append(
            f"     deferred {deferred} to later cycles: REAPER_MAX_ACTIONS_PER_RUN="
            f"{_policy_value('REAPER_MAX_ACTIONS_PER_RUN')} per workspace"
        )
    if failed:
        lines.append(f"     {failed} actions failed (see the log)")
    for stop in report.safety_stops:
        lines.append(f"     SAFETY STOP in {stop.workspace}: nothing deleted there")
    if not (canceled or deleted or deferred or failed or report.safety_stops):
        lines.append("     nothing due: every batch is kept")
    lines.append(
        f"     requests: {join_counts(report.requests) or 'none'};"
        f" {report.duration_seconds:.2f} s; outcome {report.outcome}"
    )
    return lines


def _policy_value(name: str) -> str:
    return next(value for variable, value, _ in POLICY if variable == name)


def http_get(url: str, path: str) -> tuple[int, str]:
    """GET ``path`` from the loopback server at ``url``; return the status and the body."""
    host, _, port = url.removeprefix("http://").rpartition(":")
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()
