"""Parse a 5-field crontab expression and compute its next fire time, with standard cron semantics.

Standard (Vixie cron / POSIX) semantics, which APScheduler's ``CronTrigger.from_crontab`` does not
follow, hence this module:

- fields: minute (0-59), hour (0-23), day of month (1-31), month (1-12 or jan-dec), day of week
  (0-7 or sun-sat, where both 0 and 7 are Sunday);
- each field is ``*`` or a comma list of values, ranges ``a-b`` and steps ``*/n``, ``a-b/n``,
  ``a/n`` (from ``a`` to the field's maximum);
- when both day of month and day of week are restricted (neither starts with ``*``), a day matches
  when EITHER matches; when one of them starts with ``*``, only the other one counts.

Pure: the time zone is the one of the datetime given to :meth:`CronSpec.next_after`.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

CRON_FORMS: Final = (
    "a 5-field crontab: minute hour day-of-month month day-of-week, e.g. '*/15 * * * *' "
    "or '0 3 * * mon-fri'"
)

_MONTHS: Final = {
    name: number
    for number, name in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1
    )
}
_DAYS: Final = {name: n for n, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int]


_FIELDS: Final = (
    _Field("minute", 0, 59, {}),
    _Field("hour", 0, 23, {}),
    _Field("day-of-month", 1, 31, {}),
    _Field("month", 1, 12, _MONTHS),
    _Field("day-of-week", 0, 7, _DAYS),
)
# A day-of-month-only spec like "0 0 31 2 *" never fires; the search gives up after this many
# years (Feb 29 recurs at least every 8 years), and parse_cron rejects such specs up front.
_SEARCH_YEARS: Final = 9


@dataclass(frozen=True, slots=True)
class CronSpec:
    """A parsed crontab: the matching values of each field and the day-matching mode."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]  # 0 = Sunday .. 6 = Saturday (7 folded into 0)
    dom_restricted: bool
    dow_restricted: bool

    def matches_day(self, year: int, month: int, day: int) -> bool:
        """Return whether a calendar day matches the day-of-month / day-of-week fields."""
        dom = day in self.days_of_month
        dow = (calendar.weekday(year, month, day) + 1) % 7 in self.days_of_week
        if self.dom_restricted and self.dow_restricted:
            return dom or dow
        return dom and dow

    def matches(self, moment: datetime) -> bool:
        """Return whether the minute containing ``moment`` is a fire time."""
        return (
            moment.minute in self.minutes
            and moment.hour in self.hours
            and moment.month in self.months
            and self.matches_day(moment.year, moment.month, moment.day)
        )

    def next_after(self, after: datetime) -> datetime:
        """Return the first fire time strictly after ``after``, in ``after``'s time zone.

        Works on wall-clock time: the result carries ``after.tzinfo``.
        """
        start = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
        minutes = sorted(self.minutes)
        hours = sorted(self.hours)
        day = start.replace(hour=0, minute=0)
        limit = start.year + _SEARCH_YEARS
        first_day = True
        while day.year <= limit:
            if day.month not in self.months:
                day = _first_of_next_month(day)
                first_day = False
                continue
            if self.matches_day(day.year, day.month, day.day):
                for hour in hours:
                    if first_day and hour < start.hour:
                        continue
                    for minute in minutes:
                        candidate = day.replace(hour=hour, minute=minute)
                        if candidate >= start:
                            return candidate
            day = _next_day(day)
            first_day = False
        raise ValueError(f"cron {self.text!r} never fires")


def _next_day(day: datetime) -> datetime:
    # Calendar arithmetic on the date, not timedelta on an aware datetime across a DST change.
    following = day.date() + timedelta(days=1)
    return day.replace(year=following.year, month=following.month, day=following.day)


def _first_of_next_month(day: datetime) -> datetime:
    if day.month == 12:
        return day.replace(year=day.year + 1, month=1, day=1)
    return day.replace(month=day.month + 1, day=1)


def next_fire_time(spec: CronSpec | str, after: datetime) -> datetime:
    """Return the first fire time of ``spec`` strictly after ``after`` (parse it if a string)."""
    parsed = parse_cron(spec) if isinstance(spec, str) else spec
    return parsed.next_after(after)


def parse_cron(text: str) -> CronSpec:
    """Parse a 5-field crontab; raise ValueError saying which field is wrong and why."""
    fields = text.split()
    if len(fields) != 5:
        raise ValueError(f"{len(fields)} fields, expected {CRON_FORMS}")
    values = [_parse_field(raw.lower(), spec) for raw, spec in zip(fields, _FIELDS, strict=True)]
    days_of_week = frozenset(v % 7 for v in values[4])
    spec = CronSpec(
        text=" ".join(fields),
        minutes=values[0],
        hours=values[1],
        days_of_month=values[2],
        months=values[3],
        days_of_week=days_of_week,
        dom_restricted=not fields[2].startswith("*"),
        dow_restricted=not fields[4].startswith("*"),
    )
    if not (spec.dom_restricted and spec.dow_restricted) and not _some_day_exists(spec):
        raise ValueError("no day of the chosen months has the chosen day of month: never fires")
    return spec


def _some_day_exists(spec: CronSpec) -> bool:
    # 2000 is a leap year, so Feb 29 counts as a possible day.
    longest = {month: calendar.monthrange(2000, month)[1] for month in spec.months}
    return any(day <= longest[month] for month in spec.months for day in spec.days_of_month)


def _parse_field(raw: str, field: _Field) -> frozenset[int]:
    result: set[int] = set()
    for item in raw.split(","):
        if not item:
            raise ValueError(f"{field.name} field {raw!r} has an empty list item")
        result.update(_parse_item(item, field))
    return frozenset(result)


def _parse_item(item: str, field: _Field) -> range:
    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not _is_number(step_text) or int(step_text) == 0:
            raise ValueError(f"{field.name} field {item!r}: the step must be a positive integer")
        step = int(step_text)
    if base == "*":
        low, high = field.low, field.high
    elif "-" in base:
        first, _, last = base.partition("-")
        low, high = _value(first, field, item), _value(last, field, item)
        if low > high:
            raise ValueError(f"{field.name} field {item!r}: range runs backwards")
    else:
        low = _value(base, field, item)
        # "a/n" means from a to the maximum in steps of n (cronie, APScheduler); "a" alone is a.
        high = field.high if slash else low
    return range(low, high + 1, step)


def _value(text: str, field: _Field, item: str) -> int:
    if text in field.names:
        return field.names[text]
    if not _is_number(text):
        raise ValueError(f"{field.name} field {item!r}: {text!r} is not a number or a name")
    number = int(text)
    if not field.low <= number <= field.high:
        raise ValueError(
            f"{field.name} field {item!r}: {number} is out of range {field.low}-{field.high}"
        )
    return number


def _is_number(text: str) -> bool:
    # str.isdigit() is true for "²" and other non-ASCII digits that int() refuses.
    return text.isascii() and text.isdigit()
