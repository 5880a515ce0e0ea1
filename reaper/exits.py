"""Every exit code of the ``reaper`` command line (SPEC section 1), in one place.

``once`` maps its cycle's outcome with ``cycle_exit_code``; the daemon returns ``EX_OK`` after a
graceful stop or ``EX_UNAVAILABLE`` when its metrics address cannot be bound; ``reaper.cli`` maps
a bad environment to ``EX_CONFIG`` and an interrupt to ``EX_INTERRUPTED``. Codes 64 and up follow
BSD's sysexits.h.
"""

from __future__ import annotations

from typing import Final

EX_OK: Final = 0  # done: every planned action carried out (or nothing to do)
EX_FAILED: Final = 1  # a listing failed, an action failed, or the command could not do its job
EX_SAFETY_STOP: Final = 3  # the fraction guard stopped every deletion in some workspace
EX_UNAVAILABLE: Final = 69  # the metrics address cannot be bound (port in use, no such interface)
EX_CONFIG: Final = 78  # bad environment: one line naming the variable and the value
EX_INTERRUPTED: Final = 130  # Ctrl-C (128 + SIGINT)

# SPEC §1, `reaper once`: the exit code of each cycle outcome (``reaper.outcomes.CycleOutcome``).
_CYCLE_EXIT_CODES: Final = {
    "success": EX_OK,
    "partial": EX_FAILED,
    "failed": EX_FAILED,
    "safety_stop": EX_SAFETY_STOP,
}


def cycle_exit_code(outcome: str) -> int:
    """Return ``once``'s exit code for a cycle outcome: 0 done, 1 failed or partial, 3 stop."""
    return _CYCLE_EXIT_CODES[outcome]
