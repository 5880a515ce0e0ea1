"""Reviewed plans (SPEC section 3): what ``plan --out FILE`` writes and ``apply FILE`` checks.

The document is one JSON object::

    {"version": 1, "created_at": "2026-12-01T09:00:00.000000Z",
     "base_url": "https://api.anthropic.com", "workspaces": ["default"],
     "policy": {"REAPER_DELETE_ENDED_AFTER": "7d", ...},
     "actions": [
    {"id": "msgbatch_1", "workspace": "default", "action": "delete", "rule": "ended", "batch": {}},
    ...
    ]}

``workspaces`` and each action's ``workspace`` name the key's own workspace ``default``, as the
logs, metrics, archive and ledger do. ``policy`` holds every variable of SPEC section 2's policy
table, as ``check-config`` prints it. :class:`PlanWriter` streams the actions (one a line, never
all in memory) to a temporary file in the target's directory, fsyncs it and renames it into
place, so a reader never sees half a plan. :func:`read_plan` reads it back (line by line when it
has this layout, whole otherwise) keeping per action only what ``apply`` needs, and
:func:`check_plan` refuses, with a :class:`PlanError` of one line, a plan of another version, too
old, from the future, or made for another base URL, workspace set or policy (naming each setting
that differs). ``REAPER_DRY_RUN`` and ``REAPER_PLAN_MAX_AGE`` are recorded but not compared: a
plan is made in a dry run and applied for real, and the age limit is the applier's.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final

from reaper.apikey import show
from reaper.archive_sink import fsync_dir
from reaper.durations import format_duration
from reaper.metrics import workspace_label
from reaper.models import Batch, ModelError, format_time, parse_time
from reaper.settings import Settings, describe_settings

VERSION: Final = 1
DEFAULT_WORKSPACE: Final = workspace_label(None)
# SPEC section 2's policy table, in its order.
POLICY_VARIABLES: Final = (
    "REAPER_DRY_RUN",
    "REAPER_DELETE_ENDED_AFTER",
    "REAPER_DELETE_FAILED_AFTER",
    "REAPER_CANCEL_STALE_AFTER",
    "REAPER_DELETE_CANCELED",
    "REAPER_CANCEL_WAIT_TIMEOUT",
    "REAPER_MIN_AGE",
    "REAPER_KEEP_LAST",
    "REAPER_PROTECT_IDS",
    "REAPER_HOLDS_FILE",
    "REAPER_PLAN_MAX_AGE",
    "REAPER_MAX_ACTIONS_PER_RUN",
    "REAPER_MAX_DELETE_FRACTION",
    "REAPER_MAX_CANCEL_FRACTION",
    "REAPER_MAX_CLOCK_SKEW",
)
# Recorded for the reviewer, not compared: see the module docstring.
NOT_COMPARED: Final = frozenset({"REAPER_DRY_RUN", "REAPER_PLAN_MAX_AGE"})
ACTIONS: Final = frozenset({"cancel", "delete"})
# A plan stamped a little ahead of this host's clock (made on another machine) is still fresh.
FUTURE_TOLERANCE: Final = timedelta(minutes=5)
_ACTIONS_OPEN: Final = '"actions":['


class PlanError(Exception):
    """A reviewed plan cannot be applied; the message is one line saying why."""


@dataclass(frozen=True, slots=True)
class PlannedAction:
    """One action of a reviewed plan: what apply needs of it (the batch object is not kept)."""

    id: str
    workspace: str | None
    action: str
    rule: str


@dataclass(frozen=True, slots=True)
class ReviewedPlan:
    """A reviewed plan as read back from its file."""

    path: Path
    created_at: datetime
    base_url: str
    workspaces: tuple[str | None, ...]
    policy: Mapping[str, str]
    actions: tuple[PlannedAction, ...]

    def __repr__(self) -> str:  # a plan may hold 100,000 actions: keep reprs short
        return f"ReviewedPlan({str(self.path)!r}, {len(self.actions)} actions)"


def policy_of(settings: Settings) -> dict[str, str]:
    """Return every policy variable's effective value, as the environment would write it."""
    described = dict(describe_settings(settings))
    return {name: described[name] for name in POLICY_VARIABLES}


def _workspace(label: str) -> str | None:
    return None if label == DEFAULT_WORKSPACE else label


class PlanWriter:
    """Write a reviewed plan atomically, one action at a time::

    with PlanWriter(path, settings, created_at=now) as plan:
        for decision in decisions:
            plan.add(decision.batch, decision.action, decision.rule)

    Leaving the block normally renames the finished file into place; an exception (or
    ``discard()``) discards it.
    """

    def __init__(self, path: Path, settings: Settings, *, created_at: datetime) -> None:
        self.path = Path(path)
        self.count = 0
        header = {
            "version": VERSION,
            "created_at": format_time(created_at),
            "base_url": settings.base_url,
            "workspaces": [workspace_label(w) for w in settings.workspaces],
            "policy": policy_of(settings),
        }
        self._header = _dumps(header)[:-1] + "," + _ACTIONS_OPEN
        self._file: IO[str] | None = None
        self._temp: str | None = None

    def __enter__(self) -> PlanWriter:
        try:
            fd, self._temp = tempfile.mkstemp(
                dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
            )
            self._file = os.fdopen(fd, "w", encoding="utf-8")
            self._file.write(self._header)
        except OSError as exc:
            self._discard()
            raise PlanError(
                f"plan {show(str(self.path))}: cannot write it: {_reason(exc)}"
            ) from None
        return self

    def add(self, batch: Batch, action: str, rule: str) -> None:
        """Append one action: the batch as listed, the action and the rule that chose it."""
        if self._file is None:
            raise RuntimeError("PlanWriter.add outside its with block")
        if str(action) not in ACTIONS:
            raise ValueError(f"a plan holds cancels and deletes, not {action!r}")
        record = {
            "id": batch.id,
            "workspace": workspace_label(batch.workspace),
            "action": str(action),
            "rule": str(rule),
            "batch": batch.to_api(),
        }
        try:
            self._file.write(("\n" if self.count == 0 else ",\n") + _dumps(record))
        except OSError as exc:
            raise PlanError(
                f"plan {show(str(self.path))}: cannot write it: {_reason(exc)}"
            ) from None
        self.count += 1

    def discard(self) -> None:
        """Give the plan up: the temporary file is removed and nothing replaces the target."""
        self._discard()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self._discard()
            return
        if self._file is None or self._temp is None:
            return  # __enter__ failed and already raised
        try:
            self._file.write("\n]}\n")
            self._file.flush()
            os.fchmod(self._file.fileno(), 0o644)  # for the reviewer; mkstemp makes it 0600
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._temp, self.path)
            self._temp = None
            fsync_dir(self.path.parent)
        except OSError as exc:
            self._discard()
            raise PlanError(
                f"plan {show(str(self.path))}: cannot write it: {_reason(exc)}"
            ) from None

    def _discard(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()
        if self._temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._temp)
            self._temp = None


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def read_plan(path: Path | str) -> ReviewedPlan:
    """Read and validate a plan file; raise PlanError (one line) if it is not a version 1 plan."""
    path = Path(path)
    where = f"plan {show(str(path))}"
    try:
        with path.open(encoding="utf-8") as source:
            header, raw_actions = _parse(source)
            return _build(path, header, raw_actions)
    except OSError as exc:
        raise PlanError(f"{where}: cannot read it: {_reason(exc)}") from None
    except UnicodeDecodeError:
        raise PlanError(f"{where}: not a reviewed plan (not UTF-8 text)") from None
    except ValueError as exc:  # json.JSONDecodeError and the checks below
        raise PlanError(f"{where}: not a reviewed plan ({exc})") from None


def _parse(source: IO[str]) -> tuple[Mapping[str, Any], Iterator[Any]]:
    """Return the header and the actions, streaming them when the file has PlanWriter's layout."""
    first = source.readline()
    if first.rstrip("\n").endswith(_ACTIONS_OPEN):
        opening = first.rstrip("\n")[: -len(_ACTIONS_OPEN)].rstrip()
        header = _object(json.loads(opening.removesuffix(",") + "}"))
        return header, _stream_actions(source)
    document = _object(json.loads(first + source.read()))
    actions = document.get("actions")
    if not isinstance(actions, list):
        raise ValueError("'actions' is not a list")
    return document, iter(actions)


def _stream_actions(source: IO[str]) -> Iterator[Any]:
    for line in source:
        text = line.strip()
        if text == "]}":
            if source.read().strip():
                raise ValueError("text after the end of the plan")
            return
        if text:
            yield json.loads(text.removesuffix(","))
    raise ValueError("the file ends before its actions do (cut short?)")


def _object(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _build(path: Path, header: Mapping[str, Any], raw_actions: Iterator[Any]) -> ReviewedPlan:
    version = header.get("version")
    if version != VERSION:
        raise ValueError(f"version {version!r}; this reaper reads version {VERSION}")
    created = header.get("created_at")
    base_url = header.get("base_url")
    workspaces = header.get("workspaces")
    policy = header.get("policy")
    if not isinstance(created, str):
        raise ValueError("'created_at' is missing")
    if not isinstance(base_url, str):
        raise ValueError("'base_url' is missing")
    if not isinstance(workspaces, list) or not all(isinstance(w, str) for w in workspaces):
        raise ValueError("'workspaces' is not a list of workspace ids")
    if not isinstance(policy, dict) or not all(isinstance(v, str) for v in policy.values()):
        raise ValueError("'policy' is not an object of variable values")
    actions = []
    for number, raw in enumerate(raw_actions, start=1):
        try:
            actions.append(_action(raw))
        except (ValueError, ModelError) as exc:
            raise ValueError(f"action {number}: {exc}") from None
    return ReviewedPlan(
        path=path,
        created_at=parse_time(created),
        base_url=base_url,
        workspaces=tuple(_workspace(w) for w in workspaces),
        policy=dict(policy),
        actions=tuple(actions),
    )


def _action(raw: Any) -> PlannedAction:
    record = _object(raw)
    batch_id, workspace = record.get("id"), record.get("workspace")
    action, rule = record.get("action"), record.get("rule")
    if not isinstance(batch_id, str) or not batch_id:
        raise ValueError("'id' is missing")
    if not isinstance(workspace, str):
        raise ValueError(f"{batch_id}: 'workspace' is missing")
    if action not in ACTIONS:
        raise ValueError(f"{batch_id}: 'action' is {action!r}, not cancel or delete")
    if not isinstance(rule, str):
        raise ValueError(f"{batch_id}: 'rule' is missing")
    batch = record.get("batch")
    if not isinstance(batch, dict) or Batch.from_api(batch).id != batch_id:
        raise ValueError(f"{batch_id}: 'batch' is not this batch's object")
    return PlannedAction(id=batch_id, workspace=_workspace(workspace), action=action, rule=rule)


def check_plan(plan: ReviewedPlan, settings: Settings, now: datetime) -> None:
    """Refuse (PlanError) a plan too old or too new at ``now``, or made for other settings."""
    where = f"plan {show(str(plan.path))}"
    age = now - plan.created_at
    if age > settings.plan_max_age:
        raise PlanError(
            f"{where}: made {format_time(plan.created_at)}, {format_duration(age)} ago, older than "
            f"REAPER_PLAN_MAX_AGE={format_duration(settings.plan_max_age)}; "
            "make a new one with reaper plan --out"
        )
    if -age > FUTURE_TOLERANCE:
        raise PlanError(
            f"{where}: made {format_time(plan.created_at)}, {format_duration(-age)} in the future "
            "by this host's clock; check the clocks"
        )
    if plan.base_url != settings.base_url:
        raise PlanError(
            f"{where}: made for another API: ANTHROPIC_BASE_URL: plan {show(plan.base_url)}, "
            f"now {show(settings.base_url)}"
        )
    if set(plan.workspaces) != set(settings.workspaces):
        raise PlanError(
            f"{where}: made for other workspaces: REAPER_WORKSPACE_IDS: plan "
            f"{_workspace_list(plan.workspaces)}, now {_workspace_list(settings.workspaces)}"
        )
    current = policy_of(settings)
    differences = [
        f"{name}: plan {_shown(plan.policy.get(name))}, now {_shown(value)}"
        for name, value in current.items()
        if name not in NOT_COMPARED and plan.policy.get(name) != value
    ]
    if differences:
        raise PlanError(f"{where}: made under another policy: {'; '.join(differences)}")


def load_plan(path: Path | str, settings: Settings, now: datetime) -> ReviewedPlan:
    """Read a plan and check it against the current settings at ``now`` (PlanError if not)."""
    plan = read_plan(path)
    check_plan(plan, settings, now)
    return plan


def _workspace_list(workspaces: tuple[str | None, ...]) -> str:
    ids = sorted(w for w in workspaces if w is not None)
    return ",".join(ids) if ids else "(empty: the key's own workspace)"


def _shown(value: str | None) -> str:
    if value is None:
        return "(not recorded)"
    return show(value) if value else "(empty)"
