"""CPU per log line: the ``batch.delete`` line a dry run writes for every planned action.

The pipeline as ``reaper once`` configures it (``configure_logging`` with an API key of a real
key's length to mask, a cycle id bound), writing to /dev/null through a real file (each line
flushed: one write each, as on stdout). Two figures, in microseconds of process CPU time:

- per dry-run action: ``Recorder.record_dry_run`` over a plan of deletes, as a dry run's cycle
  calls it (the ``batch.delete`` line, and the action's count and metric);
- per line logged through a module's logger (``structlog.get_logger(...)``, as every other
  event is), the same fields.

Each is the best of several rounds (the least disturbed by other work on the machine) and the
median of them, for the JSON format (the default) and the console one.

    .venv/bin/python bench/log_lines.py [--lines 5000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import structlog

from reaper.logs import Redactor, configure_logging, reset_logging
from reaper.metrics import Metrics
from reaper.models import Batch, RequestCounts
from reaper.policy import Plan, Policy, plan
from reaper.recorder import Recorder, Tally

KEY = "sk-ant-api03-bench0Qm4xTz8vLw2pRk7nQm4xTz8vLw2pRk7nQm4xTz8vLw2pRk7nQm4xTz8vLw2pRk7n-AA"
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def deletes(count: int) -> Plan:
    """A plan of ``count`` deletes: batches ended 38 days ago (past the default 30)."""
    created = NOW - timedelta(days=40)
    batches = [
        Batch(
            id=f"msgbatch_01{i:024d}",
            processing_status="ended",
            created_at=created,
            request_counts=RequestCounts(succeeded=10, errored=0, expired=0),
            expires_at=created + timedelta(hours=24),
            ended_at=created + timedelta(days=2),
            cancel_initiated_at=None,
            archived_at=None,
            results_url=f"/v1/messages/batches/msgbatch_01{i:024d}/results",
            workspace=None,
        )
        for i in range(count)
    ]
    planned = plan(batches, NOW, Policy(max_actions_per_run=count))
    assert len(planned.deletes) == count
    return planned


def dry_run_actions(planned: Plan) -> None:
    """Record a dry run of the plan, as a cycle does for one workspace."""
    recorder = Recorder(
        Tally(), None, metrics=Metrics(), now=lambda: NOW, dry_run=True, redact=Redactor([KEY])
    )
    recorder.record_dry_run(planned, then_delete=False)


def module_logger_lines(count: int) -> None:
    """Log ``count`` lines with the dry-run line's fields through a module's logger."""
    log = structlog.get_logger("reaper.cycle")
    for i in range(count):
        log.info(
            "batch.delete",
            id=f"msgbatch_01{i:024d}",
            rule="ended_retention",
            age=3290900 + i,
            dry_run=True,
            workspace="default",
            outcome="dry_run",
        )


def per_line(fmt: str, lines: int, rounds: int, work: Callable[[], None]) -> list[float]:
    """Return the CPU microseconds per line of each round of ``work`` (``lines`` lines)."""
    with open(os.devnull, "w", encoding="utf-8") as sink:
        configure_logging("info", fmt, secrets=[KEY], stream=sink)  # type: ignore[arg-type]
        structlog.contextvars.bind_contextvars(cycle_id="8b9cbbe5")
        figures = []
        try:
            for _ in range(rounds):
                start = time.process_time()
                work()
                figures.append((time.process_time() - start) / lines * 1e6)
        finally:
            structlog.contextvars.clear_contextvars()
            reset_logging()
    return figures


def main() -> None:
    """Print the figures, one line per kind and format."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    planned = deletes(args.lines)
    kinds: list[tuple[str, Callable[[], None]]] = [
        ("dry-run action", lambda: dry_run_actions(planned)),
        ("module logger line", lambda: module_logger_lines(args.lines)),
    ]
    for fmt in ("json", "console"):
        for kind, work in kinds:
            figures = per_line(fmt, args.lines, args.rounds, work)
            print(
                f"{fmt:7} {kind:18}: {min(figures):5.1f} us (best of {args.rounds} rounds of"
                f" {args.lines:,}; median {statistics.median(figures):5.1f} us)"
            )


if __name__ == "__main__":
    main()
