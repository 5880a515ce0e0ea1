"""``reaper check-config``: validate the environment and print the effective settings.

One ``NAME=value`` line per variable of SPEC section 2, every one of them (defaults included), in
the form the environment accepts back; the key is always shown as ``********`` with the variable
it came from. A bad environment raises ConfigError, which ``reaper.cli`` turns into exit 78; so
does a ``REAPER_HOLDS_FILE`` that cannot be read or parsed (the message names the line).
Settings that are valid but lose something (a retention outlasting the API's results window with
no archive, an archive or ledger directory that does not exist yet) are printed as
``warning: ...`` lines on stderr; they do not change the exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import TextIO

from reaper.apikey import show
from reaper.holds import HoldsError, read_holds
from reaper.settings import ConfigError, Settings, describe_settings, load_settings
from reaper.settings_checks import settings_warnings


def main(args: argparse.Namespace) -> int:
    """Validate the process environment and print the effective settings; return 0."""
    del args  # no flags: everything comes from the environment
    return check_config(None, out=sys.stdout, err=sys.stderr)


def check_config(
    environ: Mapping[str, str] | None, *, out: TextIO, err: TextIO | None = None
) -> int:
    """Validate ``environ`` (the process environment if None), print the settings, return 0."""
    # The daemon cannot work without a key, so a missing one is a configuration error here too.
    settings = load_settings(environ, require_key=True)
    if settings.holds_file is not None:
        try:
            read_holds(settings.holds_file)
        except HoldsError as exc:
            raise ConfigError(str(exc)) from None
    for name, value in describe_settings(settings):
        print(f"{name}={value}", file=out)
    for warning in settings_warnings(settings) + _missing_directories(settings):
        print(f"warning: {warning}", file=sys.stderr if err is None else err)
    return 0


def _missing_directories(settings: Settings) -> list[str]:
    """Warn about an archive or ledger directory that is not there (yet): nothing creates it."""
    warnings = []
    for variable, path, consequence in (
        ("REAPER_ARCHIVE_DIR", settings.archive_dir, "every archive fails and nothing is deleted"),
        ("REAPER_LEDGER_DIR", settings.ledger_dir, "no cancel or delete is sent"),
    ):
        if path is not None and not path.is_dir():
            warnings.append(
                f"{variable}={show(str(path))}: does not exist; the reaper never creates it, "
                f"and until it does {consequence}"
            )
    return warnings
