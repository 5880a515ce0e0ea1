"""The everyday targets and the hooks that call them: what CONTRIBUTING.md promises."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"


def dry_run(target: str) -> str:
    """Return the commands `make TARGET` would run (make -n), failing if the target is unknown."""
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", target],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_pre_commit_config_is_valid_and_local() -> None:
    """pre-commit accepts the config; every hook is local, a system command, `make <target>`."""
    config = ROOT / ".pre-commit-config.yaml"
    result = subprocess.run(
        [BIN / "pre-commit", "validate-config", config], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    repos = yaml.safe_load(config.read_text(encoding="utf-8"))["repos"]
    hooks = [hook for repo in repos for hook in repo["hooks"]]
    assert all(repo["repo"] == "local" for repo in repos)
    assert {hook["entry"] for hook in hooks} == {"make format", "make test-fast"}
    for hook in hooks:
        assert hook["language"] == "system"
        dry_run(hook["entry"].removeprefix("make "))


def test_test_fast_skips_slow_tests_and_the_image() -> None:
    """make test-fast: pytest without `slow` tests, no image build, no deploy tools."""
    commands = dry_run("test-fast")
    assert 'pytest -m "not slow"' in commands
    assert "check.py" not in commands
    assert "promtool" not in commands


def test_make_test_builds_and_runs_the_image() -> None:
    """make test (CI) runs the whole suite and then the image test."""
    commands = dry_run("test")
    assert "deploy/image/check.py" in commands
    assert "bin/pytest\n" in commands


def test_format_fixes_then_formats() -> None:
    """make format runs ruff's fixes and the formatter over every Python tree lint checks."""
    commands = dry_run("format").splitlines()
    lint = dry_run("lint")
    assert any("ruff check --fix" in line for line in commands)
    assert any("ruff format reaper" in line for line in commands)
    for tree in ("reaper", "tests", "bench", "deploy"):
        assert f" {tree}" in lint
        assert all(f" {tree}" in line for line in commands if "ruff" in line)
