"""The lock the image installs: requirements/runtime.txt and requirements/build.txt (pip-compile).

Every pin is exact and hash-checked, satisfies pyproject.toml's ranges, and the runtime lock holds
exactly the dependency closure of the project: nothing missing (the image's
`pip install --require-hashes` would fail), nothing left over from a removed dependency. The
closure is read from the metadata installed in the dev venv, which `make venv` constrains to the
lock's versions (so the tests run what the image ships).
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_LOCK = ROOT / "requirements" / "runtime.txt"
BUILD_LOCK = ROOT / "requirements" / "build.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?:\s*\\\n\s+--hash=sha256:[0-9a-f]{64})*)")


def pyproject() -> dict[str, object]:
    """Load pyproject.toml."""
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)


def read_lock(path: Path) -> dict[str, tuple[Version, int]]:
    """Return {canonical name: (pinned version, number of hashes)}; fail on any other line."""
    pins: dict[str, tuple[Version, int]] = {}
    text = path.read_text(encoding="utf-8")
    for block in re.split(r"\n(?=[^\s#])", text):
        if not block.strip() or block.lstrip().startswith("#"):
            continue
        match = PIN.match(block)
        assert match, f"{path.name}: not an exact, hashed pin: {block.splitlines()[0]!r}"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"{path.name}: {name} pinned twice"
        pins[name] = (Version(match.group(2)), match.group(3).count("--hash="))
    return pins


def applies(requirement: Requirement, extras: tuple[str, ...] = ("",)) -> bool:
    """Whether a requirement applies to this interpreter (the image's Python) for these extras."""
    if requirement.marker is None:
        return True
    environment = default_environment()
    return any(requirement.marker.evaluate({**environment, "extra": e}) for e in extras)


def satisfied(requirements: list[str], pins: dict[str, tuple[Version, int]], where: str) -> None:
    """Each applicable requirement is pinned at a version inside its range."""
    for text in requirements:
        requirement = Requirement(text)
        if not applies(requirement):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{where}: {requirement} is not in the lock"
        version, _ = pins[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{where}: the lock pins {name}=={version}, outside {requirement}"
        )


def test_every_pin_is_exact_and_hashed() -> None:
    """Both locks: only `name==version` lines, each with at least one sha256 hash."""
    for path in (RUNTIME_LOCK, BUILD_LOCK):
        pins = read_lock(path)
        assert pins, path
        for name, (_, hashes) in pins.items():
            assert hashes >= 1, f"{path.name}: {name} has no hash"


def test_runtime_lock_satisfies_pyproject_ranges() -> None:
    """Every [project] dependency is pinned inside its range."""
    dependencies = pyproject()["project"]["dependencies"]  # type: ignore[index]
    satisfied(dependencies, read_lock(RUNTIME_LOCK), "pyproject.toml [project] dependencies")


def test_build_lock_satisfies_the_build_system() -> None:
    """The build backend the image builds the wheel with is locked inside build-system.requires."""
    requires = pyproject()["build-system"]["requires"]  # type: ignore[index]
    satisfied(requires, read_lock(BUILD_LOCK), "pyproject.toml [build-system] requires")


def closure() -> dict[str, Version]:
    """The project's runtime dependency closure, from the metadata installed in the dev venv."""
    found: dict[str, Version] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    pending = [Requirement(r) for r in metadata.requires("batch-reaper") or []]
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if not applies(requirement) or key in seen:
            continue
        seen.add(key)
        distribution = metadata.distribution(name)
        found[name] = Version(distribution.version)
        extras = ("", *requirement.extras)
        children = [Requirement(text) for text in distribution.requires or []]
        pending.extend(child for child in children if applies(child, extras))
    return found


def test_runtime_lock_is_exactly_the_dependency_closure() -> None:
    """Every package the project needs at run time is locked, at the installed version; no extra."""
    pins = read_lock(RUNTIME_LOCK)
    needed = closure()
    missing = sorted(set(needed) - set(pins))
    extra = sorted(set(pins) - set(needed))
    assert not missing, f"needed at run time but not locked: {missing} (run `make lock`)"
    assert not extra, f"locked but needed by nothing: {extra} (run `make lock`)"
    drift = {n: (str(needed[n]), str(pins[n][0])) for n in needed if needed[n] != pins[n][0]}
    assert not drift, f"the dev venv differs from the lock (installed, locked): {drift}; make venv"


@pytest.mark.parametrize("lock", ["requirements/build.txt", "requirements/runtime.txt"])
def test_dockerfile_installs_the_lock_with_hashes(lock: str) -> None:
    """The image installs each lock with --require-hashes, wheels only; our wheel with --no-deps."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    installs = [line for line in text.splitlines() if f"-r {lock}" in line]
    assert installs, f"the Dockerfile does not install {lock}"
    for line in installs:
        assert "--require-hashes" in line
        assert "--only-binary=:all:" in line
    wheel = [line for line in text.splitlines() if "/wheels/*.whl" in line and "install" in line]
    assert wheel
    assert all("--no-deps" in line for line in wheel)
