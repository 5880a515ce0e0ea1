"""The Dockerfile's install steps without a container: the lock, the wheel, `reaper` from env vars.

`make image-test` (deploy/image/check.py) builds the real image and runs it as Kubernetes would;
it needs root and podman. These tests keep the install honest anywhere pytest runs: like the
Dockerfile, they install requirements/runtime.txt with ``--require-hashes --only-binary=:all:``
into a new virtualenv (so the lock is complete and its hashes match what the index serves), build
a wheel with ``pip wheel --no-deps`` from the build context .dockerignore lets through, install it
with ``--no-deps``, then run the installed command against the installed emulator over loopback,
from a directory outside the source tree, with an environment holding only the variables under
test.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-ant-smoke-test-0123456789"
SEED_ARGS = ["--seed", "300", "--api-key", KEY]
EMULATOR_KEY_HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def check(args: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a build step and fail with its output if it fails."""
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, timeout=180, **kwargs
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def copy_build_context(destination: Path) -> Path:
    """Copy what .dockerignore lets into the Docker build context (an allow-list after `*`)."""
    destination.mkdir()
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", "the context is an allow-list"
    excluded = [p.removeprefix("**/") for p in patterns[1:] if not p.startswith("!")]
    for entry in (p[1:].rstrip("/") for p in patterns if p.startswith("!")):
        source = ROOT / entry
        if source.is_dir():
            shutil.copytree(source, destination / entry, ignore=shutil.ignore_patterns(*excluded))
        else:
            shutil.copy2(source, destination / entry)
    return destination


@pytest.fixture(scope="module")
def venv_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Install the lock (hash-checked), then the wheel built from the Docker build context."""
    root = tmp_path_factory.mktemp("image")
    context = copy_build_context(root / "context")
    wheels = root / "wheels"
    check([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", wheels, context])
    (wheel,) = wheels.glob("batch_reaper-*.whl")
    check([sys.executable, "-m", "venv", root / "venv"])
    bin_dir = root / "venv" / "bin"
    lock = context / "requirements" / "runtime.txt"
    pip = [bin_dir / "python", "-m", "pip", "install", "--quiet"]
    check([*pip, "--require-hashes", "--only-binary=:all:", "-r", lock])
    check([*pip, "--no-deps", "--no-index", wheel])
    check([bin_dir / "python", "-m", "pip", "check"])
    return bin_dir


def clean_env(bin_dir: Path, home: Path, **variables: str) -> dict[str, str]:
    """Return an environment holding only PATH, HOME, a locale and the given variables."""
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", **variables}


def free_port() -> int:
    """Return a loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(url: str, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
    """GET a URL; return the status and body, whatever the status."""
    request = urllib.request.Request(url, headers=dict(headers or {}))  # noqa: S310 - loopback http
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_for(
    url: str,
    process: subprocess.Popen[bytes],
    log: Path,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Wait until the URL answers 200, failing early (with the process's output) if it dies."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"exited {process.returncode} before serving {url}:\n{log.read_text()}")
        try:
            if http_get(url, headers)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"{url} did not answer 200 within 30 s:\n{log.read_text()}")


def stop(process: subprocess.Popen[bytes]) -> int:
    """Send SIGTERM, as a container runtime does, and return the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail("did not stop within 15 s of SIGTERM")


def spawn(
    args: list[str | Path], env: dict[str, str], cwd: Path, log: Path
) -> subprocess.Popen[bytes]:
    """Start a long-running command with its output in a file (a pipe could fill up and block)."""
    with log.open("wb") as output:
        return subprocess.Popen(
            [str(a) for a in args], env=env, cwd=cwd, stdout=output, stderr=subprocess.STDOUT
        )


def start_emulator(bin_dir: Path, home: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start the installed `reaper emulator` with a seeded mix of batches; return it and its URL."""
    port = free_port()
    log = home / "emulator.log"
    process = spawn(
        [bin_dir / "reaper", "emulator", "--host", "127.0.0.1", "--port", str(port), *SEED_ARGS],
        clean_env(bin_dir, home),
        home,
        log,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base_url}/v1/messages/batches?limit=1", process, log, EMULATOR_KEY_HEADERS)
    except BaseException:
        stop(process)
        raise
    return process, base_url


@pytest.fixture(scope="module")
def emulator(venv_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Serve the installed emulator on a free loopback port for the module; yield its URL."""
    process, base_url = start_emulator(venv_bin, tmp_path_factory.mktemp("emulator-home"))
    yield base_url
    stop(process)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A working directory outside the source tree, so nothing can import from it."""
    return tmp_path


def reaper(
    venv_bin: Path, home: Path, *args: str, **variables: str
) -> subprocess.CompletedProcess[str]:
    """Run the installed `reaper` with only the given variables in its environment."""
    return subprocess.run(
        [str(venv_bin / "reaper"), *args],
        env=clean_env(venv_bin, home, **variables),
        cwd=home,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def mutating_requests(base_url: str) -> dict[str, int]:
    """Return the emulator's count of create/cancel/delete requests."""
    status, body = http_get(f"{base_url}/_emulator/state")
    assert status == 200
    counts: dict[str, int] = json.loads(body)["requests"]["mutating"]
    return counts


def json_lines(text: str) -> list[dict[str, Any]]:
    """Parse every line of a stream as one JSON object."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_installed_package_is_the_wheel_not_the_source_tree(venv_bin: Path, home: Path) -> None:
    """The venv imports reaper from its own site-packages and reports the project's version."""
    with (ROOT / "pyproject.toml").open("rb") as handle:
        version = tomllib.load(handle)["project"]["version"]
    result = reaper(venv_bin, home, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"batch-reaper {version}"
    where = check(
        [venv_bin / "python", "-c", "import reaper; print(reaper.__file__)"],
        env=clean_env(venv_bin, home),
        cwd=home,
    )
    assert Path(where.stdout.strip()).is_relative_to(venv_bin.parent)


def test_check_config_masks_the_key(venv_bin: Path, home: Path) -> None:
    """check-config validates the environment alone and never prints the key."""
    result = reaper(venv_bin, home, "check-config", ANTHROPIC_API_KEY=KEY)
    assert result.returncode == 0, result.stderr
    assert "REAPER_DRY_RUN" in result.stdout
    assert KEY not in result.stdout + result.stderr


def test_key_file_is_read_like_a_mounted_secret(venv_bin: Path, home: Path) -> None:
    """ANTHROPIC_API_KEY_FILE with a trailing newline (kubectl --from-file) is accepted."""
    key_file = home / "api-key"
    key_file.write_text(KEY + "\n")
    result = reaper(venv_bin, home, "check-config", ANTHROPIC_API_KEY_FILE=str(key_file))
    assert result.returncode == 0, result.stderr
    assert KEY not in result.stdout + result.stderr


def test_misspelt_variable_is_exit_78_in_one_line(venv_bin: Path, home: Path) -> None:
    """A typo in REAPER_DRY_RUN stops the reaper before it acts: one line on stderr, exit 78."""
    result = reaper(venv_bin, home, "once", ANTHROPIC_API_KEY=KEY, REAPER_DRY_RUM="false")
    assert result.returncode == 78
    assert "REAPER_DRY_RUM" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_plan_json_against_the_emulator(venv_bin: Path, home: Path, emulator: str) -> None:
    """`reaper plan --json` prints one object per action, then a summary, and changes nothing."""
    before = mutating_requests(emulator)
    result = reaper(
        venv_bin,
        home,
        "plan",
        "--json",
        ANTHROPIC_API_KEY=KEY,
        ANTHROPIC_BASE_URL=emulator,
        REAPER_METRICS_PORT="0",
    )
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)
    assert lines[-1]["summary"] is True
    assert all(line["action"] in {"cancel", "delete"} for line in lines[:-1])
    assert lines[:-1], "a 40-day seeded mix always has something to delete"
    assert mutating_requests(emulator) == before


def test_emulator_exits_zero_on_sigterm(venv_bin: Path, tmp_path: Path) -> None:
    """`docker stop` on the emulator container is a clean exit."""
    process, _ = start_emulator(venv_bin, tmp_path)
    assert stop(process) == 0
