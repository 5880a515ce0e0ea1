"""Bad input everywhere a user (or the API) can give it: one clear error, no traceback, right code.

tests/test_settings.py checks the message of each bad value; here every variable goes through
every command that reads the settings, as the command line runs them (exit 78, one line on
stderr, nothing on stdout), then the values that pass validation but cannot work (exit 69, or
failed actions that delete nothing), the emulator's flags and ``--seed-file`` lines, and batch
objects the API might send with fields missing.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reaper import cli
from reaper.emulator.clock import system_clock
from reaper.emulator.harness import asgi_client, new_state, running_emulator
from reaper.emulator.seed import SeedError
from reaper.models import Batch, ModelError
from reaper.settings import KNOWN_VARIABLES
from tests.chaos import population as pop
from tests.chaos.conftest import KEY, leaks
from tests.chaos.daemon import command_env
from tests.helpers import make_batch, run_command
from tests.loopback import free_port

# One bad value per variable; {tmp} is a directory of the test's own, {file} a file in it.
BAD_VALUES: dict[str, str] = {
    "ANTHROPIC_API_KEY": "sk-ant-api03 with a space",
    "ANTHROPIC_API_KEY_FILE": "{tmp}/no-such-key-file",
    "ANTHROPIC_BASE_URL": "api.anthropic.com",
    "REAPER_WORKSPACE_IDS": "wrkspc_a;wrkspc_b",
    "REAPER_INTERVAL": "15 minutes",
    "REAPER_CRON": "0 0 30 2 *",
    "REAPER_SHUTDOWN_GRACE": "-30s",
    "REAPER_DRY_RUN": "flase",
    "REAPER_DELETE_ENDED_AFTER": "7days",
    "REAPER_DELETE_FAILED_AFTER": "forever",
    "REAPER_CANCEL_STALE_AFTER": "12h30",
    "REAPER_DELETE_CANCELED": "2",
    "REAPER_CANCEL_WAIT_TIMEOUT": "10 m",
    "REAPER_MIN_AGE": "1.5h",
    "REAPER_KEEP_LAST": "ten",
    "REAPER_PROTECT_IDS": "msgbatch_1 msgbatch_2",
    "REAPER_MAX_ACTIONS_PER_RUN": "1e9",
    "REAPER_MAX_DELETE_FRACTION": "0,5",
    "REAPER_MAX_CANCEL_FRACTION": "20%",
    "REAPER_MAX_CLOCK_SKEW": "off",
    "REAPER_HOLDS_FILE": "{tmp}",
    "REAPER_PLAN_MAX_AGE": "0",
    "REAPER_ARCHIVE_DIR": "{file}",
    "REAPER_ARCHIVE_SCOPE": "errored",
    "REAPER_ARCHIVE_MISSING": "purge",
    "REAPER_LEDGER_DIR": "{file}",
    "REAPER_CONCURRENCY": "1000",
    "REAPER_MAX_RPM": "-200",
    "REAPER_PAGE_SIZE": "5000",
    "REAPER_REQUEST_TIMEOUT": "never",
    "REAPER_MAX_RETRIES": "infinite",
    "REAPER_METRICS_HOST": "bad host",
    "REAPER_METRICS_PORT": "-1",
    "REAPER_LOG_LEVEL": "trace",
    "REAPER_LOG_FORMAT": "yaml",
}
# Values that must not show in the message: they are (or could be) the key.
MASKED = {"ANTHROPIC_API_KEY"}
# Every command that reads the settings; explain needs its argument.
SETTINGS_COMMANDS = [
    ["check-config"],
    ["plan"],
    ["plan", "--json"],
    ["explain", "msgbatch_1"],
    ["once"],
]


def test_every_variable_has_a_bad_value() -> None:
    """The table covers every variable the reaper reads; a new one must add its case."""
    assert set(BAD_VALUES) == KNOWN_VARIABLES


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Leave only a valid key in the process environment (the commands read os.environ)."""
    import os

    for name in list(os.environ):
        if name.upper().startswith(("REAPER_", "ANTHROPIC_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    return tmp_path


def bad_value(name: str, tmp_path: Path) -> str:
    """Return the table's bad value for ``name`` with its placeholders filled."""
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    return BAD_VALUES[name].format(tmp=tmp_path, file=a_file)


@pytest.mark.parametrize("args", SETTINGS_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_a_bad_variable_stops_every_command_with_one_line_and_exit_78(
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    args: list[str],
) -> None:
    """Exit 78, one stderr line naming the variable (and its value, unless key-like), no output."""
    value = bad_value(name, clean_env)
    monkeypatch.setenv(name, value)
    assert cli.main(args) == 78
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith("reaper: configuration error: ")
    assert f"{name}=" in err
    if name in MASKED:
        assert "with a space" not in err
    else:
        assert value.strip() in err
    assert "Traceback" not in err
    assert not leaks(err)


@pytest.mark.parametrize("args", SETTINGS_COMMANDS, ids=" ".join)
def test_a_misspelt_variable_and_a_missing_key_stop_every_command(
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
) -> None:
    """REAPER_DRY_RUNN=false must never let the reaper act; no key is no start."""
    monkeypatch.setenv("REAPER_DRY_RUNN", "false")
    assert cli.main(args) == 78
    assert "REAPER_DRY_RUNN=false: unknown variable" in capsys.readouterr().err
    monkeypatch.delenv("REAPER_DRY_RUNN")
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    assert cli.main(args) == 78
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "ANTHROPIC_API_KEY=(unset)" in err


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["REAPER_DRY_RUN", "REAPER_INTERVAL", "REAPER_CRON", "ANTHROPIC_API_KEY_FILE"]
)
@pytest.mark.parametrize("command", ["run", "once", "check-config"])
def test_the_real_process_prints_one_line_and_exits_78(
    tmp_path: Path, name: str, command: str
) -> None:
    """The installed entry point, `run` included: exit 78, one stderr line, nothing else."""
    env = command_env("http://127.0.0.1:9", **{name: bad_value(name, tmp_path)})
    done = run_command([command], env, timeout=30)
    assert done.returncode == 78
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert name in done.stderr
    assert "Traceback" not in done.stderr


# -- values that pass validation but cannot work --------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("host", ["no-such-host.invalid", "256.1.1.1", "192.0.2.1"])
def test_a_metrics_address_that_cannot_be_bound_exits_69_with_one_error(host: str) -> None:
    """`reaper run` cannot serve its metrics: one error line (JSON), exit 69 (EX_UNAVAILABLE)."""
    env = command_env("http://127.0.0.1:9", REAPER_METRICS_HOST=host, REAPER_METRICS_PORT="9464")
    done = run_command(["run"], env, timeout=30)
    assert done.returncode == 69
    assert done.stderr == ""
    events = [json.loads(line) for line in done.stdout.splitlines()]
    events = [e for e in events if e["event"] != "config.warning"]  # the default 30d's warning
    assert [e["event"] for e in events] == ["daemon.server_failed"]
    assert events[0]["host"] == host


@pytest.mark.slow
def test_a_metrics_port_in_use_exits_69() -> None:
    """Another process has the port: one error line, exit 69."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = command_env("http://127.0.0.1:9", REAPER_METRICS_PORT=str(port))
        done = run_command(["run"], env, timeout=30)
    assert done.returncode == 69
    assert "daemon.server_failed" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.slow
def test_an_archive_dir_that_cannot_be_written_deletes_nothing(tmp_path: Path) -> None:
    """REAPER_ARCHIVE_DIR under a file: every delete fails (results not saved), exit 1."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    state = new_state(clock=system_clock, api_key=KEY, cancel_seconds=1)
    seeds = pop.population(state.now(), bulk=4)
    state.seed_objects(seeds)
    with running_emulator(state) as (base_url, served):
        env = command_env(base_url, REAPER_ARCHIVE_DIR=str(blocker / "archive"))
        done = run_command(["once"], env)
        deleted = served.stats.count("delete", 200)
    assert done.returncode == 1
    assert deleted == 0
    assert "Traceback" not in done.stderr
    assert "failed" in done.stderr.splitlines()[-1] or "failed" in done.stderr


@pytest.mark.slow
def test_an_unreachable_api_is_one_paragraph_and_exit_1() -> None:
    """Nothing listens at ANTHROPIC_BASE_URL: once and plan say so in one go, exit 1."""
    env = command_env(f"http://127.0.0.1:{free_port()}", REAPER_MAX_RETRIES="1")
    for args in (["once"], ["plan"], ["explain", "msgbatch_1"]):
        done = run_command(args, env)
        assert done.returncode == 1, args
        assert "Traceback" not in done.stderr
        assert done.stderr.strip()


# -- the emulator's flags --------------------------------------------------------------------


def busy_port() -> Iterator[int]:
    """Yield a port something listens on: an emulator whose flags all pass cannot serve."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield int(taken.getsockname()[1])


@pytest.fixture
def guard_port() -> Iterator[int]:
    """A busy port, so that a flag wrongly accepted fails fast (exit 1) instead of serving."""
    yield from busy_port()


EMULATOR_FLAGS: list[tuple[list[str], str]] = [
    (["--host", " "], "--host"),
    (["--port", "-1"], "--port: got '-1'"),
    (["--port", "65536"], "--port: got '65536'"),
    (["--port", "80.5"], "--port: got '80.5'"),
    (["--api-key", ""], "--api-key"),
    (["--api-key", "two words"], "--api-key"),
    (["--api-key-file", "{tmp}"], "--api-key-file: cannot read"),
    (["--api-key", "k", "--api-key-file", "{file}"], "--api-key-file: give either"),
    (["--seed-file", "{tmp}"], "--seed-file: got"),
    (["--seed", "1e3"], "--seed: got '1e3'"),
    (["--seed", "5000001"], "--seed: got '5000001'"),
    (["--workspaces", "wrkspc_a,wrkspc b"], "--workspaces: got 'wrkspc b'"),
    (["--default-workspace", "wrkspc/a"], "--default-workspace: got 'wrkspc/a'"),
    (["--latency-ms", "-1"], "--latency-ms: got '-1'"),
    (["--latency-ms", "inf"], "--latency-ms: got 'inf'"),
    (["--error-rate", "-0.1"], "--error-rate: got '-0.1'"),
    (["--error-rate", "10%"], "--error-rate: got '10%'"),
    (["--rate-limit-rpm", "-5"], "--rate-limit-rpm: got '-5'"),
    (["--cancel-seconds", "86401"], "--cancel-seconds: got '86401'"),
    (["--processing-seconds", "nan"], "--processing-seconds: got 'nan'"),
    (["--random-seed", "-1"], "--random-seed: got '-1'"),
]


@pytest.mark.parametrize(
    ("flags", "expected"), EMULATOR_FLAGS, ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_a_bad_emulator_flag_is_one_line_and_exit_78(
    guard_port: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    expected: str,
) -> None:
    """Every flag: the line names it and the value, exit 78 (the emulator's EX_CONFIG)."""
    a_file = tmp_path / "a-file"
    a_file.write_text("key")
    args = [f.format(tmp=tmp_path, file=a_file) for f in flags]
    if "--port" not in args:
        args += ["--port", str(guard_port)]
    assert cli.main(["emulator", *args]) == 78
    out, err = capsys.readouterr()
    assert err.count("\n") == 1, err
    assert err.startswith(f"reaper emulator: {expected}"), err
    assert "Traceback" not in err
    assert out == ""
    assert "two words" not in err  # a key is never echoed


def test_an_unknown_emulator_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """argparse's convention: exit 2, the usage and one error line, no traceback."""
    with pytest.raises(SystemExit) as caught:
        cli.main(["emulator", "--errror-rate", "0.1"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --errror-rate" in err
    assert "Traceback" not in err


def test_an_unbindable_emulator_host_exits_1(
    guard_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """A host that does not resolve: one line, exit 1 (the server cannot start)."""
    assert cli.main(["emulator", "--host", "no-such-host.invalid", "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("reaper emulator: cannot listen on no-such-host.invalid:0")


# -- --seed-file -----------------------------------------------------------------------------

GOOD = json.dumps(
    {
        "id": "msgbatch_good",
        "processing_status": "ended",
        "ended_at": "2026-01-02T00:00:00Z",
        "created_at": "2026-01-01T00:00:00Z",
    }
)
SEED_LINES: list[tuple[str, str]] = [
    ("{not json", "not JSON"),
    ('["msgbatch_1"]', "expected a JSON object, got list"),
    ('"msgbatch_1"', "expected a JSON object, got str"),
    ("null", "expected a JSON object, got NoneType"),
    ('{"id": 7}', "id: expected letters"),
    ('{"id": "../etc/passwd"}', "id: expected letters"),
    ('{"id": "msgbatch_good"}', "duplicate batch id msgbatch_good (first on line 1)"),
    ('{"created_at": 1767225600}', "created_at: expected an RFC 3339 string"),
    ('{"created_at": "yesterday"}', "created_at: expected an RFC 3339"),
    ('{"created_at": "2026-01-01T00:00:00"}', "created_at: expected an RFC 3339"),
    ('{"processing_status": ""}', "processing_status: expected a non-empty string"),
    ('{"processing_status": 3}', "processing_status: expected a non-empty string"),
    ('{"request_counts": {"succeeded": -1}}', "request_counts.succeeded: expected a whole number"),
    ('{"request_counts": {"succeeded": 1.5}}', "request_counts.succeeded: expected a whole number"),
    ('{"request_counts": {"won": 1}}', "request_counts: unknown key 'won'"),
    ('{"request_counts": [1, 2]}', "request_counts: expected an object"),
    (
        '{"processing_status": "in_progress", "request_counts": {"succeeded": 2}}',
        "request_counts: a in_progress batch counts only",
    ),
    (
        '{"processing_status": "in_progress", "ended_at": "2026-01-01T00:00:00Z"}',
        "ended_at: a in_progress batch has not ended",
    ),
    (
        '{"processing_status": "ended", "request_counts": {"processing": 2}}',
        "request_counts: an ended batch has 'processing' 0",
    ),
    (
        '{"processing_status": "ended", "_ends_at": "2026-01-01T00:00:00Z"}',
        "_ends_at/_final_counts: only for in_progress or canceling",
    ),
    (
        '{"request_counts": {"processing": 2}, "_final_counts": {"succeeded": 3}}',
        "_final_counts: add up to 3, but the batch has 2 requests",
    ),
    ('{"_comment": "x"}', "unknown field '_comment'"),
    ('{"workspace_id": 5}', "workspace_id: expected a string"),
]


def seed_file(tmp_path: Path, line: str | bytes) -> Path:
    """Write a seed file: a good first line, then ``line`` as line 2."""
    path = tmp_path / "seed.jsonl"
    raw = line if isinstance(line, bytes) else line.encode()
    path.write_bytes(GOOD.encode() + b"\n" + raw + b"\n")
    return path


@pytest.mark.parametrize(("line", "why"), SEED_LINES, ids=[why for _l, why in SEED_LINES])
def test_a_broken_seed_line_is_one_error_naming_file_and_line(
    guard_port: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    line: str,
    why: str,
) -> None:
    """``file:2: why``, exit 78, no traceback; the good line before it does not matter."""
    path = seed_file(tmp_path, line)
    assert cli.main(["emulator", "--seed-file", str(path), "--port", str(guard_port)]) == 78
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"reaper emulator: --seed-file: {path}:2: {why}"), err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("raw", "why"),
    [(b"\xff\xfe{}", "not UTF-8 text"), (b"\xef\xbb\xbf{}", "not JSON")],
    ids=["latin-1 bytes", "byte order mark"],
)
def test_a_seed_file_that_is_not_utf8_json_is_one_error(
    guard_port: int, tmp_path: Path, capsys: pytest.CaptureFixture[str], raw: bytes, why: str
) -> None:
    """Bytes that are not UTF-8, or a BOM: one error naming the file, exit 78."""
    path = seed_file(tmp_path, raw)
    assert cli.main(["emulator", "--seed-file", str(path), "--port", str(guard_port)]) == 78
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"reaper emulator: --seed-file: {path}"), err
    assert why in err


@pytest.mark.parametrize(
    "created",
    ["9999-12-31T23:00:00Z", "0001-01-01T00:00:00Z", "1969-12-31T23:59:59Z"],
    ids=["year 9999", "year 1", "before the epoch"],
)
def test_a_seed_the_emulator_accepts_it_can_serve(
    guard_port: int, tmp_path: Path, capsys: pytest.CaptureFixture[str], created: str
) -> None:
    """A timestamp at the edge of the calendar is refused at load, or served: never a 500 later."""
    line = json.dumps(
        {
            "id": "msgbatch_edge",
            "created_at": created,
            "processing_status": "ended",
            "request_counts": {"succeeded": 1},
        }
    )
    path = seed_file(tmp_path, line)
    code = cli.main(["emulator", "--seed-file", str(path), "--port", str(guard_port)])
    err = capsys.readouterr().err
    if code == 78:  # refused, with the line named
        assert err.startswith(f"reaper emulator: --seed-file: {path}:2: "), err
        return
    assert code == 1  # loaded, then could not bind the guard port: check it can be served
    state = new_state()
    state.load_seed_file(path)
    with running_emulator(state) as (base_url, _):
        import httpx

        response = httpx.get(
            f"{base_url}/v1/messages/batches",
            params={"limit": 10},
            headers={"anthropic-version": "2023-06-01"},
        )
    assert response.status_code == 200, response.text[:200]


# -- the API's answers are input too ------------------------------------------------------------


def complete_object(**changes: Any) -> dict[str, Any]:
    """Return a complete ended batch object in the API's shape (2 errored requests), changed."""
    return {**make_batch("msgbatch_1", succeeded=1, errored=2).to_api(), **changes}


@pytest.mark.parametrize(
    "damage",
    [
        {"request_counts": None},
        {"request_counts": "2"},
        {"request_counts": {"processing": 0, "succeeded": 1, "canceled": 0, "expired": 0}},
        {"request_counts": {"processing": 0, "succeeded": 1, "errored": 2, "canceled": 0}},
        {"request_counts": {"errored": None, "expired": 0}},
        {"created_at": None},
        {"created_at": "2026-01-01T00:00:00"},
        {"processing_status": None},
        {"id": ""},
        {"ended_at": "soon"},
    ],
    ids=repr,
)
def test_a_batch_object_the_policy_cannot_judge_safely_is_unreadable(
    damage: dict[str, Any],
) -> None:
    """Without its failure tallies a failed batch would look clean (7 days, not 30): refused."""
    obj = complete_object(**damage)
    for name, value in damage.items():
        if value is None and name in ("request_counts", "created_at", "processing_status"):
            del obj[name]  # absent, not only null
    with pytest.raises(ModelError):
        Batch.from_api(obj)


def test_a_complete_batch_object_reads_back() -> None:
    """The control case: the complete object reads, its failures counted."""
    batch = Batch.from_api(complete_object())
    assert batch.has_failures
    assert batch.request_counts.errored == 2


# -- whatever a seed file may hold ------------------------------------------------------------

TIMES = st.sampled_from(
    [
        "2026-03-01T00:00:00Z",
        "2026-03-02T09:29:59.999999+00:00",
        "2026-03-02T11:30:00+02:00",
        "2026-03-05T00:00:00Z",
        "1970-01-01T00:00:00Z",
        "0001-01-01T00:00:00Z",
        "9999-11-29T23:59:59Z",
        "9999-12-31T23:59:59Z",
        "2026-02-30T00:00:00Z",
        "yesterday",
    ]
)
COUNTS = st.dictionaries(
    st.sampled_from(["processing", "succeeded", "errored", "canceled", "expired"]),
    st.sampled_from([0, 1, 3, 10**6]),
    max_size=3,
)


@st.composite
def seed_objects(draw: st.DrawFn) -> dict[str, Any]:
    """A seed object with any subset of fields, plausible or at the edge."""
    obj: dict[str, Any] = {"id": "msgbatch_drawn"}
    fields = {
        "processing_status": st.sampled_from(["in_progress", "canceling", "ended", "paused"]),
        "created_at": TIMES,
        "ended_at": TIMES,
        "expires_at": TIMES,
        "archived_at": TIMES,
        "cancel_initiated_at": TIMES,
        "_ends_at": TIMES,
        "request_counts": COUNTS,
    }
    for name, values in fields.items():
        if draw(st.booleans()):
            obj[name] = draw(values)
    return obj


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed_objects())
def test_a_seed_the_emulator_accepts_is_served_without_a_server_error(obj: dict[str, Any]) -> None:
    """Refused at load with a SeedError, or answered by every endpoint without a 5xx, for days."""
    state = new_state()
    try:
        state.seed_objects([obj])
    except SeedError:
        return

    async def exercise() -> list[int]:
        codes = []
        async with asgi_client(state) as client:
            for _ in range(3):
                for method, path in (
                    ("GET", "/v1/messages/batches?limit=5"),
                    ("GET", "/v1/messages/batches/msgbatch_drawn"),
                    ("GET", "/v1/messages/batches/msgbatch_drawn/results"),
                    ("POST", "/v1/messages/batches/msgbatch_drawn/cancel"),
                ):
                    if path.endswith("results"):
                        async with client.stream(method, path) as response:
                            await response.aread()
                    else:
                        response = await client.request(method, path)
                    codes.append(response.status_code)
                state.advance(30 * 86400)  # a month: expiry, cancel and archival all come due
            codes.append((await client.delete("/v1/messages/batches/msgbatch_drawn")).status_code)
        return codes

    codes = asyncio.run(exercise())
    assert all(code < 500 for code in codes), codes
