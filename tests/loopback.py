"""Helpers for tests that run servers on 127.0.0.1: a free port, a GET, a bounded wait, and a
subprocess with its output in files that is killed if the test leaves it running."""

from __future__ import annotations

import http.client
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest


def free_port() -> int:
    """Return a loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(port: int, path: str) -> tuple[int, str]:
    """GET ``path`` on 127.0.0.1:``port``; return the status and the body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def wait_for(condition: Callable[[], bool], limit: float, what: str) -> None:
    """Poll ``condition`` every 20 ms until it holds; fail naming ``what`` after ``limit`` s."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {limit:g} s waiting for {what}")
        time.sleep(0.02)


@contextmanager
def spawned(
    argv: Sequence[str], env: dict[str, str], stdout: Path, stderr: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` with its output in files (a pipe nobody reads would fill and block it);
    kill it if the test leaves it running."""
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(list(argv), env=env, stdout=out, stderr=err)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
