"""Start-up CPU of the reaper inside images, run as the Deployment runs them (read-only root).

    sudo .venv/bin/python bench/image_startup.py IMAGE [IMAGE ...] [--rounds 4] [--each 5]

For each image: how many modules importing what `reaper once` and `reaper run` import loads from
.pyc and how many it compiles from source (`python -v`), then the CPU (user + system, from
`os.wait4` on the child) of `python -c pass`, `reaper --version` and those two imports, as the
median of rounds x each runs. The images take turns, a round each, so that load from elsewhere on
the machine falls on all of them alike. podman runs with deploy/image's containers.conf and
storage.conf, so the images are those `make image-test` builds (tag them to keep one).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, os, re, subprocess, sys
def cpu(args):
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        sys.exit(f"{args} exited {process.returncode}")
    return usage.ru_utime + usage.ru_stime
out = {}
for label, module in (("once", "reaper.commands.once"), ("run", "reaper.commands.run")):
    verbose = subprocess.run(["python", "-v", "-c", f"import reaper.cli, {module}"],
                             capture_output=True, text=True, check=True).stderr
    source = re.findall(r"^# code object from (/\S+\.py)$", verbose, re.M)
    out[f"imports of `reaper {label}`: from .pyc"] = len(
        re.findall(r"^# code object from '\S+\.pyc'$", verbose, re.M))
    out[f"imports of `reaper {label}`: compiled (stdlib)"] = "%d (%d)" % (
        len(source), sum(not path.startswith("/opt/reaper/") for path in source))
cases = {
    "`python -c pass`": ["python", "-c", "pass"],
    "`reaper --version`": ["reaper", "--version"],
    "imports of `reaper once`": ["python", "-c", "import reaper.cli, reaper.commands.once"],
    "imports of `reaper run`": ["python", "-c", "import reaper.cli, reaper.commands.run"],
}
for name, args in cases.items():
    cpu(args)
    out[f"{name}, CPU ms"] = [cpu(args) for _ in range(int(sys.argv[1]))]
print(json.dumps(out))
"""

FLAGS = [
    "--rm",
    "--network=none",
    "--read-only",
    "--read-only-tmpfs=false",
    "--tmpfs=/tmp:rw,size=64m,mode=1777",
    "--user=10001:10001",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
    "--no-healthcheck",
    "--entrypoint=python",
]


def probe(image: str, each: int) -> dict[str, object]:
    """Run the probe once in a fresh container of the image; return what it measured."""
    result = subprocess.run(
        ["podman", "run", *FLAGS, image, "-c", PROBE, str(each)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    measured: dict[str, object] = json.loads(result.stdout)
    return measured


def main() -> None:
    """Measure every image, a round each in turn; print one Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--each", type=int, default=5)
    options = parser.parse_args()
    os.environ.setdefault("CONTAINERS_CONF", str(ROOT / "deploy/image/containers.conf"))
    os.environ.setdefault("CONTAINERS_STORAGE_CONF", str(ROOT / "deploy/image/storage.conf"))
    figures: dict[str, dict[str, object]] = {image: {} for image in options.images}
    for _ in range(options.rounds):
        for image in options.images:
            for name, value in probe(image, options.each).items():
                if isinstance(value, list):
                    runs = figures[image].setdefault(name, [])
                    assert isinstance(runs, list)
                    runs.extend(value)
                else:
                    figures[image][name] = value
    print("| figure | " + " | ".join(f"`{image}`" for image in options.images) + " |")
    print("| --- |" + " --- |" * len(options.images))
    for name in figures[options.images[0]]:
        cells = []
        for image in options.images:
            value = figures[image][name]
            if isinstance(value, list):
                cells.append(f"{statistics.median(value) * 1000:.0f} (min {min(value) * 1000:.0f})")
            else:
                cells.append(str(value))
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
