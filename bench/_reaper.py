"""Run ``reaper once`` as a child process, the way a user does, and measure it.

The child's CPU time comes from ``os.wait4`` on its pid (that one process, not the emulator or
the bench). Its peak resident set is the kernel's ``VmHWM`` for the reaper's own image, which the
child reads from ``/proc/self/status`` as it exits (``_LAUNCH``): ``ru_maxrss`` cannot be used,
as Linux carries the high-water mark across ``exec``, so a child forked from a bench process of
200 MiB reports at least 200 MiB whatever the reaper itself used. Its JSON log lines (on
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


# ``reaper once``, then the peak RSS of this image (VmHWM, KiB) on stderr's last line.
_LAUNCH = """
import runpy, sys
sys.argv = ["reaper", "once"]
try:
    runpy.run_module("reaper", run_name="__main__", alter_sys=True)
finally:
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    sys.stdout.flush()
    print(f"bench.peak_rss_kib={peak}", file=sys.stderr, flush=True)
"""


def _peak_kib(stderr: str) -> int:
    lines = [line for line in stderr.splitlines() if line.startswith("bench.peak_rss_kib=")]
    if not lines:
        raise RuntimeError(f"reaper once did not report its peak RSS: {stderr[-500:]}")
    return int(lines[-1].split("=", 1)[1])


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
        process = subprocess.Popen([sys.executable, "-c", _LAUNCH], env=env, stdout=out, stderr=err)
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
        peak_rss_mib=_peak_kib(summary) / 1024,
        listed=int(cycle["listed"]),
        pages=sum(int(e["pages"]) for e in listed),
        requests=dict(cycle["requests"]),
        actions=dict(cycle["actions"]),
    )
