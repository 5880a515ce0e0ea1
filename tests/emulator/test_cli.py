"""``reaper emulator`` from the command line: bad flags and seed files, serving, SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx
import pytest

from reaper.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--port", "http"], "--port: got 'http', expected a port from 0 (any) to 65535"),
        (["--port", "70000"], "--port: got '70000'"),
        (["--seed", "-3"], "--seed: got '-3', expected a count from 0 to 5000000"),
        (["--error-rate", "1.5"], "--error-rate: got '1.5', expected a share from 0 to 1"),
        (["--error-rate", "nan"], "--error-rate: got 'nan'"),
        (["--latency-ms", "soon"], "--latency-ms: got 'soon', expected milliseconds"),
        (["--rate-limit-rpm", "2.5"], "--rate-limit-rpm: got '2.5', expected requests per minute"),
        (["--cancel-seconds", "-1"], "--cancel-seconds: got '-1', expected seconds"),
        (["--processing-seconds", "x"], "--processing-seconds: got 'x'"),
        (
            ["--workspaces", "wrkspc_a,bad id"],
            "--workspaces: got 'bad id', expected a workspace id",
        ),
        (["--seed-file", "/nonexistent/seed.jsonl"], "--seed-file: got '/nonexistent/seed.jsonl'"),
        (["--api-key-file", "/nonexistent/key"], "--api-key-file: cannot read '/nonexistent/key'"),
        (["--random-seed", "abc"], "--random-seed: got 'abc'"),
        (["--faults", "{"], "--faults: got '{', expected a JSON object of fault fields"),
        (["--faults", '{"error_rate": 2}'], "--faults: error_rate: expected a number from 0 to 1"),
        (["--faults", '{"clock_skew": 1}'], "--faults: unknown fault field(s): clock_skew"),
    ],
)
def test_a_bad_flag_gives_one_line_and_exit_78(
    capsys: pytest.CaptureFixture[str], flags: list[str], expected: str
) -> None:
    """The line names the flag, the value and what is accepted."""
    assert main(["emulator", *flags]) == 78
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"reaper emulator: {expected}")


def test_a_bad_api_key_is_refused_without_echoing_it(capsys: pytest.CaptureFixture[str]) -> None:
    """A key with spaces is refused; the message never shows the key."""
    assert main(["emulator", "--api-key", "sk-ant secret"]) == 78
    err = capsys.readouterr().err
    assert "secret" not in err
    assert "--api-key" in err


def test_a_broken_seed_file_line_is_named(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """file:line and why, exit 78."""
    seed = tmp_path / "seed.jsonl"
    seed.write_text('{"id": "msgbatch_a"}\n{"created_at": "last tuesday"}\n', encoding="utf-8")
    assert main(["emulator", "--seed-file", str(seed)]) == 78
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(
        f"reaper emulator: --seed-file: {seed}:2: created_at: expected an RFC 3339"
    )


def test_a_port_in_use_fails_with_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    """The server cannot start: one line, exit 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["emulator", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"reaper emulator: cannot listen on 127.0.0.1:{port}:")


def test_a_bad_flag_in_a_real_process_prints_no_traceback() -> None:
    """The whole process: exit 78 and exactly one line on stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "reaper", "emulator", "--error-rate", "2"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        check=False,
    )
    assert done.returncode == 78
    assert done.stderr.splitlines() == [
        "reaper emulator: --error-rate: got '2', expected a share from 0 to 1 (e.g. 0.05)"
    ]


def test_the_emulator_serves_on_a_free_port_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    """--port 0 picks a port, the first line says where, the API answers, SIGTERM stops it."""
    seed = tmp_path / "seed.jsonl"
    seed.write_text('{"id": "msgbatch_from_file", "workspace_id": "wrkspc_b"}\n', encoding="utf-8")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reaper",
            "emulator",
            "--port",
            "0",
            "--seed",
            "30",
            "--seed-file",
            str(seed),
            "--api-key",
            "sk-ant-cli-test",
            "--workspaces",
            "wrkspc_b",
            "--faults",
            '{"clock_skew_seconds": 86400, "wrong_batch_ids": ["msgbatch_from_file"]}',
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("reaper emulator: listening on http://127.0.0.1:")
        assert "31 batches" in line
        assert "sk-ant-cli-test" not in line
        base_url = line.split()[4]
        headers = {"x-api-key": "sk-ant-cli-test", "anthropic-version": "2023-06-01"}
        with httpx.Client(base_url=base_url, headers=headers) as client:
            page = client.get("/v1/messages/batches", params={"limit": 1000}).json()
            assert len(page["data"]) >= 1
            assert page["has_more"] is False
            other = client.get(
                "/v1/messages/batches", headers={"anthropic-workspace-id": "wrkspc_b"}
            )
            assert "msgbatch_from_file" in [b["id"] for b in other.json()["data"]]
            # --faults: the Date is a day ahead of the emulator's (here the host's) clock, and
            # the only Date: uvicorn's own Date and Server headers are off.
            (date,) = other.headers.get_list("date")
            assert parsedate_to_datetime(date) - datetime.now(UTC) > timedelta(hours=23)
            assert "server" not in other.headers
            wrong = client.get(
                "/v1/messages/batches/msgbatch_from_file",
                headers={"anthropic-workspace-id": "wrkspc_b"},
            )
            assert wrong.json()["id"] != "msgbatch_from_file"
            forbidden = client.get(
                "/v1/messages/batches", headers={"anthropic-workspace-id": "wrkspc_c"}
            )
            assert forbidden.status_code == 403
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        assert process.stderr is not None
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
