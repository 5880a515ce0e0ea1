"""``reaper check-config``: validate the environment and print the effective settings.

One ``NAME=value`` line per variable of SPEC section 2, every one of them (defaults included), in
the form the environment accepts back; the key is always shown as ``********`` with the variable
it came from. A bad environment raises ConfigError, which ``reaper.cli`` turns into exit 78.
Settings that are valid but lose something (a retention outlasting the API's results window with
no archive) are printed as ``warning: ...`` lines on stderr; they do not change the exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import TextIO

from reaper.settings import describe_settings, load_settings
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
    for name, value in describe_settings(settings):
        print(f"{name}={value}", file=out)
    for warning in settings_warnings(settings):
        print(f"warning: {warning}", file=sys.stderr if err is None else err)
    return 0
