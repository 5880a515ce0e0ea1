"""The emulator's store: batches by workspace, their clock-driven lifecycle, and request counters.

Each workspace keeps its batches in a ``SortedKeyList`` ordered by (-created_at, id), the listing
order, beside one dict id -> record for the whole store; so retrieve, delete and any list page cost
O(log n) with a million batches. The lifecycle is lazy: a batch is brought up to date (ended,
expired, archived) only when it is read, so a million batches cost nothing per clock tick; none of
its changes alters the sort key.

Every method is thread-safe (one lock): tests may poke the state directly while a uvicorn thread
serves it. Operations of the API raise ``RequestRejected`` carrying the status and error type the
API would answer with.
"""

from __future__ import annotations

import dataclasses
import operator
import random
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from sortedcontainers import SortedKeyList

from reaper.emulator import seed as seeding
from reaper.emulator.faults import Faults, TokenBucket
from reaper.emulator.records import (
    CANCELING,
    ENDED,
    IN_PROGRESS,
    SECOND,
    BatchRecord,
    from_us,
    new_batch_id,
    new_request_id,
    to_us,
)

Clock = Callable[[], datetime]

# A realistic-looking id for the key's own workspace (real ones: wrkspc_ + 24 characters).
DEFAULT_WORKSPACE: Final = "wrkspc_011CEmulatorDefault00001"
DEFAULT_ORGANIZATION: Final = "5f0c3a7e-1d2b-4e8f-9a6c-7b1e2d3f4a50"
MAX_REQUESTS: Final = 100_000  # per batch (OpenAPI CreateMessageBatchParams maxItems)
MUTATING: Final = ("create", "cancel", "delete")
_CUSTOM_ID: Final = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_MUTATION_LOG_SIZE: Final = 100_000


def system_clock() -> datetime:
    """Return the current time, aware, in UTC."""
    return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told: ``advance()`` or ``set()``."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start if start is not None else datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
        if self._now.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")

    def __call__(self) -> datetime:
        return self._now

    def advance(self, by: float | timedelta) -> datetime:
        """Move the clock forward by seconds or a timedelta; return the new time."""
        self._now += by if isinstance(by, timedelta) else timedelta(seconds=by)
        return self._now

    def set(self, when: datetime) -> None:
        """Set the clock to an aware datetime."""
        if when.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self._now = when


class RequestRejected(Exception):
    """An API request the real API would refuse: carries the HTTP status and the error type."""

    def __init__(
        self,
        status: int,
        error_type: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        error_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers = dict(headers or {})
        self.error_code = error_code

    def body(self, request_id: str) -> dict[str, Any]:
        """Return the API's error envelope."""
        error: dict[str, Any] = {"type": self.error_type, "message": self.message}
        if self.error_code is not None:
            error["details"] = {"error_code": self.error_code}
        return {"type": "error", "error": error, "request_id": request_id}


def not_found(batch_id: str) -> RequestRejected:
    """Return the 404 the API gives for an id it does not know (in this workspace)."""
    return RequestRejected(404, "not_found_error", f"No message batch found with id {batch_id!r}.")


def invalid(message: str) -> RequestRejected:
    """Return a 400 ``invalid_request_error``."""
    return RequestRejected(400, "invalid_request_error", message)


@dataclass(frozen=True, slots=True)
class Mutation:
    """One create, cancel or delete request as it was answered."""

    endpoint: str
    batch_id: str | None
    workspace: str | None
    status: int
    request_id: str


class RequestStats:
    """Counts of API requests by (endpoint, status), and a log of the mutating ones."""

    def __init__(self) -> None:
        self.by_status: Counter[tuple[str, int]] = Counter()
        # Bounded: a chaos run deleting a million batches must not grow without end.
        self.mutations: deque[Mutation] = deque(maxlen=_MUTATION_LOG_SIZE)

    def record(
        self,
        endpoint: str,
        status: int,
        request_id: str,
        *,
        batch_id: str | None = None,
        workspace: str | None = None,
    ) -> None:
        """Count one answered request (every status, faults included)."""
        self.by_status[(endpoint, status)] += 1
        if endpoint in MUTATING:
            self.mutations.append(Mutation(endpoint, batch_id, workspace, status, request_id))

    def count(self, endpoint: str | None = None, status: int | None = None) -> int:
        """Count the requests to ``endpoint`` (None: any) answered with ``status`` (None: any)."""
        return sum(
            n
            for (e, s), n in self.by_status.items()
            if (endpoint is None or e == endpoint) and (status is None or s == status)
        )

    def mutating(self, *, status: int | None = None) -> dict[str, int]:
        """Count create, cancel and delete requests (answered with ``status``, None: any)."""
        return {endpoint: self.count(endpoint, status) for endpoint in MUTATING}

    def to_json(self) -> dict[str, Any]:
        """Return the counters in a JSON-friendly shape."""
        return {
            "by_endpoint_status": [
                {"endpoint": e, "status": s, "count": n}
                for (e, s), n in sorted(self.by_status.items())
            ],
            "mutating": self.mutating(),
            "mutating_ok": self.mutating(status=200),
            "total": self.count(),
        }


@dataclass(frozen=True, slots=True)
class Page:
    """One list page: the batches (newest first) and whether more lie in the requested direction."""

    records: list[BatchRecord]
    has_more: bool


class EmulatorState:
    """All batches, the clock, the fault configuration and the request counters of one emulator."""

    def __init__(
        self,
        *,
        clock: Clock = system_clock,
        api_key: str | None = None,
        cancel_seconds: float = 10.0,
        processing_seconds: float = 60.0,
        latency_ms: float = 0.0,
        error_rate: float = 0.0,
        rate_limit_rpm: int = 0,
        faults: Faults | None = None,
        default_workspace: str = DEFAULT_WORKSPACE,
        workspaces: Iterable[str] | None = None,
        organization_id: str = DEFAULT_ORGANIZATION,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._offset = timedelta()
        self.api_key = api_key
        self.cancel_seconds = cancel_seconds
        self.processing_seconds = processing_seconds
        self.default_workspace = default_workspace
        # None: any workspace id is accepted; a set: only these (and the default), others get 403.
        self.workspaces: frozenset[str] | None = (
            None if workspaces is None else frozenset(workspaces) | {default_workspace}
        )
        self.organization_id = organization_id
        self.rng = rng if rng is not None else random.Random()
        self._fault_rng = random.Random(self.rng.random())
        self._monotonic = monotonic
        self._lock = threading.RLock()
        self._by_id: dict[str, BatchRecord] = {}
        self._lists: dict[str, SortedKeyList] = {}
        self.stats = RequestStats()
        self.faults_injected = 0
        self._bucket: TokenBucket | None = None
        # The three CLI fault flags are shorthands for fields of Faults.
        base = faults if faults is not None else Faults()
        base = dataclasses.replace(
            base,
            latency_ms=latency_ms or base.latency_ms,
            error_rate=error_rate or base.error_rate,
            rate_limit_rpm=rate_limit_rpm or base.rate_limit_rpm,
        )
        self._faults = base
        self.faults = base  # through the setter: builds the token bucket

    # -- clock ------------------------------------------------------------------------------

    def now(self) -> datetime:
        """Return the emulator's current time (the clock plus any control-surface offset)."""
        return self._clock() + self._offset

    def now_us(self) -> int:
        """Return the emulator's current time in microseconds since the epoch."""
        return to_us(self.now())

    def advance(self, seconds: float) -> datetime:
        """Move the emulator's time forward (an offset over the clock); return the new time."""
        with self._lock:
            self._offset += timedelta(seconds=seconds)
            return self.now()

    def set_time(self, when: datetime) -> datetime:
        """Make the emulator's time read ``when`` from now on (an offset over the clock)."""
        with self._lock:
            self._offset = when - self._clock()
            return self.now()

    # -- faults -----------------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        """The current fault configuration."""
        return self._faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        """Replace the whole configuration; restarts the fault count and refills the RPM bucket."""
        with self._lock:
            self._faults = value
            self.faults_injected = 0
            self._bucket = (
                TokenBucket(value.rate_limit_rpm, self._monotonic) if value.rate_limit_rpm else None
            )

    def roll(self, rate: float, endpoint: str | None = None) -> bool:
        """Decide whether to inject a fault of ``rate``; counts it against ``Faults.limit``."""
        faults = self._faults
        if rate <= 0 or (endpoint is not None and not faults.applies_to(endpoint)):
            return False
        with self._lock:
            if faults.limit is not None and self.faults_injected >= faults.limit:
                return False
            if rate < 1 and self._fault_rng.random() >= rate:
                return False
            self.faults_injected += 1
            return True

    def pick(self, share: float) -> bool:
        """Draw a yes with probability ``share`` from the fault generator (no counting)."""
        with self._lock:
            return self._fault_rng.random() < share

    def take_token(self) -> tuple[bool, int, float, int] | None:
        """Apply the RPM limit: None if off, else (allowed, remaining, s to full, retry-after)."""
        with self._lock:
            bucket = self._bucket
            if bucket is None:
                return None
            allowed, remaining, full = bucket.take()
            return allowed, remaining, full, bucket.retry_after()

    def request_id(self) -> str:
        """Return a fresh ``req_...`` id."""
        with self._lock:
            return new_request_id(self._fault_rng)

    # -- workspaces -------------------------------------------------------------------------

    def resolve_workspace(self, header: str | None) -> str:
        """Return the workspace a request acts in; 403 when the key may not act in the named one."""
        if not header:
            return self.default_workspace
        if self.workspaces is not None and header not in self.workspaces:
            # The real status for a workspace the credential cannot use is undocumented; 403
            # permission_error is the natural reading of "key lacks permission for the resource".
            raise RequestRejected(
                403, "permission_error", f"This API key cannot act in workspace {header!r}."
            )
        return header

    # -- the six operations -----------------------------------------------------------------

    def create(self, workspace: str, body: Any) -> BatchRecord:
        """Validate a create body and store a new in-progress batch."""
        custom_ids, bad_params = _validate_create(body)
        with self._lock:
            now = self.now_us()
            batch_id = new_batch_id(self.rng)
            while batch_id in self._by_id:  # pragma: no cover - 131 random bits
                batch_id = new_batch_id(self.rng)
            duration = self.processing_seconds * self.rng.uniform(0.5, 1.5)
            record = BatchRecord(
                batch_id=batch_id,
                workspace=workspace,
                created=now,
                status=IN_PROGRESS,
                total=len(custom_ids),
                end=None,
                natural_end=now + int(duration * SECOND),
                custom_ids=custom_ids,
                invalid=bad_params,
            )
            record.schedule()
            self._insert(record)
            return record

    def get(self, workspace: str, batch_id: str) -> BatchRecord:
        """Return a batch of ``workspace`` brought up to date; 404 when there is none."""
        with self._lock:
            record = self._by_id.get(batch_id)
            if record is None or record.workspace != workspace:
                raise not_found(batch_id)
            record.settle(self.now_us())
            return record

    def cancel(self, workspace: str, batch_id: str) -> BatchRecord:
        """Start cancelling an in-progress batch; a canceling one is returned unchanged."""
        with self._lock:
            record = self.get(workspace, batch_id)
            if record.status == IN_PROGRESS:
                record.start_cancel(self.now_us(), int(self.cancel_seconds * SECOND))
                record.settle(self.now_us())
            elif record.status == ENDED and not self._faults.cancel_ended_ok:
                raise invalid(f"Message batch {batch_id} has already ended and cannot be canceled.")
            elif record.status not in (CANCELING, ENDED):
                raise invalid(f"Message batch {batch_id} cannot be canceled in its current state.")
            return record

    def delete(self, workspace: str, batch_id: str) -> None:
        """Delete an ended batch; refuse one still processing (400, or 409 in conflict mode)."""
        with self._lock:
            record = self.get(workspace, batch_id)
            if record.status != ENDED:
                message = (
                    f"Message batch {batch_id} is still {record.status} and cannot be deleted; "
                    "cancel it and wait until it has ended."
                )
                if self._faults.delete_unfinished_conflict:
                    raise RequestRejected(409, "conflict_error", message)
                raise invalid(message)
            del self._by_id[batch_id]
            self._lists[workspace].remove(record)

    def page(self, workspace: str, limit: int, after_id: str | None, before_id: str | None) -> Page:
        """Return one list page, newest first, in O(log n + limit)."""
        if after_id is not None and before_id is not None:
            raise invalid("Only one of after_id and before_id may be given.")
        with self._lock:
            # Not _sorted(): a list in a workspace nobody used must not create an entry for it.
            batches = self._lists.get(workspace) or _EMPTY
            if before_id is not None:
                stop = batches.bisect_key_left(self._cursor(workspace, "before_id", before_id))
                start = max(0, stop - limit)
                has_more = start > 0
            else:
                start = (
                    0
                    if after_id is None
                    else batches.bisect_key_right(self._cursor(workspace, "after_id", after_id))
                )
                stop = min(len(batches), start + limit)
                has_more = stop < len(batches)
            records: list[BatchRecord] = list(batches.islice(start, stop))
            now = self.now_us()
            for record in records:
                record.settle(now)
            return Page(records, has_more)

    def _cursor(self, workspace: str, name: str, batch_id: str) -> tuple[int, str]:
        # An unknown or deleted cursor is refused: the real behaviour is undocumented (SPEC 6).
        anchor = self._by_id.get(batch_id)
        if anchor is None or anchor.workspace != workspace:
            raise invalid(f"{name}: no message batch with id {batch_id!r} in this workspace.")
        return anchor.key

    # -- seeding ----------------------------------------------------------------------------

    def add(self, records: Iterable[BatchRecord]) -> int:
        """Store ready-made records (ids must be new); return how many were added."""
        with self._lock:
            by_workspace: dict[str, list[BatchRecord]] = {}
            added = 0
            for record in records:
                if record.id in self._by_id:
                    raise ValueError(f"batch id {record.id} already exists")
                self._by_id[record.id] = record
                by_workspace.setdefault(record.workspace, []).append(record)
                added += 1
            for workspace, new in by_workspace.items():
                self._sorted(workspace).update(new)
            return added

    def seed_objects(self, objects: Iterable[Mapping[str, Any]]) -> list[str]:
        """Store API-shaped batch objects (see ``reaper.emulator.seed``); return their ids."""
        with self._lock:
            context = self._seed_context()
            records = []
            for index, obj in enumerate(objects):
                try:
                    records.append(seeding.record_from_object(obj, context))
                except seeding.SeedError as exc:
                    raise seeding.SeedError(f"batch {index}: {exc}") from exc
            _check_unique(records)
            self.add(records)
            return [r.id for r in records]

    def load_seed_file(self, path: str | Path) -> int:
        """Load a JSON Lines seed file; raise ``SeedError`` naming file:line and why."""
        with self._lock:
            records = list(seeding.read_seed_file(Path(path), self._seed_context()))
            return self.add(records)

    def seed_random(
        self,
        n: int,
        now: datetime | None = None,
        *,
        workspaces: Iterable[str] | None = None,
        days: float = 40.0,
    ) -> int:
        """Add a realistic mix of ``n`` batches created over the last ``days`` days."""
        with self._lock:
            at = self.now_us() if now is None else to_us(now)
            spread = tuple(workspaces) if workspaces else (self.default_workspace,)
            return self.add(
                seeding.random_records(
                    n,
                    rng=self.rng,
                    now=at,
                    workspaces=spread,
                    days=days,
                    cancel_seconds=self.cancel_seconds,
                    taken=self._by_id,
                )
            )

    def _seed_context(self) -> seeding.SeedContext:
        return seeding.SeedContext(
            now=self.now_us(),
            default_workspace=self.default_workspace,
            cancel_seconds=self.cancel_seconds,
            rng=self.rng,
            taken=self._by_id,
        )

    # -- inspection -------------------------------------------------------------------------

    def find(self, batch_id: str) -> BatchRecord | None:
        """Return any batch by id, whatever its workspace, brought up to date (None: no such)."""
        with self._lock:
            record = self._by_id.get(batch_id)
            if record is not None:
                record.settle(self.now_us())
            return record

    def __len__(self) -> int:
        return len(self._by_id)

    def iter_records(self, workspace: str | None = None) -> Iterator[BatchRecord]:
        """Yield the batches (of one workspace, or all), newest first per workspace, up to date.

        Iterates over a snapshot, so the store may change meanwhile.
        """
        with self._lock:
            now = self.now_us()
            names = [workspace] if workspace is not None else sorted(self._lists)
            snapshot = [r for name in names for r in self._lists.get(name, ())]
        for record in snapshot:
            record.settle(now)
            yield record

    def counts(self, workspace: str | None = None) -> dict[str, int]:
        """Count batches by processing status (one workspace or all)."""
        counter: Counter[str] = Counter(r.status for r in self.iter_records(workspace))
        return dict(sorted(counter.items()))

    def counts_by_workspace(self) -> dict[str, dict[str, int]]:
        """Count batches by workspace and processing status."""
        with self._lock:
            names = sorted(self._lists)
        return {name: self.counts(name) for name in names}

    def archived_count(self, workspace: str | None = None) -> int:
        """Count ended batches whose results are gone (past 29 days)."""
        now = self.now_us()
        return sum(1 for r in self.iter_records(workspace) if r.is_archived(now))

    def reset(self) -> None:
        """Forget every batch, counter, fault and clock offset."""
        with self._lock:
            self._by_id.clear()
            self._lists.clear()
            self.stats = RequestStats()
            self._offset = timedelta()
            self.faults = Faults()

    def _sorted(self, workspace: str) -> SortedKeyList:
        batches = self._lists.get(workspace)
        if batches is None:
            batches = self._lists[workspace] = SortedKeyList(key=_sort_key)
        return batches

    def _insert(self, record: BatchRecord) -> None:
        self._by_id[record.id] = record
        self._sorted(record.workspace).add(record)


_EMPTY: Final = SortedKeyList()

# C-level, so sorting a million seeds does not call a Python function two million times.
_sort_key = operator.attrgetter("key")


def _check_unique(records: list[BatchRecord]) -> None:
    seen: set[str] = set()
    for record in records:
        if record.id in seen:
            raise seeding.SeedError(f"duplicate batch id {record.id}")
        seen.add(record.id)


def _validate_create(body: Any) -> tuple[tuple[str, ...], dict[int, str]]:
    """Check a create body like the API's schema; return custom ids and the invalid params.

    Only the envelope is checked synchronously; like the real API, bad ``params`` do not fail the
    create but surface later as errored results (docs: "Test your batch requests").
    """
    if not isinstance(body, dict):
        raise invalid("Request body must be a JSON object.")
    extra = sorted(set(body) - {"requests"})
    if extra:
        raise invalid(f"{extra[0]}: Extra inputs are not permitted")
    requests = body.get("requests")
    if requests is None:
        raise invalid("requests: Field required")
    if not isinstance(requests, list):
        raise invalid("requests: Input should be a valid list")
    if not 1 <= len(requests) <= MAX_REQUESTS:
        raise invalid(
            f"requests: List should have between 1 and {MAX_REQUESTS} items, not {len(requests)}"
        )
    custom_ids: list[str] = []
    seen: set[str] = set()
    bad_params: dict[int, str] = {}
    for index, item in enumerate(requests):
        where = f"requests.{index}"
        if not isinstance(item, dict):
            raise invalid(f"{where}: Input should be a valid dictionary")
        extra = sorted(set(item) - {"custom_id", "params"})
        if extra:
            raise invalid(f"{where}.{extra[0]}: Extra inputs are not permitted")
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not _CUSTOM_ID.fullmatch(custom_id):
            raise invalid(
                f"{where}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
            )
        if custom_id in seen:
            raise invalid(f"{where}.custom_id: Duplicate custom_id {custom_id!r} in this batch")
        seen.add(custom_id)
        custom_ids.append(custom_id)
        params = item.get("params")
        if not isinstance(params, dict):
            raise invalid(f"{where}.params: Input should be a valid dictionary")
        problem = _params_problem(params)
        if problem is not None:
            bad_params[index] = problem
    return tuple(custom_ids), bad_params


def _params_problem(params: Mapping[str, Any]) -> str | None:
    """Return why the Messages API would reject ``params`` (checked when processed), or None."""
    for name in ("model", "max_tokens", "messages"):
        if name not in params:
            return f"{name}: Field required"
    if not isinstance(params["model"], str) or not params["model"]:
        return "model: Input should be a valid string"
    max_tokens = params["max_tokens"]
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    if not isinstance(params["messages"], list) or not params["messages"]:
        return "messages: at least one message is required"
    if params.get("stream") is True:
        return "stream: streaming is not supported in the Message Batches API"
    return None


__all__ = [
    "DEFAULT_WORKSPACE",
    "BatchRecord",
    "Clock",
    "EmulatorState",
    "ManualClock",
    "Page",
    "RequestRejected",
    "RequestStats",
    "from_us",
    "system_clock",
]
