"""One reaper cycle: list every batch, plan, apply the guards, act. Dry run is decided here only.

For each configured workspace, one after another: every page is listed and fed to the policy's
planner page by page (memory stays O(actions), whatever the number listed); if any page cannot be
read the workspace acts on nothing (fail closed). The plan's guards are reported (safety stop,
deferred actions), then its actions run on a fixed pool of ``concurrency`` workers: cancels first,
then deletes. A canceled batch is polled with backoff until it has ended, for at most
``cancel_wait_timeout``, and then deleted if ``delete_canceled``; the polls jump the queue of
deletes, so a long backlog never starves them.

Every decision the policy makes is acted on here and nowhere else, so the dry-run switch has exactly
one place to live: in a dry run not one cancel or delete request is sent.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import partial
from typing import Final, Protocol

import structlog
from prometheus_client import Gauge

from reaper.archive import ArchiveOutcome, Outcome, ResultsClient
from reaper.client import ApiError, InvalidRequestError, NotFoundError
from reaper.logs import Redactor
from reaper.metrics import Metrics, workspace_label
from reaper.models import CANCELING, ENDED, KNOWN_STATUSES, Batch, ModelError
from reaper.policy import Action, Decision, Plan, Planner, Policy, Rule, StopReason
from reaper.progress import Progress
from reaper.settings import Settings

# Poll a canceled batch after 1 s, then 2, 4, 8, 16, 30, 30 ...: a cancel usually settles within
# seconds, while a batch with long in-flight requests may take minutes; 30 s keeps the cost of a
# slow one at two requests a minute.
POLL_FIRST_SECONDS: Final = 1.0
POLL_MAX_SECONDS: Final = 30.0
# The real API has answered 404 for seconds on a batch that exists (API-NOTES §5): a 404 while
# waiting is not proof of deletion. After this many in a row, give up on the batch for this cycle.
NOT_FOUND_TOLERANCE: Final = 3
# Statuses an API answer can give to a refused cancel when the batch has meanwhile ended: 400
# (what the emulator and, by all accounts, the API send) and 409 (state conflict, in newer docs).
_REFUSED_STATUSES: Final = frozenset({400, 409})
# Log at most this many ids per summary line (deferred, left waiting, unknown statuses).
_ID_SAMPLE: Final = 10

# Queue priorities: cancels, polls and deletes of canceled batches before the backlog of deletes.
_URGENT: Final = 0
_BACKLOG: Final = 1

log = structlog.get_logger("reaper.cycle")


class CycleOutcome(StrEnum):
    """How a cycle ended (the ``outcome`` label of ``reaper_cycles_total``)."""

    SUCCESS = "success"
    PARTIAL = "partial"
    FAILED = "failed"
    SAFETY_STOP = "safety_stop"


class ActionOutcome(StrEnum):
    """What became of one planned action."""

    DONE = "done"
    FAILED = "failed"
    DRY_RUN = "dry_run"
    DEFERRED = "deferred"
    # Kept on purpose: the archive says the results are gone and REAPER_ARCHIVE_MISSING=keep.
    KEPT = "kept"


# The outcomes reaper_actions_total knows (SPEC §4); KEPT is counted by reaper_archive_total.
_METRIC_OUTCOMES: Final = frozenset(
    {ActionOutcome.DONE, ActionOutcome.FAILED, ActionOutcome.DRY_RUN, ActionOutcome.DEFERRED}
)
# SPEC §1, `reaper once`.
_EXIT_CODES: Final = {
    CycleOutcome.SUCCESS: 0,
    CycleOutcome.PARTIAL: 1,
    CycleOutcome.FAILED: 1,
    CycleOutcome.SAFETY_STOP: 3,
}


class CycleClient(ResultsClient, Protocol):
    """The part of ``reaper.client.BatchClient`` a cycle uses (a fake implements it in tests)."""

    @property
    def requests_made(self) -> Mapping[str, int]:
        """HTTP attempts so far, by endpoint."""
        ...

    def list_pages(self, workspace: str | None) -> AsyncIterator[list[Batch]]:
        """Yield every page of the workspace's batches; raise ApiError if one cannot be read."""
        ...

    async def cancel(self, batch_id: str, workspace: str | None) -> Batch:
        """Ask the API to cancel a batch; return the batch as the API answered."""
        ...

    async def delete(self, batch_id: str, workspace: str | None) -> None:
        """Delete a batch; raise NotFoundError on 404."""
        ...


class ArchiveHook(Protocol):
    """Save an ended batch's results before it is deleted (``reaper.archive.Archiver``)."""

    async def archive(self, batch: Batch, client: ResultsClient) -> ArchiveOutcome:
        """Archive the batch's results; ``ok_to_delete`` says whether it may now be deleted."""
        ...


@dataclass(frozen=True, slots=True)
class ActionFailure:
    """One action that failed, with what the API said (never a header, never the key)."""

    batch_id: str
    workspace: str | None
    action: Action
    error_type: str
    status: int | None
    request_id: str | None
    message: str


@dataclass(frozen=True, slots=True)
class ListingFailure:
    """A workspace whose listing could not be completed: nothing was done in it."""

    workspace: str | None
    pages_read: int
    error_type: str
    status: int | None
    request_id: str | None
    message: str


@dataclass(frozen=True, slots=True)
class SafetyStop:
    """A workspace where the fraction guard stopped every deletion."""

    workspace: str | None
    planned_deletes: int
    listed: int
    max_delete_fraction: float


# repr=False: the generated repr spells out every Decision of every plan (~150 MB for 100,000
# actions), and asyncio.run builds it whenever it returns a report (signal.signal formats the
# old SIGINT handler, which holds the finished task, into an error message it then discards).
@dataclass(frozen=True, repr=False)
class CycleReport:
    """What one cycle saw and did: ``summary_text`` for people, ``exit_code`` for ``once``."""

    cycle_id: str
    outcome: CycleOutcome
    dry_run: bool
    plans: tuple[Plan, ...]
    counts: Mapping[tuple[Action, Rule, ActionOutcome], int]
    failures: tuple[ActionFailure, ...]
    listing_failures: tuple[ListingFailure, ...]
    safety_stops: tuple[SafetyStop, ...]
    # Canceled batches not seen to end within the wait (still canceling, or answering 404 past
    # the tolerance): later cycles see them again and apply the policy.
    still_ending: int
    duration_seconds: float
    requests: Mapping[str, int]
    # The text of an unexpected exception that ended the cycle early, if any.
    error: str | None = None

    @property
    def listed(self) -> int:
        """Batches listed across every workspace."""
        return sum(plan.listed for plan in self.plans)

    def __repr__(self) -> str:
        """Name the report in one short line (see ``repr=False`` above)."""
        return (
            f"<CycleReport {self.cycle_id} {self.outcome} listed={self.listed}"
            f" failures={len(self.failures)} duration={self.duration_seconds:.3f}s>"
        )

    def count(self, action: Action | None = None, outcome: ActionOutcome | None = None) -> int:
        """Sum the action counts matching ``action`` and ``outcome`` (None matches any)."""
        return sum(
            n
            for (a, _rule, o), n in self.counts.items()
            if (action is None or a is action) and (outcome is None or o is outcome)
        )

    def exit_code(self) -> int:
        """Map the outcome to SPEC §1: 0 all done, 1 failed or partial, 3 safety stop."""
        return _EXIT_CODES[self.outcome]

    def summary_text(self) -> str:
        """Describe the cycle in one paragraph for a person."""
        return " ".join(_summary_sentences(self))


def _summary_sentences(report: CycleReport) -> Iterable[str]:
    done, failed = ActionOutcome.DONE, ActionOutcome.FAILED
    workspaces = len(report.plans)
    if report.dry_run:
        yield "DRY RUN: nothing was changed (set REAPER_DRY_RUN=false to act)."
    yield (
        f"Listed {report.listed:,} batches in {workspaces} workspace{_s(workspaces)}"
        f" in {report.duration_seconds:.1f} s."
    )
    if report.dry_run:
        yield (
            f"Would cancel {report.count(Action.CANCEL, ActionOutcome.DRY_RUN):,}"
            f" and delete {report.count(Action.DELETE, ActionOutcome.DRY_RUN):,} batches."
        )
    else:
        after_cancel = sum(
            n
            for (a, rule, o), n in report.counts.items()
            if a is Action.DELETE and o is done and rule is Rule.STALE
        )
        yield (
            f"Canceled {report.count(Action.CANCEL, done):,} and deleted"
            f" {report.count(Action.DELETE, done):,} batches"
            + (f" ({after_cancel:,} of them once canceled)." if after_cancel else ".")
        )
    n_failed = report.count(outcome=failed)
    if n_failed:
        sample = "; ".join(
            f"{f.action} {f.batch_id}: {f.error_type}"
            + (f" {f.status}" if f.status is not None else "")
            + (f" (request {f.request_id})" if f.request_id else "")
            for f in report.failures[:3]
        )
        yield f"{n_failed:,} action{_s(n_failed)} failed, e.g. {sample}."
    deferred = report.count(outcome=ActionOutcome.DEFERRED)
    if deferred:
        yield (
            f"{deferred:,} action{_s(deferred)} deferred past REAPER_MAX_ACTIONS_PER_RUN"
            " to later cycles."
        )
    if report.still_ending:
        yield (
            f"{report.still_ending:,} canceled batch{_es(report.still_ending)} not seen to end"
            " within REAPER_CANCEL_WAIT_TIMEOUT, left to later cycles."
        )
    kept = report.count(outcome=ActionOutcome.KEPT)
    if kept:
        yield f"{kept:,} kept because their results are gone and REAPER_ARCHIVE_MISSING=keep."
    for stop in report.safety_stops:
        share = stop.planned_deletes / stop.listed if stop.listed else 0.0
        yield (
            f"SAFETY STOP in workspace {workspace_label(stop.workspace)}: {stop.planned_deletes:,}"
            f" of {stop.listed:,} listed batches ({share:.0%}) were due for deletion, more than"
            f" REAPER_MAX_DELETE_FRACTION={stop.max_delete_fraction:g}; nothing was deleted there."
        )
    for lf in report.listing_failures:
        yield (
            f"LISTING FAILED in workspace {workspace_label(lf.workspace)} after"
            f" {lf.pages_read:,} page{_s(lf.pages_read)} ({lf.error_type}"
            + (f" {lf.status}" if lf.status is not None else "")
            + (f", request {lf.request_id}" if lf.request_id else "")
            + "): nothing was done there."
        )
    if report.error:
        yield f"The cycle stopped on an unexpected error: {report.error}."
    requests = ", ".join(f"{endpoint} {n:,}" for endpoint, n in sorted(report.requests.items()))
    yield f"Requests: {requests or 'none'}."
    yield f"Outcome: {report.outcome} (exit {report.exit_code()})."


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def _es(n: int) -> str:
    return "" if n == 1 else "es"


async def run_cycle(
    settings: Settings,
    client: CycleClient,
    *,
    metrics: Metrics,
    now: Callable[[], datetime],
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    progress: Progress | None = None,
    archiver: ArchiveHook | None = None,
    stop: asyncio.Event | None = None,
) -> CycleReport:
    """Run one cycle over every configured workspace and return its report.

    Once ``stop`` is set (the daemon got SIGTERM), no new cancel and no backlog delete starts:
    requests in flight finish and are recorded, batches already canceled are still waited for
    and deleted, the rest is left to the next start (counted as deferred), and the cycle returns
    as soon as that is done instead of running into the shutdown grace.

    Never raises for a failure of the API or of one action; an unexpected exception ends the
    cycle early as ``failed`` (with the exception in the log and the report). ``now`` and
    ``sleep`` are the clock and the pause used for the cancel wait, so tests can drive both.
    """
    cycle_id = secrets.token_hex(4)
    started = time.monotonic()
    requests_before = Counter(client.requests_made)
    tally = _Tally()
    # Exception text bound for the report (which `once` prints) may quote the key; the log
    # masks its own lines. One Redactor a cycle: it precomputes the key's fragments.
    redact = _redactor(settings)
    error: str | None = None
    with structlog.contextvars.bound_contextvars(cycle_id=cycle_id):
        log.info(
            "cycle.started",
            dry_run=settings.dry_run,
            workspaces=[workspace_label(ws) for ws in settings.workspaces],
        )
        try:
            # An archive directory with no archiver would delete results nobody saved.
            if settings.archive_dir is not None and archiver is None and not settings.dry_run:
                raise RuntimeError("REAPER_ARCHIVE_DIR is set but the cycle was given no archiver")
            policy = Policy.from_settings(settings)
            for workspace in settings.workspaces:
                if stop is not None and stop.is_set():
                    break  # shutting down: the next start sweeps the rest
                metrics.init_workspace(workspace)
                with structlog.contextvars.bound_contextvars(workspace=workspace_label(workspace)):
                    sweep = _Sweep(
                        settings=settings,
                        policy=policy,
                        client=client,
                        metrics=metrics,
                        now=now,
                        sleep=sleep,
                        progress=progress,
                        archiver=archiver,
                        tally=tally,
                        workspace=workspace,
                        redact=redact,
                        stop=stop,
                    )
                    await sweep.run()
        except asyncio.CancelledError:
            # Shutdown past its grace: say how far the cycle got before going.
            done = sum(n for (_a, _r, o), n in tally.counts.items() if o is ActionOutcome.DONE)
            log.warning("cycle.cancelled", actions_done=done, failures=len(tally.failures))
            raise
        except Exception as exc:  # the daemon must survive a bug in one cycle; it is logged loudly
            error = redact(f"{type(exc).__name__}: {exc}")
            log.exception("cycle.crashed", error=error)
        finally:
            if progress is not None:
                progress.close()
        duration = time.monotonic() - started
        requests = Counter(client.requests_made)
        requests.subtract(requests_before)
        report = CycleReport(
            cycle_id=cycle_id,
            outcome=tally.outcome(crashed=error is not None),
            dry_run=settings.dry_run,
            plans=tuple(tally.plans),
            counts=dict(tally.counts),
            failures=tuple(tally.failures),
            listing_failures=tuple(tally.listing_failures),
            safety_stops=tuple(tally.safety_stops),
            still_ending=tally.still_ending,
            duration_seconds=duration,
            requests={endpoint: n for endpoint, n in requests.items() if n > 0},
            error=error,
        )
        metrics.cycles.labels(outcome=report.outcome.value).inc()
        metrics.cycle_duration.observe(duration)
        if report.outcome is CycleOutcome.SUCCESS:
            metrics.last_success.set(now().timestamp())
        by_outcome: Counter[str] = Counter()
        for (action, _rule, outcome), n in report.counts.items():
            by_outcome[f"{action}.{outcome}"] += n
        log.info(
            "cycle.finished",
            outcome=report.outcome.value,
            dry_run=report.dry_run,
            listed=report.listed,
            actions=dict(sorted(by_outcome.items())),
            still_ending=report.still_ending,
            duration=round(duration, 3),  # seconds (SPEC section 5: "duration")
            requests=dict(sorted(report.requests.items())),
        )
    return report


class _Tally:
    """What the workspaces of one cycle add up to."""

    def __init__(self) -> None:
        self.plans: list[Plan] = []
        self.counts: Counter[tuple[Action, Rule, ActionOutcome]] = Counter()
        self.failures: list[ActionFailure] = []
        self.listing_failures: list[ListingFailure] = []
        self.safety_stops: list[SafetyStop] = []
        self.still_ending = 0

    def outcome(self, *, crashed: bool) -> CycleOutcome:
        if crashed or self.listing_failures:
            return CycleOutcome.FAILED
        if self.safety_stops:
            return CycleOutcome.SAFETY_STOP
        if any(o is ActionOutcome.FAILED for (_a, _r, o) in self.counts):
            return CycleOutcome.PARTIAL
        return CycleOutcome.SUCCESS


@dataclass(slots=True)
class _Waiting:
    """A batch this cycle canceled, polled until it has ended."""

    decision: Decision
    not_found: int = 0


class _WorkerPool:
    """A fixed number of workers running queued jobs, most urgent first, in submission order."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._queue: asyncio.PriorityQueue[tuple[int, int, Callable[[], Awaitable[None]] | None]]
        self._queue = asyncio.PriorityQueue()
        self._order = itertools.count()

    def submit(self, priority: int, job: Callable[[], Awaitable[None]]) -> None:
        """Queue a job; it must handle its own errors."""
        self._queue.put_nowait((priority, next(self._order), job))

    async def run_all(self, priority: int, jobs: Iterable[Callable[[], Awaitable[None]]]) -> None:
        """Queue the jobs and wait until every one of them has run."""
        loop = asyncio.get_running_loop()
        finished: list[asyncio.Future[None]] = []
        for job in jobs:
            future: asyncio.Future[None] = loop.create_future()
            self.submit(priority, _completing(job, future))
            finished.append(future)
        if finished:
            await asyncio.wait(finished)

    async def work(self) -> None:
        """Run jobs until told to stop."""
        while True:
            _priority, _order, job = await self._queue.get()
            try:
                if job is None:
                    return
                await job()
            finally:
                self._queue.task_done()

    async def drain(self) -> None:
        """Wait until every queued job (and every job those queued) has run, then stop."""
        await self._queue.join()
        for _ in range(self.size):
            self._queue.put_nowait((_BACKLOG + 1, next(self._order), None))


def _completing(
    job: Callable[[], Awaitable[None]], future: asyncio.Future[None]
) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        try:
            await job()
        finally:
            if not future.done():
                future.set_result(None)

    return run


class _Sweep:
    """List, plan, guard and act on one workspace."""

    def __init__(
        self,
        *,
        settings: Settings,
        policy: Policy,
        client: CycleClient,
        metrics: Metrics,
        now: Callable[[], datetime],
        sleep: Callable[[float], Awaitable[object]],
        progress: Progress | None,
        archiver: ArchiveHook | None,
        tally: _Tally,
        workspace: str | None,
        redact: Redactor,
        stop: asyncio.Event | None = None,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.client = client
        self.metrics = metrics
        self.now = now
        self.sleep = sleep
        self.progress = progress
        self.archiver = archiver
        self.tally = tally
        self.workspace = workspace
        self.redact = redact
        self.stop = stop if stop is not None else asyncio.Event()
        self.label = workspace_label(workspace)
        self.safety_stop = False
        self._pool = _WorkerPool(settings.concurrency)
        self._waiting: dict[str, _Waiting] = {}
        self._cancels_left = 0
        self._cancels_finished = asyncio.Event()

    async def run(self) -> None:
        plan = await self._list_and_plan()
        self.tally.plans.append(plan)
        if plan.stop is StopReason.INCOMPLETE_LISTING:
            return
        self._record_plan(plan)
        self._apply_guards(plan)
        deletes = () if self.safety_stop else plan.deletes
        if self.progress is not None:
            self.progress.planned(len(plan.cancels) + len(deletes))
        if self.settings.dry_run:
            self._pretend(plan.cancels, deletes)
        else:
            await self._act(plan.cancels, deletes)

    # -- listing and planning ---------------------------------------------------------------

    async def _list_and_plan(self) -> Plan:
        started = time.monotonic()
        # The clock is read once, before listing: a batch is judged by its age when the listing
        # began, which errs on the side of keeping it.
        planner = Planner(self.policy, self.now(), workspace=self.workspace)
        pages = listed = 0
        failure: ApiError | ModelError | None = None
        try:
            async for page in self.client.list_pages(self.workspace):
                planner.add(page)
                pages += 1
                listed += len(page)
                if self.progress is not None:
                    self.progress.listed(self.workspace, pages, listed)
        except (ApiError, ModelError) as exc:
            failure = exc
        plan = planner.finish(complete=failure is None)
        seconds = round(time.monotonic() - started, 3)
        if failure is not None:
            self._listing_failed(failure, pages, listed, seconds)
            return plan
        log.info(
            "workspace.listed",
            workspace=self.label,
            listed=plan.listed,
            pages=pages,
            statuses=dict(sorted(plan.status_counts.items())),
            cancels=len(plan.cancels),
            deletes=len(plan.deletes),
            deferred=len(plan.deferred),
            stop=None if plan.stop is None else plan.stop.value,
            seconds=seconds,
        )
        return plan

    def _listing_failed(
        self, failure: ApiError | ModelError, pages: int, listed: int, seconds: float
    ) -> None:
        if isinstance(failure, ApiError):
            error_type, status, request_id = failure.error_type, failure.status, failure.request_id
        else:
            error_type, status, request_id = "unreadable_batch", None, None
        self.tally.listing_failures.append(
            ListingFailure(
                workspace=self.workspace,
                pages_read=pages,
                error_type=error_type,
                status=status,
                request_id=request_id,
                message=str(failure),
            )
        )
        log.error(
            "listing.failed",
            workspace=self.label,
            pages_read=pages,
            batches_read=listed,
            error_type=error_type,
            status=status,
            request_id=request_id,
            error=str(failure),
            seconds=seconds,
            consequence="fail closed: no action in this workspace this cycle",
        )

    def _record_plan(self, plan: Plan) -> None:
        now = plan.now  # ages as the policy saw them
        ws = self.label
        seen = set(plan.status_counts)
        for status in KNOWN_STATUSES | seen:
            self.metrics.batches.labels(ws, status).set(plan.status_counts.get(status, 0))
        # A status that vanished (an unknown one from an earlier cycle) must not linger as a series.
        for status in _series_statuses(self.metrics.batches, ws) - KNOWN_STATUSES - seen:
            self.metrics.batches.remove(ws, status)
        for status, created in plan.oldest_created.items():
            age = max(0.0, (now - created).total_seconds())
            self.metrics.oldest_batch_age.labels(ws, status).set(age)
        for status in _series_statuses(self.metrics.oldest_batch_age, ws) - set(
            plan.oldest_created
        ):
            self.metrics.oldest_batch_age.remove(ws, status)
        for (action, rule), n in plan.decision_counts.items():
            self.metrics.decisions.labels(ws, action.value, rule.value).inc(n)
        if plan.unknown_statuses:
            unknown = Counter(b.processing_status for b in plan.unknown_statuses)
            log.warning(
                "batch.unknown_status",
                workspace=ws,
                count=len(plan.unknown_statuses),
                statuses=dict(unknown),
                ids=[b.id for b in plan.unknown_statuses[:_ID_SAMPLE]],
                consequence="kept",
            )

    # -- guards --------------------------------------------------------------------------------

    def _apply_guards(self, plan: Plan) -> None:
        if plan.stop is StopReason.SAFETY_STOP:
            self.safety_stop = True
            planned = plan.count(Action.DELETE)
            stop = SafetyStop(
                workspace=self.workspace,
                planned_deletes=planned,
                listed=plan.listed,
                max_delete_fraction=self.policy.max_delete_fraction,
            )
            self.tally.safety_stops.append(stop)
            self.metrics.safety_stops.labels(self.label, "delete_fraction").inc()
            log.warning(
                "safety.stop",
                workspace=self.label,
                planned_deletes=planned,
                listed=plan.listed,
                fraction=round(planned / plan.listed, 4) if plan.listed else 0.0,
                max_delete_fraction=self.policy.max_delete_fraction,
                consequence="no deletion in this workspace this cycle",
            )
        if plan.deferred:
            for d in plan.deferred:
                self._count(d.action, d.rule, ActionOutcome.DEFERRED)
            log.warning(
                "actions.deferred",
                workspace=self.label,
                cancels=sum(1 for d in plan.deferred if d.action is Action.CANCEL),
                deletes=sum(1 for d in plan.deferred if d.action is Action.DELETE),
                max_actions_per_run=self.policy.max_actions_per_run,
                ids=[d.batch.id for d in plan.deferred[:_ID_SAMPLE]],
            )

    # -- dry run -------------------------------------------------------------------------------

    def _pretend(self, cancels: Iterable[Decision], deletes: Iterable[Decision]) -> None:
        then_delete = self.settings.delete_canceled and not self.safety_stop
        for d in cancels:
            self._log_action(d, Action.CANCEL, ActionOutcome.DRY_RUN, then_delete=then_delete)
            self._count(d.action, d.rule, ActionOutcome.DRY_RUN)
            self._acted()
        for d in deletes:
            self._log_action(d, Action.DELETE, ActionOutcome.DRY_RUN)
            self._count(d.action, d.rule, ActionOutcome.DRY_RUN)
            self._acted()

    # -- acting --------------------------------------------------------------------------------

    async def _act(self, cancels: Iterable[Decision], deletes: Iterable[Decision]) -> None:
        for d in cancels:
            self._cancels_left += 1
            self._pool.submit(_URGENT, self._guarded(d, Action.CANCEL, partial(self._cancel, d)))
        if not self._cancels_left:
            self._cancels_finished.set()
        for d in deletes:
            job = self._guarded(d, Action.DELETE, partial(self._delete, d, d.batch))
            self._pool.submit(_BACKLOG, job)
        async with asyncio.TaskGroup() as workers:
            for _ in range(self._pool.size):
                workers.create_task(self._pool.work())
            await self._wait_for_canceled()
            await self._pool.drain()

    def _guarded(
        self,
        d: Decision,
        action: Action,
        work: Callable[[], Awaitable[None]],
        *,
        finishing: bool = False,
    ) -> Callable[[], Awaitable[None]]:
        """Wrap an action so that an unexpected error fails that action only.

        After a stop only ``finishing`` work still starts: deleting a batch this cycle canceled.
        Left for later, such a batch would end with a fresh ``ended_at`` and be kept for the whole
        ended retention; the shutdown grace bounds that last wait.
        """

        async def job() -> None:
            try:
                if self.stop.is_set() and not finishing:  # shutting down: start nothing new
                    self._count(action, d.rule, ActionOutcome.DEFERRED)
                    return
                await work()
            except Exception as exc:  # one failed action never stops the others
                self._failed(d, action, exc)
            finally:
                if action is Action.CANCEL:  # the cancel wait starts once every cancel is sent
                    self._cancels_left -= 1
                    if not self._cancels_left:
                        self._cancels_finished.set()

        return job

    async def _cancel(self, d: Decision) -> None:
        note: str | None = None
        try:
            batch = await self.client.cancel(d.batch.id, self.workspace)
        except asyncio.CancelledError:
            self._log_interrupted(d, Action.CANCEL)
            raise
        except ApiError as exc:
            if not _is_refusal(exc):
                self._failed(d, Action.CANCEL, exc)
                return
            confirmed = await self._confirm_refused_cancel(d, exc)
            if confirmed is None:
                return
            batch, note = confirmed, "already_" + confirmed.processing_status
        self._count(Action.CANCEL, d.rule, ActionOutcome.DONE)
        self._log_action(
            d, Action.CANCEL, ActionOutcome.DONE, status=batch.processing_status, note=note
        )
        self._acted()
        if not self.settings.delete_canceled or self.safety_stop:
            return  # nothing to do once it ends: no need to wait for it
        if batch.processing_status == ENDED:
            self._ended(d, batch)
        else:
            self._waiting[d.batch.id] = _Waiting(d)

    async def _confirm_refused_cancel(self, d: Decision, refusal: ApiError) -> Batch | None:
        """After a refused cancel, return the batch if it has ended or is canceling, else fail."""
        # The batch may have ended between the listing and the cancel; the API refuses to cancel
        # an ended batch, which is what we wanted anyway. Ask rather than assume.
        try:
            batch = await self.client.retrieve(d.batch.id, self.workspace)
        except ApiError:
            self._failed(d, Action.CANCEL, refusal)
            return None
        if batch.processing_status in (ENDED, CANCELING):
            return batch
        self._failed(d, Action.CANCEL, refusal)
        return None

    def _ended(self, d: Decision, batch: Batch) -> None:
        """Delete a batch this cycle canceled, now that it has ended."""
        if self.progress is not None:
            self.progress.planned(1)
        delete = partial(self._delete, d, batch)
        self._pool.submit(_URGENT, self._guarded(d, Action.DELETE, delete, finishing=True))

    async def _delete(self, d: Decision, batch: Batch) -> None:
        if self.archiver is not None:
            saved = await self.archiver.archive(batch, self.client)
            if not saved.ok_to_delete:
                if saved.outcome is Outcome.MISSING:
                    self._count(Action.DELETE, d.rule, ActionOutcome.KEPT)
                    self._log_action(d, Action.DELETE, ActionOutcome.KEPT, note=saved.reason)
                    self._acted()
                else:
                    self._failed(d, Action.DELETE, _ArchiveFailed(saved))
                return
        try:
            gone_already = await self._send_delete(batch)
        except asyncio.CancelledError:
            self._log_interrupted(d, Action.DELETE)
            raise
        except ApiError as exc:
            self._failed(d, Action.DELETE, exc)
            return
        note = "already_gone" if gone_already else None
        self._count(Action.DELETE, d.rule, ActionOutcome.DONE)
        if note is None and d.eligible_at is not None:
            lag = (self.now() - d.eligible_at).total_seconds()
            self.metrics.delete_lag.labels(self.label).observe(max(0.0, lag))
        self._log_action(
            d, Action.DELETE, ActionOutcome.DONE, note=note, after_cancel=d.action is Action.CANCEL
        )
        self._acted()

    async def _send_delete(self, batch: Batch) -> bool:
        """Delete the batch; return True when it was already gone, raise ApiError on failure.

        SPEC §3 counts a delete answered 404 as done (someone was faster), but the API is known
        to answer 404 for batches that exist (API-NOTES §5): trusting one would leave the batch
        behind, and a canceled one then lives on with a fresh ``ended_at`` for the whole
        retention. So a 404 is checked with retrieves: the batch counts as gone after
        NOT_FOUND_TOLERANCE + 1 answers of 404 in a row, and is deleted again if a retrieve finds
        it. Costs nothing unless a delete is answered 404.
        """
        refused = 0
        while True:
            try:
                await self.client.delete(batch.id, self.workspace)
                return False
            except NotFoundError:
                refused += 1
                if refused > NOT_FOUND_TOLERANCE:
                    raise  # a retrieve keeps finding it, yet every delete answers 404
            for _ in range(NOT_FOUND_TOLERANCE):
                try:
                    await self.client.retrieve(batch.id, self.workspace)
                except NotFoundError:
                    continue
                break  # still there: that 404 was transient, delete it again
            else:
                return True

    async def _wait_for_canceled(self) -> None:
        """Poll the canceled batches with backoff until they end or the wait runs out."""
        await self._cancels_finished.wait()
        if not self._waiting:
            return
        deadline = self.now() + self.settings.cancel_wait_timeout
        delay = POLL_FIRST_SECONDS
        while self._waiting:
            remaining = (deadline - self.now()).total_seconds()
            if remaining <= 0:
                break
            await self.sleep(min(delay, remaining))
            delay = min(delay * 2, POLL_MAX_SECONDS)
            polls = [self._poller(w) for w in list(self._waiting.values())]
            await self._pool.run_all(_URGENT, polls)
        if self._waiting:
            left = list(self._waiting)
            self.tally.still_ending += len(left)
            log.warning(
                "cancel.wait_timeout",
                workspace=self.label,
                batches=len(left),
                ids=left[:_ID_SAMPLE],
                timeout_seconds=self.settings.cancel_wait_timeout.total_seconds(),
                consequence="left to later cycles",
            )
            self._waiting.clear()

    def _poller(self, waiting: _Waiting) -> Callable[[], Awaitable[None]]:
        async def poll() -> None:
            d = waiting.decision
            try:
                batch = await self.client.retrieve(d.batch.id, self.workspace)
            except NotFoundError as exc:
                waiting.not_found += 1
                if waiting.not_found > NOT_FOUND_TOLERANCE:
                    del self._waiting[d.batch.id]
                    self.tally.still_ending += 1
                    log.warning(
                        "cancel.wait_abandoned",
                        id=d.batch.id,
                        workspace=self.label,
                        not_found=waiting.not_found,
                        request_id=exc.request_id,
                        consequence="left to later cycles",
                    )
                return
            except ApiError as exc:  # still canceled; the next poll or a later cycle will tell
                log.info(
                    "cancel.poll_failed",
                    id=d.batch.id,
                    error_type=exc.error_type,
                    status=exc.status,
                    request_id=exc.request_id,
                )
                return
            waiting.not_found = 0
            if batch.processing_status == ENDED:
                del self._waiting[d.batch.id]
                self._ended(d, batch)

        return poll

    # -- records -------------------------------------------------------------------------------

    def _count(self, action: Action, rule: Rule, outcome: ActionOutcome) -> None:
        self.tally.counts[(action, rule, outcome)] += 1
        if outcome in _METRIC_OUTCOMES:
            self.metrics.actions.labels(self.label, action.value, outcome.value).inc()

    def _acted(self) -> None:
        if self.progress is not None:
            self.progress.acted()

    def _log_action(
        self,
        d: Decision,
        action: Action,
        outcome: ActionOutcome,
        **fields: object,
    ) -> None:
        age = (self.now() - d.batch.created_at).total_seconds()
        log.info(
            f"batch.{action.value}",
            id=d.batch.id,
            rule=d.rule.value,
            age=round(age),  # seconds since created_at (SPEC section 5: "age")
            dry_run=self.settings.dry_run,
            workspace=self.label,
            outcome=outcome.value,
            **{k: v for k, v in fields.items() if v is not None and v is not False},
        )

    def _log_interrupted(self, d: Decision, action: Action) -> None:
        """Log an action cut short by shutdown: its request may have reached the API or not."""
        # Without this line a delete the API performed just before the cancellation would be
        # in no log at all; the next cycle finds out which it was (a 404 there counts as done).
        log.warning(
            f"batch.{action.value}",
            id=d.batch.id,
            rule=d.rule.value,
            dry_run=self.settings.dry_run,
            workspace=self.label,
            outcome="interrupted",
            note="shutdown cut the request short; it may or may not have been carried out",
        )

    def _failed(self, d: Decision, action: Action, exc: Exception) -> None:
        if isinstance(exc, ApiError):
            error_type, status, request_id = exc.error_type, exc.status, exc.request_id
        elif isinstance(exc, _ArchiveFailed):
            error_type, status, request_id = "archive_failed", None, exc.outcome.request_id
        else:
            error_type, status, request_id = type(exc).__name__, None, None
        self.tally.failures.append(
            ActionFailure(
                batch_id=d.batch.id,
                workspace=self.workspace,
                action=action,
                error_type=error_type,
                status=status,
                request_id=request_id,
                message=self.redact(str(exc)),
            )
        )
        self._count(action, d.rule, ActionOutcome.FAILED)
        expected = isinstance(exc, ApiError | _ArchiveFailed)
        log.warning(
            "action.failed",
            id=d.batch.id,
            action=action.value,
            rule=d.rule.value,
            workspace=self.label,
            error_type=error_type,
            status=status,
            request_id=request_id,
            error=str(exc),
            exc_info=not expected,
        )
        self._acted()


class _ArchiveFailed(Exception):
    """The archive could not save the results: the batch is kept and retried next cycle."""

    def __init__(self, outcome: ArchiveOutcome) -> None:
        super().__init__(f"results not archived: {outcome.reason}")
        self.outcome = outcome


def _redactor(settings: Settings) -> Redactor:
    """Return the masker of the settings' key."""
    key = settings.api_key_value()
    return Redactor([key] if key else [])


def _is_refusal(exc: ApiError) -> bool:
    return isinstance(exc, InvalidRequestError) or exc.status in _REFUSED_STATUSES


def _series_statuses(gauge: Gauge, workspace: str) -> set[str]:
    """Return the statuses a gauge currently has a series for in a workspace."""
    return {
        sample.labels["processing_status"]
        for family in gauge.collect()
        for sample in family.samples
        if sample.labels.get("workspace") == workspace
    }
