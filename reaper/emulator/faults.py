"""The emulator's fault configuration (one frozen dataclass, set wholesale) and its rate limiter.

Every fault the real API is known or likely to produce (API-NOTES sections 6, 10 and 12) can be
switched on here, so that chaos tests can check the reaper's reaction to each. ``Faults`` is set
as a whole, from Python (``state.faults = Faults(...)``) or over HTTP (``PUT /_emulator/faults``
with its JSON form; absent fields take their defaults).

Fields (rates are shares of eligible requests, 0 to 1):

- ``latency_ms``: sleep this long before answering every ``/v1`` request.
- ``error_rate``: answer that share with 500 ``api_error`` or 529 ``overloaded_error``;
  ``overloaded_share`` of them are 529 (default half).
- ``rate_limit_rpm``: a token bucket of that many requests per minute (0: off); beyond it 429
  ``rate_limit_error`` with ``retry-after`` (whole seconds, unless ``rate_limit_retry_after`` is
  false) and the ``anthropic-ratelimit-requests-limit/-remaining/-reset`` headers, which successful
  responses carry too while the limit is on.
- ``throttle_rate``: 429 ``rate_limit_error`` without ``retry-after`` (acceleration limit style);
  with ``throttle_error_code`` set (e.g. ``enforced_spend_limit_reached``) the error carries
  ``details.error_code`` like the spend-cap 429.
- ``should_retry``: None (no header), true or false: ``x-should-retry`` on every injected error.
- ``not_found_ids`` / ``not_found_rate`` / ``not_found_young_seconds``: 404 ``not_found_error`` on
  the id endpoints (retrieve, cancel, delete, results) for these ids, for that share of requests,
  or for batches younger than that (the propagation delay of anthropic-sdk-python#1432).
- ``endpoints``: restrict ``error_rate``, ``throttle_rate`` and ``not_found_rate`` to these
  endpoints (``create list retrieve cancel delete results``); empty means all.
- ``results_short_ids``: results end cleanly after half the lines.
- ``results_truncate_ids``: results end in the middle of a line.
- ``results_corrupt_ids``: one line in the middle is not JSON (the line count stays right).
- ``results_abort_ids``: the connection breaks after half the lines.
- ``malformed_list_rate`` / ``truncated_list_rate``: a list page answered 200 with a body that is
  not JSON / with only the first half of its JSON.
- ``unknown_status_rate`` (with ``unknown_status``): batches in a list page shown with a status the
  reaper does not know. ``missing_fields_rate`` (with ``missing_fields``): batches in a list page
  missing those fields.
- ``cancel_ended_ok``: cancel of an ended batch answers 200 unchanged instead of 400 (both are
  plausible for the real API). ``delete_unfinished_conflict``: delete of an unfinished batch answers
  409 ``conflict_error`` instead of 400 ``invalid_request_error``.
- ``clock_skew_seconds``: the ``Date`` header of every response is this many seconds off the
  emulator's clock (negative: behind); nothing else moves (timestamps in bodies stay right).
  ``omit_date``: responses carry no ``Date`` header at all.
- ``list_repeat_row_rate``: a list page (of two rows or more) shows one of its rows twice, the copy
  directly below the original (so ``created_at`` still never increases: only an id check sees it).
  ``list_repeat_previous_rate``: a page asked for with ``after_id`` starts with the batch named by
  ``after_id`` again, the last row of the page before. Both keep the page within ``limit`` (the
  last row moves to the next page, ``has_more`` true) and hide no batch from a full walk.
- ``wrong_batch_rate`` / ``wrong_batch_ids``: retrieve, cancel and delete act on the requested
  batch but answer naming another one: ``wrong_batch_answer_id`` when set (any workspace), else
  the requested batch's neighbour in the listing (a batch id never seen when there is none).
- ``echo_credentials``: every ``/v1`` error answer echoes the credential the request carried
  (the ``x-api-key`` value, or the bearer token) in ``error.type``, ``error.message`` and the
  request id (body and ``request-id`` header), as a careless proxy would.
- ``cancel_race_rate`` / ``cancel_race_ids``: an in-progress batch ends on its own (naturally, all
  its requests processed) at the very moment a cancel arrives; the cancel is then refused with 400
  as for any ended batch, or, with ``cancel_ended_ok``, answered 200 with the ended batch and no
  ``cancel_initiated_at``.
- ``limit``: inject at most this many faults (of every kind but latency, the RPM limit, the
  results faults, the ``Date`` faults and ``echo_credentials``), then stop; None means no limit.
  With a rate of 1 this gives "the next N requests fail". The count restarts whenever faults are
  set.

The restriction by ``endpoints`` applies to every ``*_rate`` field.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Final

ENDPOINTS: Final = ("create", "list", "retrieve", "cancel", "delete", "results")

_RATES: Final = (
    "error_rate",
    "overloaded_share",
    "throttle_rate",
    "not_found_rate",
    "malformed_list_rate",
    "truncated_list_rate",
    "unknown_status_rate",
    "missing_fields_rate",
    "list_repeat_row_rate",
    "list_repeat_previous_rate",
    "wrong_batch_rate",
    "cancel_race_rate",
)
_ID_SETS: Final = (
    "not_found_ids",
    "results_short_ids",
    "results_truncate_ids",
    "results_corrupt_ids",
    "results_abort_ids",
    "wrong_batch_ids",
    "cancel_race_ids",
)
_FLAGS: Final = (
    "rate_limit_retry_after",
    "cancel_ended_ok",
    "delete_unfinished_conflict",
    "omit_date",
    "echo_credentials",
)
_BATCH_FIELDS: Final = frozenset(
    {
        "id",
        "type",
        "processing_status",
        "request_counts",
        "ended_at",
        "created_at",
        "expires_at",
        "archived_at",
        "cancel_initiated_at",
        "results_url",
    }
)


@dataclass(frozen=True, slots=True)
class Faults:
    """The whole fault configuration; see the module docstring for each field."""

    latency_ms: float = 0.0
    error_rate: float = 0.0
    overloaded_share: float = 0.5
    rate_limit_rpm: int = 0
    rate_limit_retry_after: bool = True
    throttle_rate: float = 0.0
    throttle_error_code: str | None = None
    should_retry: bool | None = None
    not_found_ids: frozenset[str] = frozenset()
    not_found_rate: float = 0.0
    not_found_young_seconds: float = 0.0
    endpoints: frozenset[str] = frozenset()
    results_short_ids: frozenset[str] = frozenset()
    results_truncate_ids: frozenset[str] = frozenset()
    results_corrupt_ids: frozenset[str] = frozenset()
    results_abort_ids: frozenset[str] = frozenset()
    malformed_list_rate: float = 0.0
    truncated_list_rate: float = 0.0
    unknown_status_rate: float = 0.0
    unknown_status: str = "archiving"
    missing_fields_rate: float = 0.0
    missing_fields: tuple[str, ...] = ("created_at",)
    cancel_ended_ok: bool = False
    delete_unfinished_conflict: bool = False
    clock_skew_seconds: float = 0.0
    omit_date: bool = False
    list_repeat_row_rate: float = 0.0
    list_repeat_previous_rate: float = 0.0
    wrong_batch_rate: float = 0.0
    wrong_batch_ids: frozenset[str] = frozenset()
    wrong_batch_answer_id: str | None = None
    echo_credentials: bool = False
    cancel_race_rate: float = 0.0
    cancel_race_ids: frozenset[str] = frozenset()
    limit: int | None = None

    def __post_init__(self) -> None:
        check(self)

    def applies_to(self, endpoint: str) -> bool:
        """Tell whether the rate-based faults may hit ``endpoint``."""
        return not self.endpoints or endpoint in self.endpoints

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form (sets as sorted lists) that ``from_json`` reads back."""
        data = asdict(self)
        for name, value in data.items():
            if isinstance(value, frozenset):
                data[name] = sorted(value)
            elif isinstance(value, tuple):
                data[name] = list(value)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Faults:
        """Build from the JSON form; absent fields take defaults; raise ValueError on bad input."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, value in data.items():
            if name in _ID_SETS or name == "endpoints":
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ValueError(f"{name}: expected a list of strings, got {value!r}")
                values[name] = frozenset(value)
            elif name == "missing_fields":
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ValueError(f"{name}: expected a list of strings, got {value!r}")
                values[name] = tuple(value)
            else:
                values[name] = value
        try:
            return cls(**values)
        except TypeError as exc:
            raise ValueError(str(exc)) from exc


def check(faults: Faults) -> None:
    """Raise ValueError naming the field, the value and what is accepted when a field is bad."""
    for name in _RATES:
        value = getattr(faults, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ValueError(f"{name}: expected a number from 0 to 1, got {value!r}")
    for name in ("latency_ms", "not_found_young_seconds"):
        value = getattr(faults, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e7:
            raise ValueError(f"{name}: expected a non-negative number, got {value!r}")
    rpm = faults.rate_limit_rpm
    if isinstance(rpm, bool) or not isinstance(rpm, int) or rpm < 0:
        raise ValueError(f"rate_limit_rpm: expected a whole number >= 0 (0: off), got {rpm!r}")
    limit = faults.limit
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit: expected null or a whole number >= 0, got {limit!r}")
    skew = faults.clock_skew_seconds
    if isinstance(skew, bool) or not isinstance(skew, int | float) or not abs(skew) <= 1e9:
        raise ValueError(f"clock_skew_seconds: expected a number of seconds, got {skew!r}")
    answer = faults.wrong_batch_answer_id
    if answer is not None and (not isinstance(answer, str) or not answer):
        raise ValueError(f"wrong_batch_answer_id: expected null or a batch id, got {answer!r}")
    for name in _FLAGS:
        if not isinstance(getattr(faults, name), bool):
            raise ValueError(f"{name}: expected true or false, got {getattr(faults, name)!r}")
    if faults.should_retry is not None and not isinstance(faults.should_retry, bool):
        raise ValueError(f"should_retry: expected null, true or false, got {faults.should_retry!r}")
    if faults.throttle_error_code is not None and not isinstance(faults.throttle_error_code, str):
        raise ValueError(
            f"throttle_error_code: expected null or a string, got {faults.throttle_error_code!r}"
        )
    if not isinstance(faults.unknown_status, str) or not faults.unknown_status:
        raise ValueError(
            f"unknown_status: expected a non-empty string, got {faults.unknown_status!r}"
        )
    bad_endpoints = sorted(set(faults.endpoints) - set(ENDPOINTS))
    if bad_endpoints:
        raise ValueError(f"endpoints: expected some of {' '.join(ENDPOINTS)}, got {bad_endpoints}")
    bad_fields = sorted(set(faults.missing_fields) - _BATCH_FIELDS)
    if bad_fields or "id" in faults.missing_fields:
        raise ValueError(
            f"missing_fields: expected batch fields other than id, got {bad_fields or ['id']}"
        )


class TokenBucket:
    """Requests per minute as a token bucket: at most ``rpm`` tokens, ``rpm``/60 more a second.

    Runs on a monotonic clock of its own, not the emulator's lifecycle clock: a test that freezes or
    jumps the batch clock must not freeze or flush the rate limit.
    """

    def __init__(self, rpm: int, monotonic: Callable[[], float]) -> None:
        self.rpm = rpm
        self._rate = rpm / 60.0
        self._tokens = float(rpm)
        self._monotonic = monotonic
        self._last = monotonic()

    def take(self) -> tuple[bool, int, float]:
        """Try to take one token: (allowed, tokens remaining, seconds until the bucket is full)."""
        now = self._monotonic()
        self._tokens = min(float(self.rpm), self._tokens + (now - self._last) * self._rate)
        self._last = now
        allowed = self._tokens >= 1.0
        if allowed:
            self._tokens -= 1.0
        return allowed, int(self._tokens), (self.rpm - self._tokens) / self._rate

    def retry_after(self) -> int:
        """Whole seconds until one token is available (at least 1)."""
        return max(1, math.ceil((1.0 - self._tokens) / self._rate))
