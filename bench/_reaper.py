"""Run ``reaper once`` as a child process, the way a user does, and measure it.

The child's resource usage comes from ``os.wait4`` on its pid: peak resident set (``ru_maxrss``)
and CPU time of that one process, not of the emulator or of the bench. Its JSON log lines (on
stdout, written to a file) give the cycle's own figures: ``cycle.finished`` (duration, requests
by endpoint, actions by outcome) and ``workspace.listed`` (pages).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from _emulator import KEY


@dataclass(frozen=True)
class ReaperRun:
    """What one ``reaper once`` did and cost."""

    exit_code: int
    wall_seconds: float  # the process, start-up included
    cycle_seconds: float  # cycle.finished duration (seconds): from listing to the last action
    cpu_seconds: float  # user + system of the reaper process
    peak_rss_mib: float
    listed: int
    pages: int
    requests: Mapping[str, int]
    actions: Mapping[str, int]


def run_once(base_url: str, settings: Mapping[str, str]) -> ReaperRun:
    """Run one cycle against ``base_url`` with these ``REAPER_*`` settings; return its figures."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REAPER_", "ANTHROPIC_"))}
    env.update(
        {
            "ANTHROPIC_API_KEY": KEY,
            "ANTHROPIC_BASE_URL": base_url,
            "REAPER_METRICS_PORT": "0",
            "NO_PROXY": "127.0.0.1",
            **settings,
        }
    )
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "reaper", "once"], env=env, stdout=out, stderr=err
        )
        # wait4 rather than Popen.wait: it returns the resource usage of this child alone.
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        events = [json.loads(line) for line in out if line.startswith("{")]
        err.seek(0)
        summary = err.read()
    finished = [e for e in events if e.get("event") == "cycle.finished"]
    if not finished:
        raise RuntimeError(f"reaper once exited {process.returncode} without a cycle: {summary}")
    cycle: dict[str, Any] = finished[-1]
    listed = [e for e in events if e.get("event") == "workspace.listed"]
    return ReaperRun(
        exit_code=process.returncode,
        wall_seconds=wall,
        cycle_seconds=float(cycle["duration"]),
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        peak_rss_mib=usage.ru_maxrss / 1024,  # Linux reports KiB
        listed=int(cycle["listed"]),
        pages=sum(int(e["pages"]) for e in listed),
        requests=dict(cycle["requests"]),
        actions=dict(cycle["actions"]),
    )
