"""A real Prometheus server scrapes `reaper run` over loopback and answers queries on its metrics.

The daemon runs against the emulator (as in test_run_command); Prometheus (Debian's `prometheus`
package, which .ci/run installs when missing) scrapes it every second. Bounded: about 30 s at most.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from reaper.emulator.harness import running_emulator
from tests.loopback import free_port, http_get, wait_for
from tests.test_run_command import answers, daemon_env, reaper_run, seeded_state

PROMETHEUS = shutil.which("prometheus")
QUERY_LIMIT_SECONDS = 30

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="the prometheus server binary is not installed (apt-get install prometheus)",
    ),
]


@contextmanager
def prometheus_server(tmp_path: Path, target_port: int) -> Iterator[int]:
    """Run Prometheus scraping 127.0.0.1:``target_port`` every second; yield its own port."""
    assert PROMETHEUS is not None
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: reaper\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{target_port}']\n"
    )
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def query(port: int, promql: str) -> list[dict[str, Any]]:
    """Run an instant query through Prometheus's HTTP API; return the result vector."""
    status, body = http_get(port, "/api/v1/query?" + urlencode({"query": promql}))
    assert status == 200, body
    answer = json.loads(body)
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def test_prometheus_scrapes_the_daemon_and_answers_queries(tmp_path: Path) -> None:
    """Prometheus's API returns reaper_cycles_total and reaper_batches scraped from `reaper run`."""
    metrics_port = free_port()
    with (
        running_emulator(seeded_state(60)) as (base_url, _state),
        reaper_run(daemon_env(base_url, metrics_port), metrics_port, tmp_path) as daemon,
        prometheus_server(tmp_path, metrics_port) as prometheus_port,
    ):
        wait_for(answers(prometheus_port, "/-/ready", 200), 15, "Prometheus to be ready")
        found: dict[str, list[dict[str, Any]]] = {}

        def scraped() -> bool:
            for name in ("reaper_cycles_total", "reaper_batches", 'up{job="reaper"} == 1'):
                if not found.get(name):
                    found[name] = query(prometheus_port, name)
            return all(found.values())

        wait_for(
            scraped, QUERY_LIMIT_SECONDS, "reaper_cycles_total, reaper_batches and up in Prometheus"
        )
        assert daemon.stop() == 0

    outcomes = {series["metric"]["outcome"] for series in found["reaper_cycles_total"]}
    assert "success" in outcomes
    batches = {
        series["metric"]["processing_status"]: float(series["value"][1])
        for series in found["reaper_batches"]
        if series["metric"]["workspace"] == "default"
    }
    assert batches.keys() >= {"in_progress", "canceling", "ended"}
    assert sum(batches.values()) == 60
