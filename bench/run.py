"""Benchmark the reaper against the bounds physics sets, and against the plain SDK loop.

``make bench`` runs this (about six minutes on two cores). Every scenario starts ``reaper
emulator`` as a separate process on loopback with a seed file written here (exact counts of
deletable, stale and kept batches), then runs ``reaper once`` as a separate process, configured by
environment variables as a user would. The reaper's figures come from its JSON log
(``cycle.finished``, ``workspace.listed``) and from ``os.wait4`` on its pid (peak RSS, CPU); the
server's from the emulator's counters (``/_emulator/state``). Scenarios:

- latency: 20,000 listed, 10,000 deletable, 50 ms per answer, no server rate limit,
  ``REAPER_CONCURRENCY=16``, ``REAPER_MAX_RPM=100000`` (its ceiling: out of the way). Efficiency =
  (deletes x latency / concurrency + pages x latency) / cycle time.
- rate: the emulator at ``--rate-limit-rpm 600`` (a token bucket, with the
  ``anthropic-ratelimit-requests-*`` headers), the reaper at ``REAPER_MAX_RPM=600``, 1,200
  deletions: requests per minute over the cycle, and the 429s the emulator answered. ~2 minutes.
- peer: 1,000 deletions at 50 ms done by the official SDK in a loop (``_sdk_loop.py``) and by the
  reaper at its default concurrency (8) and at 16, ``REAPER_MAX_RPM`` out of the way.
- cancel: 200 stale in-progress batches (canceled, polled until ended, then deleted) beside
  1,000 deletions; the emulator ends a cancel after 3 s.
- scale: a first cycle over 1,000,000 listed, dry run, no latency, ``REAPER_MAX_RPM`` out of the
  way: 70 % and then 10 % past retention, each at the default ``REAPER_MAX_ACTIONS_PER_RUN``
  (10,000) and at 100,000: peak RSS and CPU seconds of the reaper process, and how memory grows
  with the cap; once more with retention "never" (nothing to do).
- requests: in every live scenario, requests made against the minimum: one list call per page of
  1,000, one request per action, and the cancel polls.

    .venv/bin/python bench/run.py [--only latency,rate,peer,cancel,scale]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from _emulator import KEY, emulator
from _reaper import ReaperRun, run_once
from _seed import write_seed

LATENCY_MS = 50
LATENCY = LATENCY_MS / 1000
PAGE_SIZE = 1000  # REAPER_PAGE_SIZE's default, the API's maximum
OUT_OF_THE_WAY_RPM = "100000"  # REAPER_MAX_RPM's ceiling: 1,667 a second, never reached here
LIVE = {"REAPER_DRY_RUN": "false"}


@dataclass(frozen=True)
class Row:
    """One line of the table; ``met`` is None for a figure without a target."""

    scenario: str
    figure: str
    measured: str
    target: str = ""
    met: bool | None = None
    why: str = ""  # why a target is out of reach, when it is


def main() -> int:
    scenarios: dict[str, Callable[[Path], Iterator[Row]]] = {
        "latency": latency_bound,
        "rate": rate_bound,
        "peer": peer,
        "cancel": cancel,
        "scale": scale,
    }
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(scenarios), help="scenarios to run")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(scenarios))
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(scenarios)}")
    started = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="reaper-bench-") as tmp:
        for name, scenario in scenarios.items():
            if name not in chosen:
                continue
            print(f"{name} ...", file=sys.stderr, flush=True)
            for row in scenario(Path(tmp)):
                print(f"    {row.figure}: {row.measured}", file=sys.stderr, flush=True)
                rows.append(row)
    print(render(rows, time.perf_counter() - started))
    # A missed target is a finding, shown in the table; only a scenario that could not be
    # measured (an exception: the cycle failed, or did other than the seed says) fails the run.
    return 0


# -- scenarios ------------------------------------------------------------------------------------


def latency_bound(tmp: Path) -> Iterator[Row]:
    """10,000 deletions of 20,000 listed at 50 ms, 16 in flight: how close to the bound."""
    name, deletes, concurrency = "latency bound", 10_000, 16
    seed = tmp / "latency.jsonl"
    write_seed(seed, deletable=deletes, kept=10_000)
    with emulator(seed, latency_ms=LATENCY_MS) as emu:
        run = run_once(
            emu.base_url,
            {
                **LIVE,
                "REAPER_CONCURRENCY": str(concurrency),
                "REAPER_MAX_RPM": OUT_OF_THE_WAY_RPM,
            },
        )
        served = emu.requests()
    _check(name, run, deletes=deletes)
    bound = deletes * LATENCY / concurrency + run.pages * LATENCY
    efficiency = bound / run.cycle_seconds
    yield Row(
        name,
        f"cycle time: {run.listed:,} listed, {deletes:,} deleted, 50 ms, concurrency 16",
        f"{run.cycle_seconds:.2f} s (bound {bound:.2f} s; the process {run.wall_seconds:.2f} s)",
    )
    yield Row(
        name, "efficiency = bound / cycle time", f"{efficiency:.2f}", ">= 0.85", efficiency >= 0.85
    )
    yield _requests_row(name, run, served)


def rate_bound(tmp: Path) -> Iterator[Row]:
    """1,200 deletions against a 600 RPM server limit at REAPER_MAX_RPM=600."""
    name, deletes, rpm = "rate-limit bound", 1_200, 600
    seed = tmp / "rate.jsonl"
    write_seed(seed, deletable=deletes, kept=800)
    with emulator(seed, latency_ms=LATENCY_MS, rate_limit_rpm=rpm) as emu:
        run = run_once(emu.base_url, {**LIVE, "REAPER_MAX_RPM": str(rpm)})
        served = emu.requests()
    _check(name, run, deletes=deletes)
    made = sum(run.requests.values())
    achieved = made / run.cycle_seconds * 60
    share = achieved / rpm
    throttled = sum(n for (_endpoint, status), n in served.items() if status == 429)
    yield Row(
        name,
        f"requests per minute: {made:,} requests, server limit and REAPER_MAX_RPM {rpm}",
        f"{achieved:.0f} = {share:.1%} of {rpm} ({run.cycle_seconds:.1f} s)",
        ">= 90 %",
        share >= 0.9,
    )
    yield Row(name, "429 answers received", f"{throttled}", "a handful (<= 5)", throttled <= 5)
    yield _requests_row(name, run, served)


def peer(tmp: Path) -> Iterator[Row]:
    """The same 1,000-deletion backlog: the SDK loop, then the reaper at concurrency 8 and 16."""
    name, deletes = "peer: SDK loop", 1_000
    seed = tmp / "peer.jsonl"
    write_seed(seed, deletable=deletes, kept=1_000)
    with emulator(seed, latency_ms=LATENCY_MS) as emu:
        loop = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("_sdk_loop.py")), emu.base_url, KEY],
            check=True,
            capture_output=True,
            text=True,
        )
    sdk = json.loads(loop.stdout.strip().splitlines()[-1])
    if sdk["deleted"] != deletes:
        raise RuntimeError(f"the SDK loop deleted {sdk['deleted']:,}, expected {deletes:,}")
    yield Row(
        name,
        f"SDK loop: list {sdk['listed']:,} (1,000 a page), delete {deletes:,} one by one, 50 ms",
        f"{sdk['seconds']:.2f} s",
    )
    pages = math.ceil(sdk["listed"] / PAGE_SIZE)
    for concurrency in (8, 16):
        settings = {**LIVE, "REAPER_MAX_RPM": OUT_OF_THE_WAY_RPM}
        label = "default concurrency 8"
        if concurrency != 8:
            settings["REAPER_CONCURRENCY"] = str(concurrency)
            label = f"REAPER_CONCURRENCY={concurrency}"
        with emulator(seed, latency_ms=LATENCY_MS) as emu:
            run = run_once(emu.base_url, settings)
            served = emu.requests()
        _check(name, run, deletes=deletes)
        ratio = sdk["seconds"] / run.cycle_seconds
        # What any client with this many requests in flight could do at best, against the loop.
        ceiling = sdk["seconds"] / ((pages + deletes / concurrency) * LATENCY)
        yield Row(
            name,
            f"reaper, {label}: speed-up over the loop",
            f"x{ratio:.1f} ({run.cycle_seconds:.2f} s); ceiling at {concurrency} in flight"
            f" x{ceiling:.1f}",
            ">= x10",
            ratio >= 10,
            f"{concurrency} in flight cap it at x{ceiling:.1f}" if ceiling < 10 else "",
        )
        yield _requests_row(name, run, served, label=label)


def cancel(tmp: Path) -> Iterator[Row]:
    """200 stale batches canceled, polled and deleted beside 1,000 deletions."""
    name, stale, deletes, cancel_seconds = "cancel", 200, 1_000, 3
    seed = tmp / "cancel.jsonl"
    write_seed(seed, deletable=deletes, kept=800, stale=stale)
    with emulator(seed, latency_ms=LATENCY_MS, cancel_seconds=cancel_seconds) as emu:
        run = run_once(emu.base_url, {**LIVE, "REAPER_MAX_RPM": OUT_OF_THE_WAY_RPM})
        served = emu.requests()
    _check(name, run, deletes=deletes + stale, cancels=stale)
    polls = run.requests.get("retrieve", 0)
    yield Row(
        name,
        f"{stale} canceled, then deleted once ended ({cancel_seconds} s), + {deletes:,} deleted",
        f"{run.cycle_seconds:.2f} s; {polls / stale:.1f} polls per canceled batch",
    )
    yield _requests_row(name, run, served)


SCALE_LISTED = 1_000_000
DEFAULT_CAP = 10_000  # REAPER_MAX_ACTIONS_PER_RUN's default
BIG_CAP = 100_000
RSS_TARGET_MIB = 160  # issue 16: at a million listed, whatever share is deletable, default cap
CPU_TARGET_S = 10.0  # issue 16: per million listed


def scale(tmp: Path) -> Iterator[Row]:
    """A million listed, dry run (a first cycle): memory and CPU by share deletable and by cap."""
    name, listed = "scale (dry run)", SCALE_LISTED
    dry = {"REAPER_DRY_RUN": "true", "REAPER_MAX_RPM": OUT_OF_THE_WAY_RPM}
    runs: dict[tuple[int, int], ReaperRun] = {}
    idle: ReaperRun | None = None
    for share in (70, 10):
        deletes = listed * share // 100
        seed = tmp / "scale.jsonl"
        write_seed(seed, deletable=deletes, kept=listed - deletes)
        with emulator(seed) as emu:
            seed.unlink()  # loaded: 240 MB of disk back
            if share == 70:
                # Retention "never": the same listing and planning, no action to log or hold.
                never = {
                    "REAPER_DELETE_ENDED_AFTER": "never",
                    "REAPER_DELETE_FAILED_AFTER": "never",
                }
                idle = run_once(emu.base_url, {**dry, **never})
                _check_dry(name, idle, listed, 0, DEFAULT_CAP)
            for cap in (DEFAULT_CAP, BIG_CAP):
                print(f"    {share} % deletable, cap {cap:,} ...", file=sys.stderr, flush=True)
                run = run_once(emu.base_url, {**dry, "REAPER_MAX_ACTIONS_PER_RUN": str(cap)})
                _check_dry(name, run, listed, deletes, cap)
                runs[share, cap] = run
    assert idle is not None
    for share in (70, 10):
        for cap in (DEFAULT_CAP, BIG_CAP):
            run = runs[share, cap]
            target = cap == DEFAULT_CAP
            yield Row(
                name,
                f"peak RSS of the reaper: {listed:,} listed, {share} % past retention,"
                f" REAPER_MAX_ACTIONS_PER_RUN={cap:,}",
                f"{run.peak_rss_mib:.0f} MiB; CPU {run.cpu_seconds:.1f} s"
                f" (cycle {run.cycle_seconds:.1f} s wall, {run.pages:,} pages)",
                f"<= {RSS_TARGET_MIB} MiB, CPU <= {CPU_TARGET_S:g} s" if target else "",
                (run.peak_rss_mib <= RSS_TARGET_MIB and run.cpu_seconds <= CPU_TARGET_S)
                if target
                else None,
            )
    slopes = [
        (runs[share, BIG_CAP].peak_rss_mib - runs[share, DEFAULT_CAP].peak_rss_mib)
        * 2**20
        / (BIG_CAP - DEFAULT_CAP)
        for share in (70, 10)
    ]
    yield Row(
        name,
        f"memory per action of cap (RSS at cap {BIG_CAP:,} minus at {DEFAULT_CAP:,})",
        f"{slopes[0]:.0f} bytes (70 %), {slopes[1]:.0f} bytes (10 %)",
    )
    yield Row(
        name,
        "peak RSS and CPU with nothing to delete (retention never; start-up included)",
        f"{idle.peak_rss_mib:.0f} MiB; {idle.cpu_seconds / (idle.listed / 1e6):.1f} s per million"
        f" listed (cycle {idle.cycle_seconds:.1f} s wall)",
    )


def _check_dry(scenario: str, run: ReaperRun, listed: int, deletes: int, cap: int) -> None:
    """Fail the bench unless the dry run listed everything, reported the cap's worth of the
    deletes and deferred the rest."""
    acting = min(cap, deletes)
    actions = {"delete.dry_run": acting, "delete.deferred": deletes - acting}
    expected = {key: n for key, n in actions.items() if n}
    if run.exit_code != 0 or run.listed != listed or dict(run.actions) != expected:
        raise RuntimeError(
            f"{scenario}: exit {run.exit_code}, listed {run.listed:,}, actions {run.actions};"
            f" expected {expected}"
        )


# -- helpers --------------------------------------------------------------------------------------


def _check(scenario: str, run: ReaperRun, *, deletes: int, cancels: int = 0) -> None:
    """Fail the bench unless the cycle succeeded and did exactly the expected actions."""
    done = (run.actions.get("delete.done", 0), run.actions.get("cancel.done", 0))
    if run.exit_code != 0 or done != (deletes, cancels):
        raise RuntimeError(
            f"{scenario}: reaper once exited {run.exit_code}; expected {deletes:,} deletes and"
            f" {cancels:,} cancels, got actions {run.actions}, requests {run.requests}"
        )


def _requests_row(
    scenario: str, run: ReaperRun, served: Counter[tuple[str, int]], *, label: str = ""
) -> Row:
    """Requests made (as the reaper and the emulator counted them) against the minimum."""
    made = sum(run.requests.values())
    actions = sum(n for key, n in run.actions.items() if key.endswith(".done"))
    polls = run.requests.get("retrieve", 0)  # no cancel was refused: every retrieve is a poll
    minimum = max(1, math.ceil(run.listed / PAGE_SIZE)) + actions + polls
    over = made / minimum - 1
    by_endpoint = ", ".join(f"{e} {n:,}" for e, n in sorted(run.requests.items()))
    return Row(
        scenario,
        "requests made / minimum" + (f" ({label})" if label else ""),
        f"{made:,} / {minimum:,} = {over:+.2%} ({by_endpoint};"
        f" the emulator answered {sum(served.values()):,})",
        "<= +1 %",
        over <= 0.01,
    )


def render(rows: list[Row], seconds: float) -> str:
    """Return the table in Markdown, under a line naming the machine and the date."""
    lines = [
        f"batch-reaper bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {_machine()};"
        f" every figure from this run ({seconds / 60:.1f} min)",
        "",
        "| scenario | figure | measured | target | met |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        met = "" if row.met is None else ("yes" if row.met else "**no**")
        if row.why and not row.met:
            met += f": {row.why}"
        lines.append(f"| {row.scenario} | {row.figure} | {row.measured} | {row.target} | {met} |")
    return "\n".join(lines)


def _machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0))  # what nproc says
    return f"nproc {cores}, {model}, {platform.system()}, Python {platform.python_version()}"


if __name__ == "__main__":
    sys.exit(main())
