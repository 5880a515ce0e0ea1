"""Secrets masked in text: the API key, any run of 8 of its characters, credential shapes.

``Redactor`` masks a text; the log pipeline (``reaper.logs``) runs it on every rendered line and
``redacted_output`` on everything a command prints. Most lines hold nothing to mask: two exact
pre-checks (no aligned 4-character run of the key, none of the words a credential pattern needs)
let them through without the full scans.
"""

from __future__ import annotations

import re
import struct
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Final, TextIO

REDACTED: Final = "[REDACTED]"
# A run of this many characters of a secret is masked wherever it appears, so a key cut short
# ("sk-ant-api03-AbCd...") or split across a line break of a message is still hidden.
MIN_SECRET_FRAGMENT: Final = 8
_QUAD: Final = MIN_SECRET_FRAGMENT // 2  # the pre-check's run length (Redactor._mask_fragments)

# Credentials in shapes that need no configured secret: a key the reaper was never told about
# (a second key in a message, a key file read elsewhere) is masked as well.
_CREDENTIAL_PATTERNS: Final = (
    re.compile(r"sk-ant-[A-Za-z0-9_\-]{4,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=\-]{8,}"),
    # The value class excludes "[" so an already masked value is left alone.
    re.compile(r"""(?i)(x-api-key['"]?\s*[:=,]\s*b?['"]?)[^\s'",)}\]\[]{4,}"""),
)

# A credential pattern can match only where one of these is (Redactor._may_hold_credential).
_CREDENTIAL_HINT: Final = re.compile(r"sk-ant-|(?i:bearer|x-api-key)")

_QUAD_INT: Final = struct.Struct("<I")  # 4 bytes: one run of _QUAD ASCII characters
_QUAD_STRUCTS: dict[int, struct.Struct] = {}


def _quads_of(count: int) -> struct.Struct:
    """Return the struct unpacking ``count`` runs of 4 bytes (as integers) from a bytes' start."""
    found = _QUAD_STRUCTS.get(count)
    if found is None:
        if len(_QUAD_STRUCTS) >= 1024:  # a line length seldom seen: keep the cache small
            _QUAD_STRUCTS.clear()
        found = _QUAD_STRUCTS[count] = struct.Struct(f"<{count}I")
    return found


def _may_hold_credential(text: str) -> bool:
    """Say whether a credential pattern could match ``text`` (they need one of these words)."""
    if text.isascii():  # ignoring case in ASCII is what lower() does
        lowered = text.lower()
        return "sk-ant-" in text or "bearer" in lowered or "x-api-key" in lowered
    return _CREDENTIAL_HINT.search(text) is not None


class Redactor:
    """Mask configured secrets, and any run of 8 or more of their characters, in text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._whole: tuple[str, ...] = tuple(
            sorted({s for s in secrets if s}, key=len, reverse=True)
        )
        self._fragments: frozenset[str] = frozenset(
            secret[i : i + MIN_SECRET_FRAGMENT]
            for secret in self._whole
            if len(secret) >= MIN_SECRET_FRAGMENT
            for i in range(len(secret) - MIN_SECRET_FRAGMENT + 1)
        )
        # Every run of 8 characters holds a whole 4-character run starting at a multiple of 4,
        # so a line none of whose aligned 4-runs is in a secret holds no fragment: checked first,
        # it spares the full scan on almost every line (a dry run logs one line per action).
        self._quads: frozenset[str] = frozenset(
            fragment[i : i + _QUAD] for fragment in self._fragments for i in range(_QUAD + 1)
        )
        # The same runs as ASCII text reads them 4 bytes at a time (a run with any other
        # character cannot be in ASCII text).
        self._quad_ints: frozenset[int] = frozenset(
            _QUAD_INT.unpack(quad.encode("ascii"))[0] for quad in self._quads if quad.isascii()
        )

    def __call__(self, text: str) -> str:
        """Return ``text`` with every secret, fragment of one and credential-shaped value masked."""
        for secret in self._whole:
            text = text.replace(secret, REDACTED)
        if self._fragments:
            text = self._mask_fragments(text)
        if not _may_hold_credential(text):
            return text
        for pattern in _CREDENTIAL_PATTERNS:
            text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + REDACTED, text)
        return text

    def _may_hold_fragment(self, text: str) -> bool:
        """Say whether an aligned 4-run of ``text`` is in a secret (else it holds no fragment)."""
        if text.isascii():  # every JSON line: its runs compared as 4-byte integers, unpacked in C
            data = text.encode("ascii")
            runs = _quads_of(len(data) // _QUAD).unpack_from(data)
            return not self._quad_ints.isdisjoint(runs)
        ends = range(_QUAD, len(text) + 1, _QUAD)
        return not self._quads.isdisjoint([text[end - _QUAD : end] for end in ends])

    def _mask_fragments(self, text: str) -> str:
        if not self._may_hold_fragment(text):
            return text
        width = MIN_SECRET_FRAGMENT
        covered_until = -1
        spans: list[tuple[int, int]] = []
        for i in range(len(text) - width + 1):
            if text[i : i + width] in self._fragments:
                if spans and i <= covered_until:
                    spans[-1] = (spans[-1][0], i + width)
                else:
                    spans.append((i, i + width))
                covered_until = i + width
        if not spans:
            return text
        parts: list[str] = []
        last = 0
        for start, end in spans:
            parts.append(text[last:start])
            parts.append(REDACTED)
            last = end
        parts.append(text[last:])
        return "".join(parts)


class RedactingWriter:
    """A text stream that masks secrets in everything written through it (stdout, stderr).

    Log lines are masked by their formatter; this covers every other line a command prints:
    summaries, tables, JSON, configuration errors, crash text. Each ``write`` is masked on its
    own (``print`` writes a line's text in one call). Anything else is the wrapped stream's.
    """

    def __init__(self, stream: TextIO, redactor: Redactor) -> None:
        self.inner = stream
        self._redact = redactor

    def write(self, text: str) -> int:
        """Write ``text`` with every secret masked; return the length given (as callers expect)."""
        self.inner.write(self._redact(text))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        """Write each line, masked."""
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Flush the wrapped stream."""
        self.inner.flush()

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def unwrapped(stream: TextIO) -> TextIO:
    """Return the stream under a RedactingWriter (log lines are masked once, by the formatter)."""
    while isinstance(stream, RedactingWriter):
        stream = stream.inner
    return stream


@contextmanager
def redacted_output(secrets: Iterable[str]) -> Iterator[Redactor]:
    """Mask ``secrets`` (and anything credential-shaped) in all printed text within the block.

    Replaces ``sys.stdout`` and ``sys.stderr`` with RedactingWriters and puts them back after.
    """
    redactor = Redactor(secrets)
    saved = sys.stdout, sys.stderr
    sys.stdout = RedactingWriter(unwrapped(sys.stdout), redactor)
    sys.stderr = RedactingWriter(unwrapped(sys.stderr), redactor)
    try:
        yield redactor
    finally:
        sys.stdout, sys.stderr = saved
