"""A batch's results as JSON Lines, generated lazily so that 100,000 lines never sit in memory.

One line per request, ``{"custom_id", "result": {"type": ...}}``, with as many ``succeeded``,
``errored``, ``canceled`` and ``expired`` lines as the batch's ``request_counts`` say. Errored lines
carry the full nested ErrorResponse, like the API. Lines come in a shuffled order (the API does not
keep request order): line k shows request (a*k + b) mod n for a random a coprime with n, a
permutation that needs no memory. The same batch always yields the same bytes (the generator is
seeded by the batch id), so a re-download can be compared with the first one.

A created batch keeps its requests' ``custom_id`` values and the errors of its invalid ``params``;
a seeded one gets ``request-000000``, ``request-000001``, ...
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from typing import Final

from reaper.emulator.records import BatchRecord, random_token

CHUNK_BYTES: Final = 64 * 1024
SHORT: Final = "short"
TRUNCATE: Final = "truncate"
CORRUPT: Final = "corrupt"
ABORT: Final = "abort"

_SUCCEEDED: Final = (
    '{{"custom_id":"{cid}","result":{{"type":"succeeded","message":{{"id":"msg_{mid}",'
    '"type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{{"type":"text",'
    '"text":{text}}}],"stop_reason":"end_turn","stop_sequence":null,"usage":{{"input_tokens":{inp},'
    '"output_tokens":{out},"cache_creation_input_tokens":0,"cache_read_input_tokens":0,'
    '"service_tier":"batch"}}}}}}}}\n'
)
_ERRORED: Final = (
    '{{"custom_id":"{cid}","result":{{"type":"errored","error":{{"type":"error","error":'
    '{{"type":"{etype}","message":{message}}},"request_id":"req_{rid}"}}}}}}\n'
)
_CANCELED: Final = '{{"custom_id":"{cid}","result":{{"type":"canceled"}}}}\n'
_EXPIRED: Final = '{{"custom_id":"{cid}","result":{{"type":"expired"}}}}\n'
_TEXTS: Final = tuple(
    json.dumps(text)
    for text in (
        "The invoice total is 1,284.50 EUR, due on 14 March.",
        "Sentiment: positive. The reviewer praises the battery life.",
        'Category: "billing"; priority: low.',
        "Summary: the customer asks to move the delivery to next week.",
        "Translation: Le rapport sera prêt demain matin.",
    )
)
# Errors a request of a batch meets when processed (the batch itself succeeded in being created).
_SEEDED_ERRORS: Final = (
    ("invalid_request_error", json.dumps("messages: text content blocks must be non-empty")),
    (
        "invalid_request_error",
        json.dumps("max_tokens: 64000 > 32000, the maximum allowed number of output tokens"),
    ),
    ("api_error", json.dumps("Internal server error")),
)


class ResultsAborted(Exception):
    """Raised mid-stream to break the connection (the ``results_abort_ids`` fault)."""


def result_lines(record: BatchRecord) -> Iterator[str]:
    """Yield the batch's result lines (each ending in a newline) in shuffled order."""
    total = record.total
    if total <= 0:
        return
    rng = random.Random(record.id)
    step = _coprime(total, rng)
    offset = rng.randrange(total)
    custom_ids = record.custom_ids
    invalid = record.invalid or {}
    done = record.succeeded + record.errored
    succeeded_end = record.succeeded
    errored_end = succeeded_end + record.errored
    canceled_end = errored_end + record.canceled
    for k in range(total):
        index = (step * k + offset) % total
        cid = custom_ids[index] if custom_ids is not None else f"request-{index:06d}"
        if custom_ids is not None:
            # A created batch processed its requests in order; the invalid ones among them errored.
            if index < done:
                kind = "errored" if index in invalid else "succeeded"
            else:
                kind = "canceled" if record.canceled else "expired"
        elif index < succeeded_end:
            kind = "succeeded"
        elif index < errored_end:
            kind = "errored"
        elif index < canceled_end:
            kind = "canceled"
        else:
            kind = "expired"
        if kind == "succeeded":
            yield _SUCCEEDED.format(
                cid=cid,
                mid=random_token(rng),
                text=_TEXTS[index % len(_TEXTS)],
                inp=40 + index % 900,
                out=12 + index % 300,
            )
        elif kind == "errored":
            if index in invalid:
                etype, message = "invalid_request_error", json.dumps(invalid[index])
            else:
                etype, message = _SEEDED_ERRORS[index % len(_SEEDED_ERRORS)]
            yield _ERRORED.format(cid=cid, etype=etype, message=message, rid=random_token(rng))
        elif kind == "canceled":
            yield _CANCELED.format(cid=cid)
        else:
            yield _EXPIRED.format(cid=cid)


def result_chunks(record: BatchRecord, mode: str | None = None) -> Iterator[bytes]:
    """Yield the results in chunks of about 64 KiB, damaged as ``mode`` says (None: intact).

    Modes: ``short`` ends cleanly after half the lines; ``truncate`` ends in the middle of the next
    line; ``corrupt`` replaces the middle line with half of itself (not JSON, line count unchanged);
    ``abort`` raises ResultsAborted after half the lines, which breaks the connection.
    """
    half = record.total // 2
    buffer: list[str] = []
    size = 0
    for number, line in enumerate(result_lines(record)):
        if number == half and mode in (SHORT, TRUNCATE, ABORT):
            if mode == TRUNCATE:
                buffer.append(line[: len(line) // 2])
            if buffer:
                yield "".join(buffer).encode()
            if mode == ABORT:
                raise ResultsAborted(f"results of {record.id} aborted after {half} lines")
            return
        if number == half and mode == CORRUPT:
            line = line[: len(line) // 2] + "\n"
        buffer.append(line)
        size += len(line)
        if size >= CHUNK_BYTES:
            yield "".join(buffer).encode()
            buffer, size = [], 0
    if buffer:
        yield "".join(buffer).encode()


def _coprime(n: int, rng: random.Random) -> int:
    if n <= 2:
        return 1
    while True:
        step = rng.randrange(1, n)
        if math.gcd(step, n) == 1:
            return step
