"""The emulator's control surface for tests and demos, mounted at ``/_emulator`` (outside ``/v1``).

No authentication, no faults, not counted in the request counters, plain JSON errors
(``{"error": "..."}`` with status 400 or 404), so it can never be mistaken for the API.

- ``GET  /_emulator/state[?workspace=W]``: ``{"now", "batches", "by_status", "by_workspace",
  "archived", "requests": {"by_endpoint_status": [{"endpoint", "status", "count"}], "mutating":
  {"create", "cancel", "delete"}, "mutating_ok": {...}, "total"}, "faults", "faults_injected"}``.
- ``GET  /_emulator/mutations[?limit=N]``: the last N (default 1000) create/cancel/delete requests,
  oldest first: ``[{"endpoint", "batch_id", "workspace_id", "status", "request_id"}]``.
- ``POST /_emulator/seed``: a JSON list of API-shaped batch objects (see ``reaper.emulator.seed``),
  or ``{"batches": [...]}``, or ``{"random": N, "workspaces": [W, ...], "days": 40}``;
  answers ``{"seeded": n, "ids": [...]}`` (ids only for given objects).
- ``GET  /_emulator/clock``; ``POST /_emulator/clock`` with ``{"advance_seconds": S}`` or
  ``{"set": "2026-03-01T00:00:00Z"}``: moves the emulator's time (an offset over its clock);
  answers ``{"now"}``.
- ``GET  /_emulator/faults``; ``PUT /_emulator/faults`` with the JSON form of
  ``reaper.emulator.faults.Faults`` (set wholesale: absent fields take their defaults);
  ``PATCH /_emulator/faults`` with some fields (the others keep their current values). Either
  restarts the count of injected faults. Answers the whole configuration.
- ``GET  /_emulator/batches/{id}``: any batch, whatever its workspace: ``{"batch": <API object>,
  "workspace_id", "ends_at"}`` (``ends_at``: when an unfinished batch will end).
- ``POST /_emulator/reset``: forget batches, counters, faults and the clock offset.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from reaper.emulator.faults import Faults
from reaper.emulator.records import CANCELING, IN_PROGRESS, format_us
from reaper.emulator.seed import SeedError
from reaper.emulator.state import EmulatorState

_MAX_RANDOM = 5_000_000


def routes(state: EmulatorState) -> list[BaseRoute]:
    """Return the control routes (to mount at ``/_emulator``) acting on ``state``."""
    control = _Control(state)
    return [
        Route("/state", control.get_state, methods=["GET"]),
        Route("/mutations", control.mutations, methods=["GET"]),
        Route("/seed", control.seed, methods=["POST"]),
        Route("/clock", control.clock, methods=["GET", "POST"]),
        Route("/faults", control.faults, methods=["GET", "PUT", "PATCH"]),
        Route("/batches/{batch_id}", control.batch, methods=["GET"]),
        Route("/reset", control.reset, methods=["POST"]),
    ]


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data), status_code=status, media_type="application/json")


def _fail(message: str, status: int = 400) -> Response:
    return _json({"error": message}, status)


async def _body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw) if raw.strip() else None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"body is not JSON: {exc}") from None


class _Control:
    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    async def get_state(self, request: Request) -> Response:
        state = self.state
        workspace = request.query_params.get("workspace") or None
        by_status = state.counts(workspace)
        return _json(
            {
                "now": format_us(state.now_us()),
                "batches": sum(by_status.values()),
                "by_status": by_status,
                "by_workspace": state.counts_by_workspace() if workspace is None else None,
                "archived": state.archived_count(workspace),
                "requests": state.stats.to_json(),
                "faults": state.faults.to_json(),
                "faults_injected": state.faults_injected,
            }
        )

    async def mutations(self, request: Request) -> Response:
        raw = request.query_params.get("limit", "1000")
        if not raw.isdigit():
            return _fail(f"limit: expected a whole number, got {raw!r}")
        entries = list(self.state.stats.mutations)[-int(raw) :] if int(raw) else []
        return _json(
            [
                {
                    "endpoint": m.endpoint,
                    "batch_id": m.batch_id,
                    "workspace_id": m.workspace,
                    "status": m.status,
                    "request_id": m.request_id,
                }
                for m in entries
            ]
        )

    async def seed(self, request: Request) -> Response:
        try:
            body = await _body(request)
            if isinstance(body, dict) and "random" in body:
                return self._seed_random(body)
            objects = body.get("batches") if isinstance(body, dict) else body
            if not isinstance(objects, list):
                return _fail(
                    'expected a list of batch objects, {"batches": [...]} or {"random": N}'
                )
            ids = self.state.seed_objects(objects)
        except (ValueError, SeedError) as exc:
            return _fail(str(exc))
        return _json({"seeded": len(ids), "ids": ids})

    def _seed_random(self, body: dict[str, Any]) -> Response:
        n = body["random"]
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= _MAX_RANDOM:
            return _fail(f"random: expected a whole number from 0 to {_MAX_RANDOM}, got {n!r}")
        workspaces = body.get("workspaces")
        if workspaces is not None and (
            not isinstance(workspaces, list)
            or not all(isinstance(w, str) and w for w in workspaces)
        ):
            return _fail(f"workspaces: expected a list of workspace ids, got {workspaces!r}")
        days = body.get("days", 40)
        if isinstance(days, bool) or not isinstance(days, int | float) or not 0 < days <= 3650:
            return _fail(f"days: expected a number of days from 0 to 3650, got {days!r}")
        seeded = self.state.seed_random(n, workspaces=workspaces, days=float(days))
        return _json({"seeded": seeded, "ids": []})

    async def clock(self, request: Request) -> Response:
        state = self.state
        if request.method == "POST":
            try:
                body = await _body(request)
            except ValueError as exc:
                return _fail(str(exc))
            if isinstance(body, dict) and set(body) == {"advance_seconds"}:
                seconds = body["advance_seconds"]
                if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                    return _fail(f"advance_seconds: expected a number, got {seconds!r}")
                state.advance(float(seconds))
            elif isinstance(body, dict) and set(body) == {"set"}:
                try:
                    when = datetime.fromisoformat(body["set"])
                    if when.tzinfo is None:
                        raise ValueError("no time zone")
                except (TypeError, ValueError):
                    return _fail(f"set: expected an RFC 3339 time with a zone, got {body['set']!r}")
                state.set_time(when)
            else:
                return _fail('expected {"advance_seconds": S} or {"set": "<RFC 3339 time>"}')
        return _json({"now": format_us(state.now_us())})

    async def faults(self, request: Request) -> Response:
        if request.method in ("PUT", "PATCH"):
            try:
                body = await _body(request)
                if not isinstance(body, dict):
                    return _fail("expected a JSON object of fault fields")
                if request.method == "PATCH":
                    body = {**self.state.faults.to_json(), **body}
                self.state.faults = Faults.from_json(body)
            except ValueError as exc:
                return _fail(str(exc))
        return _json(self.state.faults.to_json())

    async def batch(self, request: Request) -> Response:
        batch_id = request.path_params["batch_id"]
        record = self.state.find(batch_id)
        if record is None:
            return _fail(f"no batch {batch_id}", 404)
        origin = f"{request.url.scheme}://{request.url.netloc}"
        unfinished = record.status in (IN_PROGRESS, CANCELING) and record.end is not None
        return _json(
            {
                "batch": record.render(self.state.now_us(), origin),
                "workspace_id": record.workspace,
                "ends_at": format_us(record.end) if unfinished and record.end else None,
            }
        )

    async def reset(self, request: Request) -> Response:
        self.state.reset()
        return _json({"reset": True})
