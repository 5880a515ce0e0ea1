"""`reaper run` as operators start it: a process configured by its environment, on the emulator.

The emulator serves over loopback from this test process; the daemon is a subprocess of the real
command line, so what is checked is what ships: the wiring, the metrics after the first cycle,
readiness, the JSON log stream, SIGTERM, and the configuration errors.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from reaper.client import BatchClient
from reaper.commands.run import cycle_job
from reaper.emulator.clock import system_clock
from reaper.emulator.harness import IN_PROCESS_BASE_URL, asgi_transport, new_state, running_emulator
from reaper.emulator.state import EmulatorState
from reaper.metrics import Metrics
from reaper.server import Health
from reaper.settings import load_settings
from tests.fake_api import FakeClient
from tests.helpers import Clock
from tests.loopback import free_port, http_get, spawned, wait_for

KEY = "sk-ant-api03-RunCommandTestKey0123456789abcdef"
# Every metric of SPEC section 4. Labelled ones with no sample yet still get HELP and TYPE lines.
SPEC_METRICS = (
    "reaper_cycles_total",
    "reaper_cycle_duration_seconds",
    "reaper_last_success_timestamp_seconds",
    "reaper_batches",
    "reaper_oldest_batch_age_seconds",
    "reaper_decisions_total",
    "reaper_actions_total",
    "reaper_api_requests_total",
    "reaper_api_request_duration_seconds",
    "reaper_api_retries_total",
    "reaper_safety_stops_total",
    "reaper_delete_lag_seconds",
    "reaper_archive_total",
    "reaper_archive_bytes_total",
    "reaper_archive_backlog",
    "reaper_archive_backlog_min_expiry_seconds",
    "reaper_results_lost_total",
    "reaper_listing_rejected_total",
    "reaper_holds",
    "reaper_build_info",
)
# Metrics that have samples after one successful cycle, whatever it decided.
SAMPLED_AFTER_FIRST_CYCLE = (
    "reaper_cycles_total",
    "reaper_batches",
    "reaper_build_info",
    "reaper_last_success_timestamp_seconds",
    "reaper_api_requests_total",
)
SHUTDOWN_GRACE_SECONDS = 5


def answers(port: int, path: str, status: int) -> Callable[[], bool]:
    """Return a probe: does ``path`` answer ``status`` (False while nothing listens)?"""

    def probe() -> bool:
        try:
            return http_get(port, path)[0] == status
        except OSError:
            return False

    return probe


def sample_names(exposition: str) -> set[str]:
    """Return the metric names that have at least one sample in a text exposition."""
    names = set()
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names


def seeded_state(n: int = 150, **kwargs: object) -> EmulatorState:
    """Return an emulator on the wall clock (the daemon reads the real time), seeded with ``n``."""
    state = new_state(clock=system_clock, api_key=KEY, **kwargs)
    state.seed_random(n)
    return state


def daemon_env(base_url: str, metrics_port: int, **extra: str) -> dict[str, str]:
    """Return a clean environment configuring `reaper run` (nothing inherited but PATH)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "ANTHROPIC_API_KEY": KEY,
        "ANTHROPIC_BASE_URL": base_url,
        "REAPER_INTERVAL": "1s",
        "REAPER_SHUTDOWN_GRACE": f"{SHUTDOWN_GRACE_SECONDS}s",
        "REAPER_METRICS_HOST": "127.0.0.1",
        "REAPER_METRICS_PORT": str(metrics_port),
        "REAPER_LOG_FORMAT": "json",
    }
    env.update(extra)
    return env


@dataclass
class Daemon:
    """A running `reaper run` process, its metrics port and its captured output files."""

    process: subprocess.Popen[bytes]
    port: int
    stdout: Path
    stderr: Path

    def stop(self, signum: signal.Signals = signal.SIGTERM) -> int:
        """Send ``signum`` and return the exit code, failing if it is not back within the grace."""
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=SHUTDOWN_GRACE_SECONDS + 5)
        except subprocess.TimeoutExpired:
            pytest.fail(f"reaper run did not exit within the grace after {signum.name}")

    def log_lines(self) -> list[str]:
        """Return the lines the daemon wrote on stdout."""
        return self.stdout.read_text().splitlines()


@contextmanager
def reaper_run(env: dict[str, str], port: int, tmp_path: Path) -> Iterator[Daemon]:
    """Start `reaper run` with ``env``; kill it if the test leaves it running."""
    stdout, stderr = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with spawned([sys.executable, "-m", "reaper", "run"], env, stdout, stderr) as process:
        yield Daemon(process, port, stdout, stderr)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_serves_the_spec_metrics_turns_ready_logs_json_and_stops_on_a_signal(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """After its first cycle the daemon is ready with every SPEC metric; a signal exits 0."""
    port = free_port()
    with running_emulator(seeded_state()) as (base_url, _state):
        with reaper_run(daemon_env(base_url, port), port, tmp_path) as daemon:
            wait_for(answers(port, "/readyz", 200), 30, "/readyz to answer 200")
            assert http_get(port, "/healthz")[0] == 200
            status, exposition = http_get(port, "/metrics")
            assert status == 200
            for name in SPEC_METRICS:
                assert f"# TYPE {name} " in exposition, name
            missing = set(SAMPLED_AFTER_FIRST_CYCLE) - sample_names(exposition)
            assert not missing, f"no samples for {sorted(missing)}"
            assert 'reaper_cycles_total{outcome="success"}' in exposition
            assert 'reaper_api_requests_total{code="200",endpoint="list"}' in exposition
            # The interval is 1 s: the schedule goes on after the first cycle.
            wait_for(lambda: cycles_finished(daemon) >= 2, 15, "a second cycle")
            assert daemon.stop(signum) == 0
        lines = daemon.log_lines()
        errors = daemon.stderr.read_text()

    assert lines, "the daemon logged nothing"
    events = []
    for line in lines:
        record = json.loads(line)  # every stdout line is one JSON object
        assert {"timestamp", "level", "event"} <= record.keys(), line
        assert record["timestamp"].endswith("Z")
        datetime.fromisoformat(record["timestamp"])
        events.append(record["event"])
    # Configuration warnings come first (the default 30d outlasts the results window).
    assert events.count("config.warning") == 1
    events.remove("config.warning")
    assert events[0] == "daemon.started"
    assert events[-1] == "daemon.stopped"
    for event in ("cycle.started", "workspace.listed", "batch.delete", "cycle.finished"):
        assert event in events
    stopped = json.loads(lines[-1])
    assert stopped["clean"] is True
    assert errors == ""
    assert KEY not in "\n".join(lines)
    assert KEY[:12] not in "\n".join(lines)


def cycles_finished(daemon: Daemon) -> int:
    """Count the cycle.finished events the daemon has logged so far."""
    return sum('"event": "cycle.finished"' in line for line in daemon.log_lines())


def test_run_keeps_going_and_stays_unready_while_the_api_fails(tmp_path: Path) -> None:
    """Every listing answered 500: cycles count as failed, /readyz stays 503, /healthz 200."""
    port = free_port()
    state = seeded_state(20, error_rate=1.0)
    env = daemon_env("", port, REAPER_INTERVAL="1s", REAPER_MAX_RETRIES="0")
    with running_emulator(state) as (base_url, _state):
        env["ANTHROPIC_BASE_URL"] = base_url
        with reaper_run(env, port, tmp_path) as daemon:
            wait_for(answers(port, "/healthz", 200), 20, "/healthz to answer 200")

            def failed_twice() -> bool:
                body = http_get(port, "/metrics")[1]
                for line in body.splitlines():
                    if line.startswith('reaper_cycles_total{outcome="failed"}'):
                        return float(line.rsplit(" ", 1)[1]) >= 2
                return False

            wait_for(failed_twice, 20, "two failed cycles")
            assert http_get(port, "/readyz")[0] == 503
            assert http_get(port, "/healthz")[0] == 200
            assert daemon.stop() == 0
        events = [json.loads(line)["event"] for line in daemon.log_lines()]
    assert "listing.failed" in events
    assert "batch.delete" not in events  # fail closed


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REAPER_INTERVAL", "soon"),
        ("REAPER_DRY_RUNN", "false"),
        ("REAPER_METRICS_PORT", "99999"),
    ],
)
def test_bad_configuration_exits_78_with_one_line_on_stderr(
    tmp_path: Path, variable: str, value: str
) -> None:
    """A bad or unknown variable: exit 78, one stderr line naming it, no traceback, no key."""
    env = daemon_env("http://127.0.0.1:9", 0, **{variable: value})
    result = subprocess.run(
        [sys.executable, "-m", "reaper", "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 78
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert value in lines[0]
    assert "Traceback" not in result.stderr
    assert KEY not in result.stderr + result.stdout


@pytest.mark.anyio
async def test_the_daemon_is_ready_once_listed_while_the_first_cycle_still_acts(
    metrics: Metrics,
) -> None:
    """Readiness follows the listing, not the end of a cycle that may take hours to act."""
    state = new_state()  # a manual clock that never moves: the canceled batch never ends
    created = state.now() - timedelta(hours=13)
    state.seed_objects([{"processing_status": "in_progress", "created_at": created.isoformat()}])
    settings = load_settings(
        {
            "ANTHROPIC_API_KEY": KEY,
            "ANTHROPIC_BASE_URL": IN_PROCESS_BASE_URL,
            "REAPER_DRY_RUN": "false",
            "REAPER_CANCEL_WAIT_TIMEOUT": "1h",
        }
    )
    health = Health()
    async with BatchClient.from_settings(
        settings, metrics=metrics, transport=asgi_transport(state)
    ) as client:
        job = cycle_job(settings, client, metrics=metrics, health=health, now=state.now)
        cycle = asyncio.create_task(job())
        deadline = time.monotonic() + 5
        while not (health.listed and state.counts() == {"canceling": 1}):
            assert time.monotonic() < deadline, "never marked ready, or never canceled"
            await asyncio.sleep(0.01)
        assert not cycle.done()  # still waiting for the canceled batch to end
        cycle.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cycle


@pytest.mark.anyio
async def test_readiness_is_marked_by_the_job_once_a_listing_is_complete(
    metrics: Metrics,
) -> None:
    """Readiness is set in one place, the job: not after a failed listing, after a read one."""
    settings = load_settings({"ANTHROPIC_API_KEY": KEY}, require_key=False)
    client = FakeClient([], clock=Clock())
    client.list_fault_page[None] = 1
    health = Health()
    job = cycle_job(settings, client, metrics=metrics, health=health, now=client.clock.now)

    assert await job() == "failed"
    assert not health.listed
    del client.list_fault_page[None]
    assert await job() == "success"
    assert health.listed
