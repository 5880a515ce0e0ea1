"""The emulator's state: the API's operations, the lifecycle they trigger, seeding, the faults.

The batches and the clock live in ``BatchStore`` (``reaper.emulator.store``), which this extends;
the request counters (``stats``), create validation (``validation``) and the API's refusals
(``errors``) are modules of their own.

Every method is thread-safe (one lock): tests may poke the state directly while a uvicorn thread
serves it. Operations of the API raise ``RequestRejected`` carrying the status and error type the
API would answer with.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from reaper.emulator import seed as seeding
from reaper.emulator.clock import Clock, system_clock
from reaper.emulator.errors import RequestRejected, invalid, not_found
from reaper.emulator.faults import Faults, TokenBucket
from reaper.emulator.records import (
    CANCELING,
    ENDED,
    IN_PROGRESS,
    SECOND,
    BatchRecord,
    new_batch_id,
    new_request_id,
    to_us,
)
from reaper.emulator.stats import RequestStats
from reaper.emulator.store import BatchStore
from reaper.emulator.validation import validate_create

# A realistic-looking id for the key's own workspace (real ones: wrkspc_ + 24 characters).
DEFAULT_WORKSPACE: Final = "wrkspc_011CEmulatorDefault00001"
DEFAULT_ORGANIZATION: Final = "5f0c3a7e-1d2b-4e8f-9a6c-7b1e2d3f4a50"


class EmulatorState(BatchStore):
    """All batches, the clock, the fault configuration and the request counters of one emulator.

    The store and the clock (``BatchStore``) carry listing, lookup and inspection; this class adds
    the API's operations, the lifecycle they trigger, seeding and the fault switches.
    """

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
        super().__init__(clock)
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
        custom_ids, bad_params = validate_create(body)
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
            if record.status == IN_PROGRESS and self._cancel_races(batch_id):
                record.end_now(self.now_us())
            if record.status == IN_PROGRESS:
                record.start_cancel(self.now_us(), int(self.cancel_seconds * SECOND))
                record.settle(self.now_us())
            elif record.status == ENDED and not self._faults.cancel_ended_ok:
                raise invalid(f"Message batch {batch_id} has already ended and cannot be canceled.")
            elif record.status not in (CANCELING, ENDED):
                raise invalid(f"Message batch {batch_id} cannot be canceled in its current state.")
            return record

    def _cancel_races(self, batch_id: str) -> bool:
        faults = self._faults
        if batch_id in faults.cancel_race_ids and self.roll(1.0):
            return True
        return self.roll(faults.cancel_race_rate, "cancel")

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

    # -- seeding ----------------------------------------------------------------------------

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

    def reset(self) -> None:
        """Forget every batch, counter, fault and clock offset."""
        with self._lock:
            self._by_id.clear()
            self._lists.clear()
            self.stats = RequestStats()
            self.clock.reset()
            self.faults = Faults()


def _check_unique(records: list[BatchRecord]) -> None:
    seen: set[str] = set()
    for record in records:
        if record.id in seen:
            raise seeding.SeedError(f"duplicate batch id {record.id}")
        seen.add(record.id)


__all__ = [
    "DEFAULT_ORGANIZATION",
    "DEFAULT_WORKSPACE",
    "EmulatorState",
]
