"""The demo's text: tables, the plan sample, one paragraph a cycle, the summary. No I/O here."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Final

from reaper.commands.demo.scenario import CLOCK_STEP, LIVE_CYCLES, POLICY, WORKSPACES, policy_value
from reaper.outcomes import ActionOutcome, CycleReport
from reaper.policy import Action, Plan, Rule
from reaper.report import format_plan_summary, format_plan_table

_STATUSES: Final = ("in_progress", "canceling", "ended")
_METRIC_EXCERPT: Final = (
    "reaper_cycles_total{",
    "reaper_batches{",
    "reaper_actions_total{",
    "reaper_api_requests_total{",
    "reaper_delete_lag_seconds_count{",
    "reaper_last_success_timestamp_seconds ",
)


def in_excerpt(line: str) -> bool:
    """Whether a line of the exposition goes into the summary's excerpt (actions: done only)."""
    if not line.startswith(_METRIC_EXCERPT):
        return False
    return not line.startswith("reaper_actions_total{") or 'outcome="done"' in line


def indent(lines: Iterable[str], levels: int = 1) -> list[str]:
    """Indent lines by three spaces a level (blank lines stay blank)."""
    pad = "   " * levels
    return [pad + line if line else "" for line in lines]


def intro(
    batches: int,
    archived: int,
    before: Mapping[str, Mapping[str, int]],
    extra: Sequence[tuple[str, str, str]] = (),
) -> list[str]:
    """Return parts 1 and 2: what the emulator holds, and the policy."""
    return [
        "batch-reaper demo: the daemon's job against an in-process Message Batches emulator.",
        "No API key, no network: the emulator runs inside this process with a clock of its own.",
        "",
        f"1. The emulator holds {batches} batches created over the last 40 days, in"
        f" two workspaces (REAPER_WORKSPACE_IDS={','.join(WORKSPACES)}):",
        *indent(status_table(before)),
        f"   {archived} ended over 29 days ago: the API has archived their results.",
        "",
        "2. The demo's policy (set by environment variables; see `reaper check-config`):",
        *indent(policy_lines(extra)),
        "",
    ]


def dry_run(plans: Sequence[Plan]) -> list[str]:
    """Return part 3: the dry run's plan."""
    return [
        "3. The dry run first (REAPER_DRY_RUN=true, the default): decide, change nothing.",
        "   This is what `reaper plan` prints (a sample of the rows):",
        "",
        *indent(plan_table(plans)),
        "",
    ]


def live_intro(interval_seconds: float, url: str) -> list[str]:
    """Return the opening of part 4: the daemon, live."""
    return [
        f"4. Now the daemon, live (REAPER_DRY_RUN=false): {LIVE_CYCLES} cycles, one every"
        f" {interval_seconds:g} s.",
        f"   Before each cycle after the first, the emulator's clock jumps"
        f" {CLOCK_STEP.total_seconds() / 3600:g} hours.",
        f"   Metrics meanwhile: {url}/metrics  (health: {url}/healthz, {url}/readyz)",
        "",
    ]


def policy_lines(extra: Sequence[tuple[str, str, str]] = ()) -> list[str]:
    """Return the policy (and the steps' settings) as ``VARIABLE=value  meaning`` lines."""
    rows = (*POLICY, *extra)
    settings = [f"{name}={value}" for name, value, _ in rows]
    width = max(len(s) for s in settings if len(s) < 48)
    return [f"{s.ljust(width)}  {what}" for s, (_, _, what) in zip(settings, rows, strict=True)]


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
        deferred_sample=plan.deferred_sample[:2],
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
            f"{policy_value('REAPER_MAX_ACTIONS_PER_RUN')} per workspace"
        )
    if failed:
        lines.append(f"     {failed} actions failed (see the log)")
    for stop in report.safety_stops:
        lines.append(
            f"     SAFETY STOP in {stop.workspace} ({', '.join(stop.reasons)}): {stop.detail}"
        )
    if not (canceled or deleted or deferred or failed or report.safety_stops):
        lines.append("     nothing due: every batch is kept")
    lines.append(
        f"     requests: {join_counts(report.requests) or 'none'};"
        f" {report.duration_seconds:.2f} s; outcome {report.outcome}"
    )
    return lines


def summary(
    reports: Sequence[CycleReport],
    before: Mapping[str, Mapping[str, int]],
    after: Mapping[str, Mapping[str, int]],
    seconds: float,
    seen: Mapping[str, int],
) -> list[str]:
    """Return part 5 up to the steps' own lines: batches before and after, actions, requests."""
    outcomes = Counter(str(r.outcome) for r in reports)
    deleted = rule_counts(reports, Action.DELETE)
    requests: Counter[str] = Counter()
    for report in reports:
        requests.update(report.requests)
    return [
        f"5. Summary: {len(reports)} live cycles ("
        + ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items()))
        + f"); the demo took {seconds:.1f} s.",
        "   Batches by status, before -> after:",
        *indent(status_table(before, after), 2),
        f"   Canceled {sum(r.count(Action.CANCEL, ActionOutcome.DONE) for r in reports)}"
        f" stale batches; deleted {sum(deleted.values())}"
        + (f" ({join_counts(deleted)})" if deleted else "")
        + ".",
        f"   Requests the reaper made: {join_counts(requests) or 'none'}"
        f" (the emulator answered {seen['cancel']} cancels and {seen['delete']} deletes).",
    ]


def metrics_excerpt(scrape: Sequence[str], readyz: int | None) -> list[str]:
    """Return the excerpt of the metrics the demo's own server answered."""
    if not scrape:
        return []
    return [
        "   The metrics endpoint answered (excerpt; Prometheus scrapes the same):",
        *indent(scrape, 2),
        f"   /readyz answered {readyz}." if readyz else "",
    ]


NEXT: Final = (
    "",
    "Next:",
    "  REAPER_LOG_FORMAT=json reaper demo   the same run with the daemon's JSON log lines",
    "  reaper emulator --seed 1000          a standing emulator to point"
    " ANTHROPIC_BASE_URL at, then `reaper plan`",
    "  REAPER_ARCHIVE_DIR=/some/dir         keep every batch's results before deleting it",
)
