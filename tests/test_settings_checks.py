"""The results-window warning: a retention that outlasts the API's 29 days with no archive."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from reaper import cli
from reaper.settings import load_settings
from reaper.settings_checks import outlasts_results_window, settings_warnings

KEY = "sk-ant-api03-TESTKEY0123456789abcdefXYZ"
SAFE = {"ANTHROPIC_API_KEY": KEY, "REAPER_DELETE_FAILED_AFTER": "7d"}


def warnings_for(**env: str) -> list[str]:
    return settings_warnings(load_settings({**SAFE, **env}))


def test_retentions_inside_the_window_warn_nothing() -> None:
    """7d for both: every batch is deleted while its results are still downloadable."""
    assert warnings_for() == []
    assert warnings_for(REAPER_DELETE_ENDED_AFTER="28d", REAPER_DELETE_FAILED_AFTER="28d") == []


def test_the_default_failed_retention_warns_naming_variable_and_what_is_lost() -> None:
    """The default 30d for failed batches outlasts 29 days: their results are lost unarchived."""
    (warning,) = settings_warnings(load_settings({"ANTHROPIC_API_KEY": KEY}))
    assert warning.startswith("REAPER_DELETE_FAILED_AFTER=30d outlasts the API's 29-day")
    assert "REAPER_ARCHIVE_DIR is unset" in warning
    assert "errored or expired request" in warning
    assert "lost" in warning


@pytest.mark.parametrize("value", ["28d1h", "29d", "30d", "5w"])
def test_an_ended_retention_past_the_window_minus_a_day_of_running_warns(value: str) -> None:
    """A batch may run 24h before it ends, so anything above 28d loses some results."""
    (warning,) = warnings_for(REAPER_DELETE_ENDED_AFTER=value)
    assert warning.startswith("REAPER_DELETE_ENDED_AFTER=")
    assert "no errored or expired request" in warning


def test_never_warns_that_results_expire_while_the_batch_is_kept() -> None:
    """A retention switched off keeps the batch forever, but not its results."""
    (warning,) = warnings_for(REAPER_DELETE_ENDED_AFTER="never")
    assert warning.startswith("REAPER_DELETE_ENDED_AFTER=never keeps them past")
    assert "expire while the reaper keeps the batches" in warning


def test_an_archive_silences_the_warning(tmp_path: Path) -> None:
    """With REAPER_ARCHIVE_DIR set (scope all), nothing in scope is lost."""
    env = {"REAPER_DELETE_ENDED_AFTER": "never", "REAPER_DELETE_FAILED_AFTER": "90d"}
    assert warnings_for(**env, REAPER_ARCHIVE_DIR=str(tmp_path)) == []


def test_archive_scope_failed_still_warns_for_the_ended_retention(tmp_path: Path) -> None:
    """Scope failed archives only failed batches: a long ended retention still loses results."""
    warnings = warnings_for(
        REAPER_DELETE_ENDED_AFTER="60d",
        REAPER_DELETE_FAILED_AFTER="60d",
        REAPER_ARCHIVE_DIR=str(tmp_path),
        REAPER_ARCHIVE_SCOPE="failed",
    )
    assert len(warnings) == 1
    assert warnings[0].startswith("REAPER_DELETE_ENDED_AFTER=60d")
    assert "REAPER_ARCHIVE_SCOPE=failed" in warnings[0]


def test_the_threshold_is_the_window_less_one_day_of_running() -> None:
    """28d is safe (a batch ends within 24h of creation); one second more is not."""
    assert not outlasts_results_window(timedelta(days=28))
    assert outlasts_results_window(timedelta(days=28, seconds=1))
    assert outlasts_results_window(None)


def test_check_config_prints_the_warning_on_stderr_and_exits_0(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-config warns once per retention, on stderr; stdout stays the settings; exit 0."""
    for name in [n for n in os.environ if n.upper().startswith(("REAPER_", "ANTHROPIC_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("REAPER_DELETE_ENDED_AFTER", "45d")
    assert cli.main(["check-config"]) == 0
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 2
    assert all(line.startswith("warning: ") for line in lines)
    assert "REAPER_DELETE_ENDED_AFTER=45d" in lines[0]
    assert "REAPER_DELETE_FAILED_AFTER=30d" in lines[1]
    assert "warning" not in out
    assert KEY not in out + err


def test_log_settings_warnings_logs_each_warning_once_as_config_warning() -> None:
    """The daemon's form of the warning: one config.warning event per retention."""
    from structlog.testing import capture_logs

    from reaper.settings_checks import log_settings_warnings

    with capture_logs() as logs:
        log_settings_warnings(load_settings({**SAFE, "REAPER_DELETE_ENDED_AFTER": "never"}))
        log_settings_warnings(load_settings(SAFE))
    assert [(e["event"], e["log_level"]) for e in logs] == [("config.warning", "warning")]
    assert logs[0]["message"].startswith("REAPER_DELETE_ENDED_AFTER=never")


def test_reaper_run_warns_once_at_start_not_every_cycle(tmp_path: Path) -> None:
    """The real daemon: two cycles (failing, nothing listens), the two warnings logged once."""
    import json
    import signal
    import sys

    from tests.loopback import free_port, spawned, wait_for

    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "ANTHROPIC_API_KEY": KEY,
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "REAPER_DELETE_ENDED_AFTER": "45d",
        "REAPER_INTERVAL": "1s",
        "REAPER_MAX_RETRIES": "0",
        "REAPER_METRICS_PORT": "0",
        "REAPER_SHUTDOWN_GRACE": "5s",
    }
    stdout, stderr = tmp_path / "out", tmp_path / "err"

    def events() -> list[dict[str, object]]:
        lines = stdout.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def cycles() -> int:
        return sum(1 for e in events() if e.get("event") == "cycle.finished")

    with spawned([sys.executable, "-m", "reaper", "run"], env, stdout, stderr) as process:
        wait_for(lambda: cycles() >= 2, 60, "two cycles")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    warnings = [e for e in events() if e.get("event") == "config.warning"]
    assert [str(w["message"]).split("=", 1)[0] for w in warnings] == [
        "REAPER_DELETE_ENDED_AFTER",
        "REAPER_DELETE_FAILED_AFTER",
    ]
    assert all(w["level"] == "warning" for w in warnings)
    assert KEY not in stdout.read_text() + stderr.read_text()
