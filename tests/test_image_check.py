"""deploy/image/check.py's own logic, without podman: what it reads and what it would refuse.

`make image-test` passes on a good image; these show it would fail on a bad one, and that it runs
the container with what deploy/kubernetes/deployment.yaml says rather than with its own guesses.
"""

from __future__ import annotations

import importlib.util
import os
import py_compile
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SITE = "opt/reaper/lib/python3.11/site-packages"


def load_check() -> ModuleType:
    """Import deploy/image/check.py (a script, not a package)."""
    spec = importlib.util.spec_from_file_location("image_check", ROOT / "deploy/image/check.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


check = load_check()


def touch(root: Path, *paths: str) -> None:
    """Create empty files (and their folders) under an image root."""
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("")


def test_a_clean_root_has_nothing_unwanted(tmp_path: Path) -> None:
    """Our package, third-party modules named like tests and the base's ensurepip are fine."""
    touch(
        tmp_path,
        f"{SITE}/reaper/cli.py",
        f"{SITE}/reaper/emulator/testing.py",
        f"{SITE}/annotated_types/test_cases.py",
        "usr/share/python-wheels/pip-23.0.1-py3-none-any.whl",
        "usr/bin/python3",
    )
    assert not any(check.unwanted_files(tmp_path).values())


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("usr/bin/gcc", "compilers"),
        ("usr/local/bin/cc", "compilers"),
        ("root/.cache/pip/http/x", "pip caches or wheels"),
        ("tmp/pip-install-abc/x", "pip caches or wheels"),
        ("opt/reaper/batch_reaper-0.1.0-py3-none-any.whl", "pip caches or wheels"),
        (f"{SITE}/reaper/tests/test_cycle.py", "test or bench files"),
        (f"{SITE}/reaper/bench/run.py", "test or bench files"),
        (f"{SITE}/conftest.py", "test or bench files"),
        ("opt/build/bin/pip", "build leftovers"),
        ("opt/reaper/bin/pip", "build leftovers"),
        ("etc/pip.conf", "build leftovers"),
        ("src/pyproject.toml", "build leftovers"),
    ],
)
def test_each_unwanted_file_is_found(tmp_path: Path, path: str, kind: str) -> None:
    """A compiler, a pip cache or wheel, a test or bench file, a build leftover: each is named."""
    touch(tmp_path, path)
    found = check.unwanted_files(tmp_path)
    assert found[kind], found
    assert f"/{path}" in found[kind] or any(f"/{path}".startswith(p) for p in found[kind])


def test_the_pod_is_read_from_the_deployment() -> None:
    """uid, gid, fsGroup, key path and mode, /tmp size and grace come from deployment.yaml."""
    manifest = ROOT / "deploy/kubernetes/deployment.yaml"
    spec = yaml.safe_load(manifest.read_text(encoding="utf-8"))["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    pod = check.Pod.from_manifest(manifest)
    assert (pod.user, pod.group) == (
        container["securityContext"]["runAsUser"],
        container["securityContext"]["runAsGroup"],
    )
    assert pod.fs_group == spec["securityContext"]["fsGroup"]
    assert pod.key_mode == 0o440
    assert pod.grace_seconds == spec["terminationGracePeriodSeconds"]
    flags = pod.run_flags(Path("/somewhere"))
    assert "--read-only" in flags
    assert "--cap-drop=ALL" in flags
    assert f"--volume=/somewhere:{pod.key_dir}:ro" in flags
    assert pod.key_variable["ANTHROPIC_API_KEY_FILE"].startswith(pod.key_dir + "/")


def test_a_deployment_with_a_writable_root_is_refused(tmp_path: Path) -> None:
    """The test would not silently run the image more loosely than the cluster does."""
    manifest = yaml.safe_load((ROOT / "deploy/kubernetes/deployment.yaml").read_text())
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFilesystem"] = False
    changed = tmp_path / "deployment.yaml"
    changed.write_text(yaml.safe_dump(manifest))
    with pytest.raises(check.Failure, match="read-only root"):
        check.Pod.from_manifest(changed)


def test_the_key_file_is_written_like_the_secret_volume(tmp_path: Path) -> None:
    """Mode 0440, group fsGroup, the key with kubectl's trailing newline."""
    pod = check.Pod.from_manifest(ROOT / "deploy/kubernetes/deployment.yaml")
    if os.geteuid() != 0:
        pytest.skip("chown to group fsGroup needs root (CI runs as root)")
    directory = check.write_key(pod, tmp_path / "secret")
    (key_file,) = directory.iterdir()
    assert key_file.stat().st_mode & 0o777 == 0o440
    assert key_file.stat().st_gid == pod.fs_group
    assert key_file.read_text() == check.KEY + "\n"


def test_podman_times_are_read_to_the_microsecond() -> None:
    """The SIGTERM-to-exit time uses conmon's FinishedAt, in nanoseconds and Z or an offset."""
    assert check.parse_time("2026-12-01T22:45:46.071234567Z") == datetime(
        2026, 12, 1, 22, 45, 46, 71234, tzinfo=UTC
    )
    assert check.parse_time("2026-12-01T22:45:46+00:00") == datetime(
        2026, 12, 1, 22, 45, 46, tzinfo=UTC
    )
    with pytest.raises(check.Failure):
        check.parse_time("yesterday")


def compile_to(source: Path, mode: py_compile.PycInvalidationMode) -> None:
    """Compile one module into its __pycache__, as pip or compileall would."""
    py_compile.compile(str(source), doraise=True, invalidation_mode=mode)


def test_each_module_without_bytecode_python_would_load_is_found(tmp_path: Path) -> None:
    """Missing or stale (the mtime, a checked hash): named; a valid .pyc of each kind: not."""
    site = tmp_path / SITE
    names = ("__init__", "bare", "stamp", "moved", "fixed", "edit")
    touch(tmp_path, *(f"{SITE}/reaper/{name}.py" for name in names))
    touch(tmp_path, f"{SITE}/idna/core.py")
    timestamp = py_compile.PycInvalidationMode.TIMESTAMP
    unchecked = py_compile.PycInvalidationMode.UNCHECKED_HASH
    checked = py_compile.PycInvalidationMode.CHECKED_HASH
    compile_to(site / "reaper/__init__.py", unchecked)
    compile_to(site / "reaper/stamp.py", timestamp)
    compile_to(site / "reaper/moved.py", timestamp)
    compile_to(site / "reaper/fixed.py", unchecked)
    compile_to(site / "reaper/edit.py", checked)
    compile_to(site / "idna/core.py", checked)
    # What COPY --from did to pip's .pyc: the source's mtime rounded up to the next second.
    moved = (site / "reaper/moved.py").stat().st_mtime
    os.utime(site / "reaper/moved.py", (moved + 1, moved + 1))
    os.utime(site / "reaper/fixed.py", (moved + 1, moved + 1))
    (site / "reaper/edit.py").write_text("x = 1\n")
    found = check.bytecode_problems(tmp_path)
    assert found == {
        "no bytecode": [f"/{SITE}/reaper/bare.py"],
        "stale bytecode": [f"/{SITE}/reaper/edit.py", f"/{SITE}/reaper/moved.py"],
        "no reaper": [],
    }


def test_an_image_without_our_package_has_no_bytecode_to_vouch_for(tmp_path: Path) -> None:
    """No modules at all is not a pass: the check names our missing package."""
    touch(tmp_path, f"{SITE}/idna/__init__.py")
    py_compile.compile(str(tmp_path / SITE / "idna/__init__.py"), doraise=True)
    assert check.bytecode_problems(tmp_path)["no reaper"]


def test_modules_compiled_from_source_are_read_from_python_v() -> None:
    """`python -v` names a module compiled from source without quotes, a .pyc with them."""
    verbose = "\n".join(
        [
            "# /usr/lib/python3.11/__pycache__/enum.cpython-311.pyc matches "
            "/usr/lib/python3.11/enum.py",
            "# code object from '/usr/lib/python3.11/__pycache__/enum.cpython-311.pyc'",
            "# bytecode is stale for 'structlog'",
            "# code object from /opt/reaper/lib/python3.11/site-packages/structlog/__init__.py",
            "import 'structlog' # <_frozen_importlib_external.SourceFileLoader object at 0x7f>",
        ]
    )
    assert check.compiled_from_source(verbose) == [
        "/opt/reaper/lib/python3.11/site-packages/structlog/__init__.py"
    ]
