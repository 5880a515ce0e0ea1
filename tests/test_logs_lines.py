"""The rendered log lines, pinned byte for byte (timestamps aside), and the masking's shortcuts.

The reaper's own events are rendered by structlog's chain and written straight to the handler;
the libraries' records go through the stdlib logging module and the handler's formatter. Both
must give the lines they always gave: same keys, same order, same values, same masking.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from reaper.logs import (
    MIN_SECRET_FRAGMENT,
    REDACTED,
    Redactor,
    _render_json,
    _UtcTimestamp,
    configure_logging,
    reset_logging,
)
from reaper.metrics import Metrics
from reaper.outcomes import ActionOutcome
from reaper.policy import Policy, plan
from reaper.recorder import Recorder, Tally
from reaper.redaction import _CREDENTIAL_PATTERNS
from tests.helpers import T0, make_batch, mask_by_full_scan

KEY = "sk-ant-api03-Zq9Wm4Xr7Ty2Lp5Nv8BcDEFGhijkLMNOP-qrstuvwxyz0123456789"
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z")


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    yield
    structlog.contextvars.clear_contextvars()
    reset_logging()


def lines_of(out: io.StringIO) -> list[str]:
    """The stream's lines, every timestamp replaced by T (each line must have exactly one)."""
    lines = []
    for line in out.getvalue().splitlines():
        stamped, count = TIMESTAMP.subn("T", line)
        assert count == 1, line
        lines.append(stamped)
    return lines


def recorder(*, dry_run: bool) -> Recorder:
    return Recorder(
        Tally(),
        None,
        metrics=Metrics(),
        now=lambda: T0,
        dry_run=dry_run,
        redact=Redactor([KEY]),
    )


def test_a_dry_run_delete_line_is_pinned_byte_for_byte() -> None:
    """The line a dry run writes for every planned delete (one per action: the hot path)."""
    out = io.StringIO()
    configure_logging("info", "json", secrets=[KEY], stream=out)
    structlog.contextvars.bind_contextvars(cycle_id="c0ffee42")
    planned = plan([make_batch("msgbatch_1")], T0, Policy())
    recorder(dry_run=True).record_dry_run(planned, then_delete=False)
    assert lines_of(out) == [
        '{"timestamp": "T", "level": "info", "event": "batch.delete", "id": "msgbatch_1",'
        ' "rule": "ended_retention", "age": 3456000, "dry_run": true, "workspace": "default",'
        ' "outcome": "dry_run", "cycle_id": "c0ffee42", "logger": "reaper.cycle"}'
    ]


def test_a_live_line_with_extra_fields_is_pinned_byte_for_byte() -> None:
    """A done action's fields follow the standard ones in the order the recorder gives them."""
    out = io.StringIO()
    configure_logging("info", "json", secrets=[KEY], stream=out)
    (delete,) = plan([make_batch("msgbatch_2")], T0, Policy()).deletes
    recorder(dry_run=False).done(delete, request_id="req_1", archived=True, note=f"k={KEY}")
    assert lines_of(out) == [
        '{"timestamp": "T", "level": "info", "event": "batch.delete", "id": "msgbatch_2",'
        ' "rule": "ended_retention", "age": 3456000, "dry_run": false, "workspace": "default",'
        f' "outcome": "{ActionOutcome.DONE.value}", "request_id": "req_1", "archived": true,'
        f' "note": "k={REDACTED}", "logger": "reaper.cycle"}}'
    ]


def test_every_kind_of_value_renders_as_json_dumps_would() -> None:
    """Nested values, floats, non-ASCII text, positional arguments and values json cannot encode."""
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    log = structlog.get_logger("reaper.test")
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    log.warning("odd %s %d", "pos", 5, when=when, s={1}, f=1e16, nan=math.nan, n=None)
    log.info("nested", d={"a": [1, {"b": "héllo ☃"}]}, b=b"raw", t=(1, 2))
    assert lines_of(out) == [
        '{"timestamp": "T", "level": "warning", "event": "odd pos 5",'
        ' "when": "2026-01-02 03:04:05+00:00", "s": "{1}", "f": 1e+16, "nan": NaN, "n": null,'
        ' "logger": "reaper.test"}',
        '{"timestamp": "T", "level": "info", "event": "nested",'
        ' "d": {"a": [1, {"b": "h\\u00e9llo \\u2603"}]}, "b": "b\'raw\'", "t": [1, 2],'
        ' "logger": "reaper.test"}',
    ]


def test_a_library_record_line_is_pinned_byte_for_byte() -> None:
    """A stdlib record still goes through the formatter: same layout, the bound context too."""
    out = io.StringIO()
    configure_logging("info", "json", secrets=[KEY], stream=out)
    structlog.contextvars.bind_contextvars(cycle_id="c0ffee42")
    logging.getLogger("httpx").warning("headers: %s", {"x-api-key": KEY})
    assert lines_of(out) == [
        '{"timestamp": "T", "level": "warning",'
        " \"event\": \"headers: {'x-api-key': '[REDACTED]'}\","
        ' "cycle_id": "c0ffee42", "logger": "httpx"}'
    ]


def test_an_exception_line_keeps_its_keys_in_order() -> None:
    """log.exception: the fields, the context, the logger, then the structured traceback."""
    out = io.StringIO()
    configure_logging("info", "json", secrets=[KEY], stream=out)
    structlog.contextvars.bind_contextvars(cycle_id="c0ffee42")
    try:
        raise RuntimeError(f"boom {KEY}")
    except RuntimeError:
        structlog.get_logger("reaper.cycle").exception("cycle.crashed", step=3)
    (line,) = out.getvalue().splitlines()
    parsed = json.loads(line)
    assert list(parsed) == [
        "timestamp",
        "level",
        "event",
        "step",
        "cycle_id",
        "logger",
        "exception",
    ]
    assert parsed["level"] == "error"
    (exc,) = parsed["exception"]
    assert exc["exc_type"] == "RuntimeError"
    assert exc["exc_value"] == f"boom {REDACTED}"
    assert KEY[:MIN_SECRET_FRAGMENT] not in line


def test_console_lines_are_pinned() -> None:
    """The console layout, for the reaper's events and a library's record alike."""
    out = io.StringIO()
    configure_logging("info", "console", secrets=[KEY], stream=out)
    structlog.get_logger("reaper.cycle").info("batch.delete", id="msgbatch_1", key=KEY)
    logging.getLogger("some.library").warning("hello %s", "world")
    assert lines_of(out) == [
        f"T [info     ] batch.delete                   [reaper.cycle] id=msgbatch_1 key={REDACTED}",
        "T [warning  ] hello world                    [some.library]",
    ]


def test_levels_are_the_stdlib_loggers() -> None:
    """A level set on a stdlib logger (or logging.disable) filters the reaper's events too."""
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    logging.getLogger("reaper.quiet").setLevel(logging.ERROR)
    try:
        structlog.get_logger("reaper.quiet").warning("dropped")
        structlog.get_logger("reaper.quiet").error("kept")
        logging.disable(logging.ERROR)
        structlog.get_logger("reaper.test").error("disabled")
    finally:
        logging.disable(logging.NOTSET)
        logging.getLogger("reaper.quiet").setLevel(logging.NOTSET)
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["kept"]


class _BrokenStream(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError("stream closed")


def test_a_line_that_cannot_be_written_is_reported_not_raised(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As StreamHandler.emit does for a record: a note on stderr (masked), the code goes on."""
    configure_logging("info", "json", secrets=[KEY], stream=_BrokenStream())
    structlog.get_logger("reaper.test").info("lost", key=KEY)
    logging.getLogger("some.library").warning("lost too")
    err = capsys.readouterr().err
    assert err.count("--- Logging error ---") == 2
    assert "OSError: stream closed" in err
    assert KEY[:MIN_SECRET_FRAGMENT] not in err


class _Unprintable:
    def __str__(self) -> str:
        raise ValueError("no text for this one")


def test_a_line_that_cannot_be_rendered_is_reported_not_raised(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A value whose str() fails drops its line, as a formatter's failure did, and nothing more."""
    out = io.StringIO()
    configure_logging("info", "json", secrets=[KEY], stream=out)
    log = structlog.get_logger("reaper.test")
    log.info("broken", value=_Unprintable(), key=KEY)
    log.info("after")
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["after"]
    err = capsys.readouterr().err
    assert "--- Logging error ---" in err
    assert "no text for this one" in err
    assert "'broken'" in err  # the event is quoted, masked
    assert KEY[:MIN_SECRET_FRAGMENT] not in err


# -- the shortcuts: exactly what the plain algorithms give --------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.builds(set, st.lists(st.integers(), max_size=2))
    | st.datetimes(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(event_dict=st.dictionaries(st.text(), json_values, max_size=6))
def test_render_json_is_json_dumps(event_dict: dict[str, Any]) -> None:
    """The renderer's shortcut to json's C encoder writes what json.dumps(default=str) writes."""
    assert _render_json(None, "info", dict(event_dict)) == json.dumps(event_dict, default=str)


def _redact_plainly(secret: str, text: str) -> str:
    """The reference: mask the secret, every window of 8 of its characters, then the patterns."""
    text = mask_by_full_scan(secret, text.replace(secret, REDACTED))
    for pattern in _CREDENTIAL_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + REDACTED, text)
    return text


# Characters that stress the shortcuts: non-ASCII ones that ignoring case matches to ASCII
# letters (the Kelvin sign, dotless and dotted i, long s), case variants, separators.
_TRICKY = "\u212a\u0131\u0130\u017f\u00e9\u2603 \t\n\"'{}:=,.[]"
_WORDS = ["sk-ant-", "Bearer ", "bearer\t", "BEARER ", "x-api-key: ", "X-Api-Key=", "x-apı-key: "]


@settings(max_examples=400, deadline=None)
@given(
    secret=st.text(alphabet="abcdefghijkKLMN-_0123456789\u00e9", min_size=8, max_size=40),
    pieces=st.lists(
        st.one_of(
            st.text(alphabet=_TRICKY + "ABCDEFGHabcdefgh012345", max_size=12),
            st.sampled_from(_WORDS),
            st.tuples(st.integers(0, 40), st.integers(1, 40)),
        ),
        max_size=10,
    ),
)
def test_redactor_masks_exactly_what_the_plain_algorithm_would(
    secret: str, pieces: list[Any]
) -> None:
    """The pre-checks (ASCII or not) never let a fragment or a credential-shaped value through."""
    text = "".join(p if isinstance(p, str) else secret[p[0] : p[0] + p[1]] for p in pieces)
    assert Redactor([secret])(text) == _redact_plainly(secret, text)


@settings(max_examples=300, deadline=None)
@given(
    instants=st.lists(
        st.integers(0, 253402300799_999_999_999)  # to the end of year 9999, in nanoseconds
        | st.integers(0, 253402300799).map(lambda s: s * 1_000_000_000),  # whole seconds
        min_size=1,
        max_size=5,
    )
)
def test_timestamps_are_written_as_timestamper_writes_them(instants: list[int]) -> None:
    """datetime.now(UTC).isoformat() with Z: microseconds floored, none at a whole second."""
    clock = iter(sorted(instants))
    stamp = _UtcTimestamp(clock=lambda: next(clock))
    for ns in sorted(instants):
        seconds, micros = divmod(ns // 1000, 1_000_000)
        when = datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)
        expected = when.isoformat().replace("+00:00", "Z")
        assert stamp(None, "info", {}) == {"timestamp": expected}


_ORDER_PROBE = """
import io, structlog
from reaper.logs import configure_logging
out = io.StringIO()
configure_logging("info", "json", secrets=[], stream=out)
structlog.contextvars.bind_contextvars(workspace="wrkspc_1")
structlog.contextvars.bind_contextvars(cycle_id="c0ffee42")
structlog.get_logger("reaper.cycle").info("cycle.started")
print(out.getvalue().strip())
"""


def test_bound_keys_are_in_the_same_order_whatever_the_hash_seed() -> None:
    """cycle_id and workspace sit in the same place in every process (sorted by name).

    Without the sorted merge, hash seeds 1 and 2 put workspace before cycle_id, 0 and 3 after.
    """
    orders = set()
    for seed in ("0", "1", "2", "3", "4", "5"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        line = subprocess.run(
            [sys.executable, "-c", _ORDER_PROBE],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        orders.add(tuple(json.loads(line)))
    assert orders == {("timestamp", "level", "event", "cycle_id", "workspace", "logger")}
