"""How settings read as text: what each variable accepts, its error line, its printed value.

Split from :mod:`reaper.settings` so the model stays readable. Every error line has the form
``VARIABLE=value: what is accepted (detail)``; values that look like the key are masked.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Final

from pydantic import ValidationError

from reaper.apikey import MASK, hide_url_credentials, show
from reaper.cronspec import CRON_FORMS
from reaper.durations import DURATION_EXAMPLES, DURATION_FORMS, format_duration

BOOL_FORMS: Final = "true or false (also 1/0, yes/no, on/off)"
_OPTIONAL_DURATION: Final = f"{DURATION_FORMS}, or never"
_POSITIVE_DURATION: Final = f"a positive duration like {DURATION_EXAMPLES}"
ACCEPTS: Final[Mapping[str, str]] = {
    "base_url": "an http:// or https:// URL with a host and no credentials, query or fragment",
    "workspace_ids": "distinct comma-separated workspace ids (letters, digits, _ - . :), or empty",
    "interval": _POSITIVE_DURATION,
    "cron": CRON_FORMS,
    "shutdown_grace": DURATION_FORMS,
    "dry_run": BOOL_FORMS,
    "delete_ended_after": _OPTIONAL_DURATION,
    "delete_failed_after": _OPTIONAL_DURATION,
    "cancel_stale_after": _OPTIONAL_DURATION,
    "delete_canceled": BOOL_FORMS,
    "cancel_wait_timeout": DURATION_FORMS,
    "min_age": DURATION_FORMS,
    "keep_last": "an integer from 0 to 1000000",
    "protect_ids": "comma-separated batch ids (letters, digits, _ - . :), or empty",
    "holds_file": "a path to a JSON Lines file of holds, or empty for none",
    "plan_max_age": _POSITIVE_DURATION,
    "max_actions_per_run": "an integer, 0 or more (0 acts on nothing)",
    "max_delete_fraction": "a number from 0 to 1",
    "max_cancel_fraction": "a number from 0 to 1",
    "max_clock_skew": f"{_POSITIVE_DURATION}, or never",
    "archive_dir": "a directory path, or empty for no archive",
    "archive_scope": "all or failed",
    "archive_missing": "keep or delete",
    "ledger_dir": "a directory path, or empty for no ledger",
    "concurrency": "an integer from 1 to 64",
    "max_rpm": "an integer from 1 to 100000",
    "page_size": "an integer from 1 to 1000",
    "request_timeout": _POSITIVE_DURATION,
    "max_retries": "an integer from 0 to 20",
    "metrics_host": "a host name or IP address to listen on",
    "metrics_port": "an integer from 0 to 65535 (0: no metrics server)",
    "log_level": "debug, info, warning or error",
    "log_format": "json or console",
}


def describe_errors(
    exc: ValidationError,
    values: Mapping[str, Any],
    env_names: Mapping[str, str],
    *,
    secret: str | None,
) -> list[str]:
    """Turn pydantic's errors into one line per bad variable, never echoing the key."""
    lines = []
    seen: set[str] = set()
    for error in exc.errors(include_input=False, include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        if field in seen or field not in env_names:
            continue
        seen.add(field)
        name = env_names[field]
        accepts = ACCEPTS.get(field, "a valid value")
        detail = ""
        if error["type"] == "value_error":
            detail = str(error.get("ctx", {}).get("error", ""))
            if show(detail, secret=secret) == MASK:
                detail = ""  # it quotes a value that looks like a key
        shown = show(str(values.get(field, "")), secret=secret)
        if field == "base_url":
            shown = show(hide_url_credentials(str(values.get(field, ""))), secret=secret)
        line = f"{name}={shown}: {accepts}"
        # Skip details that only repeat what the accepted forms already say.
        if detail and detail not in accepts and DURATION_FORMS not in detail:
            line += f" ({detail})"
        lines.append(line)
    return lines


def display(value: object) -> str:
    """Format a setting's value the way the environment accepts it back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, frozenset):
        return ",".join(sorted(value))
    if value is None:
        return ""
    return str(value)
