import os
import tempfile

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

import pytest  # noqa: E402

from memlake.core import config  # noqa: E402
from memlake.core.paths import Warehouse  # noqa: E402


@pytest.fixture(scope="session")
def tiny_cfg():
    return config.load("tiny")


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory, tiny_cfg):
    """A warehouse holding the tiny corpus (tokenizer + instances), built once per session."""
    from tests.helpers import corpus_from

    wh = Warehouse.at(tmp_path_factory.mktemp("wh-tiny"))
    corpus_from(tiny_cfg, wh)
    return wh


@pytest.fixture(scope="session")
def tiny_suite(tiny_corpus, tiny_cfg):
    """The tiny corpus plus its trained, checkpointed suite."""
    from tests.helpers import suite_from

    suite_from(tiny_cfg, tiny_corpus)
    return tiny_corpus


@pytest.fixture(scope="session")
def tiny_demo(tiny_suite, tmp_path_factory):
    """`memlake demo --config tiny` over a copy of the session's corpus and suite (so it skips
    straight to ingest): (warehouse, the command's stderr). Read-only for tests."""
    import shutil
    import subprocess
    import sys

    wh = Warehouse.at(tmp_path_factory.mktemp("wh-demo"))
    for table in ("instances", "checkpoints"):
        shutil.copytree(tiny_suite.table(table), wh.table(table))
    shutil.copytree(tiny_suite.suite, wh.suite)
    env = {**os.environ, "MEMLAKE_WAREHOUSE": str(wh.root)}
    cmd = [sys.executable, "-c", "from memlake.cli import main; main()", "demo", "--config", "tiny"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return wh, out.stderr


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
