"""The chaos suite's batch population, with its fate written by hand from SPEC section 3.

Every id says what must become of it under ``POLICY_ENV``: ``keep_*`` must remain untouched
(never a cancel or a delete request, whatever the faults), ``del_*`` must be deleted, ``stale_*``
must be canceled and then deleted. The expectation is not computed with the policy's code.

Every time sits far away from the thresholds it is judged against, so that the minutes a run
takes (cancel polls, the interval between cycles, a clock a few minutes off: 45 minutes at most)
change no decision.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Final

from reaper.models import format_time
from tests.helpers import api_batch

M: Final = timedelta(minutes=1)
H: Final = timedelta(hours=1)
D: Final = timedelta(days=1)

# The policy the fates below are written for (defaults of SPEC section 2 unless named).
PROTECTED: Final = ("keep_protected_0", "keep_protected_1")
POLICY_ENV: Final = {
    "REAPER_MIN_AGE": "1h",
    "REAPER_CANCEL_STALE_AFTER": "12h",
    # Short, so that the batches keep-last protects can be younger than the stale ones: a stale
    # batch left canceled by a fault (its delete lost) must not push them out of the window.
    "REAPER_DELETE_ENDED_AFTER": "6h",
    "REAPER_DELETE_FAILED_AFTER": "30d",
    "REAPER_KEEP_LAST": "5",
    "REAPER_PROTECT_IDS": ",".join(PROTECTED),
    "REAPER_DELETE_CANCELED": "true",
    "REAPER_MAX_DELETE_FRACTION": "1",
}
UNKNOWN_STATUS: Final = "paused"


def population(now: datetime, *, bulk: int = 24) -> list[dict[str, Any]]:
    """Return the seed objects (API shape) of the population, times relative to ``now``."""
    seeds: list[dict[str, Any]] = []
    add = seeds.append
    for i in range(2):  # rule 1: protected, though old enough to delete
        add(api_batch(PROTECTED[i], now, created_ago=20 * D, ended_ago=19 * D))
    for i in range(3):  # rule 2: younger than min_age (and the most recent ended: keep-last too)
        add(api_batch(f"keep_young_{i}", now, created_ago=5 * M + i * M, ended_ago=2 * M))
    for i in range(3):  # rule 4: running, not stale; ends in a day
        obj = api_batch(f"keep_running_{i}", now, created_ago=3 * H + i * M)
        obj["_ends_at"] = format_time(now + D)
        add(obj)
    for i in range(2):  # rule 4: canceling (by someone else), slow to end; never canceled again
        obj = api_batch(f"keep_canceling_{i}", now, created_ago=20 * H, status="canceling")
        obj["cancel_initiated_at"] = format_time(now - M)
        obj["_ends_at"] = format_time(now + D)
        add(obj)
    for i in range(2):  # rule 5: due under rule 7, but among the 5 most recently created ended
        add(api_batch(f"keep_last_{i}", now, created_ago=9 * H + i * M, ended_ago=8 * H))
    for i in range(4):  # rule 8: a long batch, ended 2 hours ago, retention 6 hours
        add(api_batch(f"keep_recent_{i}", now, created_ago=20 * H + i * M, ended_ago=2 * H))
    for i in range(3):  # rule 8: failed, ended 15 days ago, failed retention 30 days
        add(
            api_batch(
                f"keep_failed_{i}",
                now,
                created_ago=16 * D + i * H,
                ended_ago=15 * D,
                succeeded=2,
                errored=2,
            )
        )
    add(api_batch("keep_unknown_0", now, created_ago=50 * D, status=UNKNOWN_STATUS))  # rule 8
    for i in range(3):  # rule 3: stale, cancel then delete
        add(api_batch(f"stale_{i}", now, created_ago=14 * H + i * H))
    for i in range(bulk):  # rule 7
        add(api_batch(f"del_old_{i:02}", now, created_ago=12 * D + i * H, ended_ago=11 * D))
    for i in range(2):  # rule 6: errored / expired, past 30 days
        add(
            api_batch(
                f"del_failed_{i}",
                now,
                created_ago=40 * D,
                ended_ago=39 * D,
                succeeded=1,
                errored=3,
            )
        )
        add(api_batch(f"del_expired_{i}", now, created_ago=41 * D, ended_ago=40 * D, expired=4))
    return seeds


def ids(seeds: list[dict[str, Any]]) -> set[str]:
    """Return the ids of seed objects."""
    return {str(obj["id"]) for obj in seeds}


def kept(all_ids: set[str]) -> set[str]:
    """Return the ids that must remain, untouched."""
    return {i for i in all_ids if i.startswith("keep_")}


def to_delete(all_ids: set[str]) -> set[str]:
    """Return the ids that must be deleted (stale ones after their cancel)."""
    return {i for i in all_ids if i.startswith(("del_", "stale_"))}


def to_cancel(all_ids: set[str]) -> set[str]:
    """Return the ids that must be canceled."""
    return {i for i in all_ids if i.startswith("stale_")}
