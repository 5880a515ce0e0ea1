"""Allow ``python -m reaper``."""

from reaper.cli import main

raise SystemExit(main())
