"""Where pages arrive: list one workspace page by page and plan it (listing -> Planner -> Plan).

The one listing path of the reaper: the cycle, ``reaper plan`` and ``reaper explain`` all call
``plan_workspace``. Every check of a listing as a whole belongs here, before the plan is
finished: if any page cannot be read the plan is made with ``complete=False`` (it acts on
nothing: fail closed) and ``Listing.failure`` says why. Memory stays bounded by the per-run cap
and keep-last, whatever the number listed (the Planner's), unless a caller keeps what it is
handed: every decision as it is made (``on_decision``), or every page (``on_page``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from reaper.errors import ApiError
from reaper.models import Batch, Hold, ModelError
from reaper.outcomes import ListingFailure
from reaper.policy import Decision, Plan, Planner, Policy
from reaper.progress import Progress


class BatchLister(Protocol):
    """What planning needs from a client: every page of a workspace's listing."""

    def list_pages(self, workspace: str | None) -> AsyncIterator[list[Batch]]:
        """Yield every page of the workspace's batches; raise ApiError if one cannot be read."""
        ...


@dataclass(frozen=True, repr=False)
class Listing:
    """One workspace listed and planned: the plan, how the listing went, and why it failed."""

    plan: Plan
    pages: int
    seconds: float
    failure: ListingFailure | None = None

    @property
    def complete(self) -> bool:
        """Whether every page was read (an incomplete listing acts on nothing)."""
        return self.failure is None

    def __repr__(self) -> str:
        """Name the listing in one short line (a plan may hold 100,000 decisions)."""
        state = "complete" if self.failure is None else f"failed: {self.failure.error_type}"
        return (
            f"<Listing {self.plan.workspace} listed={self.plan.listed} pages={self.pages} {state}>"
        )


async def plan_workspace(
    client: BatchLister,
    workspace: str | None,
    policy: Policy,
    now: datetime,
    *,
    progress: Progress | None = None,
    holds: Mapping[str, Hold] | None = None,
    on_decision: Callable[[Decision], None] | None = None,
    on_page: Callable[[list[Batch]], None] | None = None,
) -> Listing:
    """List every page of ``workspace``, feed each to a Planner, and return the finished plan.

    Never raises for an API error or an unreadable batch: the plan is then incomplete and
    ``failure`` describes it. ``now`` is read once by the caller, before listing: a batch is
    judged by its age when the listing began, which errs on the side of keeping it.
    """
    started = time.monotonic()
    planner = Planner(policy, now, workspace=workspace, holds=holds, on_decision=on_decision)
    pages = listed = 0
    error: ApiError | ModelError | None = None
    try:
        async for page in client.list_pages(workspace):
            planner.add(page)
            if on_page is not None:
                on_page(page)
            pages += 1
            listed += len(page)
            if progress is not None:
                progress.listed(workspace, pages, listed)
    except (ApiError, ModelError) as exc:
        error = exc
    plan = planner.finish(complete=error is None)
    seconds = round(time.monotonic() - started, 3)
    failure = None if error is None else _failure(workspace, error, pages, listed)
    return Listing(plan=plan, pages=pages, seconds=seconds, failure=failure)


def _failure(
    workspace: str | None, error: ApiError | ModelError, pages: int, listed: int
) -> ListingFailure:
    if isinstance(error, ApiError):
        error_type, status, request_id = error.error_type, error.status, error.request_id
    else:
        error_type, status, request_id = "unreadable_batch", None, None
    return ListingFailure(
        workspace=workspace,
        pages_read=pages,
        batches_read=listed,
        error_type=error_type,
        status=status,
        request_id=request_id,
        message=str(error),
    )
