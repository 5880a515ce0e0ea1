"""What the emulator was asked: counts of API requests by endpoint and status, and a log of the
mutating ones (create, cancel, delete), for tests and benchmarks to compare with the reaper's view.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Final

MUTATING: Final = ("create", "cancel", "delete")
_MUTATION_LOG_SIZE: Final = 100_000


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
