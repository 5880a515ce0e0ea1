"""REAPER_HOLDS_FILE: what a holds file may hold, the line named when it is wrong, and expiry."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reaper import cli
from reaper.holds import HoldsError, parse_holds, read_holds, split_holds
from reaper.models import Hold

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
KEY = "sk-ant-api03-TESTKEY0123456789abcdefXYZ"


def write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "holds.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def error_of(tmp_path: Path, *lines: str) -> HoldsError:
    path = write(tmp_path, *lines)
    with pytest.raises(HoldsError) as info:
        read_holds(path)
    return info.value


def test_a_file_of_holds_comments_and_blank_lines_reads_every_hold(tmp_path: Path) -> None:
    """Comments and blank lines are skipped; reason and by are optional; offsets become UTC."""
    path = write(
        tmp_path,
        "# incident 42: keep what we are still reading",
        "",
        '{"id": "msgbatch_a", "until": "2026-12-31T00:00:00Z", "reason": "incident 42", '
        '"by": "alice"}',
        "   # an indented comment",
        '{"id": "msgbatch_b", "until": "2026-12-02T01:00:00+01:00"}',
        '{"id": "msgbatch_c", "until": "2026-12-03 00:00:00.5z", "reason": null, "by": null}',
    )
    holds = read_holds(path)
    assert holds == (
        Hold("msgbatch_a", datetime(2026, 12, 31, tzinfo=UTC), "incident 42", "alice"),
        Hold("msgbatch_b", datetime(2026, 12, 2, tzinfo=UTC)),
        Hold("msgbatch_c", datetime(2026, 12, 3, 0, 0, 0, 500000, tzinfo=UTC)),
    )


def test_an_empty_file_holds_nothing(tmp_path: Path) -> None:
    """An empty ConfigMap key is a valid file with no holds."""
    assert read_holds(write(tmp_path)) == ()


# a bad line, and a fragment of what the message says
BAD_LINES = [
    ("{not json", "not valid JSON"),
    ('["msgbatch_a", "2026-12-31T00:00:00Z"]', "a JSON object with id, until (got a list)"),
    ('{"until": "2026-12-31T00:00:00Z"}', "'id' is required"),
    ('{"id": "msgbatch_a"}', "'until' is required"),
    ('{"id": "", "until": "2026-12-31T00:00:00Z"}', "'id' is not a batch id"),
    ('{"id": "a b", "until": "2026-12-31T00:00:00Z"}', "'id' is not a batch id"),
    ('{"id": 42, "until": "2026-12-31T00:00:00Z"}', "'id' is not a batch id"),
    ('{"id": "msgbatch_a", "until": "2026-12-31"}', "'until' is not an RFC 3339 time"),
    ('{"id": "msgbatch_a", "until": "2026-12-31T00:00:00"}', "'until' is not an RFC 3339 time"),
    ('{"id": "msgbatch_a", "until": "next friday"}', "'until' is not an RFC 3339 time"),
    ('{"id": "msgbatch_a", "until": 1767139200}', "'until' is not an RFC 3339 time"),
    ('{"id": "msgbatch_a", "until": "2026-02-30T00:00:00Z"}', "not a valid date and time"),
    (
        '{"id": "msgbatch_a", "until": "2026-12-31T00:00:00Z", "reson": "x"}',
        "unknown field 'reson'",
    ),
    ('{"id": "msgbatch_a", "until": "2026-12-31T00:00:00Z", "by": 7}', "'by' is text or null"),
]


@pytest.mark.parametrize(("line", "fragment"), BAD_LINES)
def test_a_bad_line_is_one_error_naming_variable_file_and_line(
    tmp_path: Path, line: str, fragment: str
) -> None:
    """The message is ``REAPER_HOLDS_FILE=path: line N: what is wrong``, on one line."""
    good = '{"id": "msgbatch_ok", "until": "2026-12-31T00:00:00Z"}'
    error = error_of(tmp_path, "# holds", good, "", line, good)
    message = str(error)
    assert message.startswith(f"REAPER_HOLDS_FILE={tmp_path / 'holds.jsonl'}: line 4: ")
    assert fragment in message
    assert "\n" not in message
    assert error.line == 4


def test_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    """A path that does not exist (yet): the variable, the path and the reason."""
    path = tmp_path / "absent.jsonl"
    with pytest.raises(HoldsError) as info:
        read_holds(path)
    assert str(info.value) == f"REAPER_HOLDS_FILE={path}: cannot read it: No such file or directory"
    assert info.value.line is None


def test_a_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are located by line."""
    path = tmp_path / "holds.jsonl"
    path.write_bytes(b'# ok\n{"id": "msgbatch_a", "until": "2026-12-31T00:00:00Z", "by": "\xff"}\n')
    with pytest.raises(HoldsError) as info:
        read_holds(path)
    assert str(info.value).endswith(": line 2: not UTF-8 text")


def test_a_key_in_a_holds_file_is_not_echoed(tmp_path: Path) -> None:
    """A value that looks like an API key is masked in the message."""
    error = error_of(tmp_path, json.dumps({"id": "msgbatch_a", "until": KEY}))
    assert "sk-ant" not in str(error)
    assert "TESTKEY" not in str(error)


def test_holds_split_at_now_into_active_and_expired() -> None:
    """A hold is active strictly before its until; at until and after it is expired."""
    holds = parse_holds(
        [
            '{"id": "a", "until": "2026-12-01T12:00:01Z"}',
            '{"id": "b", "until": "2026-12-01T12:00:00Z", "reason": "done", "by": "bob"}',
            '{"id": "c", "until": "2026-11-01T00:00:00Z"}',
        ]
    )
    split = split_holds(holds, NOW)
    assert set(split.active) == {"a"}
    assert [h.id for h in split.expired] == ["b", "c"]
    assert split.held("a") == holds[0]
    assert split.held("b") is None


def test_several_holds_on_one_batch_keep_it_while_any_is_active() -> None:
    """The longest active hold is the one reported; an expired one beside it does not matter."""
    holds = parse_holds(
        [
            '{"id": "a", "until": "2026-12-05T00:00:00Z", "reason": "short"}',
            '{"id": "a", "until": "2026-12-09T00:00:00Z", "reason": "long"}',
            '{"id": "a", "until": "2026-11-05T00:00:00Z", "reason": "old"}',
        ]
    )
    split = split_holds(holds, NOW)
    held = split.held("a")
    assert held is not None
    assert held.reason == "long"
    assert [h.reason for h in split.expired] == ["old"]


ids = st.from_regex(r"[A-Za-z0-9_.:\-]{1,40}", fullmatch=True)
times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
texts = st.none() | st.text(max_size=30)


@given(st.lists(st.tuples(ids, times, texts, texts), max_size=20), times)
def test_any_written_holds_read_back_and_split_by_their_until(
    rows: list[tuple[str, datetime, str | None, str | None]], now: datetime
) -> None:
    """What json.dumps writes, parse_holds reads back; every hold lands on the right side of now."""
    lines = [
        json.dumps({"id": i, "until": u.isoformat(), "reason": r, "by": b}) for i, u, r, b in rows
    ]
    holds = parse_holds(lines)
    assert holds == tuple(Hold(i, u, r, b) for i, u, r, b in rows)
    split = split_holds(holds, now)
    assert len(split.expired) == sum(1 for _, u, _, _ in rows if u <= now)
    assert set(split.active) == {i for i, u, _, _ in rows if u > now}
    for batch_id, hold in split.active.items():
        assert hold.until == max(u for i, u, _, _ in rows if i == batch_id)


# -- check-config


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(("REAPER_", "ANTHROPIC_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)


@pytest.mark.usefixtures("clean_env")
def test_check_config_rejects_a_bad_holds_file_with_78_naming_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A hold without its until: exit 78, one stderr line naming the file and line 2."""
    path = write(tmp_path, "# holds", '{"id": "msgbatch_a", "reason": "forgot until"}')
    monkeypatch.setenv("REAPER_HOLDS_FILE", str(path))
    assert cli.main(["check-config"]) == 78
    out, err = capsys.readouterr()
    assert out == ""
    assert (
        err
        == f"reaper: configuration error: REAPER_HOLDS_FILE={path}: line 2: 'until' is required\n"
    )


@pytest.mark.usefixtures("clean_env")
def test_check_config_accepts_a_good_holds_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A valid file (expired holds included) passes, and its path is printed."""
    until = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    path = write(tmp_path, json.dumps({"id": "msgbatch_a", "until": until}))
    monkeypatch.setenv("REAPER_HOLDS_FILE", str(path))
    assert cli.main(["check-config"]) == 0
    assert f"REAPER_HOLDS_FILE={path}" in capsys.readouterr().out.splitlines()


@pytest.mark.usefixtures("clean_env")
def test_check_config_warns_about_a_ledger_dir_that_does_not_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing ledger directory is valid (a volume mounted later) but warned about."""
    monkeypatch.setenv("REAPER_LEDGER_DIR", str(tmp_path / "absent"))
    assert cli.main(["check-config"]) == 0
    err = capsys.readouterr().err
    assert f"warning: REAPER_LEDGER_DIR={tmp_path / 'absent'}: does not exist" in err
    assert "no cancel or delete is sent" in err
