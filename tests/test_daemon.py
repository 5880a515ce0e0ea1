"""The daemon's shell: probes and metrics while cycles run, crashes survived, graceful SIGTERM."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from reaper.daemon import guard_cycle, run_daemon
from reaper.exits import EX_UNAVAILABLE
from reaper.metrics import Metrics
from reaper.server import Health
from tests.loopback import free_port

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class FakeSettings:
    """The five settings the daemon reads."""

    interval: timedelta = timedelta(hours=1)
    cron: str | None = None
    shutdown_grace: timedelta = timedelta(seconds=5)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0


def status_of(port: int, path: str) -> int:
    """GET ``path`` on the daemon's server and return the status code."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


async def eventually(condition: Callable[[], bool], limit: float = 3.0) -> None:
    """Wait until ``condition()`` holds, failing after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def cycles(metrics: Metrics, outcome: str) -> float:
    """Return reaper_cycles_total for one outcome."""
    value = metrics.registry.get_sample_value("reaper_cycles_total", {"outcome": outcome})
    return value or 0.0


@pytest.mark.anyio
async def test_probes_and_metrics_follow_the_first_cycle(metrics: Metrics) -> None:
    """/readyz follows what the job marks, /healthz is 200, and stopping returns 0."""
    port = free_port()
    health = Health()
    stop = asyncio.Event()
    release = asyncio.Event()
    runs = 0

    async def cycle() -> str:
        nonlocal runs
        runs += 1
        await release.wait()
        health.mark_listed()  # the job marks readiness (run's ReadinessProgress), not the daemon
        return "success"

    settings = FakeSettings(metrics_port=port)
    daemon = asyncio.create_task(
        run_daemon(
            settings,
            cycle,
            metrics=metrics,
            health=health,
            stop_event=stop,
            install_signal_handlers=False,
        )
    )
    await eventually(lambda: runs == 1)
    assert await asyncio.to_thread(status_of, port, "/readyz") == 503
    assert await asyncio.to_thread(status_of, port, "/healthz") == 200
    release.set()
    await eventually(lambda: health.listed)
    assert await asyncio.to_thread(status_of, port, "/readyz") == 200
    assert await asyncio.to_thread(status_of, port, "/metrics") == 200
    stop.set()
    assert await daemon == 0
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass
    assert not health.scheduler_alive


@pytest.mark.anyio
async def test_a_stuck_event_loop_makes_healthz_fail(metrics: Metrics) -> None:
    """A cycle that blocks the loop stops the heartbeat; the server thread answers 503."""
    port = free_port()
    health = Health(stale_after=0.3)
    stop = asyncio.Event()
    statuses: list[int] = []
    blocked = threading.Event()

    def probe_while_blocked() -> None:
        blocked.wait(5)
        time.sleep(0.6)  # past the staleness limit, the loop still blocked
        statuses.append(status_of(port, "/healthz"))

    async def blocking_cycle() -> str:
        blocked.set()
        time.sleep(1.2)  # noqa: ASYNC251 - the bug under test: a call that blocks the loop
        return "success"

    prober = threading.Thread(target=probe_while_blocked)
    prober.start()
    daemon = asyncio.create_task(
        run_daemon(
            FakeSettings(metrics_port=port),
            blocking_cycle,
            metrics=metrics,
            health=health,
            stop_event=stop,
            install_signal_handlers=False,
            heartbeat_interval=0.05,
        )
    )
    await asyncio.to_thread(prober.join, 5)
    assert statuses == [503]
    await eventually(lambda: health.liveness()[0])
    assert await asyncio.to_thread(status_of, port, "/healthz") == 200
    stop.set()
    assert await daemon == 0


@pytest.mark.anyio
async def test_a_crashing_cycle_is_counted_and_the_next_one_runs(metrics: Metrics) -> None:
    """An exception out of a job: daemon.job_failed and reaper_cycles_total{outcome=failed}."""
    stop = asyncio.Event()
    calls = 0

    async def crash() -> str:
        nonlocal calls
        calls += 1
        raise ConnectionError("api unreachable")

    with capture_logs() as captured:
        daemon = asyncio.create_task(
            run_daemon(
                FakeSettings(interval=timedelta(seconds=0.05)),
                crash,
                metrics=metrics,
                health=Health(),
                stop_event=stop,
                install_signal_handlers=False,
            )
        )
        await eventually(lambda: calls >= 3)
        stop.set()
        assert await daemon == 0
    assert cycles(metrics, "failed") == calls
    crashed = [e for e in captured if e["event"] == "daemon.job_failed"]
    assert len(crashed) == calls
    assert crashed[0]["error_type"] == "ConnectionError"
    assert crashed[0]["error"] == "api unreachable"
    events = [e["event"] for e in captured]
    assert events[0] == "daemon.started"
    assert events[-1] == "daemon.stopped"


@pytest.mark.anyio
async def test_cancelling_the_daemon_cancels_the_cycle_and_closes_the_server(
    metrics: Metrics,
) -> None:
    """If run_daemon itself is cancelled, nothing is left running: no cycle, no server."""
    port = free_port()
    seen: list[str] = []

    async def endless() -> str:
        seen.append("started")
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        return "success"

    with capture_logs():
        daemon = asyncio.create_task(
            run_daemon(
                FakeSettings(metrics_port=port),
                endless,
                metrics=metrics,
                health=Health(),
                install_signal_handlers=False,
            )
        )
        await eventually(lambda: seen == ["started"] and status_ok(port))
        daemon.cancel()
        with pytest.raises(asyncio.CancelledError):
            await daemon
        await eventually(lambda: seen == ["started", "cancelled"])
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass


def status_ok(port: int) -> bool:
    """Return whether the daemon's server answers /healthz with 200."""
    try:
        return status_of(port, "/healthz") == 200
    except OSError:
        return False


@pytest.mark.anyio
async def test_the_guard_counts_only_runs_that_return_no_outcome(metrics: Metrics) -> None:
    """Outcomes are the cycle's to count: a job that returns one is not counted again."""
    outcomes = iter(["failed", "safety_stop"])

    async def cycle() -> str:
        return next(outcomes)

    guarded = guard_cycle(cycle, metrics=metrics)
    await guarded()
    await guarded()
    assert cycles(metrics, "failed") == 0  # the cycle counts its own outcomes


@pytest.mark.anyio
async def test_a_busy_metrics_port_exits_69(metrics: Metrics) -> None:
    """The daemon reports an address it cannot bind and exits without running a cycle."""
    calls = 0

    async def cycle() -> str:
        nonlocal calls
        calls += 1
        return "success"

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with capture_logs() as captured:
            code = await run_daemon(
                FakeSettings(metrics_port=port),
                cycle,
                metrics=metrics,
                health=Health(),
                install_signal_handlers=False,
            )
    assert code == EX_UNAVAILABLE
    assert calls == 0
    assert captured[0]["event"] == "daemon.server_failed"


# A daemon with a fake cycle, in a process of its own, for real signals.
SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from dataclasses import dataclass
    from datetime import timedelta

    import structlog

    from reaper.daemon import run_daemon
    from reaper.logs import configure_logging
    from reaper.metrics import Metrics
    from reaper.server import Health

    CYCLE_SECONDS, GRACE = float(sys.argv[1]), float(sys.argv[2])
    KEY = "sk-ant-api03-SUBPROCESScanary0123456789"


    @dataclass(frozen=True)
    class Settings:
        interval: timedelta = timedelta(hours=1)
        cron: str | None = None
        shutdown_grace: timedelta = timedelta(seconds=GRACE)
        metrics_host: str = "127.0.0.1"
        metrics_port: int = 0


    async def cycle():
        log = structlog.get_logger("fake.cycle")
        log.info("job.started", key=KEY)
        await asyncio.sleep(CYCLE_SECONDS)
        log.info("job.finished")
        return "success"


    configure_logging("info", "json", secrets=[KEY])
    sys.exit(asyncio.run(run_daemon(Settings(), cycle, metrics=Metrics(), health=Health())))
    """
)


def run_and_signal(
    tmp_path: Path, cycle_seconds: float, grace: float, signum: signal.Signals
) -> tuple[int, list[dict[str, Any]], float]:
    """Start the daemon script, signal it once its cycle started; return code, lines, seconds."""
    script = tmp_path / "daemon.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(cycle_seconds), str(grace)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        while True:
            line = lines.get(timeout=10)
            assert line is not None, (
                f"daemon exited early: {proc.stderr.read() if proc.stderr else ''}"
            )
            seen.append(line)
            if '"job.started"' in line:
                break
        signalled = time.monotonic()
        proc.send_signal(signum)
        code = proc.wait(timeout=10)
        elapsed = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    while (line := lines.get_nowait()) is not None:
        seen.append(line)
    assert proc.stderr is not None
    stderr = proc.stderr.read()
    proc.stdout.close()  # type: ignore[union-attr]
    proc.stderr.close()
    assert stderr == ""
    return code, [json.loads(line) for line in seen], elapsed


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_lets_the_cycle_finish_and_exits_0(tmp_path: Path, signum: signal.Signals) -> None:
    """SIGTERM/SIGINT during a cycle: it finishes within the grace, the logs are JSON, exit 0."""
    code, lines, _ = run_and_signal(tmp_path, cycle_seconds=0.5, grace=10, signum=signum)
    assert code == 0
    for line in lines:
        assert {"timestamp", "level", "event"} <= line.keys()
    events = [line["event"] for line in lines]
    assert events.index("daemon.signal") < events.index("job.finished")
    assert events[-1] == "daemon.stopped"
    assert lines[-1]["clean"] is True
    assert "cycle.cancelled" not in events
    assert all("SUBPROCESScanary" not in json.dumps(line) for line in lines)


def test_the_grace_expiring_cancels_the_cycle_and_still_exits_0(tmp_path: Path) -> None:
    """A cycle longer than the grace is cancelled when it runs out; the exit code stays 0."""
    code, lines, elapsed = run_and_signal(
        tmp_path, cycle_seconds=60, grace=0.5, signum=signal.SIGTERM
    )
    assert code == 0
    events = [line["event"] for line in lines]
    assert "cycle.cancelled" in events
    assert "job.finished" not in events
    assert lines[-1]["event"] == "daemon.stopped"
    assert lines[-1]["clean"] is False
    assert 0.5 <= elapsed < 5
