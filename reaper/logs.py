"""Logging pipeline: structlog and the stdlib loggers rendered as one stream, secrets masked.

The reaper's own events and the libraries' records (httpx, apscheduler, uvicorn) share one
format (JSON Lines with ``timestamp``, ``level``, ``event``, or a console layout for people) and
the context bound with ``structlog.contextvars.bind_contextvars`` (``cycle_id``, ``workspace``),
and end in one stdlib handler. A library's record reaches it through the logging module and is
rendered by the handler's formatter; the reaper's events (a dry run logs one per action) are
rendered by structlog's own processor chain and written straight through that handler, with no
LogRecord, caller lookup or formatter on the way: the same line, a fraction of the cost. Both
paths mask the API key as their last step, on the fully rendered line, tracebacks included, so no
code path can leak it whole or in part.
"""

from __future__ import annotations

import json
import json.encoder
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Literal, TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import Processor

from reaper.redaction import (
    MIN_SECRET_FRAGMENT,
    REDACTED,
    RedactingWriter,
    Redactor,
    redacted_output,
    unwrapped,
)

# Redaction lives in reaper.redaction; these names are imported from here as well.
__all__ = [
    "MIN_SECRET_FRAGMENT",
    "REDACTED",
    "LogFormat",
    "RedactingFormatter",
    "RedactingWriter",
    "Redactor",
    "configure_logging",
    "flush_logging",
    "parse_level",
    "redacted_output",
    "reset_logging",
    "unwrapped",
]

LogFormat = Literal["json", "console"]

# Libraries that log every request or every run at INFO; WARNING keeps the stream about the reaper.
_NOISY_LOGGERS: Final = ("httpx", "httpcore", "apscheduler", "uvicorn.access", "hpack")
# APScheduler's warnings for a skipped or missed run repeat, in prose, the cycle.skipped event
# reaper.schedule logs for them: these keep their errors only, unless debugging.
_ECHOING_LOGGERS: Final = ("apscheduler.scheduler", "apscheduler.executors")
_LEADING_KEYS: Final = ("timestamp", "level", "event")

# The level of each method of a structlog BoundLogger, as its processors are told it.
_METHOD_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "notset": logging.NOTSET,
}

_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


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
    """The one handler this module installs on the root logger (found again to replace it).

    Records (the libraries') come through ``emit``; the reaper's own events, rendered and masked
    by structlog's chain, through ``write_line``: the same stream, lock, flush and error handling.
    """

    def write_line(self, line: str, name: str, level: int) -> None:
        """Write one rendered line as ``emit`` writes a formatted record."""
        if level < self.level:
            return
        self.acquire()
        try:
            self.stream.write(line + self.terminator)
            self.flush()
        except RecursionError:
            raise
        except Exception:  # as StreamHandler.emit: reported on stderr, not raised
            self.handleError(_record(name, level, line))
        finally:
            self.release()


def _record(name: str, level: int, msg: object) -> logging.LogRecord:
    """A record for ``Handler.handleError`` to describe a line that could not be written."""
    return logging.LogRecord(name, level, "", 0, msg, None, None)


class _LineLogger:
    """What structlog wraps for the reaper's events: the line goes straight to our handler.

    Filtering is the stdlib logger's of the same name (the root's level, ``REAPER_LOG_LEVEL``),
    checked first in the chain by ``_filter_by_level``; anything else a stdlib BoundLogger asks
    of its logger (``setLevel``, ``handlers``...) is that stdlib logger's.
    """

    def __init__(self, stdlib: logging.Logger, handler: _ReaperHandler) -> None:
        self.stdlib = stdlib
        self.name = stdlib.name
        self.isEnabledFor = stdlib.isEnabledFor
        self._handler = handler

    def debug(self, line: str) -> None:
        """Write a debug line."""
        self._handler.write_line(line, self.name, logging.DEBUG)

    def info(self, line: str) -> None:
        """Write an info line."""
        self._handler.write_line(line, self.name, logging.INFO)

    def warning(self, line: str) -> None:
        """Write a warning line."""
        self._handler.write_line(line, self.name, logging.WARNING)

    def error(self, line: str) -> None:
        """Write an error line (``exception`` too: its traceback is rendered in the line)."""
        self._handler.write_line(line, self.name, logging.ERROR)

    def critical(self, line: str) -> None:
        """Write a critical line."""
        self._handler.write_line(line, self.name, logging.CRITICAL)

    warn = warning
    exception = error
    fatal = critical

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stdlib, name)


class _LineLoggerFactory:
    """structlog's logger factory: one ``_LineLogger`` per name, the names stdlib's would use."""

    def __init__(self, handler: _ReaperHandler) -> None:
        self._handler = handler
        # Names a logger as the stdlib factory does (the caller's module when none is given).
        self._stdlib = structlog.stdlib.LoggerFactory(ignore_frame_names=[__name__])
        self._loggers: dict[str, _LineLogger] = {}

    def __call__(self, *args: Any) -> _LineLogger:
        name = args[0] if args else None
        found = self._loggers.get(name) if isinstance(name, str) else None
        if found is None:
            found = _LineLogger(self._stdlib(*args), self._handler)
            if isinstance(name, str):
                self._loggers[name] = found
        return found


def _filter_by_level(
    logger: _LineLogger, method_name: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Drop an event its logger is not enabled for (before any costly processor runs)."""
    if logger.isEnabledFor(_METHOD_LEVELS[method_name]):
        return event_dict
    raise structlog.DropEvent


class _RenderMasked:
    """The chain's last step: render the event dict into a line and mask secrets in it.

    A failure to render is reported as the handler reports one (``handleError``: a note on
    stderr, quoting the event masked), and the event dropped, as when a formatter failed: a log
    line never raises into the code that logs.
    """

    def __init__(
        self, steps: Sequence[Processor], redactor: Redactor, handler: _ReaperHandler
    ) -> None:
        self._steps = tuple(steps)
        self._redact = redactor
        self._handler = handler

    def __call__(
        self, logger: Any, method_name: str, event_dict: structlog.typing.EventDict
    ) -> str:
        rendered: Any = event_dict
        try:
            for step in self._steps:
                rendered = step(logger, method_name, rendered)
            return self._redact(rendered)
        except RecursionError:
            raise
        except Exception:  # as StreamHandler.emit: reported on stderr, not raised
            level = _METHOD_LEVELS.get(method_name, logging.NOTSET)
            # The last state of the event: a step may have moved its keys to a new dict.
            shown = self._shown(rendered if isinstance(rendered, dict) else event_dict)
            self._handler.handleError(_record(getattr(logger, "name", ""), level, shown))
            raise structlog.DropEvent from None

    def _shown(self, event_dict: structlog.typing.EventDict) -> str:
        """The event as the failure report quotes it: masked too (it goes to stderr)."""
        try:
            return self._redact(repr(event_dict))
        except Exception:  # a value whose repr fails as well
            return "<an event that cannot be shown>"


class _UtcTimestamp:
    """Add ``timestamp``: now, RFC 3339 in UTC, as TimeStamper(fmt="iso", utc=True) writes it.

    ``2026-12-02T00:29:23.902503Z`` (no fraction at a whole second, as ``isoformat`` does),
    the date and time of day formatted once a second rather than on every line.
    """

    def __init__(self, clock: Callable[[], int] = time.time_ns) -> None:
        self._clock = clock
        self._second: tuple[int, str] = (-1, "")

    def __call__(
        self, _logger: object, _method: str, event_dict: structlog.typing.EventDict
    ) -> structlog.typing.EventDict:
        seconds, micros = divmod(self._clock() // 1000, 1_000_000)  # floored, as datetime.now
        second = self._second
        if second[0] != seconds:
            second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
            self._second = second
        event_dict["timestamp"] = f"{second[1]}.{micros:06d}Z" if micros else f"{second[1]}Z"
        return event_dict


def _merge_context_in_order(
    _logger: object, _method: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """``structlog.contextvars.merge_contextvars``, with the bound keys in a fixed order.

    structlog merges them in the order of the interpreter's context mapping, which follows each
    process's hash seed: ``cycle_id`` and ``workspace`` swapped places from one run to the next.
    Sorted by name, every line of every run has them in the same place. A key of the call wins.
    """
    context = structlog.contextvars.get_contextvars()
    for key in sorted(context):
        event_dict.setdefault(key, context[key])
    return event_dict


def _shared_processors() -> list[Processor]:
    return [
        _merge_context_in_order,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        _UtcTimestamp(),
        structlog.processors.StackInfoRenderer(),
    ]


def _lead_with_standard_keys(
    _logger: object, _method: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Put ``timestamp``, ``level`` and ``event`` first, so a line reads well in a terminal too."""
    ordered = {key: event_dict.pop(key) for key in _LEADING_KEYS if key in event_dict}
    ordered.update(event_dict)
    return ordered


# What json.dumps(event_dict, default=str) builds for every call, built once.
_JSON_ENCODER: Final = json.JSONEncoder(default=str)
# The C encoder json.dumps ends in (None where json has no C accelerator).
_C_MAKE_ENCODER: Final = getattr(json.encoder, "c_make_encoder", None)


def _render_json(_logger: object, _method: str, event_dict: structlog.typing.EventDict) -> str:
    """Render the event dict as json.dumps(event_dict, default=str) does, byte for byte.

    Values json cannot encode are written as their ``str``. The C encoder is called as
    ``JSONEncoder.iterencode`` calls it (a fresh dict of markers against circular values),
    without the Python layers json.dumps puts around it (about half of its cost on a line).
    """
    if _C_MAKE_ENCODER is None:
        return _JSON_ENCODER.encode(event_dict)
    encoder = _JSON_ENCODER
    encode = _C_MAKE_ENCODER(
        {},
        encoder.default,
        json.encoder.encode_basestring_ascii,
        None,
        encoder.key_separator,
        encoder.item_separator,
        encoder.sort_keys,
        encoder.skipkeys,
        encoder.allow_nan,
    )
    return "".join(encode(event_dict, 0))


def _renderers(fmt: LogFormat, stream: TextIO) -> list[Processor]:
    if fmt == "json":
        return [
            # Structured tracebacks, never local variables: a frame's locals can hold the key.
            structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
            _lead_with_standard_keys,
            _render_json,
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
    redactor = Redactor(secrets)
    renderers = _renderers(fmt, out)
    handler = _ReaperHandler(out)
    handler.setFormatter(
        RedactingFormatter(
            redactor=redactor,
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderers],
        )
    )

    structlog.configure(
        processors=[
            _filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            _RenderMasked(renderers, redactor, handler),
        ],
        logger_factory=_LineLoggerFactory(handler),
        wrapper_class=structlog.stdlib.BoundLogger,
        # No caching: configure_logging and structlog.testing.capture_logs must reach loggers
        # that modules created at import time.
        cache_logger_on_first_use=False,
    )

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
