"""Time the emulator with a million batches: list pages of 1,000 (first, middle, last, before_id),
retrieve and delete, through the whole ASGI app in-process (httpx, JSON included) and as direct
state calls. Prints the median of several runs of each.

Run: ``.venv/bin/python bench/emulator_page.py [N_BATCHES] [RUNS]`` (defaults 1000000 and 7).
"""

from __future__ import annotations

import asyncio
import gc
import resource
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

from reaper.emulator.harness import asgi_client, new_state
from reaper.emulator.records import ENDED


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


async def _median(action: Callable[[int], Awaitable[object]], runs: int) -> float:
    timings = []
    for run in range(runs):
        started = time.perf_counter()
        await action(run)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


async def main(n: int, runs: int) -> None:
    state = new_state()
    started = time.perf_counter()
    state.seed_random(n)
    seeded = time.perf_counter() - started
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"seeded {n:,} batches in {seeded:.2f} s; peak RSS {rss_mb:.0f} MB")

    records = list(state.iter_records())
    workspace = state.default_workspace
    middle = records[n // 2].id
    before_last_page = records[n - 1001].id
    last = records[-1].id
    ended = [r.id for r in records[n // 3 :] if r.status == ENDED][: runs * 2]
    del records
    # The seeded store is long-lived: keep the cyclic GC from re-scanning it (reaper emulator does
    # the same after seeding); without this a rare full collection costs ~100 ms.
    gc.freeze()

    def direct(
        after: str | None = None, before: str | None = None
    ) -> Callable[[int], Awaitable[object]]:
        async def action(run: int) -> object:
            return state.page(workspace, 1000, after, before)

        return action

    async with asgi_client(state) as client:

        def http(params: dict[str, str | int]) -> Callable[[int], Awaitable[object]]:
            async def action(run: int) -> object:
                response = await client.get("/v1/messages/batches", params=params)
                assert response.status_code == 200, response.text
                assert len(response.json()["data"]) == 1000
                return response

            return action

        async def retrieve(run: int) -> object:
            response = await client.get(f"/v1/messages/batches/{middle}")
            assert response.status_code == 200
            return response

        async def delete_http(run: int) -> object:
            response = await client.delete(f"/v1/messages/batches/{ended[run]}")
            assert response.status_code == 200, response.text
            return response

        async def delete_direct(run: int) -> object:
            state.delete(workspace, ended[runs + run])
            return None

        rows = [
            ("list first page (limit 1000)", http({"limit": 1000}), direct()),
            (
                "list middle page (after_id)",
                http({"limit": 1000, "after_id": middle}),
                direct(middle),
            ),
            (
                "list last page (after_id)",
                http({"limit": 1000, "after_id": before_last_page}),
                direct(before_last_page),
            ),
            (
                "list page before the last (before_id)",
                http({"limit": 1000, "before_id": last}),
                direct(None, last),
            ),
            ("retrieve", retrieve, None),
            ("delete", delete_http, delete_direct),
        ]
        print(f"median of {runs} runs over {len(state):,} batches; ASGI = whole app in-process")
        print(f"{'operation':40} {'ASGI (httpx)':>12} {'state call':>12}")
        for name, over_http, over_state in rows:
            http_time = await _median(over_http, runs)
            state_time = await _median(over_state, runs) if over_state else None
            shown = _ms(state_time) if state_time is not None else f"{'-':>11}"
            print(f"{name:40} {_ms(http_time):>12} {shown:>12}")


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    asyncio.run(main(count, repeats))
