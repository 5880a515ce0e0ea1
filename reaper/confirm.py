"""A 404 may be false: confirm it before concluding that a batch is gone.

The real API has answered 404 for seconds on a batch that exists (API-NOTES §5). Trusting one
would leave a batch behind (a delete counted as done) or conclude that results are gone while the
batch says otherwise. ``confirm_gone`` asks the batch itself, a few times, and says what it found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

from reaper.errors import NotFoundError
from reaper.models import Batch

# After this many 404s in a row on top of the first, a batch counts as gone.
NOT_FOUND_TOLERANCE: Final = 3


class Retriever(Protocol):
    """The part of ``reaper.client.BatchClient`` a confirmation uses."""

    async def retrieve(self, batch_id: str, workspace: str | None) -> Batch:
        """Fetch one batch as it is now; raise NotFoundError on 404."""
        ...


@dataclass(frozen=True, slots=True)
class Sighting:
    """What the retrieves found: the batch as it is now, or None when every one answered 404."""

    batch: Batch | None
    last_not_found: NotFoundError | None = None

    @property
    def gone(self) -> bool:
        """Whether every retrieve answered 404 (as gone as the API can say)."""
        return self.batch is None


async def confirm_gone(
    client: Retriever, batch_id: str, workspace: str | None, *, tries: int = NOT_FOUND_TOLERANCE
) -> Sighting:
    """Retrieve the batch up to ``tries`` times after a 404; stop at the first that finds it.

    Any other API error is raised: nothing can be concluded from it.
    """
    last: NotFoundError | None = None
    for _ in range(tries):
        try:
            return Sighting(await client.retrieve(batch_id, workspace))
        except NotFoundError as exc:
            last = exc
    return Sighting(None, last)
