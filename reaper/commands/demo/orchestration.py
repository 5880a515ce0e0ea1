"""The demo's run: the emulator in-process, the dry run, the daemon live with the clock jumping,
the metrics server, the steps' hooks at each cycle, and the narration printed as it goes.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import random
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TextIO

from reaper.client import BatchClient
from reaper.commands.demo import narration
from reaper.commands.demo.scenario import (
    CANCEL_SECONDS,
    CLOCK_STEP,
    DEADLINE_SECONDS,
    LIVE_CYCLES,
    RANDOM_SEED,
    Stage,
    Step,
    demo_settings,
    seed,
    step_settings,
)
from reaper.commands.demo.steps import steps
from reaper.commands.run import ReadinessProgress
from reaper.commands.wiring import build_archiver
from reaper.cycle import run_cycle
from reaper.daemon import run_daemon
from reaper.emulator.clock import ManualClock
from reaper.emulator.harness import asgi_transport
from reaper.emulator.state import EmulatorState
from reaper.logs import configure_logging, flush_logging
from reaper.metrics import Metrics
from reaper.outcomes import CycleReport
from reaper.server import Health, start_server
from reaper.settings import Settings

# The narration tells what the cycles did; on a console the log shows only what went wrong.
_DEFAULT_LEVEL: Final = {"console": "error", "json": "info"}


def main(args: argparse.Namespace) -> int:
    """Run the demo; return 0 (78 through ConfigError for a bad REAPER_LOG_FORMAT/LEVEL)."""
    del args  # no flags
    # Only the two observability variables are the user's; everything else is the demo's own.
    log_format = os.environ.get("REAPER_LOG_FORMAT", "").strip().lower() or "console"
    log_level = os.environ.get("REAPER_LOG_LEVEL", "").strip() or _DEFAULT_LEVEL.get(
        log_format, "info"
    )
    story = steps()
    with tempfile.TemporaryDirectory(prefix="reaper-demo-") as tmp:
        workdir = Path(tmp)
        for step in story:
            step.prepare(workdir)
        plan_settings, live_settings = (
            demo_settings(
                dry_run=dry_run,
                log_format=log_format,
                log_level=log_level,
                workdir=workdir,
                story=story,
            )
            for dry_run in (True, False)
        )
        configure_logging(live_settings.log_level, live_settings.log_format)
        out = sys.stdout if live_settings.log_format == "console" else sys.stderr
        try:
            demo = Demo(plan_settings, live_settings, out, story=story, workdir=workdir)
            asyncio.run(demo.run())
        finally:
            flush_logging()
    return 0


class Demo:
    """One run of the demo: the emulator, the metrics, the steps, the narration."""

    def __init__(
        self,
        plan_settings: Settings,
        live_settings: Settings,
        out: TextIO,
        *,
        story: Sequence[Step] | None = None,
        workdir: Path = Path(),
    ) -> None:
        self.plan_settings = plan_settings
        self.live_settings = live_settings
        self.out = out
        self.story = steps() if story is None else list(story)
        start = datetime.now(UTC).replace(second=0, microsecond=0)
        self.state = EmulatorState(
            clock=ManualClock(start),
            cancel_seconds=CANCEL_SECONDS,
            rng=random.Random(RANDOM_SEED),
        )
        self.stage = Stage(self.state, workdir)
        self.metrics = Metrics()
        self.archiver = build_archiver(live_settings, self.metrics, now=self.state.now)
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
        seed(self.state, self.story, self.stage.workdir)
        before = self.state.counts_by_workspace()
        extra = step_settings(self.story, self.stage.workdir)
        self.say(*narration.intro(len(self.state), self.state.archived_count(), before, extra))
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
            self.say(*narration.dry_run(dry_run.plans))
            await self.rehearse(client)
            await self.live(client)
        self.summary(before, time.monotonic() - started)

    async def rehearse(self, client: BatchClient) -> None:
        """Run each step's rehearsal: a dry run under other settings, on metrics of its own."""
        for step in self.story:
            overrides = step.rehearsal()
            if not overrides:
                continue
            settings = demo_settings(
                dry_run=True,
                log_format=self.plan_settings.log_format,
                log_level=self.plan_settings.log_level,
                workdir=self.stage.workdir,
                story=self.story,
                overrides=overrides,
            )
            report = await run_cycle(settings, client, metrics=Metrics(), now=self.state.now)
            self.say(*step.after_rehearsal(self.stage, report))

    async def live(self, client: BatchClient) -> None:
        """Run the daemon, acting for real, for LIVE_CYCLES cycles; serve metrics meanwhile."""
        server = start_server(self.metrics.registry, self.health, host="127.0.0.1", port=0)
        url = server.url
        self.say(*narration.live_intro(self.live_settings.interval.total_seconds(), url))
        stop = asyncio.Event()

        async def cycle_job() -> str:
            self.cycles_started += 1
            number = self.cycles_started
            try:
                report = await self.cycle(client, number)
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

    async def cycle(self, client: BatchClient, number: int) -> CycleReport:
        """One live cycle: the clock moves (after the first), the steps' hooks, the cycle, text."""
        if number > 1:
            self.state.advance(CLOCK_STEP.total_seconds())
        before = [line for step in self.story for line in step.before_cycle(self.stage, number)]
        report = await run_cycle(
            self.live_settings,
            client,
            metrics=self.metrics,
            now=self.state.now,
            sleep=self.emulated_sleep,
            progress=ReadinessProgress(self.health),
            archiver=self.archiver,
        )
        self.live_reports.append(report)
        after = [
            line for step in self.story for line in step.after_cycle(self.stage, number, report)
        ]
        lines = narration.cycle_lines(number, report, self.state.now())
        steps_said = [f"     {line}" for line in before + after]
        self.say(*lines[:-1], *steps_said, *lines[-1:], "")
        return report

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
            self.scrape = [line for line in body.splitlines() if narration.in_excerpt(line)]

    def summary(self, before: Mapping[str, Mapping[str, int]], seconds: float) -> None:
        """Print what changed: batches by status, actions, requests, the steps, the metrics."""
        reports = self.live_reports
        self.say(
            *narration.summary(
                reports,
                before,
                self.state.counts_by_workspace(),
                seconds,
                self.state.stats.mutating(status=200),
            ),
            *narration.indent(
                line for step in self.story for line in step.summary(self.stage, reports)
            ),
            *narration.metrics_excerpt(self.scrape, self.readyz),
            *narration.NEXT,
        )


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
