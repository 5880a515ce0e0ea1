"""``reaper emulator``: check the flags, seed the store, serve the API over HTTP until a signal.

Exit codes: 0 after SIGTERM or SIGINT (a graceful stop); 78 (EX_CONFIG) when a flag value or the
seed file is bad, with one line on stderr naming the flag, the value and what is accepted (for the
seed file: file:line and why); 1 when the server cannot start (e.g. the port is taken).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import re
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final

from reaper.emulator.faults import Faults

EX_OK: Final = 0
EX_FAILED: Final = 1
EX_CONFIG: Final = 78
_WORKSPACE: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")


class FlagError(ValueError):
    """A flag value the emulator cannot use; the message is the whole line to print."""


@dataclass(frozen=True, slots=True)
class Options:
    """The checked flags."""

    host: str
    port: int
    api_key: str | None
    seed_file: Path | None
    seed: int
    workspaces: tuple[str, ...]
    default_workspace: str | None
    latency_ms: float
    error_rate: float
    rate_limit_rpm: int
    cancel_seconds: float
    processing_seconds: float
    random_seed: int | None
    faults: Faults | None = None


def _number(flag: str, raw: str, *, low: float, high: float, accepted: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:  # also rejects nan and inf
        raise FlagError(f"{flag}: got {raw!r}, expected {accepted}")
    return value


def _whole(flag: str, raw: str, *, low: int, high: int, accepted: str) -> int:
    if not re.fullmatch(r"-?[0-9]+", raw.strip()) or not low <= int(raw) <= high:
        raise FlagError(f"{flag}: got {raw!r}, expected {accepted}")
    return int(raw)


def _workspace(flag: str, raw: str) -> str:
    if not _WORKSPACE.fullmatch(raw):
        raise FlagError(
            f"{flag}: got {raw!r}, expected a workspace id of letters, digits, '_' and '-'"
        )
    return raw


def _faults(raw: str | None) -> Faults | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise FlagError(f"--faults: got {raw!r}, expected a JSON object of fault fields")
    try:
        return Faults.from_json(data)
    except ValueError as exc:
        raise FlagError(f"--faults: {exc}") from None


def parse_options(args: argparse.Namespace) -> Options:
    """Check every flag; raise FlagError with the line to print for the first bad one."""
    host = args.host.strip()
    if not host:
        raise FlagError(f"--host: got {args.host!r}, expected an address such as 127.0.0.1")
    api_key = args.api_key
    if api_key is not None and args.api_key_file is not None:
        raise FlagError("--api-key-file: give either --api-key or --api-key-file, not both")
    if args.api_key_file is not None:
        try:
            api_key = Path(args.api_key_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise FlagError(
                f"--api-key-file: cannot read {args.api_key_file!r}: {reason}"
            ) from None
    if api_key is not None and (not api_key or any(c.isspace() for c in api_key)):
        # Never echo the key itself.
        raise FlagError("--api-key: expected a non-empty key without spaces")
    seed_file = None
    if args.seed_file is not None:
        seed_file = Path(args.seed_file)
        if not seed_file.is_file():
            raise FlagError(f"--seed-file: got {args.seed_file!r}, expected a readable file")
    workspaces: tuple[str, ...] = ()
    if args.workspaces:
        workspaces = tuple(
            _workspace("--workspaces", w.strip()) for w in args.workspaces.split(",") if w.strip()
        )
    default_workspace = (
        None
        if args.default_workspace is None
        else _workspace("--default-workspace", args.default_workspace)
    )
    random_seed = None
    if args.random_seed is not None:
        random_seed = _whole(
            "--random-seed", args.random_seed, low=0, high=2**63, accepted="a whole number >= 0"
        )
    return Options(
        host=host,
        port=_whole(
            "--port", args.port, low=0, high=65535, accepted="a port from 0 (any) to 65535"
        ),
        api_key=api_key,
        seed_file=seed_file,
        seed=_whole(
            "--seed", args.seed, low=0, high=5_000_000, accepted="a count from 0 to 5000000"
        ),
        workspaces=workspaces,
        default_workspace=default_workspace,
        latency_ms=_number(
            "--latency-ms",
            args.latency_ms,
            low=0,
            high=600_000,
            accepted="milliseconds from 0 to 600000",
        ),
        error_rate=_number(
            "--error-rate",
            args.error_rate,
            low=0,
            high=1,
            accepted="a share from 0 to 1 (e.g. 0.05)",
        ),
        rate_limit_rpm=_whole(
            "--rate-limit-rpm",
            args.rate_limit_rpm,
            low=0,
            high=1_000_000,
            accepted="requests per minute from 0 (no limit) to 1000000",
        ),
        cancel_seconds=_number(
            "--cancel-seconds",
            args.cancel_seconds,
            low=0,
            high=86_400,
            accepted="seconds from 0 to 86400",
        ),
        processing_seconds=_number(
            "--processing-seconds",
            args.processing_seconds,
            low=0,
            high=86_400 * 2,
            accepted="seconds from 0 to 172800",
        ),
        random_seed=random_seed,
        faults=_faults(args.faults),
    )


def _ignore(signum: int, frame: FrameType | None) -> None:
    """Swallow the signal uvicorn re-raises after its graceful stop, so that we exit 0."""


def main(args: argparse.Namespace) -> int:
    """Run ``reaper emulator`` and return its exit code."""
    try:
        options = parse_options(args)
    except FlagError as exc:
        print(f"reaper emulator: {exc}", file=sys.stderr)
        return EX_CONFIG

    # Heavy imports only once the flags are known to be good.
    import uvicorn

    from reaper.emulator.app import create_app
    from reaper.emulator.seed import SeedError
    from reaper.emulator.state import DEFAULT_WORKSPACE, EmulatorState

    state = EmulatorState(
        api_key=options.api_key,
        cancel_seconds=options.cancel_seconds,
        processing_seconds=options.processing_seconds,
        latency_ms=options.latency_ms,
        error_rate=options.error_rate,
        rate_limit_rpm=options.rate_limit_rpm,
        faults=options.faults,
        default_workspace=options.default_workspace or DEFAULT_WORKSPACE,
        workspaces=options.workspaces or None,
        rng=random.Random(options.random_seed),
    )
    try:
        if options.seed_file is not None:
            state.load_seed_file(options.seed_file)
    except SeedError as exc:
        print(f"reaper emulator: --seed-file: {exc}", file=sys.stderr)
        return EX_CONFIG
    if options.seed:
        state.seed_random(options.seed, workspaces=(state.default_workspace, *options.workspaces))
    # The seeded store lives as long as the process: spare it the cyclic GC's full scans, which
    # cost ~100 ms a time with a million batches (freed batches still go by reference counting).
    gc.freeze()

    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only when the
    # listening socket says TCP; without it every keep-alive answer waits ~40 ms (Nagle +
    # delayed ACK), as uvicorn writes the head and the body separately.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((options.host, options.port))
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        print(
            f"reaper emulator: cannot listen on {options.host}:{options.port}: {reason}",
            file=sys.stderr,
        )
        return EX_FAILED
    port = sock.getsockname()[1]
    shown_host = f"[{options.host}]" if family == socket.AF_INET6 else options.host
    print(
        f"reaper emulator: listening on http://{shown_host}:{port} "
        f"({len(state)} batches; API key {'required' if options.api_key else 'not required'}; "
        "control surface at /_emulator)",
        flush=True,
    )
    config = uvicorn.Config(
        create_app(state),
        log_level="warning",
        access_log=False,
        lifespan="off",
        # The app stamps Date from the emulator's clock (reaper.emulator.app.DateHeader).
        date_header=False,
        server_header=False,
        http="h11",
        ws="none",
        timeout_graceful_shutdown=5,
    )
    signal.signal(signal.SIGTERM, _ignore)
    signal.signal(signal.SIGINT, _ignore)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
    return EX_OK
