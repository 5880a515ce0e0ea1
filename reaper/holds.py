"""Read ``REAPER_HOLDS_FILE``: people's holds on batches, each with an end, a reason and an owner.

The file is JSON Lines, one hold a line (a mounted ConfigMap, so it may change between cycles)::

    # incident 42: keep the batches we are still reading
    {"id": "msgbatch_01abc", "until": "2026-12-31T00:00:00Z", "reason": "incident 42", "by": "al"}

What is accepted, exactly:

- UTF-8 text, at most 4 MiB (a ConfigMap holds at most 1 MiB);
- blank lines, and lines whose first non-blank character is ``#`` (comments), are skipped;
- every other line is one JSON object with ``id`` (a batch id: letters, digits, ``_ - . :``) and
  ``until`` (an RFC 3339 date-time with ``Z`` or an offset, e.g. ``2026-12-31T00:00:00Z``), both
  required, and optionally ``reason`` and ``by`` (strings, or null);
- no other field: a misspelt ``reason`` or ``until`` is an error rather than silently dropped.

Several holds may name the same batch: it is held while any of them is active, and the active
hold that lasts longest is the one reported. Anything else makes :func:`read_holds` raise
:class:`HoldsError`, whose one-line message names the variable, the file and the line number.
The caller then acts on nothing that cycle (SPEC section 2), and ``check-config`` exits 78.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import structlog

from reaper.apikey import show
from reaper.models import Hold, format_time, parse_time

VARIABLE: Final = "REAPER_HOLDS_FILE"
FIELDS: Final = ("id", "until", "reason", "by")
_REQUIRED: Final = ("id", "until")
# A ConfigMap is at most 1 MiB; refuse to read a log file or /dev/zero named by mistake.
SIZE_LIMIT: Final = 4 * 1024 * 1024
_ID: Final = re.compile(r"[A-Za-z0-9_.:\-]{1,256}")
_RFC3339: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


class HoldsError(Exception):
    """The holds file cannot be read or parsed; the message is one line naming file and line."""

    def __init__(self, path: Path | str, problem: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{VARIABLE}={show(self.path)}: " + (f"line {line}: " if line is not None else "")
        super().__init__(where + problem)


@dataclass(frozen=True, slots=True)
class HoldSet:
    """The holds of one cycle split at its ``now``: the active ones by batch id, and the rest."""

    active: Mapping[str, Hold]
    expired: tuple[Hold, ...]

    def held(self, batch_id: str) -> Hold | None:
        """Return the active hold on ``batch_id``, or None."""
        return self.active.get(batch_id)


NO_HOLDS: Final = HoldSet(active={}, expired=())

log = structlog.get_logger("reaper.holds")


def holds_for_cycle(
    path: Path | None, now: datetime, count: Callable[[int, int], object] | None = None
) -> HoldSet:
    """Read the holds file for one cycle (HoldsError if it cannot be) and log the expired holds.

    Each expired hold is logged once per cycle (``hold.expired``) with its reason and owner, so
    that a forgotten hold shows up until someone removes it from the file. ``count`` is told
    how many are active and expired (``Metrics.set_holds``: the ``reaper_holds`` gauge).
    """
    holds = NO_HOLDS if path is None else split_holds(read_holds(path), now)
    if count is not None:
        count(len(holds.active), len(holds.expired))
    for hold in holds.expired:
        log.info(
            "hold.expired",
            id=hold.id,
            until=format_time(hold.until),
            reason=hold.reason,
            by=hold.by,
            consequence="ignored: the batch is decided as if it had no hold",
        )
    return holds


def read_holds(path: Path | str) -> tuple[Hold, ...]:
    """Read and parse the holds file; raise HoldsError naming the file (and line) on any problem."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(SIZE_LIMIT + 1)
    except OSError as exc:
        raise HoldsError(path, f"cannot read it: {exc.strerror or type(exc).__name__}") from None
    if len(data) > SIZE_LIMIT:
        raise HoldsError(path, "a holds file of at most 4 MiB (this one is larger)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise HoldsError(path, "not UTF-8 text", line) from None
    return parse_holds(text.splitlines(), source=path)


def parse_holds(lines: Iterable[str], *, source: Path | str = "(holds)") -> tuple[Hold, ...]:
    """Parse JSON Lines of holds, skipping comments and blank lines; HoldsError on a bad line."""
    holds: list[Hold] = []
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            holds.append(parse_hold(stripped))
        except ValueError as exc:
            raise HoldsError(source, str(exc), number) from None
    return tuple(holds)


def parse_hold(text: str) -> Hold:
    """Parse one line (a JSON object) into a Hold; raise ValueError saying what is wrong."""
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"a JSON object with {', '.join(_REQUIRED)} (got a {_json_type(data)})")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ValueError(
            f"unknown field {show(str(unknown[0]))!r}; the fields are {', '.join(FIELDS)}"
        )
    for field in _REQUIRED:
        if field not in data:
            raise ValueError(f"{field!r} is required")
    batch_id = data["id"]
    if not isinstance(batch_id, str) or not _ID.fullmatch(batch_id):
        raise ValueError(f"'id' is not a batch id (letters, digits, _ - . :): {_quote(batch_id)}")
    until = data["until"]
    if not isinstance(until, str) or not _RFC3339.fullmatch(until):
        raise ValueError(
            "'until' is not an RFC 3339 time with a zone like 2026-12-31T00:00:00Z: "
            + _quote(until)
        )
    try:
        until_time = parse_time(until.upper())  # RFC 3339 allows a lower-case t and z
    except ValueError:
        raise ValueError(f"'until' is not a valid date and time: {_quote(until)}") from None
    return Hold(id=batch_id, until=until_time, reason=_text(data, "reason"), by=_text(data, "by"))


def split_holds(holds: Iterable[Hold], now: datetime) -> HoldSet:
    """Split holds at ``now``: active ones by batch id (the longest wins), and the expired ones."""
    active: dict[str, Hold] = {}
    expired: list[Hold] = []
    for hold in holds:
        if not hold.active(now):
            expired.append(hold)
        elif hold.id not in active or hold.until > active[hold.id].until:
            active[hold.id] = hold
    return HoldSet(active=active, expired=tuple(expired))


def _text(data: Mapping[str, Any], field: str) -> str | None:
    value = data.get(field)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{field!r} is text or null (got a {_json_type(value)})")
    return value


def _quote(value: object) -> str:
    return show(json.dumps(value, ensure_ascii=False))


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if value is None:
        return "null"
    return "object"
