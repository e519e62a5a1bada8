"""Pipeline stages: the functions the CLI commands and the demo call.

Each stage takes typed arguments (the config, the warehouse, parsed lists), runs jobs and
analyses, reports progress through `log` and returns a record (a summary line or a few) for
the caller to print. Stages never print and never exit: errors are `MemlakeError`s, which the
CLI's `main()` turns into one line and an exit code.
"""

from memlake.pipeline._stage import Log, quiet, relabel, setup

__all__ = ["Log", "quiet", "relabel", "setup"]
