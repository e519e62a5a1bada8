"""Shared test helpers: the `memlake` command run in-process."""

from __future__ import annotations

import os
import subprocess
import sys

from typer.testing import CliRunner


def memlake(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `memlake ARGS` in this process through `memlake.cli.main` (its error handling and exit
    codes included), with `env` as the environment; the result as `subprocess.run` gives it.
    Tests that need a process of their own (kill -9, workers) start one instead."""
    from memlake.cli import main

    runner = CliRunner()
    argv = sys.argv
    with runner.isolation(env=_changes(env)) as (out, err, _):
        sys.argv = ["memlake", *map(str, args)]
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            sys.argv = argv
            sys.stdout.flush()
            sys.stderr.flush()
        stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    return subprocess.CompletedProcess(["memlake", *args], code, stdout, stderr)


def _changes(env: dict[str, str] | None) -> dict[str, str | None] | None:
    """The variables `env` sets differently from this process, and those it drops."""
    if env is None:
        return None
    changed: dict[str, str | None] = {k: v for k, v in env.items() if os.environ.get(k) != v}
    changed.update({k: None for k in os.environ if k not in env})
    return changed
