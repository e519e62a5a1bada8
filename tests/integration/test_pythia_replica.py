"""The real path end to end on an offline Pythia-shaped replica that memlake builds itself.

The replica (ingest/replica.py) puts a tiny GPTNeoX with Pythia's vocabulary shape in a Hugging
Face cache under `EleutherAI/pythia-70m-deduped` with revisions named like Pythia's, writes
schema-exact files of every public artifact, and a small preshuffled Megatron stream. The chain
below is the README's "Running on Pythia", command for command, through the `memlake` CLI with
`HF_HUB_OFFLINE=1`.
"""

from __future__ import annotations

import json
import os

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from memlake.core import lake, query
from memlake.core.paths import Warehouse
from tests.helpers import Served, memlake

HUB = "EleutherAI/pythia-70m-deduped"
KEY = "pythia-70m-deduped"


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    from ingest.replica import build_replica

    return build_replica(tmp_path_factory.mktemp("replica"))


def _env(replica, wh: Warehouse) -> dict:
    return {
        **os.environ,
        "HF_HOME": replica["hf_home"],
        "HF_HUB_CACHE": str(os.path.join(replica["hf_home"], "hub")),
        "HF_HUB_OFFLINE": "1",
        "MEMLAKE_WAREHOUSE": str(wh.root),
    }


def _memlake(env: dict, *args: str) -> str:
    out = memlake(list(args), env=env)
    assert out.returncode == 0, f"memlake {' '.join(args)}\n{out.stderr[-3000:]}"
    return " ".join(out.stderr.split())


def test_replica_is_shaped_like_pythia(replica):
    from transformers import AutoConfig

    from ingest.stream import open_stream

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cache = os.path.join(replica["hf_home"], "hub")
    cfg = AutoConfig.from_pretrained(HUB, revision="step1000", cache_dir=cache)
    assert (cfg.vocab_size, cfg.max_position_embeddings, cfg.model_type) == (50_304, 2048, "gpt_neox")
    stream = open_stream(replica["stream"])
    assert (stream.rows, stream.row_len) == (replica["stream_rows"], 2049)
    first = pq.read_table(os.path.join(replica["artifacts"]["pile-deduped-subset"], "data"))
    assert {len(r) for r in first["input_ids"].to_pylist()} == {2049}
    assert replica["memorised_at_final_step"] >= 5


def test_the_real_path_end_to_end(replica, tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    wh = Warehouse.at(tmp_path / "wh")
    env = _env(replica, wh)
    # the commands run in this process (a process each would import torch each time): the Hub
    # cache and the offline switch are read from huggingface_hub's constants, set from the
    # environment at import
    monkeypatch.setattr(hc, "HF_HUB_CACHE", env["HF_HUB_CACHE"])
    monkeypatch.setattr(hc, "HF_HOME", env["HF_HOME"])
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)  # a tokenizer's optional files are looked up online
    art = replica["artifacts"]
    steps = ",".join(replica["revisions"])
    w = ["-w", str(wh.root)]

    out = _memlake(env, "suite", "register", HUB, *w)
    assert "154 checkpoints" in out
    # the panel from the cache (no folder: the Hub path, offline), the rest from folders
    _memlake(env, "ingest", "import", "pile-deduped-subset", *w)
    _memlake(env, "ingest", "import", "pythia-deduped-stats-raw", art["pythia-deduped-stats-raw"], *w)
    _memlake(
        env,
        "ingest",
        "import",
        "pythia-memorized-evals",
        art["pythia-memorized-evals"],
        "--stream-rows",
        str(replica["stream_rows"]),
        *w,
    )
    _memlake(
        env,
        "ingest",
        "import",
        "pile-deduped-pythia-random-sampled",
        art["pile-deduped-pythia-random-sampled"],
        *w,
    )
    _memlake(env, "ingest", "import", "semantic-filters", art["semantic-filters"], "--size", "70m", *w)
    _memlake(env, "ingest", "token-stats", "-m", HUB, "-r", steps, *w)
    _memlake(env, "ingest", "extraction", "-m", KEY, "-r", steps, *w)
    # features before the one build: `build` is dbt's, and the marts need both
    _memlake(env, "taxonomy", "features", "--stream", replica["stream"], *w)
    _memlake(env, "build", *w)
    _memlake(env, "profiles", "fit", "-m", HUB, "--metrics", "sup_seq", "--bootstrap", "0", *w)
    final = replica["revisions"][-1].removeprefix("step")
    # the published Pythia features are of the final checkpoint (the replica's panel is too small
    # to fit a model at every checkpoint)
    out = _memlake(env, "taxonomy", "fit", "--protocol", "published", "-m", HUB, "--step", final, *w)
    assert f"{KEY}@{final}" in out
    _memlake(
        env,
        "mitigate",
        "sweep",
        KEY,
        "--step",
        final,
        "--methods",
        "ft_extra,durable",
        "--max-per-method",
        "1",
        *w,
    )
    out = _memlake(env, "mia", "-m", HUB, "--bootstrap", "0", *w)
    assert f"mia: {KEY}@" in out
    _memlake(env, "cross", "-m", KEY, *w)
    _memlake(env, "publish", "sequence_panel", "--repo", "memlake/replica-panel", "--dry-run", *w)
    _memlake(env, "report", "--no-dbt-docs", *w)

    # stats-raw imported for a revision equal memlake's own recomputation on that revision
    from ingest.checkpoints import load_model, resolve
    from ingest.panel import load_panel
    from ingest.token_stats import token_statistics

    step = replica["stats_raw_steps"][0]
    imported = lake.read_table(wh, "token_stats").to_pylist()
    imported = {r["instance_id"]: r for r in imported if r["step"] == step}
    ids, tokens = load_panel(wh, {}, 0)
    assert sorted(imported) == sorted(ids.tolist())
    import torch

    model = load_model(resolve(KEY, f"step{step}", wh))
    with torch.inference_mode():
        own = token_statistics(model, torch.from_numpy(tokens))
    for k, i in enumerate(ids.tolist()):  # float32 on both sides; only summation order differs
        np.testing.assert_allclose(imported[i]["surprisal"], own["surprisal"][k].numpy(), atol=5e-4)
        np.testing.assert_allclose(imported[i]["entropy"], own["entropy"][k].numpy(), atol=5e-4)
        np.testing.assert_array_equal(imported[i]["rank"], own["rank"][k].numpy())

    # every mart is non-empty: the dbt marts (files) and the analyses' marts (folders of files)
    rows: dict[str, int] = {}
    for p in wh.marts.rglob("*.parquet"):
        name = p.relative_to(wh.marts).parts[0].removesuffix(".parquet")
        rows[name] = rows.get(name, 0) + pq.ParquetFile(p).metadata.num_rows
    assert not [m for m, n in rows.items() if n == 0], rows
    for name in (
        "sequence_panel",
        "sequence_features",
        "taxonomy",
        "sequence_perplexities",
        "profiles_attgt",
        "profiles_aggregates",
        "taxonomy_shares",
        "taxonomy_model_metrics",
        "taxonomy_model_tests",
        "taxonomy_kl",
    ):
        assert name in rows, name
    runs = lake.read_table(wh, "mitigation_runs").to_pylist()
    assert runs and {r["model"] for r in runs} == {KEY} and {r["step"] for r in runs} == {int(final)}
    assert all(r["mem_before"] > 0 for r in runs)
    # a Hub model has no retrain oracle: the forget measures without the oracle's
    assert all(0 <= r["exact_memorization"] <= 1 and r["mia_auc"] is not None for r in runs)
    assert all(r["privleak"] is None and r["forget_ids"] for r in runs)
    # the battery on the Pythia-shaped panel: members and never-trained rows at every scored step
    mia = query.read(wh, "select attack, step, auc from mia_metrics where model = $m", {"m": KEY})
    assert {"loss", "zlib", "min_k", "min_k_plus_plus", "blind"} <= set(mia["attack"])
    assert mia.filter(pl.col("attack") != "min_k_plus_plus")["auc"].is_not_null().all()
    for name in ("mia_scores", "mia_metrics", "profiles_by_category", "mia_vs_did", "mitigation_by_category"):
        assert name in rows, name
    manifest = json.loads((wh.table("checkpoints") / f"model={KEY}" / lake.MANIFEST).read_text())
    assert manifest["config"]["hub_id"] == HUB
    assert (wh.root / "report" / "index.html").exists()

    # the explorer over the real path's warehouse: Pythia's ids (validation rows have negative
    # ones) decoded by the Hub tokenizer from the offline cache, every page served
    from transformers import AutoTokenizer

    from analysis.interactive import plain

    server = Served(wh, env=env)
    try:
        (iid, tokens), = query.read(wh, "select instance_id, tokens from instances where instance_id = "
                                        "(select min(instance_id) from sequence_panel)").rows()  # fmt: skip
        status, page = server.get(f"/instance/{iid}")
        assert status == 200, page[-2000:]
        view = json.loads(page.split("id=view>", 1)[1].split("</script>", 1)[0])
        tok = AutoTokenizer.from_pretrained(HUB)
        assert view["pieces"] == tok.batch_decode([[t] for t in tokens]) and view["model"] == KEY
        spec = plain(json.loads(page.split('id="trajectory-spec">', 1)[1].split("</script>", 1)[0]))
        steps = query.read(
            wh, "select step from sequence_panel where instance_id = $i order by step", {"i": iid}
        )
        assert spec["data"][0]["x"] == steps["step"].to_list()
        for path in (
            "/panel",
            "/profiles",
            "/mitigation",
            f"/api/instance/{iid}/at?model={KEY}&step={final}",
        ):
            status, body = server.get(path)
            assert status == 200, (path, body[-2000:])
    finally:
        server.close()
