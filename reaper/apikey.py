"""The API key's way in, and the rendering of any configuration value without leaking it.

The key comes from ``ANTHROPIC_API_KEY`` or the file ``ANTHROPIC_API_KEY_FILE`` names; it is never
put in a text: every problem with it names the variable and shows ``********``. :func:`show` renders
any other value for an error line and masks whatever looks like a key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

KEY_VAR: Final = "ANTHROPIC_API_KEY"
KEY_FILE_VAR: Final = "ANTHROPIC_API_KEY_FILE"
MASK: Final = "********"
# A key file is a few dozen bytes; refuse to slurp /dev/zero or a log file named by mistake.
_KEY_FILE_LIMIT: Final = 64 * 1024


def read_key(environ: Mapping[str, str]) -> tuple[str | None, str | None, str | None]:
    """Return (key, the variable it came from, a problem) without ever putting the key in text."""
    direct = environ.get(KEY_VAR, "").strip() or None
    path_text = environ.get(KEY_FILE_VAR, "").strip()
    if not path_text:
        if direct is not None and not _plausible_key(direct):
            return None, None, f"{KEY_VAR}={MASK}: one line of printable ASCII without spaces"
        return direct, KEY_VAR if direct else None, None
    where = f"{KEY_FILE_VAR}={show(path_text)}"
    try:
        with open(path_text, "rb") as handle:
            data = handle.read(_KEY_FILE_LIMIT + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return None, None, f"{where}: a readable file holding the key (cannot read it: {reason})"
    if len(data) > _KEY_FILE_LIMIT:
        return None, None, f"{where}: a file holding only the key (this one is over 64 KiB)"
    try:
        from_file = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None, None, f"{where}: a text file holding the key (this one is not UTF-8)"
    if not from_file:
        return None, None, f"{where}: a file holding the key (this one is empty)"
    if not _plausible_key(from_file):
        return None, None, f"{where}: a file holding one line of printable ASCII without spaces"
    if direct is not None and direct != from_file:
        return (
            None,
            None,
            (
                f"{KEY_VAR}={MASK}: set either {KEY_VAR} or {KEY_FILE_VAR}, "
                "not both with different keys"
            ),
        )
    return from_file, KEY_FILE_VAR, None


def _plausible_key(key: str) -> bool:
    return key.isascii() and key.isprintable() and not any(c.isspace() for c in key)


def show(value: str, *, secret: str | None = None) -> str:
    """Render a value for an error line: one line, short, never anything that looks like a key."""
    # A key pasted into the wrong variable must not be echoed either; very short test keys would
    # mask ordinary words, hence the length floor.
    if "sk-ant" in value or (secret is not None and len(secret) >= 8 and secret in value):
        return MASK
    if not value.isprintable():
        value = value.encode("unicode_escape").decode("ascii")
    return value if len(value) <= 80 else value[:77] + "..."


def hide_url_credentials(url: str) -> str:
    """Replace the ``user:password@`` part of a URL with the mask."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    return f"{scheme}://{MASK}@{rest.split('@', 1)[1]}"
