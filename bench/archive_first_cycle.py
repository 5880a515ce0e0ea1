"""The first cycle with the archive on: 10,000 ended batches, none due, every one archived ahead.

Issue 13. The emulator (its own process, loopback) holds 10,000 ended batches created 1 to 6 days
ago (20 results each, none due for deletion at the default retentions); ``reaper once`` (its own
process, live, ``REAPER_ARCHIVE_DIR`` on a temp dir) archives every one of them in its first cycle.

- **time against the bound**: the requests the cycle made divided by the rate it was allowed
  (``REAPER_MAX_RPM``) is the least time any client keeping that rate could take;
- **peak memory**: the same cycle again with 8 batches of 100,000 results (~40 MiB of JSON Lines
  each, the API's largest batches) among the 10,000: peak RSS of the reaper process, against the
  run without them. Memory must follow neither the number of batches nor the size of results.

    .venv/bin/python bench/archive_first_cycle.py [--batches 10000] [--rpm 12000] [--big 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _emulator import emulator
from _reaper import ReaperRun, run_once

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write_seed(path: Path, batches: int, big: int, big_lines: int) -> None:
    """Ended batches created 1 to 6 days ago (20 results each), ``big`` of them far larger."""
    now = datetime.now(UTC)
    with path.open("w", encoding="utf-8") as out:
        for i in range(batches):
            created = now - timedelta(days=1) - timedelta(days=5) * i / batches
            size = big_lines if i < big else 20
            errored = 1 if i % 10 == 9 else 0
            out.write(
                f'{{"id":"msgbatch_arch{i:020d}","processing_status":"ended",'
                f'"created_at":"{_stamp(created)}",'
                f'"ended_at":"{_stamp(created + timedelta(hours=2))}",'
                f'"request_counts":{{"processing":0,"succeeded":{size - errored},'
                f'"errored":{errored},"canceled":0,"expired":0}}}}\n'
            )


def first_cycle(batches: int, rpm: int, big: int, big_lines: int) -> tuple[ReaperRun, int]:
    """Run one live cycle with the archive on; return its figures and the archives written."""
    with tempfile.TemporaryDirectory() as work:
        seed, archive = Path(work) / "seed.jsonl", Path(work) / "archive"
        archive.mkdir()
        write_seed(seed, batches, big, big_lines)
        with emulator(seed) as api:
            run = run_once(
                api.base_url,
                {
                    "REAPER_DRY_RUN": "false",
                    "REAPER_ARCHIVE_DIR": str(archive),
                    "REAPER_MAX_RPM": str(rpm),
                    "REAPER_MAX_ACTIONS_PER_RUN": str(batches),
                },
            )
        return run, sum(1 for _ in archive.rglob("*.jsonl.gz"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--batches", type=int, default=10_000)
    parser.add_argument("--rpm", type=int, default=12_000, help="REAPER_MAX_RPM")
    parser.add_argument("--big", type=int, default=8, help="batches of --big-lines results")
    parser.add_argument("--big-lines", type=int, default=100_000)
    args = parser.parse_args()
    rows = []
    for big in (0, args.big):
        print(f"first cycle: {args.batches:,} ended batches, {big} large ...", file=sys.stderr)
        run, archived = first_cycle(args.batches, args.rpm, big, args.big_lines)
        if run.exit_code != 0 or archived != args.batches:
            print(f"failed: exit {run.exit_code}, {archived} archived", file=sys.stderr)
            return 1
        requests = sum(run.requests.values())
        bound = requests / args.rpm * 60
        rows.append(
            f"| {args.batches:,} ended, {big} of {args.big_lines:,} results | {requests:,} "
            f"({', '.join(f'{k} {v:,}' for k, v in sorted(run.requests.items()))}) "
            f"| {bound:.1f} s | {run.cycle_seconds:.1f} s | {bound / run.cycle_seconds:.2f} "
            f"| {run.peak_rss_mib:.0f} MiB | {archived:,} |"
        )
    print(f"REAPER_MAX_RPM={args.rpm}, default concurrency 8, emulator and reaper on loopback\n")
    print("| first cycle | requests | bound (requests / rate) | cycle | bound / cycle | peak RSS "
          "| archived |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
