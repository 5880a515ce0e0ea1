"""The in-process emulator harness: run the emulator over loopback or inside this process.

``reaper demo`` runs on it (in-process, no socket), and so do the tests and the benchmarks.

- ``new_state(**kwargs)``: an ``EmulatorState`` on a ``ManualClock`` with a fixed random seed, so
  a test is repeatable; move its time with ``state.advance(seconds)``.
- ``running_emulator(state=None)``: a context manager that serves the emulator with uvicorn on
  127.0.0.1 on a free port in a background thread and yields ``(base_url, state)``.
- ``asgi_transport(state)``: an ``httpx.AsyncBaseTransport`` calling the app in-process (no socket);
  a results stream broken by the ``results_abort_ids`` fault raises ``httpx.RemoteProtocolError``
  as it would over a real connection.
- ``asgi_client(state, api_key=None, workspace=None)``: an ``httpx.AsyncClient`` over that
  transport, base URL ``http://emulator.test``, with ``anthropic-version`` (and the key) set.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import httpx
import uvicorn

from reaper.emulator.app import create_app
from reaper.emulator.clock import Clock, ManualClock
from reaper.emulator.results import ResultsAborted
from reaper.emulator.state import EmulatorState

IN_PROCESS_BASE_URL: Final = "http://emulator.test"
ANTHROPIC_VERSION: Final = "2023-06-01"


def new_state(
    *, clock: Clock | None = None, random_seed: int = 20260302, **kwargs: Any
) -> EmulatorState:
    """Return an EmulatorState on a ManualClock (unless given one) with a fixed random seed."""
    return EmulatorState(
        clock=clock if clock is not None else ManualClock(),
        rng=random.Random(random_seed),
        **kwargs,
    )


@contextmanager
def running_emulator(
    state: EmulatorState | None = None, *, host: str = "127.0.0.1", startup_timeout: float = 10.0
) -> Iterator[tuple[str, EmulatorState]]:
    """Serve the emulator over real HTTP in a background thread; yield (base_url, state)."""
    state = state if state is not None else new_state()
    config = uvicorn.Config(
        create_app(state),
        log_level="critical",  # the abort fault's broken streams would log tracebacks
        access_log=False,
        lifespan="off",
        # The app stamps Date from the emulator's clock (reaper.emulator.app.DateHeader).
        date_header=False,
        server_header=False,
        http="h11",
        ws="none",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    # IPPROTO_TCP so that asyncio sets TCP_NODELAY on accepted connections (else ~40 ms a
    # keep-alive request: Nagle + delayed ACK on uvicorn's separate head and body writes).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="emulator", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the emulator's server did not start")
            time.sleep(0.005)
        yield f"http://{host}:{sock.getsockname()[1]}", state
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


class _EmulatorTransport(httpx.ASGITransport):
    """ASGITransport that turns a deliberately broken results stream into a protocol error."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except ResultsAborted as exc:
            raise httpx.RemoteProtocolError(
                f"peer closed connection without sending complete message body ({exc})",
                request=request,
            ) from exc


def asgi_transport(state: EmulatorState) -> httpx.AsyncBaseTransport:
    """Return a transport that calls the emulator's app in-process."""
    return _EmulatorTransport(app=create_app(state))


def asgi_client(
    state: EmulatorState,
    *,
    api_key: str | None = None,
    workspace: str | None = None,
    **kwargs: Any,
) -> httpx.AsyncClient:
    """Return an httpx.AsyncClient over the in-process transport, with the API's headers set."""
    headers = {"anthropic-version": ANTHROPIC_VERSION}
    if api_key is not None:
        headers["x-api-key"] = api_key
    if workspace is not None:
        headers["anthropic-workspace-id"] = workspace
    headers.update(kwargs.pop("headers", {}))
    return httpx.AsyncClient(
        transport=asgi_transport(state),
        base_url=kwargs.pop("base_url", IN_PROCESS_BASE_URL),
        headers=headers,
        **kwargs,
    )
