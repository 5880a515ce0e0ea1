"""Run ``reaper emulator`` as a separate process on loopback and read its control surface.

The emulator is asked for port 0 and says which port it got on its first line of output, so
there is no race for a free port. Its counters (``/_emulator/state``) are the server's view of
what the client sent: requests by endpoint and status, 429s included.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# No run of eight characters in common with the bench's batch ids: the reaper masks any run of
# eight characters of its key in its log lines, so a key of zeros would mask every id.
KEY = "sk-ant-bench-Qm4xTz8vLw2pRk7n"
_LISTENING = re.compile(r"listening on (http://\S+)")


@dataclass(frozen=True)
class Emulator:
    """A running emulator: its base URL and process."""

    base_url: str
    process: subprocess.Popen[str]

    def state(self) -> dict[str, Any]:
        """Return ``GET /_emulator/state``."""
        url = f"{self.base_url}/_emulator/state"
        with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (loopback)
            state: dict[str, Any] = json.load(response)
            return state

    def requests(self) -> Counter[tuple[str, int]]:
        """Return the API requests the emulator answered, by (endpoint, status)."""
        rows = self.state()["requests"]["by_endpoint_status"]
        return Counter({(r["endpoint"], r["status"]): r["count"] for r in rows})


@contextmanager
def emulator(
    seed_file: Path,
    *,
    latency_ms: float = 0,
    rate_limit_rpm: int = 0,
    cancel_seconds: float = 10,
    start_timeout: float = 120,
) -> Iterator[Emulator]:
    """Start the emulator on 127.0.0.1 with this seed file and faults; stop it afterwards."""
    command = [
        sys.executable, "-m", "reaper", "emulator", "--host", "127.0.0.1", "--port", "0",
        "--api-key", KEY, "--seed-file", str(seed_file), "--latency-ms", str(latency_ms),
        "--rate-limit-rpm", str(rate_limit_rpm), "--cancel-seconds", str(cancel_seconds),
        "--random-seed", "7",
    ]  # fmt: skip
    with tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True)
        try:
            assert process.stdout is not None
            # Seeding comes first, then this line; a million batches take ten seconds or so.
            line = process.stdout.readline()
            found = _LISTENING.search(line)
            if found is None:
                errors.seek(0)
                raise RuntimeError(f"the emulator did not start: {line!r} {errors.read()[-2000:]}")
            running = Emulator(found.group(1), process)
            _wait_until_serving(running, start_timeout)
            yield running
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_serving(running: Emulator, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            running.state()
            return
        except OSError:
            if time.monotonic() > deadline or running.process.poll() is not None:
                raise RuntimeError("the emulator did not answer") from None
            time.sleep(0.05)
