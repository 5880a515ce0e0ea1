"""Results: JSON Lines matching the counts, shuffled, reproducible, streamed, damaged on demand."""

from __future__ import annotations

import json
import tracemalloc
from collections import Counter
from typing import Any

import pytest

from reaper.emulator.records import BatchRecord
from reaper.emulator.results import ResultsAborted, result_chunks, result_lines
from reaper.emulator.state import DEFAULT_WORKSPACE, EmulatorState

WS = DEFAULT_WORKSPACE
PARAMS = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


def seeded(state: EmulatorState, **counts: int) -> BatchRecord:
    """Seed an ended batch with these request counts; return its record."""
    (batch_id,) = state.seed_objects([{"processing_status": "ended", "request_counts": counts}])
    record = state.find(batch_id)
    assert record is not None
    return record


def parse(record: BatchRecord, mode: str | None = None) -> list[dict[str, Any]]:
    """Return the parsed lines of the (possibly damaged) results of ``record``."""
    body = b"".join(result_chunks(record, mode)).decode()
    return [json.loads(line) for line in body.splitlines()]


def test_lines_match_the_counts_and_every_request_appears_once(state: EmulatorState) -> None:
    """As many lines of each type as request_counts says, one per custom_id."""
    record = seeded(state, succeeded=50, errored=7, canceled=5, expired=3)
    lines = parse(record)
    assert Counter(line["result"]["type"] for line in lines) == {
        "succeeded": 50,
        "errored": 7,
        "canceled": 5,
        "expired": 3,
    }
    custom_ids = [line["custom_id"] for line in lines]
    assert sorted(custom_ids) == [f"request-{i:06d}" for i in range(65)]
    assert custom_ids != sorted(custom_ids)  # shuffled, like the API


def test_lines_have_the_apis_shapes(state: EmulatorState) -> None:
    """succeeded carries a Message; errored the nested ErrorResponse; the others only a type."""
    lines = parse(seeded(state, succeeded=3, errored=3, canceled=1, expired=1))
    by_type = {line["result"]["type"]: line["result"] for line in lines}
    message = by_type["succeeded"]["message"]
    assert message["type"] == "message"
    assert message["role"] == "assistant"
    assert message["content"][0]["type"] == "text"
    assert message["usage"]["output_tokens"] > 0
    error = by_type["errored"]["error"]
    assert error["type"] == "error"
    assert set(error["error"]) == {"type", "message"}
    assert error["request_id"].startswith("req_")
    assert by_type["canceled"] == {"type": "canceled"}
    assert by_type["expired"] == {"type": "expired"}


def test_results_are_reproducible(state: EmulatorState) -> None:
    """The same batch yields the same bytes every time (a re-download compares equal)."""
    record = seeded(state, succeeded=20, errored=2)
    assert b"".join(result_chunks(record)) == b"".join(result_chunks(record))


def test_a_created_batch_reports_its_own_custom_ids_and_param_errors(state: EmulatorState) -> None:
    """Invalid params become errored lines with the reason; the rest succeeded."""
    body = {
        "requests": [
            {"custom_id": "good-1", "params": PARAMS},
            {"custom_id": "no_max_tokens", "params": {"model": "m", "messages": []}},
            {"custom_id": "good-2", "params": PARAMS},
        ]
    }
    batch_id = state.create(WS, body).id
    state.advance(3600)
    record = state.get(WS, batch_id)
    lines = {line["custom_id"]: line["result"] for line in parse(record)}
    assert lines["good-1"]["type"] == lines["good-2"]["type"] == "succeeded"
    assert lines["no_max_tokens"]["type"] == "errored"
    assert lines["no_max_tokens"]["error"]["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required",
    }


def test_a_canceled_batch_reports_canceled_lines(state: EmulatorState) -> None:
    """Canceled right after create: every line canceled."""
    batch_id = state.create(
        WS, {"requests": [{"custom_id": f"c{i}", "params": PARAMS} for i in range(4)]}
    ).id
    state.cancel(WS, batch_id)
    state.advance(state.cancel_seconds)
    lines = parse(state.get(WS, batch_id))
    assert {line["result"]["type"] for line in lines} == {"canceled"}
    assert len(lines) == 4


def test_short_results_end_cleanly_after_half_the_lines(state: EmulatorState) -> None:
    """Every line parses, but there are too few."""
    assert len(parse(seeded(state, succeeded=10), "short")) == 5


def test_truncated_results_end_inside_a_line(state: EmulatorState) -> None:
    """The last line is cut: no newline and not JSON."""
    body = b"".join(result_chunks(seeded(state, succeeded=10), "truncate")).decode()
    *whole, last = body.split("\n")
    assert len(whole) == 5
    assert not body.endswith("\n")
    with pytest.raises(json.JSONDecodeError):
        json.loads(last)


def test_corrupt_results_keep_the_line_count_but_one_line_is_not_json(state: EmulatorState) -> None:
    """Counting lines is not enough to verify: one must parse them."""
    body = b"".join(result_chunks(seeded(state, succeeded=10), "corrupt")).decode()
    lines = body.splitlines()
    assert len(lines) == 10
    broken = 0
    for line in lines:
        try:
            json.loads(line)
        except json.JSONDecodeError:
            broken += 1
    assert broken == 1


def test_aborted_results_raise_after_half_the_lines(state: EmulatorState) -> None:
    """The stream breaks (the server drops the connection)."""
    chunks = result_chunks(seeded(state, succeeded=10), "abort")
    first = next(chunks)
    assert first.count(b"\n") == 5
    with pytest.raises(ResultsAborted):
        next(chunks)


def test_100000_lines_stream_in_flat_memory(state: EmulatorState) -> None:
    """A 100,000-request result is generated chunk by chunk, never held whole."""
    record = seeded(state, succeeded=90_000, errored=6_000, expired=4_000)
    tracemalloc.start()
    try:
        lines = 0
        size = 0
        for chunk in result_chunks(record):
            lines += chunk.count(b"\n")
            size += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert lines == 100_000
    assert size > 20 * 2**20  # tens of MiB went through...
    assert peak < 2 * 2**20  # ...while never more than a couple of chunks sat in memory


def test_result_lines_of_an_empty_record_are_empty() -> None:
    """A record without requests (impossible via the API) yields nothing rather than failing."""
    record = BatchRecord(batch_id="b", workspace=WS, created=0, status="ended", total=0, end=0)
    assert list(result_lines(record)) == []
