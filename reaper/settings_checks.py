"""Warnings about settings that are valid but lose something: pure, for check-config and run.

The API keeps a batch's results for 29 days after its creation (``archived_at``; see
shared/API-NOTES.md). A batch is deleted ``retention`` after its ``ended_at``, and it may run up to
24 hours before it ends, so any retention above 28 days lets some batches' results expire before
the reaper deletes them, and from 29 days on every batch's. Without an archive that holds them,
those results are lost: warn, once, naming the variable and what goes. :func:`settings_warnings`
is pure; ``check-config`` prints its lines and ``reaper run`` logs them at start
(:func:`log_settings_warnings`, event ``config.warning``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

import structlog

from reaper.durations import format_duration
from reaper.settings import Settings

RESULTS_WINDOW: Final = timedelta(days=29)
# A batch ends at the latest at its expires_at, 24 hours after creation.
MAX_RUN: Final = timedelta(hours=24)

# (variable, field, the batches it applies to, archived under REAPER_ARCHIVE_SCOPE=failed)
_RETENTIONS: Final = (
    (
        "REAPER_DELETE_ENDED_AFTER",
        "delete_ended_after",
        "ended batches with no errored or expired request",
        False,
    ),
    (
        "REAPER_DELETE_FAILED_AFTER",
        "delete_failed_after",
        "ended batches with an errored or expired request",
        True,
    ),
)


def outlasts_results_window(retention: timedelta | None) -> bool:
    """True when some batch kept this long after it ended has lost its results by then."""
    return retention is None or retention > RESULTS_WINDOW - MAX_RUN


def settings_warnings(settings: Settings) -> list[str]:
    """Return one line per retention whose batches' results expire unarchived; [] when none."""
    warnings: list[str] = []
    for variable, field, batches, failed in _RETENTIONS:
        retention: timedelta | None = getattr(settings, field)
        if not outlasts_results_window(retention):
            continue
        if settings.archive_dir is not None and (settings.archive_scope == "all" or failed):
            continue
        if settings.archive_dir is None:
            why = "REAPER_ARCHIVE_DIR is unset"
        else:
            why = "REAPER_ARCHIVE_SCOPE=failed leaves them out of the archive"
        if retention is None:
            kept, lost = "keeps them past", "expire while the reaper keeps the batches"
        else:
            kept, lost = "outlasts", "expire before the reaper deletes them"
        warnings.append(
            f"{variable}={format_duration(retention)} {kept} the API's 29-day results window "
            f"and {why}: the results of {batches} {lost} and are lost "
            "(set REAPER_ARCHIVE_DIR, with REAPER_ARCHIVE_SCOPE=all, to keep them)"
        )
    return warnings


def log_settings_warnings(settings: Settings) -> None:
    """Log each warning once as a ``config.warning`` event (``reaper run`` calls it at start)."""
    log = structlog.get_logger("reaper.settings")
    for warning in settings_warnings(settings):
        log.warning("config.warning", message=warning)
