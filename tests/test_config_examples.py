"""The shipped configuration files agree with the settings model: names, defaults and presets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reaper.settings import KNOWN_VARIABLES, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "reaper.env.example"
PRESETS = sorted((ROOT / "config" / "presets").glob("*.env"))
PRESET = {path.stem: path for path in PRESETS}
ENV_FILES = [EXAMPLE, *PRESETS]
# The README's configuration reference table.
REFERENCE_HEADING = "## Configuration reference"
REFERENCE_CANDIDATES = [ROOT / "README.md"]
DUMMY_KEY = {"ANTHROPIC_API_KEY": "sk-test-dummy-key"}

# Settings fields read from the SDK's variable names rather than REAPER_<FIELD> (SPEC section 2).
SDK_NAMES = {
    "api_key": "ANTHROPIC_API_KEY",
    "api_key_file": "ANTHROPIC_API_KEY_FILE",
    "base_url": "ANTHROPIC_BASE_URL",
}
# Fields the loader fills in itself; no variable sets them.
DERIVED_FIELDS = {"api_key_source"}


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a KEY=value env file the way docker --env-file does (no quotes, no inline comments)."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a KEY=value line: {line!r}"
        assert name not in values, f"{path.name}: {name} set twice"
        values[name] = value
    return values


def settings_variables() -> set[str]:
    """Return the variable name of every settings field, derived from the model itself."""
    return {
        SDK_NAMES.get(field, "REAPER_" + field.upper())
        for field in Settings.model_fields
        if field not in DERIVED_FIELDS
    }


def test_example_documents_exactly_the_settings_variables() -> None:
    """A setting missing from the example, or an example variable no setting reads, fails."""
    documented = set(read_env_file(EXAMPLE))
    expected = settings_variables()
    assert not expected - documented, f"undocumented in {EXAMPLE.name}: {expected - documented}"
    assert not documented - expected, f"not a setting: {documented - expected}"


def test_example_variables_are_the_ones_the_loader_accepts() -> None:
    """Every documented variable is one load_settings knows, so none is rejected as a typo."""
    assert set(read_env_file(EXAMPLE)) == set(KNOWN_VARIABLES)


def test_every_example_variable_has_a_comment_above_it() -> None:
    """Each variable is preceded by at least one comment line explaining it."""
    previous = ""
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name = line.partition("=")[0]
            assert previous.startswith("# "), f"{name} has no comment right above it"
        previous = line


def test_example_values_are_the_real_defaults() -> None:
    """Loading the example changes nothing: every value written there is the model's default."""
    from_example = load_settings({**read_env_file(EXAMPLE), **DUMMY_KEY})
    from_defaults = load_settings(DUMMY_KEY)
    assert from_example.model_dump() == from_defaults.model_dump()


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_env_file_is_plain_key_value(path: Path) -> None:
    """No quotes and no comment after a value: docker --env-file would keep them in the value."""
    for name, value in read_env_file(path).items():
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", name), f"{path.name}: odd name {name!r}"
        assert value == value.strip(), f"{path.name}: {name} has surrounding whitespace"
        assert not value.startswith(("'", '"')), f"{path.name}: {name} is quoted"
        assert "#" not in value, f"{path.name}: {name} has a comment after its value"


def test_there_are_three_presets() -> None:
    """The conservative, standard and aggressive presets ship."""
    assert sorted(PRESET) == ["aggressive", "conservative", "standard"]


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_loads_in_dry_run(path: Path) -> None:
    """Each preset is a valid policy on its own (with a key) and starts in dry run."""
    values = read_env_file(path)
    assert not set(values) - set(KNOWN_VARIABLES), f"unknown names in {path.name}"
    assert all(name.startswith("REAPER_") for name in values), "presets hold only policy"
    settings = load_settings({**values, **DUMMY_KEY})
    assert settings.dry_run is True


def test_standard_preset_is_the_defaults() -> None:
    """The standard preset writes out the defaults and nothing else."""
    standard = load_settings({**read_env_file(PRESET["standard"]), **DUMMY_KEY})
    assert standard.model_dump() == load_settings(DUMMY_KEY).model_dump()


def test_presets_are_ordered_by_how_soon_they_act() -> None:
    """Conservative keeps batches longest and acts least; aggressive the reverse."""
    aggressive, standard, conservative = (
        load_settings({**read_env_file(PRESET[name]), **DUMMY_KEY})
        for name in ("aggressive", "standard", "conservative")
    )
    for field in ("delete_ended_after", "delete_failed_after", "min_age", "interval"):
        a, s, c = (getattr(x, field) for x in (aggressive, standard, conservative))
        assert a < s < c, field
    assert aggressive.max_actions_per_run > standard.max_actions_per_run
    assert standard.max_actions_per_run > conservative.max_actions_per_run
    assert conservative.cancel_stale_after is None
    assert conservative.max_delete_fraction < standard.max_delete_fraction
    assert conservative.max_cancel_fraction < standard.max_cancel_fraction


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_each_preset_says_whether_to_set_the_archive_and_the_ledger(path: Path) -> None:
    """A preset names REAPER_ARCHIVE_DIR and REAPER_LEDGER_DIR and says whether to set them."""
    text = path.read_text(encoding="utf-8")
    for name, word in (("archive", "REAPER_ARCHIVE_DIR"), ("ledger", "REAPER_LEDGER_DIR")):
        advice = re.search(rf"^# {name.capitalize()}: (required|recommended|optional)", text, re.M)
        assert advice, f"{path.name}: no '# {name.capitalize()}: required/recommended/optional'"
        assert f"# {word}=" in text, f"{path.name}: no commented {word}= line to uncomment"


def test_a_preset_whose_retention_outlasts_the_results_window_requires_or_recommends_archive() -> (
    None
):
    """Where a preset's retention outlasts the 29-day results window, it asks for the archive."""
    from reaper.settings_checks import settings_warnings

    for name, path in PRESET.items():
        settings = load_settings({**read_env_file(path), **DUMMY_KEY})
        text = path.read_text(encoding="utf-8")
        advice = re.search(r"^# Archive: (\w+)", text, re.M)
        assert advice is not None
        if settings_warnings(settings):
            assert advice.group(1) in {"required", "recommended"}, name
        else:
            assert advice.group(1) == "optional", name


def reference_tables() -> dict[Path, dict[str, str]]:
    """Return, per document holding the configuration reference, its variable -> default cells."""
    tables: dict[Path, dict[str, str]] = {}
    for path in REFERENCE_CANDIDATES:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        parts = re.split(f"^{REFERENCE_HEADING}$", text, maxsplit=1, flags=re.MULTILINE)
        if len(parts) < 2:
            continue
        section = parts[1].split("\n## ", 1)[0]
        rows = re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \| ([^|]+) \|", section, re.MULTILINE)
        tables[path] = {name: default.strip() for name, default in rows}
    return tables


def test_readme_reference_lists_every_variable_with_its_default() -> None:
    """The README's table names exactly the example's variables, with the same defaults."""
    tables = reference_tables()
    assert tables, f"no {REFERENCE_HEADING!r} in {[p.name for p in REFERENCE_CANDIDATES]}"
    example = read_env_file(EXAMPLE)
    for path, table in tables.items():
        assert list(table) == list(example), f"{path.name}: variables differ or are out of order"
        for name, value in example.items():
            expected = {f"`{value}`"} if value else {"unset", "empty", "required"}
            assert table[name] in expected, f"{path.name}: {name} default {table[name]!r}"


def test_the_example_holds_file_parses_and_check_config_accepts_it() -> None:
    """config/holds.example.jsonl is a valid holds file whose holds carry reason and owner."""
    from reaper.holds import read_holds

    holds = read_holds(ROOT / "config" / "holds.example.jsonl")
    assert len(holds) == 2
    assert all(h.reason and h.by for h in holds)
    text = (ROOT / "config" / "README.md").read_text(encoding="utf-8")
    assert "REAPER_HOLDS_FILE=config/holds.example.jsonl" in text
