"""Durations of the environment: the accepted forms, the refused ones, and formatting."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reaper.durations import format_age, format_duration, parse_duration, parse_optional_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("12h", timedelta(hours=12)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1w2d3h4m5s", timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5)),
        ("0", timedelta(0)),
        ("0s", timedelta(0)),
        (" 7D ", timedelta(days=7)),
    ],
)
def test_parse_duration_accepts_the_documented_forms(text: str, expected: timedelta) -> None:
    """Every form of SPEC section 2 (and combinations, largest unit first) parses exactly."""
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "7", "1.5h", "-1h", "+1h", "1m1h", "1h1h", "7 d", "1y", "never", "h", "٣d", "1e3s"],
)
def test_parse_duration_refuses_anything_else(text: str) -> None:
    """A bare number, a fraction, a sign, a wrong unit order or never is not a duration."""
    with pytest.raises(ValueError, match=r"duration|units"):
        parse_duration(text)


def test_parse_duration_refuses_absurd_lengths() -> None:
    """A value that would overflow datetime arithmetic is refused, pointing at never."""
    with pytest.raises(ValueError, match="never"):
        parse_duration("99999999999d")


@pytest.mark.parametrize("text", ["never", "NEVER", " never "])
def test_parse_optional_duration_reads_never_as_none(text: str) -> None:
    """``never`` switches a rule off: None."""
    assert parse_optional_duration(text) is None


def test_parse_optional_duration_still_parses_durations() -> None:
    """Where never is allowed, durations still parse."""
    assert parse_optional_duration("30d") == timedelta(days=30)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(minutes=15), "15m"),
        (timedelta(days=14), "14d"),
        (timedelta(days=1, hours=2), "1d2h"),
        (None, "never"),
    ],
)
def test_format_duration_is_exact(value: timedelta | None, text: str) -> None:
    """Formatting keeps every second (days not folded into weeks) and says never for None."""
    assert format_duration(value) == text


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=100 * 365 * 86400))
def test_format_duration_reads_back(seconds: int) -> None:
    """What check-config prints, the environment accepts back unchanged."""
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(days=8, hours=2, minutes=5), "8d 2h"),
        (timedelta(hours=13, minutes=5, seconds=9), "13h 5m"),
        (timedelta(seconds=42), "42s"),
        (timedelta(0), "0s"),
        (timedelta(days=1, minutes=5), "1d"),
        (timedelta(minutes=1, seconds=0, microseconds=999), "1m"),
        (-timedelta(hours=2), "-2h"),
    ],
)
def test_format_age_shows_two_units(value: timedelta, text: str) -> None:
    """Ages for people: the two largest units, a zero second unit dropped."""
    assert format_age(value) == text
