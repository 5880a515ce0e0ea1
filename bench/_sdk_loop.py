"""The peer: the loop a person would write with the official ``anthropic`` SDK, run as a child.

List every batch (auto-pagination, 1,000 a page: the SDK's best case; its default is 20), then
delete the ones the reaper's default policy would, one by one. Prints one JSON line: seconds
(first request to last answer), listed, deleted.

    python bench/_sdk_loop.py BASE_URL API_KEY
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime, timedelta

import anthropic


def main(base_url: str, api_key: str) -> None:
    """Run the loop against ``base_url`` and print its figures."""
    client = anthropic.Anthropic(api_key=api_key, base_url=base_url)
    started = time.perf_counter()
    now = datetime.now(UTC)
    ended_cutoff, failed_cutoff = now - timedelta(days=7), now - timedelta(days=30)
    listed = 0
    doomed = []
    for batch in client.messages.batches.list(limit=1000):
        listed += 1
        if batch.processing_status != "ended" or batch.ended_at is None:
            continue
        if batch.created_at > now - timedelta(hours=1):
            continue
        failed = batch.request_counts.errored + batch.request_counts.expired > 0
        if batch.ended_at <= (failed_cutoff if failed else ended_cutoff):
            doomed.append(batch.id)
    for batch_id in doomed:
        client.messages.batches.delete(batch_id)
    seconds = time.perf_counter() - started
    client.close()
    print(json.dumps({"seconds": seconds, "listed": listed, "deleted": len(doomed)}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
