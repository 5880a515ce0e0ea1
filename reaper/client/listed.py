"""A list answer read into batches: a fast path in C for the common answer, the exact one else.

A first run lists a million batches, 1,000 to a page. Decoding a page with ``json`` and building
each ``Batch`` with ``Batch.from_api`` costs about 5 ms of CPU a page (5 s a million); msgspec
decodes the same page straight into the same frozen ``Batch`` and ``RequestCounts`` Structs,
timestamps included, in about 1 ms.

The fast path only ever answers for a page ``Batch.from_api`` would read the same way: anything
it does not vouch for (a body it cannot decode into the expected shape, a failure tally missing,
an empty id, a timestamp without a zone or not in UTC) sends the page down the exact path,
which reads it as before: the same batches, or the same ``malformed_response`` with its reason.
So the two paths never disagree on what a page says; the fast one only declines.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC
from typing import Final

import httpx
import msgspec

from reaper.client.responses import json_object, malformed
from reaper.models import Batch, ModelError

Redact = Callable[[str], str]


class _Listing(msgspec.Struct):
    """A list answer's envelope, its rows decoded straight into ``Batch``."""

    data: list[Batch]
    has_more: bool
    last_id: str | None = None


_LISTING: Final = msgspec.json.Decoder(_Listing)


def fast_listing(
    content: bytes, workspace: str | None
) -> tuple[list[Batch], bool, str | None] | None:
    """Return ``(batches, has_more, last_id)`` of a list answer, or None to decline the page."""
    try:
        listing = _LISTING.decode(content)  # RequestCounts requires both failure tallies
    except msgspec.MsgspecError:
        return None
    set_field = msgspec.structs.force_setattr
    for batch in listing.data:
        expires, ended = batch.expires_at, batch.ended_at
        canceled, archived = batch.cancel_initiated_at, batch.archived_at
        if (
            not batch.id
            or batch.created_at.tzinfo is not UTC
            or (expires is not None and expires.tzinfo is not UTC)
            or (ended is not None and ended.tzinfo is not UTC)
            or (canceled is not None and canceled.tzinfo is not UTC)
            or (archived is not None and archived.tzinfo is not UTC)
        ):
            return None
        if batch.workspace is not workspace:
            # The workspace is the listing's, never the answer's: set on a Batch no one else has
            # seen yet (the Struct is frozen for everyone after this).
            set_field(batch, "workspace", workspace)
    return listing.data, listing.has_more, listing.last_id


def read_listing(
    response: httpx.Response, after: str | None, workspace: str | None, redact: Redact
) -> tuple[list[Batch], bool, str | None]:
    """Return ``(batches, has_more, last_id)`` of a list answer, or raise ``malformed_response``.

    One bad batch object fails the page: a listing with a hole would skew keep-last and the
    delete fraction.
    """
    fast = fast_listing(response.content, workspace)
    if fast is not None:
        return fast
    body = json_object(response, "list", after, redact)
    data, has_more, last_id = body.get("data"), body.get("has_more"), body.get("last_id")
    if not isinstance(data, list) or not isinstance(has_more, bool):
        raise malformed(response, "list", after, "no data list or has_more flag", redact)
    try:
        batches = [Batch.from_api(item, workspace) for item in data]
    except (ModelError, TypeError, AttributeError) as exc:
        raise malformed(response, "list", after, f"bad batch object: {exc}", redact) from exc
    return batches, has_more, last_id
