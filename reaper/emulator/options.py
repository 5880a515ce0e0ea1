"""The flags of ``reaper emulator``; imported for every command, so it imports nothing heavy.

Values are taken as strings and checked by ``reaper.emulator.cli``, so that a bad value gets the
project's one-line message and exit code 78 rather than argparse's usage dump.
"""

from __future__ import annotations

import argparse

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Define the emulator's flags on ``parser``."""
    add = parser.add_argument
    add("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    add(
        "--port",
        default=str(DEFAULT_PORT),
        help=f"port, 0 for any free one (default {DEFAULT_PORT})",
    )
    add("--api-key", metavar="KEY", help="require this key (x-api-key or Bearer); default: none")
    add(
        "--api-key-file",
        metavar="FILE",
        help="read the required key from FILE (keeps it out of ps)",
    )
    add("--seed-file", metavar="FILE", help="load JSON Lines of API-shaped batch objects")
    add("--seed", metavar="N", default="0", help="add a realistic mix of N batches over 40 days")
    add(
        "--workspaces",
        metavar="W,W",
        help="other workspace ids the key may act in (others get 403); --seed spreads over them",
    )
    add("--default-workspace", metavar="W", help="the key's own workspace id")
    add("--latency-ms", metavar="MS", default="0", help="delay every API answer (default 0)")
    add("--error-rate", metavar="P", default="0", help="share of 500/529 answers, 0 to 1")
    add("--rate-limit-rpm", metavar="R", default="0", help="requests per minute, 0 for no limit")
    add(
        "--cancel-seconds", metavar="S", default="10", help="canceling lasts S seconds (default 10)"
    )
    add(
        "--processing-seconds",
        metavar="S",
        default="60",
        help="a created batch ends after 0.5 to 1.5 times S seconds (default 60)",
    )
    add(
        "--faults",
        metavar="JSON",
        help="start with these fault switches: a JSON object as PUT /_emulator/faults takes",
    )
    add("--random-seed", metavar="N", help="seed of the random generator, for repeatable runs")
