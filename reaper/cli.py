"""Command line: parse arguments, dispatch to a command, map failures to exit codes.

Every behaviour is configured by environment variables; flags exist only for output format and for
the emulator (SPEC section 1). Each command lives in a module of its own and is imported only when
it runs, so ``reaper emulator`` never pays for the daemon's imports and the reverse.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final

from reaper import __version__
from reaper.exits import EX_CONFIG, EX_FAILED, EX_INTERRUPTED

# command -> "module:function"; the function takes the parsed arguments and returns an exit code.
_HANDLERS: Final = {
    "run": "reaper.commands.run:main",
    "once": "reaper.commands.once:main",
    "plan": "reaper.commands.plan:main",
    "apply": "reaper.commands.apply:main",
    "explain": "reaper.commands.explain:main",
    "check-config": "reaper.commands.check_config:main",
    "emulator": "reaper.emulator.cli:main",
    "demo": "reaper.commands.demo:main",
}


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser for every command of SPEC section 1."""
    parser = argparse.ArgumentParser(
        prog="reaper",
        description="Keep Anthropic Message Batches tidy. Configured by environment variables.",
    )
    parser.add_argument("--version", action="version", version=f"batch-reaper {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("run", help="the daemon: metrics, health, a cycle at start and on schedule")
    sub.add_parser("once", help="one cycle, then exit (0 done, 1 failed, 3 safety stop)")
    plan = sub.add_parser("plan", help="list and decide, change nothing")
    plan.add_argument("--json", action="store_true", help="JSON Lines and a summary object")
    plan.add_argument("--all", action="store_true", help="also show the batches that are kept")
    plan.add_argument(
        "--out", metavar="FILE", type=Path, help="also write the plan for review (reaper apply)"
    )
    apply = sub.add_parser(
        "apply", help="act on a reviewed plan (plan --out): only its batches still due"
    )
    apply.add_argument("plan", metavar="FILE", help="a plan written by reaper plan --out")
    explain = sub.add_parser("explain", help="why one batch gets its action, rule by rule")
    explain.add_argument("batch_id", metavar="BATCH_ID")
    explain.add_argument("--json", action="store_true", help="print the explanation as JSON")
    sub.add_parser("check-config", help="validate the environment, print effective settings")
    sub.add_parser("demo", help="the main job against an embedded emulator, no set-up needed")

    emulator = sub.add_parser("emulator", help="serve the Message Batches API emulator")
    from reaper.emulator.options import add_arguments  # light module: flag definitions only

    add_arguments(emulator)
    return parser


def _resolve(target: str) -> Callable[[argparse.Namespace], int]:
    module_name, _, function_name = target.partition(":")
    handler: Callable[[argparse.Namespace], int] = getattr(
        importlib.import_module(module_name), function_name
    )
    # What start-up built (modules, classes, settings) lives as long as the process: out of the
    # cyclic collector's way, every collection has that much less to walk (a dry run over 200,000
    # listed spent 0.48 -> 0.29 s in the collector, measured before Batch left it: gc=False).
    gc.freeze()
    return handler


def printed_secrets(environ: Mapping[str, str]) -> list[str]:
    """Return the key(s) the environment names, to mask in printed text (however malformed)."""
    from reaper.apikey import KEY_VAR, read_key
    from reaper.logs import MIN_SECRET_FRAGMENT

    key, _source, _problem = read_key(environ)
    found = {environ.get(KEY_VAR, "").strip(), key or ""}
    # A very short value would mask ordinary words; credential shapes are masked regardless.
    return sorted(s for s in found if len(s) >= MIN_SECRET_FRAGMENT)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``reaper`` command line and return its exit code."""
    args = build_parser().parse_args(argv)
    from reaper.logs import redacted_output
    from reaper.settings import ConfigError

    # Every line printed from here on, stdout and stderr, is masked: summaries, tables, JSON,
    # configuration errors and crash text, not only the log lines (issue 12).
    with redacted_output(printed_secrets(os.environ)):
        try:
            return _resolve(_HANDLERS[args.command])(args)
        except ConfigError as exc:
            print(f"reaper: configuration error: {exc}", file=sys.stderr)
            return EX_CONFIG
        except KeyboardInterrupt:
            return EX_INTERRUPTED
        except BrokenPipeError:
            # The reader went away (`reaper plan | head`): stop quietly, and keep Python from
            # complaining again when it flushes stdout at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EX_FAILED
        except Exception as exc:
            # Unforeseen (a bug, or a failure nobody mapped). Never Python's own traceback: it
            # prints the exception's text unmasked, and an httpx error can quote the request's
            # x-api-key. The traceback goes to the log, whose formatter masks the key; stderr
            # gets one line.
            logged = bool(logging.getLogger().handlers)
            if logged:
                logging.getLogger("reaper.cli").error("command.crashed", exc_info=exc)
            print(
                f"reaper: {args.command} stopped on an unexpected {type(exc).__name__}"
                + ("; the log has the traceback" if logged else ""),
                file=sys.stderr,
            )
            return EX_FAILED
