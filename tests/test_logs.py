"""The log pipeline: JSON Lines for machines, one stream for every logger, the key never shown."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from reaper.logs import (
    MIN_SECRET_FRAGMENT,
    REDACTED,
    Redactor,
    configure_logging,
    parse_level,
    redacted_output,
    reset_logging,
)
from tests.helpers import mask_by_full_scan

CANARY = "sk-ant-api03-CANARY0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH-zz99"
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """Leave the global logging state as it was: every test configures its own pipeline."""
    yield
    reset_logging()


def json_lines(text: str) -> list[dict[str, Any]]:
    """Parse every line of ``text`` as JSON (any non-JSON line fails the test)."""
    return [json.loads(line) for line in text.splitlines()]


def assert_no_part_of(secret: str, text: str) -> None:
    """Fail if the secret, or any run of 8 of its characters, appears in ``text``."""
    assert secret not in text
    for i in range(len(secret) - MIN_SECRET_FRAGMENT + 1):
        fragment = secret[i : i + MIN_SECRET_FRAGMENT]
        assert fragment not in text, f"fragment {fragment!r} leaked"


def test_every_line_is_json_with_timestamp_level_and_event() -> None:
    """JSON Lines carry an RFC 3339 UTC timestamp, the level, the event and the fields."""
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    log = structlog.get_logger("reaper.test")
    log.info("cycle.started", workspaces=2)
    log.warning("safety.stop", workspace="wrkspc_1", fraction=0.9)
    lines = json_lines(out.getvalue())
    assert [line["event"] for line in lines] == ["cycle.started", "safety.stop"]
    for line in lines:
        assert RFC3339_UTC.match(line["timestamp"]), line["timestamp"]
        assert list(line)[:3] == ["timestamp", "level", "event"]
    assert lines[0]["level"] == "info"
    assert lines[0]["workspaces"] == 2
    assert lines[1]["level"] == "warning"


def test_context_variables_are_merged_into_every_line() -> None:
    """A cycle id bound once appears on the reaper's lines and on the libraries' lines."""
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    structlog.contextvars.bind_contextvars(cycle_id="c-42", workspace="default")
    try:
        structlog.get_logger("reaper.cycle").info("batch.delete", id="msgbatch_1")
        logging.getLogger("httpx").warning("connection pool is full")
    finally:
        structlog.contextvars.clear_contextvars()
    lines = json_lines(out.getvalue())
    assert len(lines) == 2
    for line in lines:
        assert line["cycle_id"] == "c-42"
        assert line["workspace"] == "default"


def test_stdlib_and_library_loggers_share_the_pipeline() -> None:
    """A plain logging call renders as JSON too, with the logger's name."""
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    logging.getLogger("some.library").info("hello %s", "world")
    (line,) = json_lines(out.getvalue())
    assert line["event"] == "hello world"
    assert line["logger"] == "some.library"
    assert line["level"] == "info"
    assert RFC3339_UTC.match(line["timestamp"])


def test_noisy_libraries_log_only_warnings_by_default() -> None:
    """httpx's per-request INFO lines and apscheduler's per-run INFO lines are dropped."""
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    logging.getLogger("httpx").info('HTTP Request: GET http://x "HTTP/1.1 200 OK"')
    logging.getLogger("apscheduler.executors.default").info('Running job "cycle"')
    # Its skip warnings repeat the reaper's own cycle.skipped event; its errors still come through.
    logging.getLogger("apscheduler.scheduler").warning("Execution of job skipped")
    logging.getLogger("apscheduler.scheduler").error("Error notifying listener")
    assert [line["event"] for line in json_lines(out.getvalue())] == ["Error notifying listener"]


def test_debug_level_lets_the_libraries_speak() -> None:
    """At debug the request lines of httpx show up, for troubleshooting."""
    out = io.StringIO()
    configure_logging("debug", "json", stream=out)
    logging.getLogger("httpx").info("HTTP Request: GET")
    structlog.get_logger("reaper.test").debug("detail")
    assert [line["event"] for line in json_lines(out.getvalue())] == ["HTTP Request: GET", "detail"]


def test_level_filters_the_reapers_own_events() -> None:
    """At warning, info events are not written."""
    out = io.StringIO()
    configure_logging("warning", "json", stream=out)
    log = structlog.get_logger("reaper.test")
    log.info("cycle.started")
    log.warning("safety.stop")
    assert [line["event"] for line in json_lines(out.getvalue())] == ["safety.stop"]


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_the_key_never_appears_whole_or_in_part(fmt: str) -> None:
    """Fields, messages, header reprs, fragments and exception texts are all masked."""
    out = io.StringIO()
    configure_logging("debug", fmt, secrets=[CANARY], stream=out)  # type: ignore[arg-type]
    log = structlog.get_logger("reaper.test")
    log.info("event.with.field", api_key=CANARY)
    log.info("event.with.fragment", hint=CANARY[20:40])
    logging.getLogger("httpx").warning("headers: Headers({'x-api-key': '%s'})", CANARY)
    logging.getLogger("some.library").warning("Authorization: Bearer %s", CANARY)
    logging.getLogger("some.library").warning("key ends with %s", CANARY[-12:])
    try:
        raise RuntimeError(f"request failed with key {CANARY}")
    except RuntimeError:
        log.exception("cycle.crashed")
        logging.getLogger("apscheduler.executors.default").exception('Job "cycle" raised')
    text = out.getvalue()
    assert_no_part_of(CANARY, text)
    assert REDACTED in text
    assert "cycle.crashed" in text
    assert "RuntimeError" in text
    if fmt == "json":
        assert len(json_lines(text)) == 7


def test_unconfigured_credentials_are_masked_by_shape() -> None:
    """A key the reaper was not told about is still masked in a header or by its prefix."""
    other = "sk-ant-admin01-ANOTHERkey0987654321"
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    logging.getLogger("x").warning("x-api-key: %s and Bearer abcdefgh12345678", other)
    text = out.getvalue()
    assert "ANOTHERkey" not in text
    assert "abcdefgh12345678" not in text


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_tracebacks_show_no_local_variables(fmt: str) -> None:
    """A frame's locals never reach the log: they could hold the key."""
    out = io.StringIO()
    configure_logging("info", fmt, stream=out)  # type: ignore[arg-type]

    def failing() -> None:
        token = "local-value-visible-only-with-locals"
        raise ValueError(f"failed after {len(token)} chars")

    try:
        failing()
    except ValueError:
        structlog.get_logger("reaper.test").exception("cycle.crashed")
    text = out.getvalue()
    assert "failed after 36 chars" in text
    assert "local-value-visible-only-with-locals" not in text


def test_configure_is_idempotent_and_reset_removes_the_handler() -> None:
    """Configuring twice writes each line once, to the newest stream; reset stops writing."""
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", "json", stream=first)
    configure_logging("info", "json", stream=second)
    structlog.get_logger("reaper.test").info("once")
    assert first.getvalue() == ""
    assert len(json_lines(second.getvalue())) == 1
    reset_logging()
    logging.getLogger("reaper.test").warning("after reset")
    assert len(json_lines(second.getvalue())) == 1


def test_console_format_is_for_people() -> None:
    """The console renderer writes a readable line, not JSON."""
    out = io.StringIO()
    configure_logging("info", "console", stream=out)
    structlog.get_logger("reaper.test").info("cycle.finished", deleted=3)
    text = out.getvalue()
    assert "cycle.finished" in text
    assert "deleted=3" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_capture_logs_sees_events_after_configuration() -> None:
    """Tests can assert on events as dicts even when the pipeline is configured."""
    configure_logging("info", "json", stream=io.StringIO())
    with capture_logs() as captured:
        structlog.get_logger("reaper.test").info("batch.cancel", id="msgbatch_1")
    assert captured == [{"event": "batch.cancel", "id": "msgbatch_1", "log_level": "info"}]


def test_redactor_merges_overlapping_fragments_into_one_mask() -> None:
    """A long piece of the key becomes one mask, text around it is kept."""
    redact = Redactor(["abcdefghijklmnop"])
    assert redact("x=cdefghijklm;y") == f"x={REDACTED};y"
    assert redact("abcdefg is too short to be a fragment") == (
        "abcdefg is too short to be a fragment"
    )
    assert redact("no secret here") == "no secret here"


def test_redactor_masks_short_secrets_whole() -> None:
    """A secret shorter than a fragment is masked only where it appears whole."""
    assert Redactor(["k3y"])("the k3y and k3") == f"the {REDACTED} and k3"
    assert Redactor([""])("unchanged") == "unchanged"


def test_unknown_level_is_refused() -> None:
    """A misspelt level is an error, naming what is accepted."""
    assert parse_level("INFO") == logging.INFO
    with pytest.raises(ValueError, match="accepted: debug, info"):
        parse_level("verbose")


def test_redacted_output_masks_every_printed_line_and_restores_the_streams(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Printed text (not only log lines) never shows the key, whole or in part, on either stream."""
    key = "sk-ant-api03-printed-KEY-0123456789abcdef"
    before = sys.stdout, sys.stderr
    with redacted_output([key]):
        print(f"summary: request {key}")
        print(f"error type {key[5:25]}", file=sys.stderr)
        sys.stdout.writelines([f"table row {key}\n"])
    assert (sys.stdout, sys.stderr) == before
    out, err = capsys.readouterr()
    assert key[8:16] not in out + err
    assert out == f"summary: request {REDACTED}\ntable row {REDACTED}\n"
    assert REDACTED in err


@settings(max_examples=300, deadline=None)
@given(
    secret=st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_0123456789", min_size=8, max_size=40),
    pieces=st.lists(
        st.one_of(
            st.text(alphabet='"{} :,.ABCDEFGH', max_size=12),  # none of the secret's
            st.tuples(st.integers(0, 40), st.integers(1, 40)),
        ),
        max_size=8,
    ),
)
def test_redactor_masks_exactly_what_a_full_scan_would(secret: str, pieces: list[Any]) -> None:
    """The pre-check that skips most lines never lets a fragment through, wherever it sits."""
    text = "".join(p if isinstance(p, str) else secret[p[0] : p[0] + p[1]] for p in pieces)
    assert Redactor([secret])._mask_fragments(text) == mask_by_full_scan(secret, text)


@pytest.mark.parametrize("offset", range(12))
@pytest.mark.parametrize("length", range(MIN_SECRET_FRAGMENT, MIN_SECRET_FRAGMENT + 5))
def test_a_fragment_is_masked_at_every_offset(offset: int, length: int) -> None:
    """Wherever a run of the key starts in a line, and however long, it is masked."""
    secret = "sk-ant-api03-Zq9Wm4Xr7Ty2Lp5Nv8Bc"
    for start in (0, 5, len(secret) - length):
        text = "." * offset + secret[start : start + length] + ":" * 7
        assert Redactor([secret])(text) == "." * offset + REDACTED + ":" * 7
