"""Settings from the environment: every variable of SPEC section 2, validated once, frozen.

Built only by :func:`load_settings`, which reads one environment mapping (``os.environ`` unless
one is given), rejects unknown ``REAPER_*`` names (a typo in ``REAPER_DRY_RUN`` must never let the
reaper act), resolves the key from ``ANTHROPIC_API_KEY`` or ``ANTHROPIC_API_KEY_FILE``, and hands
the known variables to pydantic. Pydantic never reads ``os.environ`` behind its back (its only
source is the values given here), and its errors are rewritten into one line per bad variable:
``VARIABLE=value: what is accepted``. The key's value never appears in an error.

Durations that switch a rule or check off accept ``never``: ``REAPER_DELETE_ENDED_AFTER``,
``REAPER_DELETE_FAILED_AFTER``, ``REAPER_CANCEL_STALE_AFTER`` and ``REAPER_MAX_CLOCK_SKEW``. The
others must be durations; ``REAPER_INTERVAL``, ``REAPER_REQUEST_TIMEOUT``, ``REAPER_PLAN_MAX_AGE``
and ``REAPER_MAX_CLOCK_SKEW`` must be positive, the rest may be ``0s``. How values read as text
(accepted forms, error lines) lives in :mod:`reaper.settings_text`, the key in :mod:`reaper.apikey`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from reaper.apikey import KEY_FILE_VAR, KEY_VAR, MASK, read_key, show
from reaper.cronspec import parse_cron
from reaper.durations import format_duration, parse_duration, parse_optional_duration
from reaper.settings_text import describe_errors, display

__all__ = [
    "KEY_FILE_VAR",
    "KEY_VAR",
    "KNOWN_VARIABLES",
    "MASK",
    "ConfigError",
    "Settings",
    "describe_settings",
    "load_settings",
]

PREFIX: Final = "REAPER_"
_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,256}")
_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})


class ConfigError(Exception):
    """A configuration value is missing or invalid; the message names variable, value and rule."""


def _to_bool(value: object) -> object:
    if isinstance(value, str):
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError("")
    return value


def _to_duration(value: object) -> object:
    return parse_duration(value) if isinstance(value, str) else value


def _to_optional_duration(value: object) -> object:
    return parse_optional_duration(value) if isinstance(value, str) else value


def _to_ids(value: object) -> object:
    """Split a comma list into stripped, non-empty items (a trailing comma is harmless)."""
    if not isinstance(value, str):
        return value
    items = tuple(item.strip() for item in value.split(","))
    items = tuple(item for item in items if item)
    for item in items:
        if not _ID.fullmatch(item):
            raise ValueError(f"{item!r} is not a valid id")
    return items


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


Bool = Annotated[bool, BeforeValidator(_to_bool)]
Duration = Annotated[timedelta, BeforeValidator(_to_duration)]
OptionalDuration = Annotated[timedelta | None, BeforeValidator(_to_optional_duration)]
# NoDecode: pydantic-settings would otherwise try JSON on a list and raise SettingsError.
IdList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_to_ids)]
IdSet = Annotated[frozenset[str], NoDecode, BeforeValidator(_to_ids)]


class Settings(BaseSettings):
    """The effective configuration of one reaper process (SPEC section 2)."""

    model_config = SettingsConfigDict(
        frozen=True, hide_input_in_errors=True, extra="forbid", case_sensitive=True
    )

    # -- connection
    api_key: SecretStr | None = None
    api_key_file: Path | None = Field(None, description="where the key was read from, if a file")
    api_key_source: str | None = Field(None, description="the variable the key came from")
    base_url: str = "https://api.anthropic.com"
    workspace_ids: IdList = Field((), description="swept one after another; empty: the key's own")

    # -- schedule
    interval: Duration = Field(
        timedelta(minutes=15),
        description="between cycles; 15m keeps lag low at a small share of the batch RPM budget",
    )
    cron: str | None = Field(
        None, description="5-field crontab, standard semantics; wins over interval"
    )
    shutdown_grace: Duration = Field(
        timedelta(seconds=30),
        description="how long SIGTERM waits for in-flight calls; Kubernetes' default grace",
    )

    # -- policy
    dry_run: Bool = Field(True, description="decide and report, change nothing: safe by default")
    delete_ended_after: OptionalDuration = Field(timedelta(days=7), description="after ended_at")
    delete_failed_after: OptionalDuration = Field(
        timedelta(days=30), description="after ended_at, for batches with errored/expired requests"
    )
    cancel_stale_after: OptionalDuration = Field(
        timedelta(hours=12), description="after created_at; half the API's 24h expiry"
    )
    delete_canceled: Bool = True
    cancel_wait_timeout: Duration = timedelta(minutes=10)
    min_age: Duration = Field(timedelta(hours=1), description="never act on younger batches")
    keep_last: int = Field(0, ge=0, le=1_000_000, description="memory grows with it")
    protect_ids: IdSet = frozenset()
    holds_file: Path | None = Field(None, description="JSON Lines of holds, re-read every cycle")
    plan_max_age: Duration = Field(
        timedelta(hours=24), description="apply refuses an older reviewed plan; a working day"
    )
    max_actions_per_run: int = Field(10_000, ge=0, description="0 acts on nothing")
    max_delete_fraction: float = Field(1.0, ge=0.0, le=1.0, allow_inf_nan=False)
    max_cancel_fraction: float = Field(
        1.0, ge=0.0, le=1.0, allow_inf_nan=False, description="of the in_progress batches"
    )
    max_clock_skew: OptionalDuration = Field(
        timedelta(minutes=2),
        description="API Date vs host clock; 2m is far above NTP drift, far below any retention",
    )

    # -- archive and ledger
    archive_dir: Path | None = None
    archive_scope: Annotated[Literal["all", "failed"], BeforeValidator(_lower)] = "all"
    archive_missing: Annotated[Literal["keep", "delete"], BeforeValidator(_lower)] = "keep"
    ledger_dir: Path | None = Field(None, description="append-only record of every mutation")

    # -- client
    concurrency: int = Field(8, ge=1, le=64, description="requests in flight")
    max_rpm: int = Field(200, ge=1, le=100_000, description="requests per minute, paced evenly")
    page_size: int = Field(1000, ge=1, le=1000, description="the API's maximum: fewest list calls")
    request_timeout: Duration = timedelta(seconds=30)
    max_retries: int = Field(5, ge=0, le=20)

    # -- observability
    metrics_host: str = "0.0.0.0"
    metrics_port: int = Field(9464, ge=0, le=65535, description="0 turns the server off")
    log_level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)] = (
        "info"
    )
    log_format: Annotated[Literal["json", "console"], BeforeValidator(_lower)] = "json"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Take values only from load_settings, which has read and checked the environment."""
        return (init_settings,)

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("")
        if parts.username is not None or parts.password is not None:
            raise ValueError("credentials in the URL are not accepted")
        if parts.query or parts.fragment:
            raise ValueError("")
        _ = parts.port  # raises ValueError on a port out of range
        return value.rstrip("/")

    @field_validator("workspace_ids")
    @classmethod
    def _check_distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("a workspace is listed twice")
        return value

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, value: str | None) -> str | None:
        return None if value is None else parse_cron(value).text

    @field_validator("archive_dir", "ledger_dir")
    @classmethod
    def _check_dir(cls, value: Path | None) -> Path | None:
        # It may be missing at start (a volume not mounted yet); neither the archiver nor the
        # ledger ever creates it, so until it exists every archive fails and nothing is deleted,
        # every intent fails and nothing is sent. A file there is a mistake.
        if value is not None and value.exists() and not value.is_dir():
            raise ValueError("it exists and is not a directory")
        return value

    @field_validator("holds_file")
    @classmethod
    def _check_holds_file(cls, value: Path | None) -> Path | None:
        # Read (and its lines checked) every cycle and by check-config, not here: a mounted
        # ConfigMap may appear later. A directory is never right.
        if value is not None and value.is_dir():
            raise ValueError("it is a directory")
        return value

    @field_validator("interval", "request_timeout", "plan_max_age", "max_clock_skew")
    @classmethod
    def _check_positive(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("")
        return value

    @field_validator("metrics_host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        if not value or any(c.isspace() or not c.isprintable() for c in value):
            raise ValueError("")
        return value

    @property
    def workspaces(self) -> tuple[str | None, ...]:
        """Return the workspaces to sweep: the configured ids, or (None,) for the key's own."""
        return self.workspace_ids or (None,)

    def api_key_value(self) -> str | None:
        """Return the key in clear: the only place the secret is unwrapped."""
        return None if self.api_key is None else self.api_key.get_secret_value()


# field -> variable; api_key_source is derived, not read.
ENV_NAMES: Final[Mapping[str, str]] = {
    name: {
        "api_key": KEY_VAR,
        "api_key_file": KEY_FILE_VAR,
        "base_url": "ANTHROPIC_BASE_URL",
    }.get(name, PREFIX + name.upper())
    for name in Settings.model_fields
    if name != "api_key_source"
}
KNOWN_VARIABLES: Final = frozenset(ENV_NAMES.values())
# Empty means "unset" only where unset means "nothing"; elsewhere an empty value is a mistake.
_EMPTY_IS_UNSET: Final = frozenset(
    {"workspace_ids", "protect_ids", "cron", "archive_dir", "holds_file", "ledger_dir"}
)
_NEVERABLE: Final = frozenset(
    {"delete_ended_after", "delete_failed_after", "cancel_stale_after", "max_clock_skew"}
)
_NOT_FROM_ENV: Final = frozenset({"api_key", "api_key_file"})


def load_settings(
    environ: Mapping[str, str] | None = None, *, require_key: bool = True
) -> Settings:
    """Read and validate the environment; raise ConfigError with one line naming what is wrong."""
    if environ is None:
        import os  # only here: no other function reads the process environment

        environ = os.environ
    key, key_source, key_problem = read_key(environ)
    problems = _unknown_variables(environ, secret=key)
    values: dict[str, Any] = {}
    if key is not None:
        values.update(api_key=SecretStr(key), api_key_source=key_source)
    if environ.get(KEY_FILE_VAR, "").strip():
        values["api_key_file"] = environ[KEY_FILE_VAR].strip()
    for field, name in ENV_NAMES.items():
        if field in _NOT_FROM_ENV or name not in environ:
            continue
        raw = environ[name].strip()
        if key is not None and len(key) >= 8 and key in raw:
            # A valid id or path may hold it: it would be printed (check-config, plan) and sent
            # as a header (REAPER_WORKSPACE_IDS). The key belongs in one variable only.
            problems.append(f"{name}={MASK}: holds the API key; it belongs in {KEY_VAR} only")
            continue
        if raw or field not in _EMPTY_IS_UNSET:
            values[field] = raw
    settings: Settings | None = None
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        problems.extend(describe_errors(exc, values, ENV_NAMES, secret=key))
    except SettingsError as exc:  # defensive: NoDecode should make this unreachable
        problems.append(f"settings error: {type(exc).__name__}")
    if key_problem:
        problems.append(key_problem)
    elif key is None and require_key:
        problems.append(f"{KEY_VAR}=(unset): the API key; set {KEY_VAR} or {KEY_FILE_VAR}")
    if problems or settings is None:
        raise ConfigError("; ".join(problems)) from None
    return settings


def describe_settings(settings: Settings) -> list[tuple[str, str]]:
    """Return (variable, value) for every variable, as check-config prints them; the key masked."""
    rows: list[tuple[str, str]] = []
    for field, name in ENV_NAMES.items():
        if field == "api_key":
            shown = "(unset)"
            if settings.api_key is not None:
                shown = f"{MASK} (from {settings.api_key_source})"
            rows.append((name, shown))
            continue
        value = getattr(settings, field)
        rows.append(
            (
                name,
                format_duration(None) if field in _NEVERABLE and value is None else display(value),
            )
        )
    return rows


def _unknown_variables(environ: Mapping[str, str], *, secret: str | None) -> list[str]:
    problems = []
    for name in sorted(environ):
        if not name.upper().startswith(PREFIX) or name in KNOWN_VARIABLES:
            continue
        # Compare what follows the prefix: the shared "REAPER_" would make everything look close.
        tails = {
            known[len(PREFIX) :]: known for known in KNOWN_VARIABLES if known.startswith(PREFIX)
        }
        hint = difflib.get_close_matches(
            name.upper()[len(PREFIX) :], sorted(tails), n=1, cutoff=0.6
        )
        suggestion = f"; did you mean {tails[hint[0]]}?" if hint else ""
        problems.append(
            f"{name}={show(environ[name], secret=secret)}: unknown variable, not one of the "
            f"{PREFIX}* variables{suggestion}"
        )
    return problems
