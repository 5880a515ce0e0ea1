"""REAPER_CRON: 5-field crontabs with standard cron semantics, and their next fire time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reaper.cronspec import next_fire_time, parse_cron


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("spec", "after", "expected"),
    [
        ("*/15 * * * *", "2026-03-02T10:07:00", "2026-03-02T10:15:00"),
        # Strictly after: a fire time is never returned for the instant itself.
        ("*/15 * * * *", "2026-03-02T10:15:00", "2026-03-02T10:30:00"),
        ("*/15 * * * *", "2026-03-02T10:14:59.500000", "2026-03-02T10:15:00"),
        ("0 3 * * *", "2026-03-02T03:00:00", "2026-03-03T03:00:00"),
        ("30 23 31 12 *", "2026-03-02T00:00:00", "2026-12-31T23:30:00"),
        # Weekdays: Friday 2026-03-06 04:00 -> Monday 2026-03-09 03:00.
        ("0 3 * * mon-fri", "2026-03-06T04:00:00", "2026-03-09T03:00:00"),
        ("0 3 * * MON-FRI", "2026-03-06T04:00:00", "2026-03-09T03:00:00"),
        # Sunday is both 0 and 7 (and sun); 2026-11-28 is a Saturday.
        ("0 0 * * 0", "2026-11-28T12:00:00", "2026-11-29T00:00:00"),
        ("0 0 * * 7", "2026-11-28T12:00:00", "2026-11-29T00:00:00"),
        ("0 0 * * sun", "2026-11-28T12:00:00", "2026-11-29T00:00:00"),
        ("0 0 * * 5-7", "2026-11-28T12:00:00", "2026-11-29T00:00:00"),
        # Both day fields restricted: either matches. Monday 2026-03-02 -> Friday 03-06 comes
        # before the 13th; from the 13th (a Friday itself) on, the next is Friday 03-20.
        ("0 0 13 * fri", "2026-03-02T00:00:00", "2026-03-06T00:00:00"),
        ("0 0 13 * fri", "2026-04-10T00:00:00", "2026-04-13T00:00:00"),
        ("0 0 1,15 * mon", "2026-03-02T00:00:00", "2026-03-09T00:00:00"),
        # Only one restricted: only that one counts.
        ("0 0 13 * *", "2026-03-02T00:00:00", "2026-03-13T00:00:00"),
        ("0 0 * * fri", "2026-03-02T00:00:00", "2026-03-06T00:00:00"),
        # A field starting with * counts as unrestricted (Vixie cron): odd days AND Fridays.
        ("0 0 */2 * fri", "2026-03-02T00:00:00", "2026-03-13T00:00:00"),
        # Names of months, and a/n steps running to the field's end.
        ("0 12 1 jan,jul *", "2026-03-02T00:00:00", "2026-07-01T12:00:00"),
        ("10/20 * * * *", "2026-03-02T10:31:00", "2026-03-02T10:50:00"),
        ("0 0 1-10/3 * *", "2026-03-02T00:00:00", "2026-03-04T00:00:00"),
        # Feb 29 waits for a leap year.
        ("0 0 29 2 *", "2026-03-02T00:00:00", "2028-02-29T00:00:00"),
    ],
)
def test_next_fire_time_follows_standard_cron(spec: str, after: str, expected: str) -> None:
    """Known fire times, including Sunday as 0 and 7 and the day-of-month OR day-of-week rule."""
    assert next_fire_time(spec, at(after)) == at(expected)


def test_next_fire_time_keeps_the_time_zone() -> None:
    """The schedule runs on the wall clock of the datetime given."""
    tz = timezone(timedelta(hours=2))
    after = datetime(2026, 3, 2, 10, 7, tzinfo=tz)
    assert next_fire_time("0 11 * * *", after) == datetime(2026, 3, 2, 11, 0, tzinfo=tz)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("* * * *", "4 fields"),
        ("* * * * * *", "6 fields"),
        ("60 * * * *", "minute"),
        ("* 24 * * *", "hour"),
        ("* * 0 * *", "day-of-month"),
        ("* * 32 * *", "day-of-month"),
        ("* * * 13 *", "month"),
        ("* * * * 8", "day-of-week"),
        ("*/0 * * * *", "step"),
        ("*/x * * * *", "step"),
        ("5-1 * * * *", "backwards"),
        ("a * * * *", "not a number"),
        ("1,,2 * * * *", "empty"),
        ("* * * * mon-sun", "backwards"),
        ("² * * * *", "not a number"),
        ("0 0 31 2 *", "never fires"),
        ("0 0 31 4,6,9,11 *", "never fires"),
        ("@daily", "1 fields"),
    ],
)
def test_parse_cron_refuses_bad_specs(spec: str, fragment: str) -> None:
    """Out-of-range values, bad steps, backwards ranges and never-firing specs are refused."""
    with pytest.raises(ValueError, match=fragment):
        parse_cron(spec)


def test_parse_cron_accepts_a_spec_that_fires_only_through_day_of_week() -> None:
    """Feb 31 never exists, but with a restricted day of week the OR rule still fires."""
    spec = parse_cron("0 0 31 2 mon")
    assert spec.next_after(at("2026-03-02T00:00:00")) == at("2027-02-01T00:00:00")


_FIELD = st.one_of(
    st.just("*"),
    st.integers(1, 5).map(lambda n: f"*/{n}"),
    st.lists(st.integers(0, 6), min_size=1, max_size=3).map(lambda xs: ",".join(map(str, xs))),
)


@settings(max_examples=300, deadline=None)
@given(
    minute=_FIELD,
    hour=_FIELD,
    dom=st.sampled_from(["*", "1", "13", "1-7", "*/3", "28,29"]),
    dow=st.sampled_from(["*", "0", "7", "1-5", "fri", "sat,sun"]),
    offset=st.integers(0, 400 * 24 * 60),
)
def test_next_fire_time_is_the_first_matching_minute(
    minute: str, hour: str, dom: str, dow: str, offset: int
) -> None:
    """The search skips nothing: no minute between ``after`` and the result matches."""
    spec = parse_cron(f"{minute} {hour} {dom} * {dow}")
    after = at("2026-01-01T00:00:00") + timedelta(minutes=offset, seconds=17)
    fire = spec.next_after(after)
    assert fire > after
    assert spec.matches(fire)
    probe = after.replace(second=0) + timedelta(minutes=1)
    # Walk day by day where whole days cannot match, minute by minute where they can.
    while probe < fire:
        if not spec.matches_day(probe.year, probe.month, probe.day):
            probe = (probe + timedelta(days=1)).replace(hour=0, minute=0)
            continue
        assert not spec.matches(probe), probe
        probe += timedelta(minutes=1)
