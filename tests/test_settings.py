"""Settings: every variable of SPEC section 2, its default, its errors, and the key's secrecy."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from reaper import cli
from reaper.settings import (
    KNOWN_VARIABLES,
    ConfigError,
    describe_settings,
    load_settings,
)

KEY = "sk-ant-api03-TESTKEY0123456789abcdefXYZ"
BASE = {"ANTHROPIC_API_KEY": KEY}


def load(**env: str) -> object:
    return load_settings({**BASE, **env})


def error_of(env: dict[str, str], *, require_key: bool = True) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(env, require_key=require_key)
    return str(info.value)


def test_defaults_are_the_specs() -> None:
    """With only a key set, every setting has SPEC section 2's default."""
    s = load_settings(BASE)
    assert s.api_key_value() == KEY
    assert s.api_key_source == "ANTHROPIC_API_KEY"
    assert s.base_url == "https://api.anthropic.com"
    assert s.workspace_ids == ()
    assert s.workspaces == (None,)
    assert s.interval == timedelta(minutes=15)
    assert s.cron is None
    assert s.shutdown_grace == timedelta(seconds=30)
    assert s.dry_run is True
    assert s.delete_ended_after == timedelta(days=7)
    assert s.delete_failed_after == timedelta(days=30)
    assert s.cancel_stale_after == timedelta(hours=12)
    assert s.delete_canceled is True
    assert s.cancel_wait_timeout == timedelta(minutes=10)
    assert s.min_age == timedelta(hours=1)
    assert s.keep_last == 0
    assert s.protect_ids == frozenset()
    assert s.max_actions_per_run == 10_000
    assert s.max_delete_fraction == 1.0
    assert s.max_cancel_fraction == 1.0
    assert s.max_clock_skew == timedelta(minutes=2)
    assert s.holds_file is None
    assert s.plan_max_age == timedelta(hours=24)
    assert s.archive_dir is None
    assert s.archive_scope == "all"
    assert s.archive_missing == "keep"
    assert s.ledger_dir is None
    assert s.concurrency == 8
    assert s.max_rpm == 200
    assert s.page_size == 1000
    assert s.request_timeout == timedelta(seconds=30)
    assert s.max_retries == 5
    assert s.metrics_host == "0.0.0.0"
    assert s.metrics_port == 9464
    assert s.log_level == "info"
    assert s.log_format == "json"


def test_every_variable_is_read() -> None:
    """Each variable reaches its field, parsed to its type."""
    s = load_settings(
        {
            **BASE,
            "ANTHROPIC_BASE_URL": "http://127.0.0.1:8080/",
            "REAPER_WORKSPACE_IDS": " wrkspc_a, wrkspc_b ,",
            "REAPER_INTERVAL": "1h30m",
            "REAPER_CRON": "0  3 * * MON-fri",
            "REAPER_SHUTDOWN_GRACE": "0s",
            "REAPER_DRY_RUN": "False",
            "REAPER_DELETE_ENDED_AFTER": "never",
            "REAPER_DELETE_FAILED_AFTER": "2w",
            "REAPER_CANCEL_STALE_AFTER": "NEVER",
            "REAPER_DELETE_CANCELED": "no",
            "REAPER_CANCEL_WAIT_TIMEOUT": "90s",
            "REAPER_MIN_AGE": "0",
            "REAPER_KEEP_LAST": "5",
            "REAPER_PROTECT_IDS": "msgbatch_1,msgbatch_2,msgbatch_1",
            "REAPER_MAX_ACTIONS_PER_RUN": "0",
            "REAPER_MAX_DELETE_FRACTION": "0.25",
            "REAPER_MAX_CANCEL_FRACTION": "0",
            "REAPER_MAX_CLOCK_SKEW": "Never",
            "REAPER_HOLDS_FILE": "/etc/reaper/holds.jsonl",
            "REAPER_PLAN_MAX_AGE": "2h30m",
            "REAPER_ARCHIVE_DIR": "/var/lib/reaper",
            "REAPER_ARCHIVE_SCOPE": "FAILED",
            "REAPER_ARCHIVE_MISSING": "DELETE",
            "REAPER_LEDGER_DIR": "/var/lib/reaper-ledger",
            "REAPER_CONCURRENCY": "64",
            "REAPER_MAX_RPM": "1",
            "REAPER_PAGE_SIZE": "1",
            "REAPER_REQUEST_TIMEOUT": "2m",
            "REAPER_MAX_RETRIES": "0",
            "REAPER_METRICS_HOST": "127.0.0.1",
            "REAPER_METRICS_PORT": "0",
            "REAPER_LOG_LEVEL": "DEBUG",
            "REAPER_LOG_FORMAT": "console",
        }
    )
    assert s.base_url == "http://127.0.0.1:8080"
    assert s.workspace_ids == ("wrkspc_a", "wrkspc_b")
    assert s.workspaces == ("wrkspc_a", "wrkspc_b")
    assert s.interval == timedelta(minutes=90)
    assert s.cron == "0 3 * * MON-fri"
    assert s.shutdown_grace == timedelta(0)
    assert s.dry_run is False
    assert s.delete_ended_after is None
    assert s.delete_failed_after == timedelta(days=14)
    assert s.cancel_stale_after is None
    assert s.delete_canceled is False
    assert s.cancel_wait_timeout == timedelta(seconds=90)
    assert s.min_age == timedelta(0)
    assert s.keep_last == 5
    assert s.protect_ids == frozenset({"msgbatch_1", "msgbatch_2"})
    assert s.max_actions_per_run == 0
    assert s.max_delete_fraction == 0.25
    assert s.max_cancel_fraction == 0.0
    assert s.max_clock_skew is None
    assert s.holds_file == Path("/etc/reaper/holds.jsonl")
    assert s.plan_max_age == timedelta(hours=2, minutes=30)
    assert s.archive_dir == Path("/var/lib/reaper")
    assert s.archive_scope == "failed"
    assert s.archive_missing == "delete"
    assert s.ledger_dir == Path("/var/lib/reaper-ledger")
    assert (s.concurrency, s.max_rpm, s.page_size, s.max_retries) == (64, 1, 1, 0)
    assert s.request_timeout == timedelta(minutes=2)
    assert (s.metrics_host, s.metrics_port) == ("127.0.0.1", 0)
    assert (s.log_level, s.log_format) == ("debug", "console")


@pytest.mark.parametrize(
    "name",
    [
        "REAPER_WORKSPACE_IDS",
        "REAPER_PROTECT_IDS",
        "REAPER_CRON",
        "REAPER_ARCHIVE_DIR",
        "REAPER_HOLDS_FILE",
        "REAPER_LEDGER_DIR",
    ],
)
def test_empty_means_unset_where_unset_means_nothing(name: str) -> None:
    """An empty list, cron or archive dir (as a manifest may write it) is the default."""
    assert load_settings({**BASE, name: ""}) == load_settings(BASE)


# variable, bad value, a fragment of what the message says is accepted
BAD_VALUES = [
    ("ANTHROPIC_BASE_URL", "ftp://example.com", "http:// or https://"),
    ("ANTHROPIC_BASE_URL", "api.anthropic.com", "http:// or https://"),
    ("ANTHROPIC_BASE_URL", "https://", "http:// or https://"),
    ("ANTHROPIC_BASE_URL", "https://example.com/?a=1", "no credentials, query or fragment"),
    ("ANTHROPIC_BASE_URL", "https://example.com:99999", "http:// or https://"),
    ("REAPER_WORKSPACE_IDS", "wrkspc_a,wrkspc_a", "listed twice"),
    ("REAPER_WORKSPACE_IDS", "wrkspc a", "not a valid id"),
    ("REAPER_WORKSPACE_IDS", '["wrkspc_a"]', "not a valid id"),
    ("REAPER_INTERVAL", "0s", "positive duration"),
    ("REAPER_INTERVAL", "never", "positive duration"),
    ("REAPER_INTERVAL", "15", "positive duration"),
    ("REAPER_CRON", "61 * * * *", "out of range 0-59"),
    ("REAPER_CRON", "* * * *", "5-field crontab"),
    ("REAPER_SHUTDOWN_GRACE", "30 s", "a duration like"),
    ("REAPER_DRY_RUN", "ture", "true or false"),
    ("REAPER_DRY_RUN", "", "true or false"),
    ("REAPER_DELETE_ENDED_AFTER", "nevr", "or never"),
    ("REAPER_DELETE_FAILED_AFTER", "-1d", "or never"),
    ("REAPER_CANCEL_STALE_AFTER", "12", "or never"),
    ("REAPER_DELETE_CANCELED", "maybe", "true or false"),
    ("REAPER_CANCEL_WAIT_TIMEOUT", "never", "a duration like"),
    ("REAPER_MIN_AGE", "1 hour", "a duration like"),
    ("REAPER_KEEP_LAST", "-1", "from 0 to 1000000"),
    ("REAPER_KEEP_LAST", "2.5", "from 0 to 1000000"),
    ("REAPER_KEEP_LAST", "", "from 0 to 1000000"),
    ("REAPER_PROTECT_IDS", "msgbatch_1;msgbatch_2", "not a valid id"),
    ("REAPER_MAX_ACTIONS_PER_RUN", "-5", "0 or more"),
    ("REAPER_MAX_ACTIONS_PER_RUN", "unlimited", "0 or more"),
    ("REAPER_MAX_DELETE_FRACTION", "1.5", "from 0 to 1"),
    ("REAPER_MAX_DELETE_FRACTION", "-0.1", "from 0 to 1"),
    ("REAPER_MAX_DELETE_FRACTION", "nan", "from 0 to 1"),
    ("REAPER_MAX_DELETE_FRACTION", "50%", "from 0 to 1"),
    ("REAPER_MAX_CANCEL_FRACTION", "1.01", "from 0 to 1"),
    ("REAPER_MAX_CANCEL_FRACTION", "inf", "from 0 to 1"),
    ("REAPER_MAX_CANCEL_FRACTION", "", "from 0 to 1"),
    ("REAPER_MAX_CLOCK_SKEW", "0s", "positive duration"),
    ("REAPER_MAX_CLOCK_SKEW", "2 min", "or never"),
    ("REAPER_MAX_CLOCK_SKEW", "off", "or never"),
    ("REAPER_PLAN_MAX_AGE", "0s", "positive duration"),
    ("REAPER_PLAN_MAX_AGE", "never", "positive duration"),
    ("REAPER_ARCHIVE_SCOPE", "errored", "all or failed"),
    ("REAPER_ARCHIVE_SCOPE", "", "all or failed"),
    ("REAPER_ARCHIVE_MISSING", "skip", "keep or delete"),
    ("REAPER_CONCURRENCY", "0", "from 1 to 64"),
    ("REAPER_CONCURRENCY", "65", "from 1 to 64"),
    ("REAPER_MAX_RPM", "0", "from 1 to 100000"),
    ("REAPER_PAGE_SIZE", "0", "from 1 to 1000"),
    ("REAPER_PAGE_SIZE", "1001", "from 1 to 1000"),
    ("REAPER_REQUEST_TIMEOUT", "0s", "positive duration"),
    ("REAPER_MAX_RETRIES", "21", "from 0 to 20"),
    ("REAPER_MAX_RETRIES", "-1", "from 0 to 20"),
    ("REAPER_METRICS_HOST", "", "host name or IP"),
    ("REAPER_METRICS_HOST", "0.0.0.0 ::", "host name or IP"),
    ("REAPER_METRICS_PORT", "65536", "from 0 to 65535"),
    ("REAPER_METRICS_PORT", "http", "from 0 to 65535"),
    ("REAPER_LOG_LEVEL", "verbose", "debug, info, warning or error"),
    ("REAPER_LOG_FORMAT", "text", "json or console"),
]


def test_every_variable_has_bad_value_cases() -> None:
    """The table below covers every variable the environment may set (the key has its own)."""
    covered = {name for name, _, _ in BAD_VALUES}
    # The key variables and the paths (they need a file on disk) have tests of their own.
    separate = {
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_API_KEY_FILE",
        "REAPER_ARCHIVE_DIR",
        "REAPER_LEDGER_DIR",
        "REAPER_HOLDS_FILE",
    }
    assert covered == KNOWN_VARIABLES - separate


@pytest.mark.parametrize(("name", "value", "accepts"), BAD_VALUES)
def test_a_bad_value_is_one_line_naming_variable_value_and_accepted(
    name: str, value: str, accepts: str
) -> None:
    """The message is ``VARIABLE=value: what is accepted``, on one line, without the key."""
    message = error_of({**BASE, name: value})
    assert message.startswith(f"{name}={value.strip()}: ")
    assert accepts in message
    assert "\n" not in message
    assert KEY not in message
    assert "validation error" not in message.lower()


def test_an_archive_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    """The archive directory may not exist yet, but a file in its place is a mistake."""
    a_file = tmp_path / "archive"
    a_file.write_text("")
    message = error_of({**BASE, "REAPER_ARCHIVE_DIR": str(a_file)})
    assert message.startswith(f"REAPER_ARCHIVE_DIR={a_file}: a directory path")
    assert "not a directory" in message
    assert load_settings({**BASE, "REAPER_ARCHIVE_DIR": str(tmp_path / "new")}).archive_dir


def test_a_ledger_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    """Like the archive, the ledger directory may be missing at start, never a file."""
    a_file = tmp_path / "ledger"
    a_file.write_text("")
    message = error_of({**BASE, "REAPER_LEDGER_DIR": str(a_file)})
    assert message.startswith(f"REAPER_LEDGER_DIR={a_file}: a directory path")
    assert "not a directory" in message
    missing = tmp_path / "not-mounted-yet"
    assert load_settings({**BASE, "REAPER_LEDGER_DIR": str(missing)}).ledger_dir == missing


def test_a_holds_file_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    """The holds file is read every cycle (it may appear later), but a directory is a mistake."""
    message = error_of({**BASE, "REAPER_HOLDS_FILE": str(tmp_path)})
    assert message.startswith(f"REAPER_HOLDS_FILE={tmp_path}: a path to a JSON Lines file")
    assert "is a directory" in message
    later = tmp_path / "holds.jsonl"
    assert load_settings({**BASE, "REAPER_HOLDS_FILE": str(later)}).holds_file == later


def test_several_bad_values_are_reported_together_on_one_line() -> None:
    """Every problem at once, so a user fixes the environment in one go."""
    message = error_of({**BASE, "REAPER_PAGE_SIZE": "0", "REAPER_DRY_RUN": "ture"})
    assert "REAPER_PAGE_SIZE=0" in message
    assert "REAPER_DRY_RUN=ture" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("REAPER_DRY_RUNN", "REAPER_DRY_RUN"),
        ("REAPER_DRYRUN", "REAPER_DRY_RUN"),
        ("reaper_dry_run", "REAPER_DRY_RUN"),
        ("REAPER_KEEPLAST", "REAPER_KEEP_LAST"),
        ("REAPER_WORKSPACE_ID", "REAPER_WORKSPACE_IDS"),
        ("REAPER_MAX_CANCEL_FRACTON", "REAPER_MAX_CANCEL_FRACTION"),
        ("REAPER_HOLD_FILE", "REAPER_HOLDS_FILE"),
        ("REAPER_LEDGER_DIRECTORY", "REAPER_LEDGER_DIR"),
    ],
)
def test_an_unknown_reaper_variable_is_an_error_with_a_suggestion(
    name: str, suggestion: str
) -> None:
    """A typo in REAPER_DRY_RUN must never let the reaper act: it is refused, with a hint."""
    message = error_of({**BASE, name: "false"})
    assert message.startswith(f"{name}=false: unknown variable")
    assert f"did you mean {suggestion}?" in message


def test_an_unknown_variable_far_from_any_name_gets_no_suggestion() -> None:
    """No misleading hint when nothing is close."""
    message = error_of({**BASE, "REAPER_XYZZY": "1"})
    assert "unknown variable" in message
    assert "did you mean" not in message


def test_other_variables_are_ignored() -> None:
    """Only REAPER_* names are checked; the rest of the environment is not the reaper's."""
    s = load_settings({**BASE, "PATH": "/bin", "ANTHROPIC_LOG": "debug", "HOME": "/root"})
    assert s == load_settings(BASE)


def test_the_process_environment_is_read_only_when_no_mapping_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """load_settings(mapping) never looks at os.environ; load_settings() reads it."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("REAPER_DRY_RUN", "false")
    assert load_settings(BASE).dry_run is True
    assert load_settings().dry_run is False


def test_settings_are_frozen() -> None:
    """One frozen settings object is passed down; nothing can change it."""
    s = load_settings(BASE)
    with pytest.raises(ValidationError):
        s.dry_run = False  # type: ignore[misc]


# -- the key


def test_a_missing_key_is_an_error_when_required() -> None:
    """plan, explain, once and run need a key: its absence names both ways to give one."""
    message = error_of({})
    assert message.startswith("ANTHROPIC_API_KEY=(unset): ")
    assert "ANTHROPIC_API_KEY_FILE" in message


def test_a_missing_key_is_fine_when_not_required() -> None:
    """demo and emulator run without a key."""
    assert load_settings({}, require_key=False).api_key is None


def test_an_empty_key_counts_as_missing() -> None:
    """ANTHROPIC_API_KEY= (empty) is no key."""
    assert load_settings({"ANTHROPIC_API_KEY": " "}, require_key=False).api_key is None


def test_the_key_is_read_from_a_file_and_stripped(tmp_path: Path) -> None:
    """A mounted secret with a trailing newline works; its source is remembered."""
    key_file = tmp_path / "key"
    key_file.write_text(f"  {KEY}\n")
    s = load_settings({"ANTHROPIC_API_KEY_FILE": str(key_file)})
    assert s.api_key_value() == KEY
    assert s.api_key_source == "ANTHROPIC_API_KEY_FILE"
    assert s.api_key_file == key_file


def test_the_same_key_in_both_places_is_accepted(tmp_path: Path) -> None:
    """Both set with the same key is not a conflict."""
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    s = load_settings({"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_API_KEY_FILE": str(key_file)})
    assert s.api_key_value() == KEY


def test_different_keys_in_both_places_are_an_error_without_either_key(tmp_path: Path) -> None:
    """Which key would be used is ambiguous: refuse, and print neither."""
    key_file = tmp_path / "key"
    other = "sk-ant-api03-OTHERKEY9876543210"
    key_file.write_text(other)
    message = error_of({"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_API_KEY_FILE": str(key_file)})
    assert "ANTHROPIC_API_KEY_FILE" in message
    assert KEY not in message
    assert other not in message
    assert "TESTKEY" not in message
    assert "OTHERKEY" not in message


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"sk-ant-part one\n", "without spaces"),
        (b"sk-ant-\xff\xfe", "not UTF-8"),
        (b"x" * 70_000, "over 64 KiB"),
    ],
)
def test_a_bad_key_file_names_variable_and_path_never_contents(
    tmp_path: Path, content: bytes, fragment: str
) -> None:
    """The message names ANTHROPIC_API_KEY_FILE and the path, and says what is wrong."""
    key_file = tmp_path / "key"
    key_file.write_bytes(content)
    message = error_of({"ANTHROPIC_API_KEY_FILE": str(key_file)})
    assert message.startswith(f"ANTHROPIC_API_KEY_FILE={key_file}: ")
    assert fragment in message
    assert "sk-ant-part" not in message


@pytest.mark.parametrize("make", ["missing", "directory"])
def test_an_unreadable_key_file_is_an_error(tmp_path: Path, make: str) -> None:
    """A wrong path or a directory: the variable, the path and the reason."""
    path = tmp_path / "nope"
    if make == "directory":
        path.mkdir()
    message = error_of({"ANTHROPIC_API_KEY_FILE": str(path)})
    assert message.startswith(f"ANTHROPIC_API_KEY_FILE={path}: a readable file")
    assert "cannot read it" in message


def test_a_key_with_whitespace_inside_is_refused_masked() -> None:
    """A key pasted with a space or newline inside would break the header: refused, masked."""
    message = error_of({"ANTHROPIC_API_KEY": "sk-ant-api03 broken"})
    assert message.startswith("ANTHROPIC_API_KEY=********: ")
    assert "broken" not in message


def test_a_key_pasted_into_another_variable_is_not_echoed() -> None:
    """Even a misplaced key is masked in the error about the variable it landed in."""
    message = error_of({**BASE, "REAPER_PROTECT_IDS": f"{KEY} x", "REAPER_DRYRUN": KEY})
    assert KEY not in message
    assert "sk-ant" not in message
    assert "REAPER_PROTECT_IDS=********" in message


def test_credentials_in_the_base_url_are_refused_and_masked() -> None:
    """A URL carrying a password is refused; the password is not echoed."""
    message = error_of({**BASE, "ANTHROPIC_BASE_URL": "https://user:hunter2@example.com"})
    assert "credentials" in message
    assert "hunter2" not in message


def test_the_key_is_never_in_the_settings_repr() -> None:
    """SecretStr keeps the key out of repr and str of the settings."""
    s = load_settings(BASE)
    assert KEY not in repr(s)
    assert KEY not in str(s)


# -- check-config


def test_describe_settings_reads_back_to_the_same_settings() -> None:
    """What check-config prints is a valid environment for the same settings."""
    env = {
        **BASE,
        "REAPER_WORKSPACE_IDS": "wrkspc_a,wrkspc_b",
        "REAPER_INTERVAL": "90s",
        "REAPER_CRON": "*/5 * * * 1-5",
        "REAPER_DELETE_ENDED_AFTER": "never",
        "REAPER_PROTECT_IDS": "b,a",
        "REAPER_MAX_DELETE_FRACTION": "0.3",
        "REAPER_ARCHIVE_DIR": "/tmp/archive",
        "REAPER_DRY_RUN": "0",
        "REAPER_MAX_CLOCK_SKEW": "never",
        "REAPER_MAX_CANCEL_FRACTION": "0.05",
        "REAPER_PLAN_MAX_AGE": "36h",
        "REAPER_ARCHIVE_SCOPE": "failed",
        "REAPER_HOLDS_FILE": "/tmp/holds.jsonl",
        "REAPER_LEDGER_DIR": "/tmp/ledger",
    }
    s = load_settings(env)
    printed = dict(describe_settings(s))
    assert set(printed) == KNOWN_VARIABLES
    printed.pop("ANTHROPIC_API_KEY")
    assert load_settings({**printed, "ANTHROPIC_API_KEY": KEY}) == s


def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(("REAPER_", "ANTHROPIC_")):
            monkeypatch.delenv(name)


def test_check_config_prints_every_variable_with_the_key_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """One NAME=value line per variable; the key as ******** with its source; exit 0."""
    _clean_environment(monkeypatch)
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    monkeypatch.setenv("ANTHROPIC_API_KEY_FILE", str(key_file))
    monkeypatch.setenv("REAPER_KEEP_LAST", "3")
    assert cli.main(["check-config"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert [line.split("=", 1)[0] for line in lines] == [
        name for name, _ in describe_settings(load_settings({"ANTHROPIC_API_KEY": KEY}))
    ]
    assert "ANTHROPIC_API_KEY=******** (from ANTHROPIC_API_KEY_FILE)" in lines
    assert f"ANTHROPIC_API_KEY_FILE={key_file}" in lines
    assert "REAPER_KEEP_LAST=3" in lines
    assert "REAPER_DRY_RUN=true" in lines
    assert KEY not in out + err
    assert "TESTKEY" not in out + err


def test_check_config_with_a_bad_value_exits_78_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad environment: exit 78, one line on stderr naming the variable, nothing on stdout."""
    _clean_environment(monkeypatch)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("REAPER_DRY_RUN", "nope")
    assert cli.main(["check-config"]) == 78
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert "REAPER_DRY_RUN=nope" in err
    assert KEY not in err


def test_a_bad_environment_never_shows_a_traceback_in_a_real_process(tmp_path: Path) -> None:
    """The installed entry point: exit 78, one stderr line, no traceback, no key."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith(("REAPER_", "ANTHROPIC_"))
    }
    env.update({"ANTHROPIC_API_KEY": KEY, "REAPER_DRY_RUNN": "false", "REAPER_PAGE_SIZE": "x"})
    done = subprocess.run(
        [sys.executable, "-m", "reaper", "check-config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 78
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr
    assert "REAPER_DRY_RUNN=false" in done.stderr
    assert "REAPER_PAGE_SIZE=x" in done.stderr
    assert KEY not in done.stderr
