"""The guards of SPEC section 3 that stop a workspace's plan: pure arithmetic on its counts.

A stop acts on nothing in its workspace: an incomplete (or refused) listing, or a fraction guard.
The delete fraction counts every stale cancel as a planned delete when the canceled batches are
deleted too (``REAPER_DELETE_CANCELED``), over the batches listed; the cancel fraction counts the
planned cancels over the ``in_progress`` batches listed. The per-run cap is applied while planning
(reaper.policy), as it bounds the planner's memory.
"""

from __future__ import annotations

from enum import StrEnum
from fractions import Fraction


class StopReason(StrEnum):
    """Why a workspace's plan acts on nothing although its decisions say otherwise."""

    INCOMPLETE_LISTING = "incomplete_listing"  # a page could not be read: act on nothing
    SAFETY_STOP = "safety_stop"  # a fraction guard tripped: cancel and delete nothing


class Guard(StrEnum):
    """A fraction guard; its value is the ``reason`` of ``reaper_safety_stops_total``."""

    DELETE_FRACTION = "delete_fraction"
    CANCEL_FRACTION = "cancel_fraction"


def exceeds_fraction(part: int, whole: int, fraction: float) -> bool:
    """Return whether ``part / whole > fraction``, exactly (0.3 means three tenths).

    The float goes through its shortest decimal form, so ``3 / 10 > 0.3`` is false as a user
    reading ``REAPER_MAX_DELETE_FRACTION=0.3`` expects, not true as binary floating point says.
    """
    if whole <= 0:
        return False
    return Fraction(part, whole) > Fraction(repr(fraction))


def tripped(
    *,
    cancels: int,
    deletes: int,
    listed: int,
    in_progress: int,
    max_delete_fraction: float,
    max_cancel_fraction: float,
    delete_canceled: bool,
) -> tuple[Guard, ...]:
    """Return the fraction guards that this many planned cancels and deletes trip, in order."""
    found = []
    counted = deletes + (cancels if delete_canceled else 0)
    if counted and exceeds_fraction(counted, listed, max_delete_fraction):
        found.append(Guard.DELETE_FRACTION)
    if cancels and exceeds_fraction(cancels, in_progress, max_cancel_fraction):
        found.append(Guard.CANCEL_FRACTION)
    return tuple(found)
