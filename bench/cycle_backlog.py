"""Time a backlog of deletable batches: one reaper cycle versus a sequential delete loop.

Each run starts ``reaper emulator`` as a separate process on loopback (fresh state, the given
latency on every answer, a seed file of N deletable batches plus N/10 recent ones that must stay),
then either runs one live cycle (``reaper.cycle.run_cycle`` with the real client) or the loop a
person would write with the official SDK (list everything, then delete one by one). It prints the
wall times, the requests made, the speed-up, and the latency bound of the cycle: (pages + deletes /
concurrency) x latency.

Run: ``.venv/bin/python bench/cycle_backlog.py [--batches 3000] [--latency-ms 50]
[--concurrency 8] [--skip-sequential]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from reaper.client import BatchClient
from reaper.cycle import run_cycle
from reaper.logs import configure_logging
from reaper.metrics import Metrics
from reaper.models import format_time
from reaper.settings import load_settings

KEY = "sk-ant-bench-key"


def write_seed(path: Path, deletable: int) -> int:
    """Write N deletable batches (ended 20 days ago) and N/10 recent ones; return the kept count."""
    now = datetime.now(UTC)
    kept = deletable // 10
    with path.open("w") as out:
        for i in range(deletable):
            created = now - timedelta(days=21, seconds=i)
            obj = {
                "id": f"old_{i:06}",
                "created_at": format_time(created),
                "ended_at": format_time(created + timedelta(hours=1)),
                "request_counts": {"succeeded": 10},
            }
            out.write(json.dumps(obj) + "\n")
        for i in range(kept):
            created = now - timedelta(days=2, seconds=i)
            obj = {
                "id": f"recent_{i:06}",
                "created_at": format_time(created),
                "ended_at": format_time(created + timedelta(hours=1)),
                "request_counts": {"succeeded": 10},
            }
            out.write(json.dumps(obj) + "\n")
    return kept


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def emulator(seed: Path, latency_ms: float) -> Iterator[str]:
    """Run the emulator as a separate process; yield its base URL."""
    port = free_port()
    command = [
        sys.executable, "-m", "reaper", "emulator", "--port", str(port), "--api-key", KEY,
        "--seed-file", str(seed), "--latency-ms", str(latency_ms),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base_url}/_emulator/state", timeout=1):  # noqa: S310
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the emulator did not start") from None
                time.sleep(0.1)
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=10)


def emulator_state(base_url: str) -> dict[str, object]:
    with urllib.request.urlopen(f"{base_url}/_emulator/state", timeout=5) as response:  # noqa: S310
        state: dict[str, object] = json.load(response)
        return state


async def reaper_cycle(base_url: str, concurrency: int) -> tuple[float, dict[str, int]]:
    settings = load_settings(
        {
            "ANTHROPIC_API_KEY": KEY,
            "ANTHROPIC_BASE_URL": base_url,
            "REAPER_DRY_RUN": "false",
            "REAPER_CONCURRENCY": str(concurrency),
            "REAPER_MAX_RPM": "100000",  # out of the way: this measures the latency bound
        }
    )
    metrics = Metrics()
    async with BatchClient.from_settings(settings, metrics=metrics) as client:
        started = time.perf_counter()
        report = await run_cycle(settings, client, metrics=metrics, now=lambda: datetime.now(UTC))
        elapsed = time.perf_counter() - started
    if report.exit_code() != 0:
        raise RuntimeError(report.summary_text())
    return elapsed, dict(report.requests)


def sequential_sdk_loop(base_url: str) -> tuple[float, int]:
    """List everything, then delete the batches ended over 7 days ago one by one (the SDK)."""
    import anthropic  # the dev extra has it: the loop a person would write

    client = anthropic.Anthropic(api_key=KEY, base_url=base_url, max_retries=2)
    started = time.perf_counter()
    cutoff = datetime.now(UTC) - timedelta(days=7)
    doomed = [
        batch.id
        for batch in client.messages.batches.list(limit=1000)
        if batch.processing_status == "ended" and batch.ended_at and batch.ended_at < cutoff
    ]
    for batch_id in doomed:
        client.messages.batches.delete(batch_id)
    elapsed = time.perf_counter() - started
    client.close()
    return elapsed, len(doomed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=3000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--skip-sequential", action="store_true")
    args = parser.parse_args()
    configure_logging("warning", "json")  # one line per delete would time the terminal instead

    with tempfile.TemporaryDirectory() as tmp:
        seed = Path(tmp) / "seed.jsonl"
        kept = write_seed(seed, args.batches)
        listed = args.batches + kept
        pages = -(-listed // 1000)
        latency = args.latency_ms / 1000

        with emulator(seed, args.latency_ms) as base_url:
            reaper_s, requests = asyncio.run(reaper_cycle(base_url, args.concurrency))
            left = emulator_state(base_url)["batches"]
        bound = (pages + args.batches / args.concurrency) * latency
        print(
            f"backlog: {args.batches:,} deletable of {listed:,} listed,"
            f" latency {args.latency_ms:g} ms"
        )
        print(
            f"reaper cycle (concurrency {args.concurrency}): {reaper_s:7.2f} s,"
            f" {sum(requests.values()):,} requests {requests}, {left} batches left"
            f" (expected {kept}); latency bound {bound:.2f} s, efficiency {bound / reaper_s:.2f}"
        )
        if args.skip_sequential:
            return
        with emulator(seed, args.latency_ms) as base_url:
            loop_s, deleted = sequential_sdk_loop(base_url)
            left = emulator_state(base_url)["batches"]
        print(
            f"sequential SDK loop:           {loop_s:7.2f} s, {deleted:,} deletes,"
            f" {left} batches left; reaper speed-up x{loop_s / reaper_s:.1f}"
        )


if __name__ == "__main__":
    main()
