import os
import tempfile
from pathlib import Path

os.environ["MEMLAKE_QUIET"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One per-user cache for the session (the code-vs-NL classifier is fitted once, not per warehouse),
# and never the developer's own.
os.environ["MEMLAKE_CACHE"] = tempfile.mkdtemp(prefix="memlake-cache-")
# Triton (if installed) interprets kernels on CPU tensors, so the GPU path's fused kernel is tested
# here; it is read when Triton is imported, hence before anything else. Nothing runs a kernel
# unless a test opts in (the `switches` fixture: fused_stats=True, see ingest/fused_stats.py).
os.environ.setdefault("TRITON_INTERPRET", "1")
# `make test` runs two pytest-xdist workers on two cores: one intra-op thread each (and in the
# processes they start), or torch's default of one thread per core oversubscribes the machine.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

from memlake.core import config  # noqa: E402
from memlake.core.paths import Warehouse  # noqa: E402


@pytest.fixture(scope="session")
def tiny_cfg():
    return config.load("tiny")


def shared(tmp_path_factory, name: str, step: str, build) -> Path:
    """The folder `name`, where `build(folder)` has run once for the whole test run: under
    pytest-xdist the workers share it (a file lock; the first one builds, the rest wait and reuse),
    so a session fixture's work is not repeated per worker. `step` names one build of the folder
    (a fixture may add to another's folder)."""
    import filelock

    worker = os.environ.get("PYTEST_XDIST_WORKER")
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if worker else base) / name
    with filelock.FileLock(str(root) + ".lock"):
        done = root / f".built-{step}"
        if not done.exists():
            root.mkdir(exist_ok=True)
            build(root)
            done.touch()
    return root


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory, tiny_cfg):
    """A warehouse holding the tiny corpus (tokenizer + instances), built once per test run."""
    from tests.helpers import corpus_from

    return Warehouse.at(
        shared(tmp_path_factory, "wh-tiny", "corpus", lambda p: corpus_from(tiny_cfg, Warehouse.at(p)))
    )


@pytest.fixture(scope="session")
def tiny_suite(tiny_corpus, tiny_cfg, tmp_path_factory):
    """The tiny corpus plus its trained, checkpointed suite."""
    from tests.helpers import suite_from

    shared(tmp_path_factory, "wh-tiny", "suite", lambda p: suite_from(tiny_cfg, Warehouse.at(p)))
    return tiny_corpus


@pytest.fixture(scope="session")
def tiny_demo(tiny_suite, tmp_path_factory):
    """`memlake demo --config tiny` over a copy of the session's corpus and suite (so it skips
    straight to ingest): (warehouse, the command's stderr). Read-only for tests."""

    def build(root: Path) -> None:
        import shutil
        import subprocess
        import sys

        wh = Warehouse.at(root)
        for table in ("instances", "checkpoints"):
            shutil.copytree(tiny_suite.table(table), wh.table(table))
        shutil.copytree(tiny_suite.suite, wh.suite)
        env = {**os.environ, "MEMLAKE_WAREHOUSE": str(wh.root)}
        cmd = [sys.executable, "-c", "from memlake.cli import main; main()", "demo", "--config", "tiny"]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr[-3000:]
        (root / "demo.log").write_text(out.stderr)

    root = shared(tmp_path_factory, "wh-demo", "demo", build)
    return Warehouse.at(root), (root / "demo.log").read_text()


@pytest.fixture
def switches():
    """Set runtime switches (ingest.lm.runtime.Switches) for one test: `switches(fused_head=True)`
    changes those fields of the ones in force; all are back after the test."""
    import contextlib
    import dataclasses

    from ingest.lm import runtime

    with contextlib.ExitStack() as stack:
        yield lambda **kw: stack.enter_context(runtime.using(dataclasses.replace(runtime.switches(), **kw)))


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module's tests: tiny models run far faster single-threaded than
    with two threads contending for a shared 2-core box."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
