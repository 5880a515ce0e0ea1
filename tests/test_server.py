"""The observability server over real HTTP on loopback: metrics, liveness, readiness, 404."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator

import pytest

from reaper.metrics import Metrics
from reaper.server import Health, MetricsServer, start_server
from tests.helpers import Clock


def get(
    server: MetricsServer, path: str, *, method: str = "GET", accept: str | None = None
) -> tuple[int, str, bytes]:
    """Request ``path`` and return status, content type and body."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    try:
        conn.request(method, path, headers={"Accept": accept} if accept else {})
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        conn.close()


@pytest.fixture
def health(clock: Clock) -> Health:
    """Health with a 30 s staleness limit on the fake clock."""
    return Health(stale_after=30.0, clock=clock)


@pytest.fixture
def server(metrics: Metrics, health: Health) -> Iterator[MetricsServer]:
    """A running server on an ephemeral loopback port."""
    with start_server(metrics.registry, health, host="127.0.0.1", port=0) as running:
        yield running


def test_metrics_are_served_in_the_prometheus_text_format(
    server: MetricsServer, metrics: Metrics
) -> None:
    """/metrics answers 200 with the exposition format and the reaper's metrics."""
    metrics.cycles.labels(outcome="success").inc()
    status, content_type, body = get(server, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert 'reaper_cycles_total{outcome="success"} 1.0' in text
    assert "reaper_build_info{" in text


def test_metrics_negotiate_openmetrics_for_prometheus(server: MetricsServer) -> None:
    """A scraper asking for OpenMetrics gets it (and the query string is ignored)."""
    status, content_type, body = get(
        server, "/metrics?x=1", accept="application/openmetrics-text; version=1.0.0"
    )
    assert status == 200
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


def test_healthz_needs_a_fresh_heartbeat_and_a_running_scheduler(
    server: MetricsServer, health: Health, clock: Clock
) -> None:
    """/healthz is 503 before the first beat, 200 while fresh, 503 when stale or stopped."""
    status, content_type, body = get(server, "/healthz")
    assert (status, body) == (503, b"no heartbeat from the event loop yet\n")
    assert content_type.startswith("text/plain")

    health.heartbeat()
    health.scheduler_alive = True
    assert get(server, "/healthz")[0] == 200

    clock.advance(31)
    status, _, body = get(server, "/healthz")
    assert status == 503
    assert b"heartbeat is 31s old" in body

    health.heartbeat()
    assert get(server, "/healthz")[0] == 200
    health.scheduler_alive = False
    status, _, body = get(server, "/healthz")
    assert (status, body) == (503, b"scheduler is not running\n")


def test_readyz_turns_200_once_a_cycle_has_listed(server: MetricsServer, health: Health) -> None:
    """/readyz is 503 until mark_listed(), then 200."""
    assert get(server, "/readyz")[0] == 503
    health.mark_listed()
    assert get(server, "/readyz")[0] == 200


@pytest.mark.parametrize("path", ["/", "/metricsx", "/healthz/extra", "/favicon.ico"])
def test_other_paths_are_not_found(server: MetricsServer, path: str) -> None:
    """Only the three paths exist: no metrics on every path, unlike start_http_server."""
    status, _, body = get(server, path)
    assert status == 404
    assert b"reaper_" not in body


def test_head_answers_without_a_body(server: MetricsServer) -> None:
    """HEAD gets the status and headers only."""
    status, content_type, body = get(server, "/metrics", method="HEAD")
    assert (status, body) == (200, b"")
    assert content_type.startswith("text/plain")


def test_close_releases_the_port(metrics: Metrics, health: Health) -> None:
    """After close() nothing listens on the port any more."""
    running = start_server(metrics.registry, health, host="127.0.0.1", port=0)
    port = running.port
    assert get(running, "/readyz")[0] == 503
    running.close()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass


def test_a_busy_port_raises_oserror(metrics: Metrics, health: Health) -> None:
    """Binding an address in use fails loudly (the daemon turns it into an exit code)."""
    with (
        start_server(metrics.registry, health, host="127.0.0.1", port=0) as first,
        pytest.raises(OSError, match="in use"),
    ):
        start_server(metrics.registry, health, host="127.0.0.1", port=first.port)
