"""Benchmark the reaper against the bounds physics sets, and against the plain SDK loop.

``make bench`` runs this. Every scenario starts ``reaper emulator`` as a separate process on
loopback with a seed file written here (exact counts of deletable and kept batches), then runs
``reaper once`` as a separate process, configured by environment variables as a user would. The
reaper's figures come from its JSON log (``cycle.finished``) and from ``os.wait4`` on its pid (peak
RSS, CPU); the server's from the emulator's counters (``/_emulator/state``). Scenarios:

- latency: 20,000 listed, 10,000 deletable, 50 ms per answer, no server rate limit,
  ``REAPER_CONCURRENCY=16``, ``REAPER_MAX_RPM=100000`` (its ceiling: out of the way). Efficiency =
  (deletes x latency / concurrency + pages x latency) / cycle time.
- rate: the emulator at ``--rate-limit-rpm 600`` (a token bucket, with the
  ``anthropic-ratelimit-requests-*`` headers), the reaper at ``REAPER_MAX_RPM=600``, 1,200
  deletions: requests per minute over the cycle, and the 429s the emulator answered. ~2 minutes.
- peer: 1,000 deletions at 50 ms done by the official SDK in a loop (``_sdk_loop.py``) and by the
  reaper at its default concurrency (8) and at 16, ``REAPER_MAX_RPM`` out of the way.
- scale: 1,000,000 listed, 100,000 deletable, dry run, no latency,
  ``REAPER_MAX_ACTIONS_PER_RUN=100000`` (all of them planned, logged and reported): peak RSS of
  the reaper process and its CPU seconds per million batches listed.
- requests: in every live scenario, requests made against the minimum (one list call per page of
  1,000, one request per action, plus cancel polls: none here, no batch is stale).

    .venv/bin/python bench/run.py [--only latency,rate,peer,scale]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from _emulator import KEY, emulator
from _reaper import ReaperRun, run_once
from _seed import write_seed

LATENCY_MS = 50
PAGE_SIZE = 1000
OUT_OF_THE_WAY_RPM = "100000"  # REAPER_MAX_RPM's ceiling: 1,667 a second, never reached here
SCENARIOS = ("latency", "rate", "peer", "scale")


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    scenario: str
    figure: str
    measured: str
    target: str = ""
    met: bool | None = None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SCENARIOS), help="scenarios to run")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    runners: dict[str, Callable[[Path], Iterator[Row]]] = {
        "latency": latency_bound,
        "rate": rate_bound,
        "peer": peer,
        "scale": scale,
    }
    started = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="reaper-bench-") as tmp:
        for name in SCENARIOS:
            if name in chosen:
                print(f"... {name}", file=sys.stderr, flush=True)
                for row in runners[name](Path(tmp)):
                    print(f"    {row.figure}: {row.measured}", file=sys.stderr, flush=True)
                    rows.append(row)
    print(render(rows, time.perf_counter() - started))
    return 0 if all(row.met is not False for row in rows) else 1


# -- scenarios ------------------------------------------------------------------------------------


def latency_bound(tmp: Path) -> Iterator[Row]:
    """10,000 deletions of 20,000 listed at 50 ms, 16 in flight: how close to the bound."""
    deletes, concurrency = 10_000, 16
    seed = tmp / "latency.jsonl"
    write_seed(seed, deletable=deletes, kept=10_000)
    with emulator(seed, latency_ms=LATENCY_MS) as emu:
        run = run_once(
            emu.base_url,
            {
                "REAPER_DRY_RUN": "false",
                "REAPER_CONCURRENCY": str(concurrency),
                "REAPER_MAX_RPM": OUT_OF_THE_WAY_RPM,
            },
        )
        served = emu.requests()
    _check(run, deletes, "latency")
    latency = LATENCY_MS / 1000
    bound = run.actions.get("delete.done", 0) * latency / concurrency + run.pages * latency
    efficiency = bound / run.cycle_seconds
    name = "latency bound"
    yield Row(
        name,
        f"cycle time, {run.listed:,} listed, {deletes:,} deleted, 50 ms, concurrency 16",
        f"{run.cycle_seconds:.2f} s (bound {bound:.2f} s)",
    )
    yield Row(name, "efficiency = bound / cycle time", f"{efficiency:.2f}", ">= 0.85", efficiency >= 0.85)
    yield _requests_row(name, run, served)


def rate_bound(tmp: Path) -> Iterator[Row]:
    """1,200 deletions against a 600 RPM server limit at REAPER_MAX_RPM=600."""
    deletes, rpm = 1_200, 600
    seed = tmp / "rate.jsonl"
    write_seed(seed, deletable=deletes, kept=800)
    with emulator(seed, latency_ms=LATENCY_MS, rate_limit_rpm=rpm) as emu:
        run = run_once(
            emu.base_url,
            {"REAPER_DRY_RUN": "false", "REAPER_MAX_RPM": str(rpm)},
        )
        served = emu.requests()
    _check(run, deletes, "rate")
    made = sum(run.requests.values())
    achieved = made / run.cycle_seconds * 60
    share = achieved / rpm
    throttled = sum(n for (_endpoint, status), n in served.items() if status == 429)
    name = "rate-limit bound"
    yield Row(
        name,
        f"requests per minute, {made:,} requests (server and reaper at {rpm} RPM)",
        f"{achieved:.0f} RPM = {share:.1%} of {rpm} in {run.cycle_seconds:.1f} s",
        ">= 90 %",
        share >= 0.9,
    )
    yield Row(name, "429 answers received", f"{throttled}", "a handful (<= 5)", throttled <= 5)
    yield _requests_row(name, run, served)


def peer(tmp: Path) -> Iterator[Row]:
    """The same 1,000-deletion backlog: the SDK loop, then the reaper at concurrency 8 and 16."""
    deletes = 1_000
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
        raise RuntimeError(f"the SDK loop deleted {sdk['deleted']}, expected {deletes}")
    name = "peer (SDK loop)"
    yield Row(
        name,
        f"SDK loop: list {sdk['listed']:,}, delete {deletes:,} one by one, 50 ms",
        f"{sdk['seconds']:.2f} s",
    )
    latency = LATENCY_MS / 1000
    pages = math.ceil(sdk["listed"] / PAGE_SIZE)
    for concurrency, target in ((8, "default"), (16, "")):
        settings = {"REAPER_DRY_RUN": "false", "REAPER_MAX_RPM": OUT_OF_THE_WAY_RPM}
        if concurrency != 8:
            settings["REAPER_CONCURRENCY"] = str(concurrency)
        with emulator(seed, latency_ms=LATENCY_MS) as emu:
            run = run_once(emu.base_url, settings)
            served = emu.requests()
        _check(run, deletes, "peer")
        ratio = sdk["seconds"] / run.cycle_seconds
        # The best any client with this many requests in flight can do against the loop.
        ceiling = sdk["seconds"] / ((pages + deletes / concurrency) * latency)
        label = f"concurrency {concurrency}" + (f" ({target})" if target else "")
        yield Row(
            name,
            f"reaper, {label}: speed-up over the loop",
            f"x{ratio:.1f} ({run.cycle_seconds:.2f} s; ceiling at {concurrency} in flight"
            f" x{ceiling:.1f})",
            ">= x10",
            ratio >= 10,
        )
        yield _requests_row(name, run, served, label=label)


def scale(tmp: Path) -> Iterator[Row]:
    """A million listed, 100,000 deletable, dry run: the reaper's memory and CPU."""
    listed, deletes = 1_000_000, 100_000
    seed = tmp / "scale.jsonl"
    write_seed(seed, deletable=deletes, kept=listed - deletes)
    with emulator(seed) as emu:
        seed.unlink()  # loaded: 240 MB of disk back
        run = run_once(
            emu.base_url,
            {"REAPER_DRY_RUN": "true", "REAPER_MAX_ACTIONS_PER_RUN": str(deletes)},
        )
    if run.listed != listed or run.actions.get("delete.dry_run") != deletes:
        raise RuntimeError(f"scale: listed {run.listed}, actions {run.actions}")
    name = "scale (dry run)"
    yield Row(
        name,
        f"peak RSS of the reaper, {listed:,} listed, {deletes:,} to delete",
        f"{run.peak_rss_mib:.0f} MiB",
        "< 200 MB",
        run.peak_rss_mib * 2**20 < 200e6,
    )
    per_million = run.cpu_seconds / (run.listed / 1e6)
    yield Row(
        name,
        "CPU seconds per million listed (whole process)",
        f"{per_million:.1f} s (cycle {run.cycle_seconds:.1f} s, {run.pages:,} pages)",
    )


# -- helpers --------------------------------------------------------------------------------------


def _check(run: ReaperRun, deletes: int, scenario: str) -> None:
    done = run.actions.get("delete.done", 0)
    if run.exit_code != 0 or done != deletes:
        raise RuntimeError(
            f"{scenario}: reaper once exited {run.exit_code} with {done:,} of {deletes:,} deletes"
            f" done; actions {run.actions}, requests {run.requests}"
        )


def _requests_row(
    scenario: str,
    run: ReaperRun,
    served: dict[tuple[str, int], int] | object,
    *,
    label: str = "",
) -> Row:
    """Requests made (by the reaper, and as the emulator counted them) against the minimum."""
    made = sum(run.requests.values())
    assert isinstance(served, dict)
    seen = sum(served.values())
    actions = sum(n for key, n in run.actions.items() if key.endswith(".done"))
    minimum = max(1, math.ceil(run.listed / PAGE_SIZE)) + actions  # no cancel polls: none stale
    over = made / minimum - 1
    where = f" ({label})" if label else ""
    by_endpoint = ", ".join(f"{e} {n:,}" for e, n in sorted(run.requests.items()))
    return Row(
        scenario,
        f"requests / minimum{where}",
        f"{made:,} / {minimum:,} = {over:+.2%} ({by_endpoint}; emulator counted {seen:,})",
        "<= +1 %",
        over <= 0.01,
    )


def render(rows: list[Row], seconds: float) -> str:
    """Return the table in Markdown, under a line naming the machine and the date."""
    lines = [
        f"batch-reaper bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, on {_machine()};"
        f" all figures from this run ({seconds / 60:.1f} min)",
        "",
        "| scenario | figure | measured | target | met |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        met = "" if row.met is None else ("yes" if row.met else "**no**")
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
    import os

    cores = os.cpu_count() or 0
    return f"{cores} x {model}, {platform.system()}, Python {platform.python_version()}"


if __name__ == "__main__":
    sys.exit(main())
