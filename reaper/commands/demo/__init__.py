"""``reaper demo``: the daemon's job on an in-process emulator, with nothing to set up.

What a new user sees, in order: the emulator's batches (a realistic mix over 40 days in two
workspaces), the demo's policy as the environment variables that would set it, the dry-run plan
as ``reaper plan`` prints it, a typo's dry run that a guard stops (naming what it withheld), then
the daemon itself (scheduler, metrics server, live cycles) while the emulator's clock jumps six
hours before each cycle, so that stale batches are canceled and deleted, retention catches up
with batches as they age, a held batch is kept until its hold ends, results are archived ahead
and every mutation goes to the ledger. A
summary closes it: batches by status before and after, the actions, the requests, the archive
and the ledger, and lines of the metrics the server answered.

Nothing leaves the process but the metrics server on a free loopback port: the client reaches the
emulator through an in-process transport, and no ``ANTHROPIC_*`` or ``REAPER_*`` variable is read
except ``REAPER_LOG_FORMAT`` and ``REAPER_LOG_LEVEL``. The text is for people; with
``REAPER_LOG_FORMAT=json`` the daemon's log lines take stdout and the text moves to stderr. Files a
step needs (the holds file, the archive, the ledger) go to a temporary folder removed at the end.

The package: ``scenario`` (the policy, the batches, what a ``Step`` may do), ``steps`` (the parts
of the story: stale batches and a protected one; a typo rehearsed in dry run and stopped by a
guard; a hold that expires; results archived ahead and the ledger; add a part there),
``narration`` (the text, no I/O) and ``orchestration`` (the run itself).
"""

from __future__ import annotations

from reaper.commands.demo.orchestration import main

__all__ = ["main"]
