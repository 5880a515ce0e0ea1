"""Logging pipeline: structlog and the stdlib loggers rendered as one stream, secrets masked.

Every line goes through one stdlib handler whose formatter runs structlog's processors, so the
reaper's own events and the libraries' records (httpx, apscheduler, uvicorn) share the format
(JSON Lines with ``timestamp``, ``level``, ``event``, or a console layout for people) and the
context bound with ``structlog.contextvars.bind_contextvars`` (``cycle_id``, ``workspace``). The
last step masks the API key on the fully rendered line, tracebacks included, so no code path can
leak it whole or in part.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Final, Literal, TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import Processor

LogFormat = Literal["json", "console"]

REDACTED: Final = "[REDACTED]"
# A run of this many characters of a secret is masked wherever it appears, so a key cut short
# ("sk-ant-api03-AbCd...") or split across a line break of a message is still hidden.
MIN_SECRET_FRAGMENT: Final = 8
_QUAD: Final = MIN_SECRET_FRAGMENT // 2  # the pre-check's run length (Redactor._mask_fragments)

# Libraries that log every request or every run at INFO; WARNING keeps the stream about the reaper.
_NOISY_LOGGERS: Final = ("httpx", "httpcore", "apscheduler", "uvicorn.access", "hpack")
# APScheduler's warnings for a skipped or missed run repeat, in prose, the cycle.skipped event
# reaper.schedule logs for them: these keep their errors only, unless debugging.
_ECHOING_LOGGERS: Final = ("apscheduler.scheduler", "apscheduler.executors")
# Credentials in shapes that need no configured secret: a key the reaper was never told about
# (a second key in a message, a key file read elsewhere) is masked as well.
_CREDENTIAL_PATTERNS: Final = (
    re.compile(r"sk-ant-[A-Za-z0-9_\-]{4,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=\-]{8,}"),
    # The value class excludes "[" so an already masked value is left alone.
    re.compile(r"""(?i)(x-api-key['"]?\s*[:=,]\s*b?['"]?)[^\s'",)}\]\[]{4,}"""),
)

_LEADING_KEYS: Final = ("timestamp", "level", "event")

_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


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

    def __call__(self, text: str) -> str:
        """Return ``text`` with every secret, fragment of one and credential-shaped value masked."""
        for secret in self._whole:
            text = text.replace(secret, REDACTED)
        if self._fragments:
            text = self._mask_fragments(text)
        for pattern in _CREDENTIAL_PATTERNS:
            text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + REDACTED, text)
        return text

    def _mask_fragments(self, text: str) -> str:
        quads = self._quads
        for start in range(0, len(text) - _QUAD + 1, _QUAD):
            if text[start : start + _QUAD] in quads:
                break
        else:
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


class RedactingFormatter(structlog.stdlib.ProcessorFormatter):
    """Render a record with structlog's processors, then mask secrets on the finished line."""

    def __init__(
        self,
        *,
        redactor: Redactor,
        foreign_pre_chain: Sequence[Processor],
        processors: Sequence[Processor],
    ) -> None:
        super().__init__(foreign_pre_chain=foreign_pre_chain, processors=processors)
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        """Format the record and mask every secret in the result."""
        return self.redactor(super().format(record))


class _ReaperHandler(logging.StreamHandler[TextIO]):
    """The one handler this module installs on the root logger (found again to replace it)."""


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        structlog.processors.StackInfoRenderer(),
    ]


def _lead_with_standard_keys(
    _logger: object, _method: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Put ``timestamp``, ``level`` and ``event`` first, so a line reads well in a terminal too."""
    ordered = {key: event_dict.pop(key) for key in _LEADING_KEYS if key in event_dict}
    ordered.update(event_dict)
    return ordered


def _renderers(fmt: LogFormat, stream: TextIO) -> list[Processor]:
    if fmt == "json":
        return [
            # Structured tracebacks, never local variables: a frame's locals can hold the key.
            structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
            _lead_with_standard_keys,
            structlog.processors.JSONRenderer(sort_keys=False, default=str),
        ]
    is_tty = bool(getattr(stream, "isatty", lambda: False)())
    return [
        structlog.dev.ConsoleRenderer(
            colors=is_tty,
            # Plain tracebacks: the rich formatter shows local variables by default.
            exception_formatter=structlog.dev.plain_traceback,
        )
    ]


def parse_level(level: str) -> int:
    """Map a level name (``debug``, ``info``, ``warning``, ``error``, ``critical``) to logging's."""
    try:
        return _LEVELS[level.strip().lower()]
    except KeyError:
        accepted = ", ".join(name for name in _LEVELS if name != "warn")
        raise ValueError(f"unknown log level {level!r}; accepted: {accepted}") from None


def configure_logging(
    level: str = "info",
    fmt: LogFormat = "json",
    *,
    secrets: Sequence[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Route structlog and the stdlib loggers to ``stream`` (stdout) as one masked stream.

    Idempotent: a second call replaces the first configuration (handler, levels, secrets).
    """
    numeric = parse_level(level)
    out = unwrapped(stream if stream is not None else sys.stdout)
    shared = _shared_processors()

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # No caching: configure_logging and structlog.testing.capture_logs must reach loggers
        # that modules created at import time.
        cache_logger_on_first_use=False,
    )

    formatter = RedactingFormatter(
        redactor=Redactor(secrets),
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *_renderers(fmt, out),
        ],
    )
    handler = _ReaperHandler(out)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    _remove_our_handlers(root)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in _NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if numeric <= logging.DEBUG and name != "httpcore":
            logger.setLevel(logging.DEBUG)
        else:
            # httpcore's DEBUG is a trace of every socket operation: noise even when debugging.
            logger.setLevel(max(numeric, logging.WARNING))
    quieter = logging.DEBUG if numeric <= logging.DEBUG else max(numeric, logging.ERROR)
    for name in _ECHOING_LOGGERS:
        logging.getLogger(name).setLevel(quieter)
    # uvicorn installs handlers of its own unless told otherwise; ours must be the only sink.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lib = logging.getLogger(name)
        lib.handlers.clear()
        lib.propagate = True


def reset_logging() -> None:
    """Undo :func:`configure_logging`: structlog defaults, our handler removed, levels cleared."""
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    root = logging.getLogger()
    _remove_our_handlers(root)
    root.setLevel(logging.WARNING)
    for name in (*_NOISY_LOGGERS, *_ECHOING_LOGGERS):
        logging.getLogger(name).setLevel(logging.NOTSET)


def flush_logging() -> None:
    """Flush every handler of the root logger (before the process exits)."""
    for handler in logging.getLogger().handlers:
        handler.flush()


def _remove_our_handlers(root: logging.Logger) -> None:
    for existing in list(root.handlers):
        if isinstance(existing, _ReaperHandler):
            root.removeHandler(existing)
            existing.close()
