"""batch-reaper: keeps an organisation's Anthropic Message Batches tidy."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("batch-reaper")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"
