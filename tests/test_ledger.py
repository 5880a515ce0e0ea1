"""The ledger: intent fsynced before the request, outcome after, an append-only file a UTC day."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from reaper.ledger import (
    NULL_LEDGER,
    FileLedger,
    LedgerError,
    ledger_path,
    open_ledger,
)
from reaper.models import Batch
from tests import helpers
from tests.helpers import DAY, HOUR, Clock

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 12, 1, 23, 59, 58, tzinfo=UTC)
NOBODY = 65534


def make_batch(batch_id: str, workspace: str | None = None, *, created: datetime = T0) -> Batch:
    """An ended batch with a failed request, eight days old at ``created``."""
    return helpers.make_batch(
        batch_id,
        created_ago=8 * DAY,
        ended_ago=7 * DAY + HOUR,
        now=created,
        succeeded=3,
        errored=1,
        workspace=workspace,
    )


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_intent_then_outcome_are_the_specs_lines(tmp_path: Path) -> None:
    """The intent carries the rule and the batch as listed; the outcome, status and request id."""
    ledger = FileLedger(tmp_path, clock=Clock(T0).now)
    batch = make_batch("msgbatch_a", "wrkspc_1")
    ledger.intent(cycle_id="c1", batch=batch, action="delete", rule="failed")
    ledger.outcome(
        cycle_id="c1",
        batch_id="msgbatch_a",
        workspace="wrkspc_1",
        action="delete",
        phase="done",
        status=200,
        request_id="req_1",
    )
    intent, outcome = lines(tmp_path / "ledger-2026-12-01.jsonl")
    assert intent == {
        "phase": "intent",
        "ts": "2026-12-01T23:59:58.000000Z",
        "cycle_id": "c1",
        "workspace": "wrkspc_1",
        "id": "msgbatch_a",
        "action": "delete",
        "rule": "failed",
        "batch": batch.to_api(),
    }
    assert intent["batch"]["request_counts"]["errored"] == 1
    assert Batch.from_api(intent["batch"], "wrkspc_1") == batch
    assert outcome == {
        "phase": "done",
        "ts": "2026-12-01T23:59:58.000000Z",
        "cycle_id": "c1",
        "workspace": "wrkspc_1",
        "id": "msgbatch_a",
        "action": "delete",
        "status": 200,
        "request_id": "req_1",
    }


def test_the_keys_own_workspace_is_written_as_default_and_errors_are_kept(tmp_path: Path) -> None:
    """workspace None reads "default", as in the logs and archive paths; an error type is kept."""
    ledger = FileLedger(tmp_path, clock=Clock(T0).now)
    ledger.intent(cycle_id="c1", batch=make_batch("b"), action="cancel", rule="stale")
    ledger.outcome(
        cycle_id="c1",
        batch_id="b",
        workspace=None,
        action="cancel",
        phase="failed",
        status=None,
        request_id=None,
        error="api_timeout",
    )
    intent, outcome = lines(ledger_path(tmp_path, T0))
    assert intent["workspace"] == outcome["workspace"] == "default"
    assert (outcome["status"], outcome["request_id"], outcome["error"]) == (
        None,
        None,
        "api_timeout",
    )


def test_one_file_per_utc_day(tmp_path: Path) -> None:
    """Lines go to the file of their UTC day, whatever the clock's zone."""
    clock = Clock(T0)
    ledger = FileLedger(tmp_path, clock=clock.now)
    ledger.intent(cycle_id="c1", batch=make_batch("a"), action="delete", rule="ended")
    clock.set(T0 + timedelta(seconds=3))  # 2026-12-02T00:00:01Z
    ledger.outcome(
        cycle_id="c1",
        batch_id="a",
        workspace=None,
        action="delete",
        phase="gone",
        status=404,
        request_id="req_2",
    )
    # 2026-12-03 01:00 at +05:00: still the 2nd in UTC
    clock.set(datetime(2026, 12, 2, 20, 0, tzinfo=UTC).astimezone(timezone(timedelta(hours=5))))
    ledger.intent(cycle_id="c2", batch=make_batch("b"), action="delete", rule="ended")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ledger-2026-12-01.jsonl",
        "ledger-2026-12-02.jsonl",
    ]
    assert [r["phase"] for r in lines(tmp_path / "ledger-2026-12-02.jsonl")] == ["gone", "intent"]


def test_lines_are_appended_never_rewritten(tmp_path: Path) -> None:
    """What the file held before (another process's lines) stays byte for byte."""
    path = ledger_path(tmp_path, T0)
    before = b'{"phase":"intent","id":"older"}\n'
    path.write_bytes(before)
    FileLedger(tmp_path, clock=Clock(T0).now).intent(
        cycle_id="c", batch=make_batch("a"), action="delete", rule="ended"
    )
    data = path.read_bytes()
    assert data.startswith(before)
    assert json.loads(data[len(before) :])["id"] == "a"


def test_a_torn_last_line_does_not_swallow_the_next(tmp_path: Path) -> None:
    """A line cut short by a crash stays; the next line starts on a fresh line and parses."""
    path = ledger_path(tmp_path, T0)
    path.write_bytes(b'{"phase":"intent","id":"cut sh')
    FileLedger(tmp_path, clock=Clock(T0).now).intent(
        cycle_id="c", batch=make_batch("a"), action="delete", rule="ended"
    )
    torn, whole = path.read_text().splitlines()
    assert torn == '{"phase":"intent","id":"cut sh'
    assert json.loads(whole)["id"] == "a"


def test_a_missing_directory_raises_and_creates_nothing(tmp_path: Path) -> None:
    """The ledger never creates its directory: the intent fails, naming the variable and path."""
    missing = tmp_path / "not-mounted"
    ledger = FileLedger(missing, clock=Clock(T0).now)
    with pytest.raises(LedgerError) as info:
        ledger.intent(cycle_id="c", batch=make_batch("a"), action="delete", rule="ended")
    assert str(info.value) == (
        f"REAPER_LEDGER_DIR={missing}: cannot write ledger-2026-12-01.jsonl: "
        "No such file or directory"
    )
    assert not missing.exists()


def test_an_unwritable_file_raises(tmp_path: Path) -> None:
    """Whatever stops the write (here a directory in the file's place) raises LedgerError."""
    ledger_path(tmp_path, T0).mkdir()
    with pytest.raises(LedgerError, match=r"cannot write ledger-2026-12-01\.jsonl"):
        FileLedger(tmp_path, clock=Clock(T0).now).outcome(
            cycle_id="c",
            batch_id="a",
            workspace=None,
            action="delete",
            phase="done",
            status=200,
            request_id="r",
        )


def test_a_read_only_directory_raises() -> None:
    """A read-only volume: LedgerError, nothing written.

    Root writes to a read-only directory, so under root (CI) a forked child drops to ``nobody``
    to write (a subprocess cannot: the interpreter may live under root's home).
    """
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        directory.chmod(0o555)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: drop root, try the write, report what happened
            os.close(read_end)
            try:
                if os.geteuid() == 0:
                    os.setgid(NOBODY)
                    os.setuid(NOBODY)
                FileLedger(directory, clock=Clock(T0).now).intent(
                    cycle_id="c", batch=make_batch("a"), action="delete", rule="ended"
                )
                message = "written"
            except LedgerError as exc:
                message = str(exc)
            except BaseException as exc:
                message = repr(exc)
            os.write(write_end, message.encode())
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            message = pipe.read().decode()
        os.waitpid(pid, 0)
        directory.chmod(0o700)
        assert "cannot write ledger-2026-12-01.jsonl: Permission denied" in message
        assert list(directory.iterdir()) == []


_FULL_DISK = """
import resource, signal, sys
from datetime import UTC, datetime
from pathlib import Path
from reaper.ledger import FileLedger, LedgerError
from tests.test_ledger import make_batch
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
ledger = FileLedger(Path(sys.argv[1]), clock=lambda: datetime(2026, 12, 1, tzinfo=UTC))
for n in range(100):
    try:
        ledger.intent(cycle_id="c", batch=make_batch(f"b{n}"), action="delete", rule="ended")
    except LedgerError as exc:
        print(n, exc)
        break
"""


def test_a_full_disk_raises_and_leaves_the_written_lines_readable(tmp_path: Path) -> None:
    """At a file size limit (a full disk's EFBIG/ENOSPC), the intent that does not fit raises."""
    done = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(tmp_path), "2000"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    number, message = done.stdout.strip().split(" ", 1)
    assert int(number) >= 1
    assert "cannot write ledger-2026-12-01.jsonl: File too large" in message
    text = (tmp_path / "ledger-2026-12-01.jsonl").read_text()
    whole = [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]
    assert [r["id"] for r in whole] == [f"b{n}" for n in range(int(number))]


def test_dry_runs_and_an_unset_directory_get_the_null_ledger(tmp_path: Path) -> None:
    """open_ledger: no directory or a dry run writes nothing; otherwise a FileLedger there."""
    assert open_ledger(None, dry_run=False) is NULL_LEDGER
    assert open_ledger(tmp_path, dry_run=True) is NULL_LEDGER
    NULL_LEDGER.intent(cycle_id="c", batch=make_batch("a"), action="delete", rule="ended")
    assert list(tmp_path.iterdir()) == []
    ledger = open_ledger(tmp_path, dry_run=False)
    assert isinstance(ledger, FileLedger)
    assert ledger.directory == tmp_path


def test_an_unknown_action_or_phase_is_a_programming_error(tmp_path: Path) -> None:
    """Only cancel and delete are recorded, with outcomes done, failed or gone."""
    ledger = FileLedger(tmp_path, clock=Clock(T0).now)
    with pytest.raises(ValueError, match="action"):
        ledger.intent(cycle_id="c", batch=make_batch("a"), action="keep", rule="ended")
    with pytest.raises(ValueError, match="phase"):
        ledger.outcome(
            cycle_id="c",
            batch_id="a",
            workspace=None,
            action="delete",
            phase="intent",
            status=None,
            request_id=None,
        )
    assert list(tmp_path.iterdir()) == []


# -- docs/ledger.md's queries, run as written


def doc_query(heading: str) -> str:
    """Return the sh block under ``### heading`` in docs/ledger.md."""
    text = (ROOT / "docs" / "ledger.md").read_text(encoding="utf-8")
    section = text.split(f"### {heading}\n", 1)[1].split("\n### ", 1)[0]
    match = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert match, heading
    return match.group(1)


def run_query(script: str, ledger_dir: Path, archive_dir: Path) -> list[dict[str, Any]]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "REAPER_LEDGER_DIR": str(ledger_dir),
        "REAPER_ARCHIVE_DIR": str(archive_dir),
    }
    done = subprocess.run(
        ["bash", "-c", "set -o pipefail\n" + script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.fixture
def history(tmp_path: Path) -> Path:
    """A ledger of three days around yesterday (the real one: the queries ask `date`)."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = today - timedelta(days=1)
    clock = Clock(yesterday - timedelta(hours=2))
    ledger = FileLedger(tmp_path, clock=clock.now)

    def act(cycle: str, batch_id: str, action: str, rule: str, phase: str | None) -> None:
        ledger.intent(cycle_id=cycle, batch=make_batch(batch_id), action=action, rule=rule)
        if phase is not None:
            status = {"done": 200, "gone": 404, "failed": 500}[phase]
            ledger.outcome(
                cycle_id=cycle,
                batch_id=batch_id,
                workspace=None,
                action=action,
                phase=phase,
                status=status,
                request_id=f"req_{batch_id}",
            )

    act("c0", "old", "delete", "ended", "done")  # the day before yesterday
    clock.set(yesterday + timedelta(hours=3))
    act("c1", "a", "delete", "ended", "done")
    act("c1", "b", "delete", "failed", "gone")
    act("c1", "c", "cancel", "stale", "done")
    act("c1", "d", "delete", "ended", "failed")
    act("c1", "crashed", "delete", "ended", None)
    clock.set(today - timedelta(seconds=1))  # an intent just before midnight ...
    ledger.intent(cycle_id="c2", batch=make_batch("late"), action="delete", rule="canceled_stale")
    clock.set(today + timedelta(seconds=1))  # ... answered just after: deleted today
    ledger.outcome(
        cycle_id="c2",
        batch_id="late",
        workspace=None,
        action="delete",
        phase="done",
        status=200,
        request_id="req_late",
    )
    act("c3", "today_crashed", "cancel", "stale", None)
    return tmp_path


needs_jq = pytest.mark.skipif(
    shutil.which("jq") is None or shutil.which("bash") is None, reason="jq not installed"
)


@needs_jq
def test_the_doc_query_for_yesterdays_deletes_names_each_with_its_rule(history: Path) -> None:
    """Done and gone deletes of yesterday, with their rules; no cancel, failure or other day."""
    rows = run_query(doc_query("What was deleted yesterday, and by which rule"), history, history)
    assert [(r["id"], r["rule"], r["phase"]) for r in rows] == [
        ("a", "ended", "done"),
        ("b", "failed", "gone"),
    ]


@needs_jq
def test_the_doc_query_for_one_batch_shows_its_delete_and_archive_path(
    history: Path, tmp_path: Path
) -> None:
    """The intent with the archive path (workspace, UTC day of created_at, id), then the outcome."""
    script = doc_query("Was batch X deleted, when, and where is its archive")
    assert "BATCH_ID=msgbatch_01..." in script
    rows = run_query(script.replace("BATCH_ID=msgbatch_01...", "BATCH_ID=a"), history, tmp_path)
    created = make_batch("a").created_at
    assert [r["phase"] for r in rows] == ["intent", "done"]
    assert rows[0]["rule"] == "ended"
    assert rows[0]["archive"] == f"{tmp_path}/default/{created:%Y-%m-%d}/a.jsonl.gz"
    assert rows[1]["status"] == 200
    assert rows[1]["request_id"] == "req_a"


@needs_jq
def test_the_doc_query_for_intents_without_outcome_finds_the_crashes(history: Path) -> None:
    """Yesterday's and today's intents no outcome answers, and only those."""
    rows = run_query(
        doc_query("What was intended but has no outcome (a crash mid-request)"), history, history
    )
    assert sorted((r["id"], r["action"]) for r in rows) == [
        ("crashed", "delete"),
        ("today_crashed", "cancel"),
    ]
