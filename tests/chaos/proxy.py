"""A TCP proxy for chaos tests: resets, stalls and truncates some HTTP exchanges on the wire.

The emulator's own faults are answers (500, 429, bad bodies); what it cannot do is break the
connection. This proxy sits between the reaper and the emulator, on loopback, and decides per
request (a chunk from the client that starts with an HTTP method) what to do with it:

- ``reset_before``: reset the connection (RST) without passing the request on: the API never
  saw it;
- ``reset_after``: pass the request on, then drop the answer and reset: the API acted, the
  client never learnt it (the case that makes a retried delete meet a 404);
- ``stall``: pass the request on and hold the answer ``stall_seconds`` before sending it (past
  the client's timeout: the API acted, the client gave up);
- ``truncate``: pass the request on, send half of the first chunk of the answer, close.

Decisions come from a seeded generator; ``limit`` bounds how many faults are injected in all.
``refuse()`` stops listening (new connections are refused) and closes every open connection;
``accept()`` listens again on the same port. Counters say what was done, for assertions.
Runs its own event loop in a background thread, so it serves sync and async tests alike.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

METHODS: Final = (b"GET ", b"POST ", b"DELETE ", b"PUT ", b"HEAD ", b"PATCH ")
KINDS: Final = ("reset_before", "reset_after", "stall", "truncate")


@dataclass
class ProxyFaults:
    """Shares of requests (0 to 1) each fault hits, drawn in this order; the rest pass."""

    reset_before: float = 0.0
    reset_after: float = 0.0
    stall: float = 0.0
    truncate: float = 0.0
    stall_seconds: float = 0.5
    limit: int | None = None
    paths: tuple[str, ...] = ()  # only requests whose target starts with one of these (empty: all)
    seed: int = 1
    injected: Counter[str] = field(default_factory=Counter)


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a crashed load balancer would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class ChaosProxy:
    """Forward 127.0.0.1:<port> to an upstream HTTP server, breaking some exchanges."""

    def __init__(self, upstream: str, faults: ProxyFaults | None = None) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname is not None
        assert parts.port is not None
        self._upstream = (parts.hostname, parts.port)
        self.faults = faults if faults is not None else ProxyFaults()
        self._rng = random.Random(self.faults.seed)
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chaos-proxy")
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.requests = 0

    # -- control (from any thread) -------------------------------------------------------------

    @property
    def url(self) -> str:
        """The proxy's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def set_faults(self, faults: ProxyFaults) -> None:
        """Replace the fault configuration (the generator restarts from its seed)."""
        with self._lock:
            self.faults = faults
            self._rng = random.Random(faults.seed)

    @property
    def injected(self) -> Counter[str]:
        """Faults injected so far under the current configuration, by kind."""
        return self.faults.injected

    def start(self) -> None:
        """Start the loop thread and listen on a free port."""
        self._thread.start()
        self._call(self._listen())

    def refuse(self) -> None:
        """Stop listening (connections are refused) and reset every open connection."""
        self._call(self._close_all())

    def accept(self) -> None:
        """Listen again on the same port."""
        self._call(self._listen())

    def stop(self) -> None:
        """Close everything and stop the loop thread."""
        self._call(self._close_all(finish=True))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)  # type: ignore[arg-type]

    # -- the proxy (on its own loop) -----------------------------------------------------------

    async def _listen(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close_all(self, *, finish: bool = False) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            _rst(writer)
        self._writers.clear()
        if finish:  # no connection task may outlive the loop
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _decide(self, chunk: bytes) -> str | None:
        if not chunk.startswith(METHODS):
            return None
        with self._lock:
            self.requests += 1
            faults = self.faults
            target = chunk.split(b" ", 2)[1].decode("latin-1") if chunk.count(b" ") >= 2 else ""
            if faults.paths and not target.startswith(faults.paths):
                return None
            if faults.limit is not None and sum(faults.injected.values()) >= faults.limit:
                return None
            draw = self._rng.random()
            edge = 0.0
            for kind in KINDS:
                edge += getattr(faults, kind)
                if draw < edge:
                    faults.injected[kind] += 1
                    return kind
            return None

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()
        assert me is not None
        self._tasks.add(me)
        try:
            await self._pipe(client_r, client_w)
        except asyncio.CancelledError:
            # Cancelled by stop(); ending normally, because asyncio 3.11's start_server callback
            # calls exception() on the finished task, which raises for a cancelled one.
            pass
        finally:
            self._tasks.discard(me)

    async def _pipe(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self._upstream)
        except OSError:
            _rst(client_w)
            return
        self._writers.update((client_w, up_w))
        # What to do with the next answer: None (pass), or the kind of fault pending on it.
        pending: list[str | None] = [None]

        async def upstream_to_client() -> None:
            while chunk := await up_r.read(65536):
                kind, pending[0] = pending[0], None
                if kind == "reset_after":
                    _rst(client_w)
                    return
                if kind == "truncate":
                    client_w.write(chunk[: max(1, len(chunk) // 2)])
                    await client_w.drain()
                    client_w.close()
                    return
                if kind == "stall":
                    await asyncio.sleep(self.faults.stall_seconds)
                client_w.write(chunk)
                await client_w.drain()

        async def client_to_upstream() -> None:
            while chunk := await client_r.read(65536):
                kind = self._decide(chunk)
                if kind == "reset_before":
                    _rst(client_w)
                    return
                pending[0] = kind
                up_w.write(chunk)
                await up_w.drain()

        tasks = [
            asyncio.ensure_future(upstream_to_client()),
            asyncio.ensure_future(client_to_upstream()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except Exception:  # noqa: S110 - a broken pipe is this proxy's everyday business
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for writer in (client_w, up_w):
                self._writers.discard(writer)
                if not writer.is_closing():
                    writer.close()


@contextmanager
def chaos_proxy(upstream: str, faults: ProxyFaults | None = None) -> Iterator[ChaosProxy]:
    """Run a ChaosProxy in front of ``upstream`` for the block; yield it."""
    proxy = ChaosProxy(upstream, faults)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
