"""Where pages arrive: list one workspace page by page and plan it (listing -> Planner -> Plan).

The one listing path of the reaper: the cycle, ``reaper plan`` and ``reaper explain`` all call
``plan_workspace``. Every check of a listing as a whole belongs here, before the plan is
finished: if any page cannot be read, or the listing is refused (``reaper.consistency``: the
first page's ``Date`` too far from the host's clock, an id listed twice, a ``created_at`` out of
order or in the future), the plan is made with ``complete=False`` (it acts on nothing: fail
closed) and ``Listing.failure`` says why (its ``error_type`` is then the refusal's reason).
Memory stays bounded by the per-run cap and keep-last, whatever the number listed (the
Planner's; the checks add a constant amount per page), unless a caller keeps what it is
handed: every decision as it is made (``on_decision``), or every page (``on_page``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol

from reaper.consistency import ListingChecker, ListingRejected, check_clock
from reaper.errors import ApiError
from reaper.models import Batch, Hold, ModelError, Page
from reaper.outcomes import ListingFailure
from reaper.policy import Decision, Plan, Planner, Policy
from reaper.progress import Progress

# REAPER_MAX_CLOCK_SKEW's default (SPEC section 2): a caller that names none still checks.
DEFAULT_MAX_CLOCK_SKEW: Final = timedelta(minutes=2)


class BatchLister(Protocol):
    """What planning needs from a client: every page of a workspace's listing."""

    def list_pages(self, workspace: str | None) -> AsyncIterator[list[Batch]]:
        """Yield every page of the workspace's batches; raise ApiError if one cannot be read.

        A page that is a ``reaper.models.Page`` also says its response's ``Date`` (the clock
        check) and ``request-id``; a plain list leaves the clock unchecked.
        """
        ...


@dataclass(frozen=True, repr=False)
class Listing:
    """One workspace listed and planned: the plan, how the listing went, and why it failed."""

    plan: Plan
    pages: int
    seconds: float
    failure: ListingFailure | None = None
    # The API's clock minus the host's, from the first page's Date (None: not checked).
    clock_skew: timedelta | None = None

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
    max_clock_skew: timedelta | None = DEFAULT_MAX_CLOCK_SKEW,
    clock: Callable[[], datetime] | None = None,
    progress: Progress | None = None,
    holds: Mapping[str, Hold] | None = None,
    on_decision: Callable[[Decision], None] | None = None,
    on_page: Callable[[list[Batch]], None] | None = None,
) -> Listing:
    """List every page of ``workspace``, check it, feed each page to a Planner, return the plan.

    Never raises for an API error, an unreadable batch or a refused listing: the plan is then
    incomplete and ``failure`` describes it. ``now`` is read once by the caller, before listing:
    a batch is judged by its age when the listing began, which errs on the side of keeping it.
    ``clock`` is the host clock the first page's ``Date`` is compared with, read when that page
    arrives (default: ``now`` plus the time the listing has taken so far, so that retries of a
    slow first page are not mistaken for skew); ``max_clock_skew`` None (``never``) turns that
    check and the ``future_created_at`` one off.
    """
    started = time.monotonic()
    planner = Planner(policy, now, workspace=workspace, holds=holds, on_decision=on_decision)
    checker = ListingChecker(now=now, max_clock_skew=max_clock_skew)

    def elapsed_clock() -> datetime:
        return now + timedelta(seconds=time.monotonic() - started)

    host_clock = clock if clock is not None else elapsed_clock
    pages = listed = 0
    skew: timedelta | None = None
    request_id: str | None = None
    error: ApiError | ModelError | ListingRejected | None = None
    listing = client.list_pages(workspace)
    try:
        async for page in listing:
            request_id = page.request_id if isinstance(page, Page) else None
            if not pages:
                date = page.date if isinstance(page, Page) else None
                skew = check_clock(date, host_clock(), max_clock_skew)
            checker.check_page(page)  # before the planner: a refused page decides nothing
            planner.add(page)
            if on_page is not None:
                on_page(page)
            pages += 1
            listed += len(page)
            if progress is not None:
                progress.listed(workspace, pages, listed)
    except (ApiError, ModelError, ListingRejected) as exc:
        error = exc
    finally:
        # Left mid-listing (a refused page): close the pages' generator here, not at loop close.
        aclose = getattr(listing, "aclose", None)
        if aclose is not None:
            await aclose()
    plan = planner.finish(complete=error is None)
    seconds = round(time.monotonic() - started, 3)
    failure = None
    if error is not None:
        failure = _failure(workspace, error, pages, listed, request_id)
    return Listing(plan=plan, pages=pages, seconds=seconds, failure=failure, clock_skew=skew)


def _failure(
    workspace: str | None,
    error: ApiError | ModelError | ListingRejected,
    pages: int,
    listed: int,
    page_request_id: str | None,
) -> ListingFailure:
    if isinstance(error, ApiError):
        error_type, status, request_id = error.error_type, error.status, error.request_id
    elif isinstance(error, ListingRejected):
        # The refused page was read: name its request, so the API's side can be looked up.
        error_type, status, request_id = error.reason, None, page_request_id
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
