"""Parse and format the durations of the environment: ``90s``, ``15m``, ``12h``, ``7d``, ``2w``.

Units combine from the largest down (``1h30m``, ``1w2d``); a bare ``0`` is zero. ``never`` is
accepted only where a rule can be switched off (:func:`parse_optional_duration`), so a typo in a
schedule can never turn into "never". Pure: no I/O.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Final

UNITS: Final = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
NEVER: Final = "never"
DURATION_EXAMPLES: Final = "90s, 15m, 12h, 7d, 2w or 1h30m"
DURATION_FORMS: Final = f"a duration like {DURATION_EXAMPLES}"

# One or more <digits><unit> groups; each unit at most once, checked below for order.
_PART = re.compile(r"([0-9]+)([wdhms])")
_WHOLE = re.compile(r"(?:[0-9]+[wdhms])+")
# timedelta overflows at 999999999 days; keep parsed values far below that.
_MAX_SECONDS: Final = 1000 * 365 * 86400


def parse_duration(text: str) -> timedelta:
    """Parse ``text`` into a timedelta; raise ValueError naming the accepted forms."""
    value = text.strip().lower()
    if value == "0":
        return timedelta(0)
    if not _WHOLE.fullmatch(value):
        raise ValueError(f"{text!r} is not {DURATION_FORMS}")
    seconds = 0
    order = list(UNITS)
    last = -1
    for match in _PART.finditer(value):
        position = order.index(match.group(2))
        if position <= last:
            raise ValueError(f"{text!r}: units must go from largest to smallest, each once")
        last = position
        seconds += int(match.group(1)) * UNITS[match.group(2)]
    if seconds > _MAX_SECONDS:
        raise ValueError("longer than 1000 years; use never to switch the rule off")
    return timedelta(seconds=seconds)


def parse_optional_duration(text: str) -> timedelta | None:
    """Parse a duration or ``never`` (None: the rule it configures is switched off)."""
    if text.strip().lower() == NEVER:
        return None
    return parse_duration(text)


def format_duration(value: timedelta | None) -> str:
    """Format exactly, in the form :func:`parse_duration` reads back (``90s`` -> ``1m30s``).

    Sub-second parts are dropped; days are not folded into weeks (``14d`` reads better than ``2w``).
    """
    if value is None:
        return NEVER
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    parts: list[str] = []
    for unit, size in UNITS.items():
        if unit == "w":
            continue
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return sign + "".join(parts)


def format_age(value: timedelta) -> str:
    """Format for people: the two largest units (``8d 2h``, ``13h 5m``, ``42s``)."""
    seconds = int(value.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    parts: list[str] = []
    for unit, size in UNITS.items():
        if unit == "w":
            continue
        count, seconds = divmod(seconds, size)
        if count or (parts and len(parts) < 2):
            parts.append(f"{count}{unit}")
        if len(parts) == 2:
            break
    # "1d 0h" says less than "1d"; drop a trailing zero part.
    if len(parts) == 2 and parts[1].startswith("0"):
        parts.pop()
    return sign + (" ".join(parts) if parts else "0s")
