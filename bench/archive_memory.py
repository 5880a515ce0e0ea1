"""Measure the archiver's memory on large results streams: peak RSS must not follow their size.

Each measurement runs in a fresh subprocess, so its ``ru_maxrss`` (peak resident set) belongs to
one archive alone: the child downloads, verifies, gzips and fsyncs one batch's results and prints
its peak RSS before and after, with bytes, lines and seconds. Three runs:

1. baseline: 1,000 results served by the emulator over loopback (the parent serves it);
2. 100,000 results from the emulator over loopback through the real client (~40 MiB of JSONL);
3. 100,000 results of ~2.6 KB each from a fake streaming client (~250 MiB, the API's 256 MB cap).

Flat memory: runs 2 and 3 peak at about the same RSS although 3 is six times larger; what both add
over the baseline is the per-line custom_id check (about 80 bytes a line, bounded by the API's
100,000 requests a batch).

    .venv/bin/python bench/archive_memory.py [--lines 100000] [--line-bytes 2600]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from reaper.archive import Archiver, sidecar_path
from reaper.metrics import Metrics
from reaper.models import Batch, RequestCounts, format_time

BATCH_ID = "msgbatch_bench"
CHUNK = 64 * 1024
_TEXTS = 1000
_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there been one all we their has would when if so no what "
    "invoice total due customer delivery summary sentiment positive negative category billing "
    "priority report translation battery review shipping refund account password error request "
    "model answer question table figure section result value data March April week morning"
)
_VOCABULARY = tuple(_WORDS.split())


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def counts_for(lines: int) -> dict[str, int]:
    errored, canceled, expired = lines // 20, lines // 50, lines // 100
    return {
        "processing": 0,
        "succeeded": lines - errored - canceled - expired,
        "errored": errored,
        "canceled": canceled,
        "expired": expired,
    }


# -- the child: one archive, measured ------------------------------------------------------


class FakeStream:
    """A results body generated on the fly: ``lines`` succeeded lines of about ``line_bytes``."""

    request_id: str | None = "req_fake"

    def __init__(self, lines: int, line_bytes: int) -> None:
        self._lines = lines
        self._line_bytes = line_bytes

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks():
            yield chunk
            await asyncio.sleep(0)

    def _chunks(self) -> Iterator[bytes]:
        head = (
            '{"custom_id":"request-%06d","result":{"type":"succeeded","message":{"id":"msg_%06d",'
        )
        tail = '"type":"message","role":"assistant","content":[{"type":"text","text":"%s"}]}}}\n'
        filler = max(0, self._line_bytes - len(head) - len(tail))
        # Texts of random words, far more than gzip's 32 KiB window holds, so that the body
        # compresses like real answers (about 3:1) rather than like one repeated sentence.
        rng = random.Random(7)
        texts = [
            " ".join(rng.choices(_VOCABULARY, k=filler // 5 + 1))[:filler] for _ in range(_TEXTS)
        ]
        buffer: list[bytes] = []
        size = 0
        for n in range(self._lines):
            line = ((head % (n, n)) + (tail % texts[(n * 7919) % _TEXTS])).encode()
            buffer.append(line)
            size += len(line)
            if size >= CHUNK:
                yield b"".join(buffer)
                buffer, size = [], 0
        if buffer:
            yield b"".join(buffer)


class FakeClient:
    """Serve one batch's generated results; never called for anything else."""

    def __init__(self, lines: int, line_bytes: int) -> None:
        self._stream = FakeStream(lines, line_bytes)

    @asynccontextmanager
    async def stream_results(self, batch: Batch) -> AsyncIterator[FakeStream]:
        yield self._stream

    async def retrieve(self, batch_id: str, workspace: str | None) -> Batch:
        raise AssertionError("not used")


async def archive_once(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.root)
    metrics = Metrics()
    before = peak_rss_mib()
    archiver = Archiver(root, missing="keep", metrics=metrics, now=lambda: datetime.now(UTC))
    started = time.perf_counter()
    if args.source == "emulator":
        from reaper.client import BatchClient

        async with BatchClient(api_key="bench", base_url=args.base_url) as client:
            batch = await client.retrieve(BATCH_ID, None)
            outcome = await archiver.archive(batch, client)
    else:
        now = datetime.now(UTC)
        batch = Batch(
            id=BATCH_ID,
            processing_status="ended",
            created_at=now - timedelta(days=8),
            request_counts=RequestCounts(succeeded=args.lines, errored=0, expired=0),
            ended_at=now - timedelta(days=7),
            results_url=f"/v1/messages/batches/{BATCH_ID}/results",
        )
        outcome = await archiver.archive(batch, FakeClient(args.lines, args.line_bytes))
    seconds = time.perf_counter() - started
    side = json.loads(sidecar_path(outcome.path).read_text()) if outcome.ok_to_delete else {}
    return {
        "outcome": str(outcome.outcome),
        "reason": outcome.reason,
        "lines": outcome.lines,
        "uncompressed_bytes": side.get("uncompressed_bytes", 0),
        "gzip_bytes": outcome.bytes,
        "seconds": round(seconds, 2),
        "peak_rss_mib_before": round(before, 1),
        "peak_rss_mib_after": round(peak_rss_mib(), 1),
    }


# -- the parent: serve, run children, report -------------------------------------------------


def run_child(source: str, lines: int, line_bytes: int, base_url: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="archive-bench-") as root:
        command = [
            sys.executable,
            __file__,
            "--child",
            "--source",
            source,
            "--lines",
            str(lines),
            "--line-bytes",
            str(line_bytes),
            "--root",
            root,
        ]
        if base_url is not None:
            command += ["--base-url", base_url]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result


def measure(source: str, lines: int, line_bytes: int, base_url: str | None) -> dict[str, Any]:
    """Archive in a fresh subprocess; print and return its figures."""
    result = run_child(source, lines, line_bytes, base_url)
    result["source"] = source
    print(json.dumps(result), flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=["emulator", "fake"], help=argparse.SUPPRESS)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--baseline-lines", type=int, default=1_000)
    parser.add_argument("--line-bytes", type=int, default=2_600, help="line size of the fake run")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        structlog.configure(logger_factory=structlog.ReturnLoggerFactory())  # stdout is the result
        print(json.dumps(asyncio.run(archive_once(args))))
        return 0

    small = measure_emulator(args.baseline_lines)
    large = measure_emulator(args.lines)
    big = measure("fake", args.lines, args.line_bytes, None)
    for name, run in (("emulator", large), ("fake", big)):
        growth = run["peak_rss_mib_after"] - small["peak_rss_mib_after"]
        print(
            f"{name}: {run['lines']:,} lines, {run['uncompressed_bytes'] / 2**20:.0f} MiB of JSONL "
            f"({run['gzip_bytes'] / 2**20:.1f} MiB gzip) in {run['seconds']} s; peak RSS "
            f"{run['peak_rss_mib_after']} MiB vs {small['peak_rss_mib_after']} MiB for "
            f"{small['lines']:,} lines: {growth:+.1f} MiB"
        )
    return 0 if all(r["outcome"] == "archived" for r in (small, large, big)) else 1


def measure_emulator(lines: int) -> dict[str, Any]:
    """Serve one ended batch of ``lines`` results from the emulator and archive it in a child."""
    from reaper.emulator.harness import new_state, running_emulator

    state = new_state()
    created = state.now() - timedelta(days=8)
    state.seed_objects(
        [
            {
                "id": BATCH_ID,
                "processing_status": "ended",
                "created_at": format_time(created),
                "ended_at": format_time(created + timedelta(hours=3)),
                "request_counts": counts_for(lines),
            }
        ]
    )
    with running_emulator(state) as (base_url, _):
        return measure("emulator", lines, 0, base_url)


if __name__ == "__main__":
    sys.exit(main())
