"""`make image-test`: build the real Dockerfile with podman, run the image as Kubernetes would.

1. The base: the official image named in the Dockerfile when it can be pulled; else a stand-in
   under the same name (deploy/image/stand-in.sh: Debian bookworm, debootstrap minbase, Python
   3.11), its root filesystem cached in /var/cache/batch-reaper (REAPER_IMAGE_CACHE). Says which.
2. The build: `podman build --format docker` (keeps the HEALTHCHECK), the lock installed with
   --require-hashes. RUN steps reach the package index only through the host's pip configuration
   file that names a CA bundle (`pip config debug`) and that bundle, mounted read-only with
   `podman build -v`, never copied (REAPER_IMAGE_PIP_CONF / REAPER_IMAGE_CA_BUNDLE override them).
3. The checks, each container started with the Deployment's settings (deploy/kubernetes/
   deployment.yaml): its uid and gid, fsGroup, a read-only root filesystem with a tmpfs at /tmp,
   no capabilities, no privilege escalation, the key as a 0440 file owned by group fsGroup at the
   Deployment's path; the policy from config/presets/standard.env plus the overrides below; host
   networking, to reach the emulator this script serves on the host's loopback.
4. The bytecode: the container can write none (read-only root), so every module under
   /opt/reaper/lib must ship a .pyc that Python loads as it is (present, not stale), and
   importing what `reaper once` and `reaper run` import must compile no module from source, the
   standard library's included (the official slim base ships it without .pyc).

podman runs with deploy/image/containers.conf and storage.conf (runc, cgroupfs, vfs, outside the
repository). Needs root, podman, runc and debootstrap (.ci/run installs them when missing).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "deploy" / "image"
IMAGE = "localhost/batch-reaper:image-test"
PRESET = ROOT / "config" / "presets" / "standard.env"
CACHE = Path(os.environ.get("REAPER_IMAGE_CACHE", "/var/cache/batch-reaper"))
STAND_IN_LABEL = "org.batch-reaper.stand-in"
OFFICIAL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Random, so that finding it in any output can only be a leak.
KEY = "sk-ant-image-test-" + secrets.token_hex(12)
SHUTDOWN_GRACE_SECONDS = 20
START = time.monotonic()


class Failure(Exception):
    """One check failed: the message says which and shows what was seen."""


def say(message: str) -> None:
    """Print one progress line with the time since the start."""
    print(f"[{time.monotonic() - START:6.1f}s] {message}", flush=True)


def run(
    args: list[str], timeout: float = 300, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a command; with check, raise Failure (with its output) when it fails."""
    result = subprocess.run(  # noqa: S603 - our own fixed commands
        args, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        output = (result.stdout + result.stderr).strip()[-4000:]
        raise Failure(f"`{' '.join(args[:4])} ...` exited {result.returncode}:\n{output}")
    return result


def podman(
    *args: str, timeout: float = 300, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run podman with this project's containers.conf and storage.conf."""
    return run(["podman", *args], timeout=timeout, check=check)


def free_port() -> int:
    """Return a loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_json(url: str, method: str = "GET") -> tuple[int, Any]:
    """Call the emulator's control surface; return the status and the decoded body."""
    request = urllib.request.Request(url, method=method)  # noqa: S310 - loopback http
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def parse_time(text: str) -> datetime:
    """Parse podman's RFC 3339 times (nanoseconds, Z or an offset) to an aware datetime."""
    match = re.fullmatch(r"(\S+?T[\d:]+)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text.strip())
    if not match:
        raise Failure(f"cannot read podman's time {text!r}")
    whole, fraction, zone = match.groups()
    micro = (fraction or "0")[:6].ljust(6, "0")
    return datetime.fromisoformat(f"{whole}.{micro}{'+00:00' if zone == 'Z' else zone}")


# -- the Deployment, as the container runtime must reproduce it ----------------------------------


@dataclass(frozen=True)
class Pod:
    """What deploy/kubernetes/deployment.yaml says about how the container runs."""

    user: int
    group: int
    fs_group: int
    key_dir: str
    key_variable: dict[str, str]
    key_mode: int
    tmp_size: str
    grace_seconds: int

    @classmethod
    def from_manifest(cls, path: Path) -> Pod:
        """Read the pod's security context, key mount, /tmp volume and grace period."""
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        context = container["securityContext"]
        if not (context["readOnlyRootFilesystem"] and context["capabilities"]["drop"] == ["ALL"]):
            raise Failure("deployment.yaml: expected a read-only root and no capabilities")
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        if mounts.get("tmp") != "/tmp":  # noqa: S108 - the container's /tmp
            raise Failure("deployment.yaml: expected an emptyDir mounted at /tmp")
        (item,) = volumes["api-key"]["secret"]["items"]
        key_file = f"{mounts['api-key']}/{item['path']}"
        env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
        if env.get("ANTHROPIC_API_KEY_FILE") != key_file:
            raise Failure(f"deployment.yaml: ANTHROPIC_API_KEY_FILE is not {key_file}")
        size = volumes["tmp"]["emptyDir"].get("sizeLimit", "64Mi").replace("Mi", "m")
        return cls(
            user=context["runAsUser"],
            group=context["runAsGroup"],
            fs_group=spec["securityContext"]["fsGroup"],
            key_dir=mounts["api-key"],
            key_variable={"ANTHROPIC_API_KEY_FILE": key_file},
            key_mode=volumes["api-key"]["secret"]["defaultMode"],
            tmp_size=size,
            grace_seconds=spec["terminationGracePeriodSeconds"],
        )

    def run_flags(self, key_dir: Path) -> list[str]:
        """podman run flags that reproduce the pod's security context and volumes."""
        return [
            "--network=host",
            f"--user={self.user}:{self.group}",
            f"--group-add={self.fs_group}",
            "--read-only",
            "--read-only-tmpfs=false",
            f"--tmpfs=/tmp:rw,size={self.tmp_size},mode=1777",
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
            f"--volume={key_dir}:{self.key_dir}:ro",
        ]


def write_key(pod: Pod, directory: Path) -> Path:
    """Write the key as the Secret volume holds it: root-owned, group fsGroup, mode 0440."""
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    key_file = directory / Path(pod.key_variable["ANTHROPIC_API_KEY_FILE"]).name
    key_file.write_text(KEY + "\n", encoding="utf-8")  # kubectl --from-file keeps the newline
    os.chown(key_file, 0, pod.fs_group)
    key_file.chmod(pod.key_mode)
    return directory


def env_flags(pod: Pod, **overrides: str) -> list[str]:
    """The preset as an env file, then the Deployment's key variable and the test's overrides."""
    flags = [f"--env-file={PRESET}"]
    for name, value in {**pod.key_variable, **overrides}.items():
        flags.append(f"--env={name}={value}")
    return flags


# -- 1. the base image ---------------------------------------------------------------------------


def dockerfile_base() -> str:
    """Return the one base image the Dockerfile's stages are built FROM."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    bases = set(re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE))
    if len(bases) != 1:
        raise Failure(f"expected one base image in the Dockerfile, found {sorted(bases)}")
    (base,) = bases
    return base if "/" in base else f"docker.io/library/{base}"


def ensure_base(base: str) -> str:
    """Pull the official base, or fall back to the cached stand-in; return which was used."""
    if os.environ.get("REAPER_IMAGE_BASE") != "stand-in":
        pulled = podman("pull", "--quiet", base, timeout=600, check=False)
        if pulled.returncode == 0:
            return f"official {base} (pulled)"
        reason = (pulled.stderr.strip().splitlines() or ["?"])[-1][:200]
    else:
        reason = "REAPER_IMAGE_BASE=stand-in"
    labels = podman("image", "inspect", "--format", "{{json .Labels}}", base, check=False)
    if labels.returncode == 0 and STAND_IN_LABEL not in (json.loads(labels.stdout) or {}):
        return f"official {base} (already in local storage; pull failed: {reason})"
    tarball = CACHE / "stand-in-bookworm.tar"
    if labels.returncode != 0:
        CACHE.mkdir(parents=True, exist_ok=True)
        if not tarball.exists():
            say(f"making the stand-in root filesystem (debootstrap, cached in {CACHE}) ...")
        run([str(HERE / "stand-in.sh"), str(tarball)], timeout=1200)
        podman(
            "import",
            f"--change=ENV PATH={OFFICIAL_PATH}",
            "--change=ENV LANG=C.UTF-8",
            '--change=CMD ["python3"]',
            f"--change=LABEL {STAND_IN_LABEL}=debootstrap-minbase-bookworm",
            str(tarball),
            base,
            timeout=600,
        )
    return (
        f"STAND-IN for {base}: Debian bookworm (debootstrap minbase) from {tarball}; "
        f"the official image could not be pulled: {reason}"
    )


# -- 2. the build --------------------------------------------------------------------------------


def pip_mounts() -> tuple[list[str], str]:
    """Return `podman build -v` flags for the pip configuration naming a CA bundle, and a note."""
    conf = os.environ.get("REAPER_IMAGE_PIP_CONF")
    bundle = os.environ.get("REAPER_IMAGE_CA_BUNDLE")
    if not conf:
        debug = run([sys.executable, "-m", "pip", "config", "debug"], check=False).stdout
        current = None
        for line in debug.splitlines():
            file_line = re.match(r"\s+(/\S+), exists: True$", line)
            if file_line:
                current = file_line.group(1)
            setting = re.match(r"\s+\w+\.cert: (\S+)$", line)
            if setting and current:
                conf, bundle = current, bundle or setting.group(1)
                break
    if not conf:
        return [], "no pip configuration names a CA bundle: the build reaches the index directly"
    flags = [f"--volume={conf}:/etc/pip.conf:ro"]
    if bundle:
        flags.append(f"--volume={bundle}:{bundle}:ro")
    return flags, f"pip configuration {conf} and CA bundle {bundle}, mounted read-only"


def build() -> None:
    """Build the Dockerfile into IMAGE, every layer afresh (vfs copies a whole layer per step)."""
    mounts, note = pip_mounts()
    say(f"build: {note}")
    result = podman(
        "build",
        "--format=docker",
        "--layers=false",
        "--pull=never",
        "--network=host",
        *mounts,
        f"--tag={IMAGE}",
        str(ROOT),
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        raise Failure(f"podman build failed:\n{(result.stdout + result.stderr)[-6000:]}")
    podman("image", "prune", "--force")  # the previous build's image, now untagged


# -- 3. the checks -------------------------------------------------------------------------------

OURS = re.compile(r"tests?|bench|conftest\.py|test_.*\.py|.*_test\.py|bench_.*\.py")
# pip's cache, its temporary build directories, and wheels anywhere but the base's ensurepip.
PIP_LEFTOVER = re.compile(r"/\.cache/pip$|^/tmp/pip|^/(opt|tmp|root|home)/.*\.whl$")
COMPILERS = ("cc", "gcc", "g++", "c++", "clang", "tcc", "ld")
BUILD_LEFTOVERS = ("src", "wheels", "opt/build", "opt/reaper/bin/pip", "etc/pip.conf")


def unwanted_files(root: Path) -> dict[str, list[str]]:
    """Walk an image's root filesystem: compilers, pip caches and wheels, our tests, leftovers."""
    path_dirs = ("usr/local/sbin", "usr/local/bin", "usr/sbin", "usr/bin", "sbin", "bin")
    found: dict[str, list[str]] = {
        "compilers": [f"/{d}/{c}" for d in path_dirs for c in COMPILERS if (root / d / c).exists()],
        "build leftovers": [f"/{p}" for p in BUILD_LEFTOVERS if os.path.lexists(root / p)],
        "pip caches or wheels": [],
        "test or bench files": [],
    }
    for directory, dirs, files in os.walk(root):
        inside = "/" + Path(directory).relative_to(root).as_posix().lstrip(".")
        for name in dirs + files:
            path = f"{inside.rstrip('/')}/{name}"
            if PIP_LEFTOVER.search(path):
                found["pip caches or wheels"].append(path)
            elif name == "conftest.py" or ("site-packages/reaper" in path and OURS.fullmatch(name)):
                found["test or bench files"].append(path)
    return found


# Where the reaper's modules live in the image; the cache tag follows from "pythonX.Y".
VENV_LIB = "opt/reaper/lib"
# The modules `reaper once` and `reaper run` import before their first request.
ENTRY_MODULES = "reaper.cli, reaper.commands.once, reaper.commands.run"


def pyc_problem(source: Path, pyc: Path, cache_tag: str) -> str | None:
    """Why Python would compile `source` again instead of loading `pyc` (PEP 552), or None."""
    if not pyc.exists():
        return "no bytecode"
    header = pyc.read_bytes()[:16]
    if len(header) < 16:
        return "stale bytecode"
    same_python = cache_tag == sys.implementation.cache_tag
    if same_python and header[:4] != importlib.util.MAGIC_NUMBER:
        return "stale bytecode"
    (flags,) = struct.unpack("<I", header[4:8])
    if flags == 0b01:  # unchecked hash: loaded whatever the source says
        return None
    if flags == 0b11:  # checked hash: the source's hash must match
        if same_python and header[8:16] != importlib.util.source_hash(source.read_bytes()):
            return "stale bytecode"
        return None
    if flags != 0:
        return "stale bytecode"
    mtime, size = struct.unpack("<II", header[8:16])
    stat = source.stat()
    if (mtime, size) != (int(stat.st_mtime) & 0xFFFFFFFF, stat.st_size & 0xFFFFFFFF):
        return "stale bytecode"  # e.g. COPY --from rounded the source's mtime to a second
    return None


def bytecode_problems(root: Path) -> dict[str, list[str]]:
    """Every module under /opt/reaper/lib without a .pyc Python would load as it is."""
    found: dict[str, list[str]] = {"no bytecode": [], "stale bytecode": [], "no reaper": []}
    sites = sorted((root / VENV_LIB).glob("python3.*/site-packages"))
    if not any((site / "reaper" / "__init__.py").exists() for site in sites):
        found["no reaper"].append(f"/{VENV_LIB}/python3.*/site-packages/reaper")
    for site in sites:
        cache_tag = "cpython-" + site.parent.name.removeprefix("python").replace(".", "")
        for source in sorted(site.rglob("*.py")):
            pyc = source.parent / "__pycache__" / f"{source.stem}.{cache_tag}.pyc"
            problem = pyc_problem(source, pyc, cache_tag)
            if problem:
                found[problem].append(f"/{source.relative_to(root).as_posix()}")
    return found


def compiled_from_source(verbose: str) -> list[str]:
    """The modules `python -v` says it compiled from their source rather than loaded from .pyc."""
    return re.findall(r"^# code object from (/\S+\.py)$", verbose, re.MULTILINE)


def check_image(pod: Pod) -> int:
    """The image's settings and contents (read from its mounted layers); return its size."""
    (info,) = json.loads(podman("image", "inspect", IMAGE).stdout)
    if not info.get("Healthcheck"):
        raise Failure("the image has no HEALTHCHECK (built without --format docker?)")
    user = info["Config"].get("User")
    if user != f"{pod.user}:{pod.group}":
        raise Failure(f"the image's USER is {user!r}, the Deployment runs {pod.user}")
    root = Path(podman("image", "mount", IMAGE).stdout.strip())
    try:
        found = unwanted_files(root)
        bytecode = bytecode_problems(root)
    finally:
        podman("image", "unmount", IMAGE, check=False)
    bad = {what: paths for what, paths in found.items() if paths}
    if bad:
        raise Failure(f"the image holds what it should not: {bad}")
    say(f"ok: USER {user}, HEALTHCHECK kept; no compiler, pip cache, wheel, test or bench file")
    missing = {what: paths for what, paths in bytecode.items() if paths}
    if missing:
        counts = {what: len(paths) for what, paths in missing.items()}
        shown = {what: paths[:5] for what, paths in missing.items()}
        raise Failure(
            f"modules under /{VENV_LIB} would be compiled at every start (read-only root): "
            f"{counts}, e.g. {shown}"
        )
    say(f"ok: every module under /{VENV_LIB} ships bytecode Python loads as it is")
    size: int = info["Size"]
    return size


@contextlib.contextmanager
def emulator(work: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """Serve the emulator on the host's loopback with five batches; yield its URL and their ids."""
    now = datetime.now(UTC)

    def at(ago: timedelta) -> str:
        return (now - ago).strftime("%Y-%m-%dT%H:%M:%SZ")

    day, hour = timedelta(days=1), timedelta(hours=1)
    # Against the standard preset: ended 7d, failed 30d, stale 12h, min age 1h.
    seed = {
        "old_ended": {
            "created_at": at(10 * day),
            "ended_at": at(10 * day - hour),
            "request_counts": {"succeeded": 3},
        },
        "young_ended": {
            "created_at": at(2 * day),
            "ended_at": at(2 * day - hour),
            "request_counts": {"succeeded": 3},
        },
        "old_failed": {
            "created_at": at(10 * day),
            "ended_at": at(10 * day - hour),
            "request_counts": {"succeeded": 2, "errored": 1},
        },
        "stale": {
            "created_at": at(13 * hour),
            "processing_status": "in_progress",
            "request_counts": {"processing": 4},
        },
        "young_running": {
            "created_at": at(2 * hour),
            "processing_status": "in_progress",
            "request_counts": {"processing": 4},
        },
    }
    ids = {name: f"msgbatch_imagetest_{name}" for name in seed}
    seed_file = work / "seed.jsonl"
    seed_file.write_text(
        "".join(json.dumps({"id": ids[name], **batch}) + "\n" for name, batch in seed.items()),
        encoding="utf-8",
    )
    key_file = work / "emulator-key"
    key_file.write_text(KEY, encoding="utf-8")
    port = free_port()
    log = work / "emulator.log"
    command = [
        str(ROOT / ".venv" / "bin" / "reaper"),
        "emulator",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--api-key-file",
        str(key_file),
        "--seed-file",
        str(seed_file),
        "--cancel-seconds",
        "1",
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)  # noqa: S603
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise Failure(f"the emulator exited {process.returncode}:\n{log.read_text()}")
            with contextlib.suppress(OSError):
                if http_json(f"{url}/_emulator/state")[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise Failure(f"the emulator did not answer within 30 s:\n{log.read_text()}")
            time.sleep(0.2)
        yield url, ids
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def check_once(pod: Pod, key_dir: Path, url: str, ids: dict[str, str]) -> None:
    """`once` with the preset and the dry run off does what the policy says, printing no key."""
    overrides = {"ANTHROPIC_BASE_URL": url, "REAPER_DRY_RUN": "false", "REAPER_METRICS_PORT": "0"}
    result = podman(
        "run",
        "--rm",
        "--no-healthcheck",
        *pod.run_flags(key_dir),
        *env_flags(pod, **overrides),
        IMAGE,
        "once",
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise Failure(f"`once` exited {result.returncode}:\n{output[-4000:]}")
    if KEY in output:
        raise Failure("`once` printed the API key")
    if "cycle.finished" not in output:
        raise Failure(f"`once` logged no cycle.finished:\n{output[-4000:]}")
    status, mutations = http_json(f"{url}/_emulator/mutations")
    done = {(m["endpoint"], m["batch_id"]) for m in mutations if m["status"] == 200}
    must = {("delete", ids["old_ended"]), ("cancel", ids["stale"])}
    # REAPER_DELETE_CANCELED=true: the canceled batch may be deleted too once it has ended.
    may = must | {("delete", ids["stale"])}
    if not must <= done <= may:
        raise Failure(
            f"expected the mutations {sorted(must)} (and at most {sorted(may - must)}), "
            f"the emulator saw {sorted(done)}"
        )
    for name in ("young_ended", "old_failed", "young_running"):
        status, body = http_json(f"{url}/_emulator/batches/{ids[name]}")
        if status != 200:
            raise Failure(f"{name} should have been kept, the emulator answers {status}: {body}")
    status, _ = http_json(f"{url}/_emulator/batches/{ids['old_ended']}")
    if status != 404:
        raise Failure(f"old_ended should be gone, the emulator answers {status}")
    say(f"ok: `once` (exit 0, no key printed) made exactly {sorted(done)}; kept the other three")


def check_bytecode_loaded(pod: Pod, key_dir: Path) -> None:
    """Importing what `once` and `run` import, as the pod runs, compiles nothing from source."""
    result = podman(
        "run",
        "--rm",
        "--no-healthcheck",
        *pod.run_flags(key_dir),
        "--entrypoint=python",
        IMAGE,
        "-v",
        "-c",
        f"import {ENTRY_MODULES}",
    )
    compiled = compiled_from_source(result.stderr)
    if compiled:
        raise Failure(
            f"importing {ENTRY_MODULES} compiles {len(compiled)} modules from source at every "
            f"start (no valid .pyc; the read-only root keeps none), e.g. {compiled[:10]}"
        )
    loaded = len(re.findall(r"^# code object from '\S+\.pyc'$", result.stderr, re.MULTILINE))
    say(f"ok: importing {ENTRY_MODULES} loads {loaded} modules from .pyc, compiles none")


PROBE = r"""
import json, os, time, urllib.request, urllib.error
base = "http://127.0.0.1:%s" % os.environ["REAPER_METRICS_PORT"]
def get(path):
    try:
        with urllib.request.urlopen(base + path, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""
    except OSError:
        return 0, ""
seen, deadline = {}, time.monotonic() + 90
while time.monotonic() < deadline:
    seen = {path: get(path) for path in ("/healthz", "/readyz", "/metrics")}
    if all(s == 200 for s, _ in seen.values()) and (
        'reaper_cycles_total{outcome="success"}' in seen["/metrics"][1]):
        break
    time.sleep(0.3)
try:
    open("/opt/reaper/written", "w")
    read_only = False
except OSError:
    read_only = True
uid = [l.split()[1] for l in open("/proc/1/status") if l.startswith("Uid:")][0]
print(json.dumps({"status": {p: s for p, (s, _) in seen.items()}, "read_only": read_only,
                  "pid1_uid": int(uid), "tmp_writable": os.access("/tmp", os.W_OK)}))
"""


def check_run(pod: Pod, key_dir: Path, url: str, version: str) -> None:
    """`run`: probes and metrics from inside, the HEALTHCHECK, then SIGTERM within the grace."""
    name = f"reaper-image-test-{os.getpid()}"
    port = free_port()
    overrides = {
        "ANTHROPIC_BASE_URL": url,
        "REAPER_METRICS_HOST": "127.0.0.1",
        "REAPER_METRICS_PORT": str(port),
        "REAPER_SHUTDOWN_GRACE": f"{SHUTDOWN_GRACE_SECONDS}s",
    }
    podman(
        "run",
        "--detach",
        f"--name={name}",
        "--health-interval=disable",
        *pod.run_flags(key_dir),
        *env_flags(pod, **overrides),
        IMAGE,
        "run",
    )
    try:
        probe = json.loads(podman("exec", name, "python", "-c", PROBE, timeout=150).stdout)
        if set(probe["status"].values()) != {200} or not probe["read_only"]:
            raise Failure(f"inside the container: {probe}\n{podman('logs', name).stdout[-3000:]}")
        if probe["pid1_uid"] != pod.user or not probe["tmp_writable"]:
            raise Failure(f"expected uid {pod.user} and a writable /tmp: {probe}")
        say(
            f"ok: `run` as uid {probe['pid1_uid']} on a read-only root answers "
            f"/healthz, /readyz and /metrics (a successful cycle counted) from inside"
        )
        printed = podman("exec", name, "reaper", "--version").stdout.strip()
        if printed != f"batch-reaper {version}":
            raise Failure(f"`reaper --version` printed {printed!r}, the package is {version}")
        python = podman("exec", name, "python", "--version").stdout.strip()
        say(f"ok: `reaper --version` is {printed!r}, on {python}")
        podman("healthcheck", "run", name)
        say("ok: the image's HEALTHCHECK command succeeds")
        # From SIGTERM to the process's exit, as conmon recorded it: podman's own bookkeeping
        # after the exit (slow on vfs under load) is not the reaper's shutdown.
        signalled = datetime.now(UTC)
        podman("stop", f"--time={pod.grace_seconds}", name, timeout=pod.grace_seconds + 60)
        state = json.loads(podman("inspect", "--format={{json .State}}", name).stdout)
        took = (parse_time(state["FinishedAt"]) - signalled).total_seconds()
        logs = podman("logs", name)
        output = logs.stdout + logs.stderr
        if state["ExitCode"] != 0 or took >= SHUTDOWN_GRACE_SECONDS:
            raise Failure(
                f"after SIGTERM the reaper exited {state['ExitCode']} in {took:.1f}s "
                f"(grace {SHUTDOWN_GRACE_SECONDS}s):\n{output[-3000:]}"
            )
        if KEY in output:
            raise Failure("`run` logged the API key")
        say(
            f"ok: SIGTERM (`podman stop`) to exit 0 in {took:.1f}s "
            f"(REAPER_SHUTDOWN_GRACE={SHUTDOWN_GRACE_SECONDS}s); no key in its logs"
        )
    finally:
        podman("rm", "--force", name, check=False)


def main() -> int:
    """Run every step; print one line per check, the base used, the size and the time taken."""
    os.environ["CONTAINERS_CONF"] = str(HERE / "containers.conf")
    os.environ["CONTAINERS_STORAGE_CONF"] = str(HERE / "storage.conf")
    missing = [tool for tool in ("podman", "runc", "debootstrap") if not shutil.which(tool)]
    if missing or os.geteuid() != 0:
        print(
            f"image-test: needs root and {', '.join(missing) or 'podman'} (.ci/run installs "
            "Debian's podman, runc and debootstrap)",
            file=sys.stderr,
        )
        return 1
    with (ROOT / "pyproject.toml").open("rb") as handle:
        version = tomllib.load(handle)["project"]["version"]
    pod = Pod.from_manifest(ROOT / "deploy" / "kubernetes" / "deployment.yaml")
    try:
        base = dockerfile_base()
        say(f"base: {ensure_base(base)}")
        build()
        say(f"built {IMAGE}")
        size = check_image(pod)
        with tempfile.TemporaryDirectory(prefix="reaper-image-test-") as temporary:
            work = Path(temporary)
            key_dir = write_key(pod, work / "secret")
            check_bytecode_loaded(pod, key_dir)
            with emulator(work) as (url, ids):
                check_once(pod, key_dir, url, ids)
                check_run(pod, key_dir, url, version)
    except Failure as failure:
        say(f"image-test FAILED: {failure}")
        return 1
    say(f"image size: {size / 1e6:.0f} MB")
    say(f"image-test passed in {time.monotonic() - START:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
