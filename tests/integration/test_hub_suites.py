"""Hub suites are first-class: `checkpoints` rows for Pythia (published facts) and any step<N> model."""

import math

import pytest
from typer.testing import CliRunner

from ingest.checkpoints import resolve
from ingest.hub_suites import family_suite, register_suite, registered, suite_for
from ingest.jobs import plan_units
from memlake.cli import app
from memlake.core import lake
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse

PYTHIA = "EleutherAI/pythia-70m-deduped"


@pytest.fixture
def wh(tmp_path):
    return Warehouse.at(tmp_path / "wh")


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An offline Hugging Face cache whose refs name a model's branches."""
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def add(hub_id: str, branches: list[str]) -> None:
        refs = cache / f"models--{hub_id.replace('/', '--')}" / "refs"
        refs.mkdir(parents=True, exist_ok=True)
        for b in branches:
            (refs / b).write_text("0" * 40)

    return add


def test_pythia_facts_give_154_revisions_and_the_published_schedule(wh):
    r = register_suite(wh, PYTHIA)
    assert r == {"model": "pythia-70m-deduped", "hub_id": PYTHIA, "checkpoints": 154, "skipped": False}
    ck = lake.read_table(wh, "checkpoints").to_pylist()
    by_step = {row["step"]: row for row in ck}
    assert sorted(by_step)[:12] == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000]
    assert max(by_step) == 143_000 and len(by_step) == 154
    row = by_step[95_000]
    assert row["model"] == "pythia-70m-deduped" and row["revision"] == "step95000"
    assert row["path"] == f"{PYTHIA}@step95000" and row["first_epoch_end"] == 95_000
    assert row["tokens_seen"] == 95_000 * 1024 * 2049 and row["epoch"] == 1.0
    assert by_step[96_000]["epoch"] > 1
    # warm-up to the 70m peak (1e-3) over 1 % of 143,000 steps, cosine to 10 % at the end
    assert by_step[0]["lr"] == 0.0
    assert math.isclose(by_step[1000]["lr"], 1e-3 * 1000 / 1430)
    assert math.isclose(by_step[143_000]["lr"], 1e-4)
    assert by_step[2000]["lr"] > by_step[50_000]["lr"] > by_step[100_000]["lr"]


def test_pythia_family_sizes_and_schemes():
    assert family_suite("EleutherAI/pythia-12b").first_epoch_end == 143_000  # the Pile once
    assert family_suite("EleutherAI/pythia-12b").max_lr == pytest.approx(1.2e-4)
    assert family_suite("EleutherAI/pythia-14m-deduped").first_epoch_end == 95_000
    assert family_suite("EleutherAI/pythia-1.4b-deduped").max_lr == pytest.approx(2e-4)
    assert family_suite("EleutherAI/pythia-13b") is None
    assert family_suite("gpt2") is None


def test_register_is_idempotent_and_refuses_other_facts(wh):
    register_suite(wh, PYTHIA)
    assert register_suite(wh, PYTHIA)["skipped"]
    with pytest.raises(MemlakeError, match="registered with other facts"):
        register_suite(wh, PYTHIA, batch_size=512)
    register_suite(wh, PYTHIA, batch_size=512, force=True)
    assert {r["tokens_seen"] for r in lake.read_table(wh, "checkpoints").to_pylist() if r["step"] == 1} == {
        512 * 2049
    }


def test_any_step_model_registers_with_its_facts_from_the_cache(wh, hf_cache):
    hf_cache("acme/lm-1b", ["main", "step0", "step500", "step1000", "step2000"])
    with pytest.raises(MemlakeError, match=r"--batch-size N --first-epoch-end N"):
        suite_for("acme/lm-1b")
    r = register_suite(wh, "acme/lm-1b", batch_size=256, first_epoch_end=1000, row_len=1024, max_lr=3e-4)
    assert r["model"] == "lm-1b" and r["checkpoints"] == 4
    rows = {row["step"]: row for row in lake.read_table(wh, "checkpoints").to_pylist()}
    assert sorted(rows) == [0, 500, 1000, 2000]
    assert rows[2000]["epoch"] == 2.0 and rows[2000]["lr"] == pytest.approx(3e-5)
    with pytest.raises(MemlakeError, match="no step<N> revisions"):
        suite_for("acme/unknown", batch_size=1, first_epoch_end=1)


def test_resolve_accepts_the_lake_key_and_checks_revisions(wh):
    register_suite(wh, PYTHIA)
    for spelling in ("pythia-70m-deduped", PYTHIA):
        ref = resolve(spelling, "step1000", wh)
        assert (ref.name, ref.location, ref.revision, ref.step) == (
            "pythia-70m-deduped",
            PYTHIA,
            "step1000",
            1000,
        )
    assert resolve(f"{PYTHIA}@step143000", wh=wh).step == 143_000
    with pytest.raises(MemlakeError, match="revision step1500 not found"):
        resolve("pythia-70m-deduped", "step1500", wh)


def test_ingest_on_a_hub_id_registers_the_suite_and_rejects_missing_revisions(wh):
    units = plan_units("token_stats", PYTHIA, "step1000,step2000", wh)
    assert [u.step for u in units] == [1000, 2000]
    assert registered(wh, "pythia-70m-deduped")["hub_id"] == PYTHIA
    assert len(plan_units("token_stats", "pythia-70m-deduped", "all", wh)) == 154
    with pytest.raises(MemlakeError, match=r"revision\(s\) \['step1500'\] not found"):
        plan_units("token_stats", PYTHIA, "step1500", wh)
    with pytest.raises(MemlakeError, match="register it first"):
        plan_units("token_stats", "acme/never-heard-of", "step1", wh)


def test_suite_register_command(wh, hf_cache):
    runner = CliRunner()
    out = runner.invoke(app, ["suite", "register", PYTHIA, "--warehouse", str(wh.root)])
    assert out.exit_code == 0, out.output
    assert "154 checkpoints" in " ".join(out.output.split())
    hf_cache("acme/lm", ["step0", "step10"])
    bad = runner.invoke(app, ["suite", "register", "acme/lm", "--warehouse", str(wh.root)])
    assert bad.exit_code != 0
    ok = runner.invoke(
        app,
        ["suite", "register", "acme/lm", "--batch-size", "8", "--first-epoch-end", "10", "-w", str(wh.root)],
    )
    assert ok.exit_code == 0, ok.output
    assert registered(wh, "lm")["steps"] == [0, 10]


def test_a_hub_model_whose_tokenizer_differs_from_the_instances_is_refused(tmp_path):
    """Through the real loading path (an offline HF cache, `from_pretrained` by Hub id and revision):
    the model's tokenizer is compared with the one the instances manifest records."""
    import os
    import subprocess
    import sys

    import numpy as np
    import pyarrow as pa

    from ingest.replica import _save_revision
    from ingest.suite.model import build_model
    from ingest.tokenizer import save_tokenizer, train_tokenizer

    texts = ["def f(x):\n    return x + 1\n" * 20, "The quick brown fox jumps over the lazy dog. " * 20]
    theirs, mine = train_tokenizer(texts, 300), train_tokenizer(texts[::-1] + ["zzz qqq " * 50], 320)
    save_tokenizer(theirs, tmp_path / "theirs")
    repo = tmp_path / "hf" / "hub" / "models--acme--lm"
    _save_revision(repo, "step1", build_model({"hidden_size": 16, "layers": 1, "heads": 2}, 320, 64), mine)
    wh = Warehouse.at(tmp_path / "wh")
    n = 4
    rows = {
        "instance_id": list(range(n)),
        "split": ["train"] * n,
        "tokens": pa.array((np.arange(n * 16).reshape(n, 16) % 250).tolist(), pa.list_(pa.int32())),
        "batch_idx": [0] * n,
        "cohort": [1] * n,
        "source": ["x"] * n,
        "artifact": ["none"] * n,
        "copies": pa.nulls(n, pa.int32()),
        "clean_tokens": pa.nulls(n, lake.TOKENS),
    }
    lake.write_partition(wh, "instances", rows, config={"tokenizer": str(tmp_path / "theirs")})
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub")}
    env["HF_HUB_OFFLINE"] = "1"
    cli = [sys.executable, "-c", "from memlake.cli import main; main()"]
    w = ["-w", str(wh.root)]
    reg = ["suite", "register", "acme/lm", "--batch-size", "1", "--first-epoch-end", "1", *w]
    assert subprocess.run([*cli, *reg], env=env, capture_output=True).returncode == 0
    out = subprocess.run(
        [*cli, "ingest", "token-stats", "-m", "acme/lm", "-r", "step1", *w],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2, out.stderr
    line = " ".join(out.stderr.split())
    assert "tokenizer of acme/lm@step1 does not match the tokenizer" in line and "Traceback" not in out.stderr
    assert not wh.table("token_stats").exists()
