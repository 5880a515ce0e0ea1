"""A fixed pool of workers running queued jobs, most urgent first, in submission order.

The executor queues cancels and the polls and deletes of canceled batches as ``URGENT``, the
backlog of deletes as ``BACKLOG``: a long backlog never starves the cancel path.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

# Queue priorities: cancels, polls and deletes of canceled batches before the backlog of deletes.
URGENT: Final = 0
BACKLOG: Final = 1

Job = Callable[[], Awaitable[None]]


class WorkerPool:
    """A fixed number of workers running queued jobs, most urgent first, in submission order."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._queue: asyncio.PriorityQueue[tuple[int, int, Job | None]]
        self._queue = asyncio.PriorityQueue()
        self._order = itertools.count()

    def submit(self, priority: int, job: Job) -> None:
        """Queue a job; it must handle its own errors."""
        self._queue.put_nowait((priority, next(self._order), job))

    async def run_all(self, priority: int, jobs: Iterable[Job]) -> None:
        """Queue the jobs and wait until every one of them has run."""
        loop = asyncio.get_running_loop()
        finished: list[asyncio.Future[None]] = []
        for job in jobs:
            future: asyncio.Future[None] = loop.create_future()
            self.submit(priority, _completing(job, future))
            finished.append(future)
        if finished:
            await asyncio.wait(finished)

    async def work(self) -> None:
        """Run jobs until told to stop."""
        while True:
            _priority, _order, job = await self._queue.get()
            try:
                if job is None:
                    return
                await job()
            finally:
                self._queue.task_done()

    async def drain(self) -> None:
        """Wait until every queued job (and every job those queued) has run, then stop."""
        await self._queue.join()
        for _ in range(self.size):
            self._queue.put_nowait((BACKLOG + 1, next(self._order), None))


def _completing(job: Job, future: asyncio.Future[None]) -> Job:
    async def run() -> None:
        try:
            await job()
        finally:
            if not future.done():
                future.set_result(None)

    return run
