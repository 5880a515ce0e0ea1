"""Imports point one way: the layers of the reaper as ONE ordered list, top to bottom.

A module may import modules of its own layer or of any layer below it, never one above (the
``layers`` contract of import-linter, written out so that no plug-in is needed). Every entry must
exist and every module of ``reaper/`` must fall in a layer: a rename or a new module fails here
until this list says where it belongs, so no rule is ever turned off silently. An entry names a
module or a package (all of its modules). On top of the layers: the pure core does no I/O, only
``reaper.client`` speaks HTTP and only the commands build a client, and the emulator shares
nothing with the reaper.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "reaper"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("reaper.__main__", "reaper.cli"),  # the command line: parse, dispatch, exit codes
    ("reaper.commands",),  # each command wired (reaper.commands.wiring)
    ("reaper.emulator",),  # the API's stand-in, served by `reaper emulator` and the demo
    ("reaper.daemon",),  # the daemon's shell around a cycle job
    ("reaper.schedule", "reaper.server"),  # when cycles run; /metrics, /healthz, /readyz
    ("reaper.cycle",),  # one cycle: list and plan, record, act, per workspace
    ("reaper.executor",),  # act on a plan: cancel, wait, archive, delete
    ("reaper.cancel_wait",),  # the wait for the canceled: polls, deadline, whose cancel it was
    ("reaper.recorder", "reaper.workers"),  # counts, metrics, log lines; the worker pool
    ("reaper.listing",),  # where pages arrive: listing -> Planner -> plan
    ("reaper.archive_ahead",),  # every ended batch in scope archived, most urgent first
    (
        "reaper.archive",  # results saved before a delete
        "reaper.ledger",  # what was sent, day by day
        "reaper.holds",  # the operator's holds file
        "reaper.reviewed",  # a reviewed plan written and read back
        "reaper.reconcile",  # apply: a reviewed plan narrowed to what the policy still says
        "reaper.consistency",  # checks of a listing as a whole, and of the clock
    ),
    ("reaper.archive_sink", "reaper.confirm"),  # one results body to disk; a 404 confirmed
    ("reaper.client",),  # the only HTTP
    ("reaper.outcomes", "reaper.progress", "reaper.report"),  # the report, progress, rendering
    ("reaper.settings_checks",),  # warnings about valid settings
    ("reaper.settings", "reaper.settings_text"),  # the environment -> Settings
    (
        "reaper.metrics",
        "reaper.logs",
        "reaper.redaction",
        "reaper.ratelimit",
        "reaper.retry",
        "reaper.cronspec",
        "reaper.exits",
        "reaper.errors",
        "reaper.apikey",
    ),
    ("reaper.explain",),  # pure core: one decision explained
    ("reaper.policy",),  # pure core: the rules, the Planner
    ("reaper.decisions",),  # pure core: actions, rules, a decision, a workspace's plan
    ("reaper.guards",),  # pure core: the stops and the fraction guards' arithmetic
    ("reaper.models", "reaper.durations"),  # pure core: batches, durations
    ("reaper",),  # the package itself (its version)
)

PURE_CORE = (
    "reaper.explain",
    "reaper.policy",
    "reaper.decisions",
    "reaper.guards",
    "reaper.models",
    "reaper.durations",
)
IO_PACKAGES = frozenset({"httpx", "structlog", "prometheus_client", "apscheduler"})


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


SOURCES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
ENTRIES = [entry for layer in LAYERS for entry in layer]


def imported_modules(module: str) -> set[str]:
    """Return every module a source file imports, absolute (``from reaper import x`` resolved)."""
    tree = ast.parse(SOURCES[module].read_text(), filename=str(SOURCES[module]))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{module}: relative import; write it absolute"
            assert node.module is not None
            found.add(node.module)
            for alias in node.names:
                if f"{node.module}.{alias.name}" in SOURCES:
                    found.add(f"{node.module}.{alias.name}")
    return found


def _top(name: str) -> str:
    return name.split(".")[0]


Layers = tuple[tuple[str, ...], ...]


def layer_of(module: str, layers: Layers = LAYERS) -> int | None:
    """Return the index of the layer whose most specific entry covers ``module``."""
    best: tuple[int, int] | None = None  # (entry length, layer index)
    for index, layer in enumerate(layers):
        for entry in layer:
            covers = module == entry or (entry != "reaper" and module.startswith(entry + "."))
            if covers and (best is None or len(entry) > best[0]):
                best = (len(entry), index)
    return None if best is None else best[1]


def upward_imports(module: str, layers: Layers = LAYERS) -> list[str]:
    """Return what ``module`` imports from a layer above its own (or from no layer at all)."""
    own = layer_of(module, layers)
    assert own is not None, f"{module} is in no layer"
    wrong = []
    for name in sorted(imported_modules(module)):
        if _top(name) != "reaper":
            continue
        target = layer_of(name, layers)
        if target is None:
            wrong.append(f"{name} (in no layer)")
        elif target < own:
            wrong.append(f"{name} (layer {target}: {layers[target]}, above layer {own})")
    return wrong


@pytest.mark.parametrize("entry", ENTRIES)
def test_every_listed_layer_entry_exists(entry: str) -> None:
    """A listed module that is not there (renamed, moved) fails, rather than its rule lapsing."""
    assert entry in SOURCES, f"{entry} is listed in LAYERS but no such module or package exists"


def test_no_entry_is_listed_twice() -> None:
    """Each module or package has one place in the order."""
    assert len(ENTRIES) == len(set(ENTRIES))


@pytest.mark.parametrize("module", sorted(SOURCES))
def test_every_module_has_a_layer(module: str) -> None:
    """A new module fails here until LAYERS says where it belongs."""
    assert layer_of(module) is not None, f"{module} is in no layer: add it to LAYERS"


@pytest.mark.parametrize("module", sorted(SOURCES))
def test_imports_point_down_the_layers(module: str) -> None:
    """A module imports its own layer or the layers below it, never one above."""
    assert upward_imports(module) == [], f"{module} imports upward"


def test_the_layer_check_catches_an_upward_import() -> None:
    """With the order turned upside down, the cycle's imports of the policy and the rest fail."""
    upside_down = tuple(reversed(LAYERS))
    assert any(
        name.startswith("reaper.policy") for name in upward_imports("reaper.cycle", upside_down)
    )


@pytest.mark.parametrize("module", PURE_CORE)
def test_pure_core_imports_only_the_stdlib_and_the_core(module: str) -> None:
    """The policy, explain and the models do no I/O: no HTTP, no logging pipeline, no settings."""
    assert module in SOURCES, f"{module} is the pure core but does not exist"
    for name in imported_modules(module):
        if _top(name) == "reaper":
            assert name in {"reaper", *PURE_CORE}, f"{module} imports {name}"
        else:
            assert _top(name) not in IO_PACKAGES, f"{module} imports {name}"


def test_only_the_client_and_the_emulator_speak_http() -> None:
    """httpx lives behind reaper.client (and the emulator's own server and harness)."""
    for module in SOURCES:
        if module.startswith(("reaper.client", "reaper.emulator")):
            continue
        for name in imported_modules(module):
            assert _top(name) != "httpx", f"{module} imports {name}"


def test_only_the_commands_build_a_client() -> None:
    """The cycle, archive and listing catch reaper.errors: only the commands import the client."""
    for module in SOURCES:
        if module.startswith(("reaper.client", "reaper.commands")):
            continue
        for name in imported_modules(module):
            assert not name.startswith("reaper.client"), f"{module} imports {name}"


def test_the_emulator_is_independent_of_the_reaper() -> None:
    """The emulator stands for the real API: it must not share the reaper's code or mistakes."""
    for module in SOURCES:
        if not module.startswith("reaper.emulator"):
            continue
        for name in imported_modules(module):
            if _top(name) == "reaper":
                assert name == "reaper" or name.startswith("reaper.emulator"), (
                    f"{module} imports {name}"
                )


ROOT = PACKAGE.parent


def code_block_after(path: Path, heading: str) -> list[str]:
    """Return the lines of the first fenced code block under ``heading`` in a Markdown file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    start = lines.index(heading)
    fences = [n for n in range(start, len(lines)) if lines[n].startswith("```")]
    return lines[fences[0] + 1 : fences[1]]


def named_modules(line: str, prefix: str = "") -> list[str]:
    """Return the modules a line starts with: ``x.py`` or ``x/`` paths, up to its description."""
    names = []
    for word in line.split():
        if not word.endswith((".py", "/")):
            break
        path = word.removeprefix(prefix).removesuffix("/").removesuffix(".py")
        names.append(".".join(("reaper", *path.split("/"))))
    return names


def test_contributing_names_every_layer_in_order() -> None:
    """CONTRIBUTING's architecture names each entry of LAYERS once, top to bottom."""
    block = code_block_after(ROOT / "CONTRIBUTING.md", "## Architecture")
    named = [name for line in block for name in named_modules(line)]
    assert sorted(named) == sorted(e for e in ENTRIES if e != "reaper"), "CONTRIBUTING.md"
    layers = [layer_of(name) for name in named]
    assert layers == sorted(layers), f"CONTRIBUTING.md: not in the order of LAYERS: {named}"


def test_readme_gives_every_module_a_line() -> None:
    """README's module list: every path exists and every module of reaper/ is on it."""
    block = code_block_after(ROOT / "README.md", "## Development")
    lines = [line for line in block if line.startswith("reaper/")]  # not continuations
    listed = [name for line in lines for name in named_modules(line, prefix="reaper/")]
    assert listed, "README.md: no module list under ## Development"
    assert [name for name in listed if name not in SOURCES] == [], "README.md lists a stale path"
    missing = [module for module in SOURCES if not any(covers(n, module) for n in listed)]
    assert missing == [], "README.md: these modules have no line"


def covers(listed: str, module: str) -> bool:
    """Whether a listed module or package covers ``module`` (a package by any of its modules)."""
    if module == listed or module.startswith(listed + "."):
        return True
    return SOURCES[module].name == "__init__.py" and listed.startswith(module + ".")
