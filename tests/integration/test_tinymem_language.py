"""The TinyMem language variant as a mitigation study: data from the warehouse corpus's `instances`
rows, a base model trained on them, sweeps into their own `mitigation_runs` partition, and the
CLI's `mitigate sweep tinymem --variant language`."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from analysis.views import SQL_VIEWS
from ingest.mitigation.studies import tinymem_name, tinymem_study, variant_config
from ingest.mitigation.sweep import plan_runs, run_sweep
from memlake.core import config, lake, query
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse

MEMLAKE = [sys.executable, "-c", "from memlake.cli import main; main()"]


@pytest.fixture(scope="module")
def language(tiny_corpus, tmp_path_factory):
    """A warehouse holding a copy of the tiny corpus (instances + tokenizer) and the language
    study trained on it (about 10 s), on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    wh = Warehouse.at(tmp_path_factory.mktemp("wh-language"))
    shutil.copytree(tiny_corpus.table("instances"), wh.table("instances"))
    shutil.copytree(tiny_corpus.tokenizer, wh.tokenizer)
    cfg = config.load("tiny", ["mitigation.tinymem.variant=language"])
    yield cfg, wh, tinymem_study(wh, cfg["mitigation"]["tinymem"])
    torch.set_num_threads(threads)


def test_language_study_trains_on_the_corpus_and_memorises(language):
    cfg, wh, study = language
    c = cfg["mitigation"]["tinymem"]
    assert study.name == "tinymem-language-noise-2l" != tinymem_name({**c, "variant": "math"})
    lang = c["language"]
    inst = lake.read_table(wh, "instances", columns=["split", "artifact", "tokens"]).to_pydict()
    corpus = {
        tuple(t)
        for s, a, t in zip(inst["split"], inst["artifact"], inst["tokens"])
        if s == "train" and a in (None, "none")
    }
    # forget rows are noised corpus rows: their clean counterparts are clean training instances
    forget = study.forget
    assert 0 < len(forget) <= lang["n_noise"] and forget.tokens.shape[1] == len(inst["tokens"][0])
    assert all(tuple(r) in corpus for r in forget.clean.tolist())
    assert all(tuple(r) not in corpus for r in forget.tokens.tolist())  # the ±1 id noise is planted
    assert forget.prompt_len == lang["prompt_len"] and forget.pad_id is None
    assert len(study.retain) == lang["n_rows"] - lang["n_noise"]
    vocab = study.base.config.vocab_size
    assert vocab == 512 and study.base.config.n_positions == 64  # the corpus tokenizer and row_len
    before = study.baseline()
    assert before["mem"] > 0 and before["mem_dup1"] > before["mem_dup0"]  # 10 copies memorise more
    assert np.isfinite(before["ppl"]) and 0 < before["acc"] < 100
    # the study resumes from its checkpoint: a second build trains nothing and agrees exactly
    again = tinymem_study(wh, c)
    assert again.evaluate(again.base) == before

    rows = run_sweep(wh, study, plan_runs(study.name, ["durable"], [0], 1), config=cfg)
    assert rows and rows[0]["study"] == study.name and rows[0]["mem_before"] == before["mem"]
    scored = query.read(
        wh, "select * from mitigation_scored where study = 'tinymem-language-noise-2l'", views=SQL_VIEWS
    )
    assert scored["score"].null_count() == 0  # TinyMem scoring (accuracy kept) applies to it


def test_cli_sweeps_the_language_variant_into_its_own_study(language):
    cfg, wh, study = language
    env = {**os.environ, "MEMLAKE_WAREHOUSE": str(wh.root)}
    cmd = MEMLAKE + ["mitigate", "sweep", "tinymem", "--variant", "language", "-c", "tiny",
                     "--methods", "gradient_ascent", "--max-per-method", "1"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "tinymem-language-noise-2l: 1 runs written" in out.stderr
    runs = query.read(wh, "select study, method from mitigation_runs")
    assert set(runs["study"]) == {"tinymem-language-noise-2l"}  # no math runs mixed in
    assert "gradient_ascent" in set(runs["method"])
    assert not (wh.root / "mitigation" / "tinymem-increment-noise-2l").exists()
    bad = cmd[:7] + ["nope"] + cmd[8:]
    out = subprocess.run(bad, capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "tinymem variant must be one of" in out.stderr


def test_language_variant_needs_the_corpus(tmp_path):
    cfg = config.load("tiny", ["mitigation.tinymem.variant=language"])
    with pytest.raises(MemlakeError, match="memlake suite corpus"):
        tinymem_study(Warehouse.at(tmp_path), cfg["mitigation"]["tinymem"])
    c = cfg["mitigation"]["tinymem"]
    assert variant_config(c)["epochs"] == c["language"]["epochs"] != c["epochs"]
    assert variant_config({**c, "variant": "math"}) == {**c, "variant": "math"}
    with pytest.raises(ValueError, match="variant must be one of"):
        variant_config({**c, "variant": "wiki"})
