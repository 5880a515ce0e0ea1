"""The observability endpoints: ``/metrics``, ``/healthz`` and ``/readyz`` on one small HTTP server.

The server runs on a thread of its own (stdlib ``ThreadingHTTPServer``), not on the event loop: a
scrape never waits behind a cycle, and the last metrics stay readable when the loop is wedged,
which is when an operator needs them most. ``/healthz`` therefore cannot take "I answered" as
proof of life; it checks a heartbeat that a task on the event loop refreshes (see ``Health``), so
a stuck loop turns the probe red and the orchestrator restarts the process.
(``prometheus_client.start_http_server`` is not used: it answers every path with metrics.)
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

# The loop refreshes the heartbeat every few seconds; a minute without one means it is stuck (a
# blocking call, a CPU-bound loop), not merely busy: awaiting the API never stops the heartbeat.
DEFAULT_STALE_AFTER: Final = 60.0
_TEXT: Final = "text/plain; charset=utf-8"


class Health:
    """Liveness and readiness state, written by the daemon's loop and read by the server thread."""

    def __init__(
        self,
        *,
        stale_after: float = DEFAULT_STALE_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stale_after = stale_after
        self._clock = clock
        self._last_beat: float | None = None
        self._listed = False
        # Set by the daemon from the scheduler's state on every heartbeat.
        self.scheduler_alive = False

    def heartbeat(self) -> None:
        """Record that the event loop is running (called from a task on the loop)."""
        self._last_beat = self._clock()

    def mark_listed(self) -> None:
        """Record that a cycle has listed the batches successfully: the reaper is ready."""
        self._listed = True

    @property
    def listed(self) -> bool:
        """Whether a cycle has listed successfully since start."""
        return self._listed

    def liveness(self) -> tuple[bool, str]:
        """Return whether the process is alive (fresh heartbeat, scheduler running) and why."""
        last = self._last_beat
        if last is None:
            return False, "no heartbeat from the event loop yet"
        age = self._clock() - last
        if age > self.stale_after:
            return False, f"event loop heartbeat is {age:.0f}s old (limit {self.stale_after:.0f}s)"
        if not self.scheduler_alive:
            return False, "scheduler is not running"
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        """Return whether a cycle has listed successfully, and why not."""
        if self._listed:
            return True, "ok"
        return False, "no cycle has listed the batches successfully yet"


class _Handler(BaseHTTPRequestHandler):
    """Route the three paths; anything else is 404."""

    server: _Server
    server_version = "batch-reaper"
    sys_version = ""
    # A client that connects and says nothing must not hold a thread for ever.
    timeout = 10

    def do_GET(self) -> None:
        """Answer a probe or a scrape."""
        self._respond(with_body=True)

    def do_HEAD(self) -> None:
        """Answer like GET without the body."""
        self._respond(with_body=False)

    def _respond(self, *, with_body: bool) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._send(200, encoder(self.server.registry), content_type, with_body=with_body)
        elif path in ("/healthz", "/readyz"):
            health = self.server.health
            ok, reason = health.liveness() if path == "/healthz" else health.readiness()
            body = (reason + "\n").encode()
            self._send(200 if ok else 503, body, _TEXT, with_body=with_body)
        else:
            body = b"not found: try /metrics, /healthz or /readyz\n"
            self._send(404, body, _TEXT, with_body=with_body)

    def _send(self, status: int, body: bytes, content_type: str, *, with_body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Stay quiet: a scrape every 15 s is not news, and stderr is not our log stream."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    registry: CollectorRegistry
    health: Health


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """The running HTTP server; ``close()`` stops it and joins its thread."""

    def __init__(
        self, registry: CollectorRegistry, health: Health, *, host: str, port: int
    ) -> None:
        server_class = _Server6 if ":" in host else _Server
        self._httpd = server_class((host, port), _Handler)
        self._httpd.registry = registry
        self._httpd.health = health
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            # Short poll: close() waits up to one interval for serve_forever to notice.
            kwargs={"poll_interval": 0.05},
            name="reaper-metrics-server",
            daemon=True,
        )
        self._thread.start()

    @property
    def host(self) -> str:
        """The address the server is bound to."""
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        """The port the server is bound to (the real one when asked for port 0)."""
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL of the server, for logs and tests."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        """Stop serving, close the socket and join the thread."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def start_server(
    registry: CollectorRegistry, health: Health, *, host: str, port: int
) -> MetricsServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` (``0``: a free port).

    Raises ``OSError`` when the address cannot be bound. Whether port 0 in the settings means
    "off" is the caller's decision (the daemon's).
    """
    return MetricsServer(registry, health, host=host, port=port)
