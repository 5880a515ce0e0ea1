"""The key never leaves: not in a log line, a metric, an exception, a command's output, a crash.

A canary key is used everywhere and every output is searched for any 8-character run of it, so a
key cut short or split is caught too. Where the key was really there to be masked (an httpx error
quoting the request's headers), the test also checks that the mask fired, so it cannot pass by
never meeting the key.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest

from reaper.client import ApiError, BatchClient, ConnectionFailed
from reaper.cycle import CycleOutcome, run_cycle
from reaper.emulator.clock import system_clock
from reaper.emulator.faults import Faults
from reaper.emulator.harness import new_state, running_emulator
from reaper.logs import REDACTED, configure_logging, reset_logging
from reaper.metrics import Metrics
from tests.chaos import population as pop
from tests.chaos.conftest import KEY, chaos_emulator, chaos_settings, leaks
from tests.chaos.daemon import command_env
from tests.chaos.proxy import ProxyFaults, chaos_proxy
from tests.helpers import run_command
from tests.loopback import spawned

pytestmark = pytest.mark.anyio


class LeakyTransport(httpx.AsyncBaseTransport):
    """Fail every request with an exception whose text quotes the request, headers and all.

    Some libraries do put a request in their messages; httpx prints ``x-api-key`` in clear in a
    ``Headers`` repr. ``kind``: ``connect`` and ``timeout`` (httpx transport errors, which the
    client handles), ``status`` (an ``HTTPStatusError``) and ``runtime`` (a bug elsewhere).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        text = f"cannot reach {request.url}: headers {request.headers!r} {dict(request.headers)}"
        assert KEY in text  # the premise: the key is really in the exception's text
        if self.kind == "connect":
            raise httpx.ConnectError(text, request=request)
        if self.kind == "timeout":
            raise httpx.ReadTimeout(text, request=request)
        if self.kind == "status":
            response = httpx.Response(500, request=request)
            raise httpx.HTTPStatusError(text, request=request, response=response)
        raise RuntimeError(text)


@contextmanager
def logging_to(level: str, fmt: str) -> Iterator[io.StringIO]:
    """Configure the reaper's logging (masking KEY) into a buffer for the block."""
    buffer = io.StringIO()
    configure_logging(level, fmt, secrets=[KEY], stream=buffer)  # type: ignore[arg-type]
    try:
        yield buffer
    finally:
        reset_logging()


@pytest.mark.parametrize("fmt", ["json", "console"])
async def test_no_log_line_at_debug_holds_the_key_whatever_fails(fmt: str) -> None:
    """Faults, broken connections, a refused key, leaky httpx errors and a crash: all masked."""
    metrics = Metrics()
    with logging_to("debug", fmt) as buffer:
        async with chaos_emulator() as chaos:
            chaos.metrics = metrics
            settings = chaos_settings(chaos.base_url)
            chaos.state.faults = Faults(
                error_rate=0.3,
                not_found_rate=0.1,
                unknown_status_rate=0.1,
                endpoints=frozenset({"list", "retrieve", "cancel", "delete"}),
            )
            proxy_faults = ProxyFaults(reset_before=0.1, reset_after=0.1, truncate=0.1)
            with chaos_proxy(chaos.base_url, proxy_faults) as proxy:
                async with chaos.client(base_url=proxy.url) as client:
                    for _ in range(2):
                        await chaos.cycle(client, settings)
            chaos.state.faults = Faults(malformed_list_rate=1.0, limit=1)
            async with chaos.client() as client:
                malformed = await chaos.cycle(client, settings)
            chaos.state.api_key = "sk-ant-api03-another-key-entirely-0000"  # 401 for ours
            async with chaos.client(max_retries=0) as client:
                refused = await chaos.cycle(client, settings)
            for kind in ("connect", "timeout", "status", "runtime"):
                async with chaos.client(transport=LeakyTransport(kind), max_retries=1) as client:
                    report = await chaos.cycle(client, settings)
                    assert report.outcome is CycleOutcome.FAILED
    text = buffer.getvalue()

    assert refused.listing_failures[0].status == 401
    assert malformed.listing_failures[0].error_type == "malformed_response"
    for event in ("api.retry", "listing.failed", "cycle.crashed", "batch.delete", "HTTP Request"):
        assert event in text, event  # the run went through every kind of line, debug included
    assert REDACTED in text  # the leaky errors' key was there, and masked
    assert not leaks(text), leaks(text)[:3]
    # The metrics of the same run: labels are endpoints, codes, outcomes, never a header.
    exposition = generate_latest(metrics.registry).decode()
    assert "reaper_api_requests_total" in exposition
    assert not leaks(exposition)


@pytest.mark.parametrize("kind", ["connect", "timeout"])
async def test_an_httpx_error_quoting_the_request_becomes_an_api_error_without_the_key(
    kind: str,
) -> None:
    """ConnectError and ReadTimeout carrying the request: the ApiError says why, masked."""
    async with BatchClient(
        api_key=KEY,
        base_url="http://api.invalid",
        max_retries=1,
        max_rpm=100_000,
        transport=LeakyTransport(kind),
        sleep=_no_sleep,
    ) as client:
        for call in (client.retrieve, client.cancel, client.delete):
            with pytest.raises(ConnectionFailed) as caught:
                await call("msgbatch_1", None)
            error = caught.value
            for text in (str(error), repr(error), error.message, *map(str, error.args)):
                assert not leaks(text), text
            assert REDACTED in error.message  # it did quote the key, masked


@pytest.mark.parametrize("kind", ["status", "runtime"])
async def test_an_unexpected_exception_quoting_the_key_is_masked_in_the_report(
    kind: str,
) -> None:
    """Not an httpx transport error: the cycle crashes or the action fails; the report is masked."""
    async with chaos_emulator() as chaos:
        settings = chaos_settings(chaos.base_url)
        # The listing crashes the cycle: its error text goes into the report and the summary.
        async with chaos.client(transport=LeakyTransport(kind)) as client:
            crashed = await chaos.cycle(client, settings)
        # The listing works, every cancel and delete fails with the leaky exception.
        leaky = LeakyTransport(kind)
        async with (
            chaos.client() as lister,
            chaos.client(transport=leaky) as actor,
        ):
            acting = _SplitClient(lister, actor)
            failed = await run_cycle(
                settings, acting, metrics=Metrics(), now=chaos.state.now, sleep=_no_sleep
            )

    assert crashed.outcome is CycleOutcome.FAILED
    assert crashed.error is not None
    assert REDACTED in crashed.error
    assert failed.failures
    texts = [
        crashed.error,
        crashed.summary_text(),
        failed.summary_text(),
        *(f.message for f in failed.failures),
        repr(crashed),
        repr(failed),
    ]
    for text in texts:
        assert not leaks(text), text[:300]


class _SplitClient:
    """List with one client, act with another (whose transport is leaky)."""

    def __init__(self, lister: BatchClient, actor: BatchClient) -> None:
        self._lister = lister
        self._actor = actor
        self.list_pages = lister.list_pages
        self.cancel = actor.cancel
        self.delete = actor.delete
        self.retrieve = actor.retrieve
        self.stream_results = actor.stream_results

    @property
    def requests_made(self) -> dict[str, int]:
        made = dict(self._lister.requests_made)
        for endpoint, n in self._actor.requests_made.items():
            made[endpoint] = made.get(endpoint, 0) + n
        return made


async def _no_sleep(_seconds: float) -> None:
    return None


def test_api_errors_never_print_headers() -> None:
    """ApiError's text is built from status, type, message and request id: nothing else."""
    error = ApiError("delete", 500, "api_error", "Internal server error", "req_1", batch_id="b1")
    assert str(error) == "delete b1: 500 api_error (request-id req_1): Internal server error"


# -- the commands, as processes ---------------------------------------------------------------

COMMANDS = [
    ["plan"],
    ["plan", "--json", "--all"],
    ["explain", "keep_failed_0"],
    ["explain", "--json", "del_old_00"],
    ["check-config"],
    ["once"],
]


@pytest.fixture(scope="module")
def faulty_api() -> Iterator[str]:
    """Serve the population on the wall clock, answering a third of requests with 500/529."""
    state = new_state(clock=system_clock, api_key=KEY, cancel_seconds=1)
    state.seed_objects(pop.population(state.now()))
    state.faults = Faults(error_rate=0.3, unknown_status_rate=0.1)
    with running_emulator(state) as (base_url, _):
        yield base_url


def assert_clean(done: subprocess.CompletedProcess[str]) -> None:
    """Assert neither stream of a finished command holds any fragment of the key."""
    for name, text in (("stdout", done.stdout), ("stderr", done.stderr)):
        assert not leaks(text), f"{name}: {leaks(text)[:3]}"


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["json", "console"])
@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_command_output_never_holds_the_key(faulty_api: str, args: list[str], fmt: str) -> None:
    """Debug logs, a flaky API, a dry run: plan, explain, check-config and once stay clean."""
    env = command_env(
        faulty_api,
        REAPER_LOG_LEVEL="debug",
        REAPER_LOG_FORMAT=fmt,
        REAPER_DRY_RUN="true",
        REAPER_MAX_RETRIES="8",
    )
    done = run_command(args, env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_clean(done)
    if args[0] == "check-config":
        assert "ANTHROPIC_API_KEY=********" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("args", [c for c in COMMANDS if c[0] != "check-config"], ids=" ".join)
def test_command_output_never_holds_the_key_when_the_api_is_unreachable(
    args: list[str],
) -> None:
    """Connection refused: the failure is told, exit 1, and the key is nowhere."""
    env = command_env("http://127.0.0.1:9", REAPER_LOG_LEVEL="debug", REAPER_MAX_RETRIES="1")
    done = run_command(args, env)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert_clean(done)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REAPER_PROTECT_IDS", f"msgbatch_1;{KEY}"),
        ("REAPER_WORKSPACE_IDS", f"wrkspc_a,{KEY}/x"),
        # Valid ids and paths: they would be printed (check-config, plan) and sent as headers.
        ("REAPER_PROTECT_IDS", KEY),
        ("REAPER_WORKSPACE_IDS", f"wrkspc_a,{KEY}"),
        ("REAPER_ARCHIVE_DIR", f"/tmp/{KEY}"),
        ("ANTHROPIC_BASE_URL", f"https://user:{KEY}@api.example.com"),
        ("ANTHROPIC_BASE_URL", f"https://api.example.com/?key={KEY}"),
        ("REAPER_DRY_RUNN", KEY),
        ("REAPER_LOG_LEVEL", KEY),
        ("ANTHROPIC_API_KEY", f"{KEY} {KEY}"),
    ],
)
def test_a_key_pasted_into_the_wrong_place_is_not_echoed(variable: str, value: str) -> None:
    """A configuration error quoting the value: the key is masked, whole and in part."""
    env = command_env("http://127.0.0.1:9", **{variable: value})
    for args in (["check-config"], ["plan"], ["once"]):
        done = run_command(args, env)
        assert done.returncode == 78, (args, done.stderr)
        assert len(done.stderr.splitlines()) == 1, done.stderr
        assert_clean(done)


CRASH_WRAPPER = """
import sys

import httpx

from reaper import cli


async def broken(self, request):
    raise RuntimeError(f"transport exploded on {request.url}: {request.headers!r}")


httpx.AsyncHTTPTransport.handle_async_request = broken
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.fixture
def crashing(tmp_path: Path) -> Path:
    """Return a script running the reaper's command line with an HTTP layer that explodes,
    quoting the request's headers (key included) in the exception."""
    script = tmp_path / "crashing_reaper.py"
    script.write_text(CRASH_WRAPPER)
    return script


@pytest.mark.slow
@pytest.mark.parametrize("args", [["once"], ["plan"], ["explain", "msgbatch_1"]], ids=" ".join)
def test_a_crashing_command_prints_no_key_and_no_raw_traceback(
    crashing: Path, args: list[str]
) -> None:
    """An exception quoting the key: exit 1, one line on stderr, the log masked."""
    env = command_env("http://127.0.0.1:9", REAPER_LOG_LEVEL="debug")
    done = subprocess.run(
        [sys.executable, str(crashing), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "Traceback (most recent call last)" not in done.stderr
    assert REDACTED in done.stdout + done.stderr  # the key was there, and masked
    assert_clean(done)
    if args[0] != "once":  # plan and explain: the log (stderr) and then one line
        assert done.stderr.splitlines()[-1].startswith(
            f"reaper: {args[0]} stopped on an unexpected"
        )


@pytest.mark.slow
def test_the_daemon_survives_crashing_cycles_without_printing_the_key(
    crashing: Path, tmp_path: Path
) -> None:
    """`reaper run` with every cycle crashing: it goes on, logs masked, SIGTERM exits 0."""
    env = command_env("http://127.0.0.1:9", REAPER_LOG_LEVEL="debug", REAPER_INTERVAL="1s")
    out, err = tmp_path / "out", tmp_path / "err"
    with spawned([sys.executable, str(crashing), "run"], env, out, err) as process:
        deadline = time.monotonic() + 20
        while out.read_text().count('"cycle.crashed"') < 2:
            assert time.monotonic() < deadline, "no two crashed cycles"
            assert process.poll() is None, err.read_text()
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    lines = out.read_text().splitlines()
    events: list[dict[str, Any]] = [json.loads(line) for line in lines]
    assert events[-1]["event"] == "daemon.stopped"
    assert err.read_text() == ""
    assert REDACTED in out.read_text()
    assert not leaks(out.read_text())


@pytest.fixture(scope="module")
def echoing_api() -> Iterator[str]:
    """Serve the population with every error echoing the credential (issue 12 #6): a third of
    the requests fail, each with the key in its error type, message and request id."""
    state = new_state(clock=system_clock, api_key=KEY, cancel_seconds=1)
    state.seed_objects(pop.population(state.now()))
    state.faults = Faults(error_rate=1.0, echo_credentials=True)
    with running_emulator(state) as (base_url, _):
        yield base_url


@pytest.mark.slow
@pytest.mark.parametrize(
    "args", [["once"], ["plan"], ["plan", "--json"], ["explain", "del_old_00"]], ids=" ".join
)
def test_an_api_echoing_the_key_in_its_errors_never_reaches_printed_text(
    echoing_api: str, args: list[str]
) -> None:
    """Issue 12 #6: every answer is an error whose type, message and request id carry the key;
    once, plan and explain fail (exit 1) and print what failed, with no fragment of the key,
    on stdout or stderr, and the mask shows where it was."""
    env = command_env(echoing_api, REAPER_DRY_RUN="true", REAPER_MAX_RETRIES="0")
    done = run_command(args, env)
    assert done.returncode == 1, done.stderr[-2000:]
    assert_clean(done)
    assert REDACTED in done.stdout + done.stderr  # the key was there, and was masked
