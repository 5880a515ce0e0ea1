"""Run ``reaper`` commands as operators do: a subprocess configured by its environment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.chaos import population as pop
from tests.chaos.conftest import KEY
from tests.loopback import http_get, spawned


def metric(port: int, line_start: str) -> float:
    """Return the value of the first /metrics line starting with ``line_start`` (0 if none)."""
    body = http_get(port, "/metrics")[1]
    for line in body.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def command_env(base_url: str, **extra: str) -> dict[str, str]:
    """Return a clean environment for a reaper command (nothing inherited but PATH)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "ANTHROPIC_API_KEY": KEY,
        "ANTHROPIC_BASE_URL": base_url,
        "REAPER_DRY_RUN": "false",
        "REAPER_LOG_FORMAT": "json",
        "REAPER_METRICS_HOST": "127.0.0.1",
        "REAPER_METRICS_PORT": "0",
        "REAPER_MAX_RPM": "100000",
        **pop.POLICY_ENV,
    }
    env.update(extra)
    return env


@dataclass
class Daemon:
    """A running `reaper run` process and the files its output goes to."""

    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def stop(self, signum: signal.Signals = signal.SIGTERM, limit: float = 30) -> tuple[int, float]:
        """Send ``signum``; return the exit code and the seconds it took to exit."""
        sent = time.monotonic()
        self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            pytest.fail(f"reaper run did not exit within {limit} s of {signum.name}")
        return code, time.monotonic() - sent

    def alive(self) -> bool:
        """Tell whether the process still runs."""
        return self.process.poll() is None

    def lines(self) -> list[str]:
        """Return the lines written on stdout so far."""
        return self.stdout.read_text().splitlines()

    def events(self) -> list[dict[str, Any]]:
        """Return the complete JSON lines written on stdout so far, parsed."""
        records = []
        for line in self.lines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # the last line may be half written
                continue
        return records


@contextmanager
def reaper_run(env: dict[str, str], tmp_path: Path, name: str = "run") -> Iterator[Daemon]:
    """Start `reaper run`; kill it if the test leaves it running."""
    stdout, stderr = tmp_path / f"{name}.stdout", tmp_path / f"{name}.stderr"
    with spawned([sys.executable, "-m", "reaper", "run"], env, stdout, stderr) as process:
        yield Daemon(process, stdout, stderr)
