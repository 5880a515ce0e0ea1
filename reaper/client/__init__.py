"""The Message Batches API client, the only part of the reaper that speaks HTTP.

- ``reaper.client.batches``: ``BatchClient``, the typed endpoints (list, retrieve, cancel,
  delete, results);
- ``reaper.client.sender``: the attempt loop every request goes through (concurrency bound,
  pacing, retries, metrics);
- ``reaper.client.responses``: reading answers and building errors, never with the key.

The error types live in ``reaper.errors`` (re-exported here), so code that only catches them
need not import the HTTP client.
"""

from reaper.client.batches import (
    API_VERSION,
    BATCHES_PATH,
    MAX_PAGE_SIZE,
    BatchClient,
    ClientSettings,
)
from reaper.client.responses import ResultsStream
from reaper.errors import (
    ApiError,
    ConnectionFailed,
    InvalidRequestError,
    NotFoundError,
    RateLimitError,
)

__all__ = [
    "API_VERSION",
    "BATCHES_PATH",
    "MAX_PAGE_SIZE",
    "ApiError",
    "BatchClient",
    "ClientSettings",
    "ConnectionFailed",
    "InvalidRequestError",
    "NotFoundError",
    "RateLimitError",
    "ResultsStream",
]
