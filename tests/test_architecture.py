"""Imports point one way: the pure core knows nothing of I/O, the emulator nothing of the reaper."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "reaper"


def imported_modules(path: Path) -> set[str]:
    """Return every module a source file imports, absolute and resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            found.add(node.module)
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


SOURCES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize(
    "module", ["reaper.models", "reaper.policy", "reaper.explain", "reaper.durations"]
)
def test_pure_core_imports_only_the_stdlib_and_the_core(module: str) -> None:
    """The policy and the models do no I/O: no HTTP, no logging pipeline, no settings."""
    if module not in SOURCES:
        pytest.skip(f"{module} not written yet")
    allowed_internal = {"reaper", "reaper.models", "reaper.durations", "reaper.policy"}
    for name in imported_modules(SOURCES[module]):
        if _top(name) == "reaper":
            assert name in allowed_internal, f"{module} imports {name}"
        else:
            assert _top(name) not in {"httpx", "structlog", "prometheus_client", "apscheduler"}, (
                f"{module} imports {name}"
            )


def test_only_the_client_and_the_emulator_speak_http() -> None:
    """httpx lives behind reaper.client (and the emulator's own test helpers)."""
    for module, path in SOURCES.items():
        if module == "reaper.client" or module.startswith(("reaper.client.", "reaper.emulator")):
            continue
        for name in imported_modules(path):
            assert _top(name) != "httpx", f"{module} imports {name}"


def test_the_emulator_is_independent_of_the_reaper() -> None:
    """The emulator stands for the real API: it must not share the reaper's code or mistakes."""
    for module, path in SOURCES.items():
        if not module.startswith("reaper.emulator"):
            continue
        for name in imported_modules(path):
            if _top(name) == "reaper":
                assert name == "reaper" or name.startswith("reaper.emulator"), (
                    f"{module} imports {name}"
                )


def test_nothing_below_the_command_line_imports_it() -> None:
    """cli and commands wire everything; no library module reaches back up into them."""
    for module, path in SOURCES.items():
        if module.startswith(("reaper.cli", "reaper.commands", "reaper.__main__")):
            continue
        for name in imported_modules(path):
            assert name != "reaper.cli", f"{module} imports {name}"
            assert not name.startswith(("reaper.cli.", "reaper.commands")), (
                f"{module} imports {name}"
            )
