"""Shared test helpers: the `memlake` and `dbt` commands, a lake file rewritten off-contract, and a
tiny decoding model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import torch
from typer.testing import CliRunner

from ingest.suite.model import build_model
from memlake.core import lake
from memlake.core.paths import REPO_ROOT


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


def dbt(wh, target: Path, *args: str) -> subprocess.CompletedProcess:
    """`dbt ARGS` over warehouse `wh` in a process of its own, writing under `target`."""
    env = {**os.environ, "MEMLAKE_WAREHOUSE": str(wh.root)}
    exe = str(Path(sys.executable).parent / "dbt")
    cmd = [exe, *args, "--target-path", str(target), "--log-path", str(target / "logs")]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO_ROOT)


def rewrite_file(partition: Path, fn) -> None:
    """Rewrite a partition's Parquet file (the lake writer refuses off-contract data)."""
    path = partition / lake.DATA_FILE
    pq.write_table(fn(pq.read_table(path)), path)


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


# --------------------------------------------------------------------------- jobs from a config


def corpus_from(cfg: dict, wh, **kw) -> dict:
    """`build_corpus` with the sections of a config."""
    from ingest.corpus.build import build_corpus
    from memlake.core import settings

    s = settings.of(cfg)
    return build_corpus(s.corpus, s.order, s.seed, wh, **kw)


def suite_from(cfg: dict, wh, models: list[str] | None = None) -> list[dict]:
    """`train_suite` with the sections of a config."""
    from ingest.suite.train import train_suite
    from memlake.core import settings

    s = settings.of(cfg)
    return train_suite(s.suite, s.order, s.corpus.row_len, s.seed, wh, models)


def features_from(cfg: dict, wh, **kw) -> dict:
    """`build_features` with the sections of a config, checked as `config.load` checks it (a bad
    value is a one-line error naming its key)."""
    from ingest.features import build_features
    from memlake.core import settings

    s = settings.validate(cfg, "config")
    return build_features(s.taxonomy, s.ingest.panel, s.seed, wh, **kw)


class Served:
    """`memlake serve` running in a process of its own: `url`, `get(path) -> (status, body)`, and
    the line it printed when it started."""

    def __init__(self, wh, host: str | None = None, env: dict[str, str] | None = None):
        import socket
        import threading
        import time
        import urllib.request

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        cmd = [sys.executable, "-c", "from memlake.cli import main; main()", "serve", "--warehouse",
               str(wh.root), "--port", str(self.port), *(["--host", host] if host else [])]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
        self.url = f"http://127.0.0.1:{self.port}"
        self.banner = self.proc.stderr.readline()
        self.log: list[str] = []  # the rest of its stderr, drained so the pipe never fills
        threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True).start()
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"memlake serve did not start: {self.banner}{''.join(self.log)}"
                    ) from None
                time.sleep(0.2)

    def get(self, path: str) -> tuple[int, str]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(self.url + path, timeout=60) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
