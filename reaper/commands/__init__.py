"""The commands of ``reaper``: one module per command, each with ``main(args) -> int``."""
