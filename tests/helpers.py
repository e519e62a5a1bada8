"""Shared test helpers: the `memlake` command run in-process, and a tiny decoding model."""

from __future__ import annotations

import os
import subprocess
import sys

import torch
from typer.testing import CliRunner

from ingest.suite.model import build_model


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


# --------------------------------------------------------------------------- a tiny GPTNeoX

VOCAB = 256


def make_model(parallel_residual: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model({"hidden_size": 32, "layers": 2, "heads": 2}, VOCAB, 48)
    for layer in model.gpt_neox.layers:
        layer.use_parallel_residual = parallel_residual
    return model.eval()


def prompts(batch: int = 12, length: int = 10, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, length))
