"""The membership-inference battery: Min-K%++ against a full-vocabulary computation, and every
attack and metric on a warehouse with a planted membership effect against a direct computation."""

from __future__ import annotations

import shutil
import zlib

import duckdb
import numpy as np
import polars as pl
import pytest
import torch
from sklearn.metrics import roc_auc_score

from analysis.mia import MiaSpec, run_mia
from analysis.views import SQL_VIEWS
from ingest.token_stats import token_statistics
from memlake.core import lake, query
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse
from tests.helpers import make_model, memlake, prompts


def _k_smallest_mean(values: np.ndarray) -> float:
    k = max(int(np.floor(0.2 * len(values))), 1)
    return float(np.sort(values)[:k].mean())


def test_min_k_plus_plus_equals_the_full_vocabulary_computation():
    model = make_model()
    with torch.no_grad():  # a peaked head: the per-position spread of log p varies a lot
        model.get_output_embeddings().weight.mul_(6.0)
    ids = prompts(batch=6, length=24)
    with torch.inference_mode():
        stats = token_statistics(model, ids, second_moment=True)
        logp = torch.log_softmax(model(input_ids=ids).logits.double(), -1)[:, :-1]
    con = duckdb.connect()
    rows = {
        "model": ["m"] * len(ids),
        "step": [0] * len(ids),
        "instance_id": list(range(len(ids))),
        **{k: [r.tolist() for r in stats[k]] for k in ("surprisal", "entropy", "second_moment")},
    }
    con.register("rows", pl.DataFrame(rows).to_arrow())
    lists = ", ".join(f"cast({c} as float[]) as {c}" for c in ("surprisal", "entropy", "second_moment"))
    con.execute(f"create view token_stats as select model, step, instance_id, {lists} from rows")
    view = SQL_VIEWS["mia_token_scores"]
    got = con.execute(f"select min_k_plus_plus, min_k from ({view}) order by instance_id")
    got = np.array(got.fetchall())
    p = logp.exp()
    mu = (p * logp).sum(-1)
    sigma = ((p * logp**2).sum(-1) - mu**2).sqrt()
    true = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
    for i in range(len(ids)):
        z = ((true[i] - mu[i]) / sigma[i]).numpy()
        assert got[i, 0] == pytest.approx(_k_smallest_mean(z), abs=1e-5)
        assert got[i, 1] == pytest.approx(_k_smallest_mean(true[i].numpy()), abs=1e-5)


# --------------------------------------------------------------------------- a planted effect

SHIFT = 0.85  # members' surprisal at the last step, as a share of what it would be
STEPS = (16, 80)


@pytest.fixture(scope="module")
def planted(tiny_suite, tmp_path_factory):
    """The tiny suite's corpus and checkpoints (for the tokenizer), with synthetic token statistics
    of natural training rows (members once trained) and never-trained rows: at the last step
    suite-s gives members lower surprisal, suite-xs (its reference) does not."""
    wh = Warehouse.at(tmp_path_factory.mktemp("wh-mia"))
    for table in ("instances", "checkpoints"):
        shutil.copytree(tiny_suite.table(table), wh.table(table))
    shutil.copytree(tiny_suite.suite, wh.suite)
    inst = lake.read_table(
        wh, "instances", columns=["instance_id", "cohort", "artifact", "tokens"]
    ).to_pylist()
    train = [r for r in inst if r["cohort"] is not None and r["artifact"] == "none"]
    never = [r for r in inst if r["cohort"] is None]
    # both sets mix code and prose (never-trained rows are stored prose first): a one-source set
    # of non-members is a distribution shift that the blind baseline finds
    rows = sorted(train[::9][:60] + never[::2], key=lambda r: r["instance_id"])
    ids = np.array([r["instance_id"] for r in rows])
    cohort = np.array([r["cohort"] if r["cohort"] is not None else 10**9 for r in rows])
    rng = np.random.default_rng(0)
    truth = {}
    for model in ("suite-s", "suite-xs"):
        for step in STEPS:
            sup = rng.gamma(2.0, 1.5, (len(ids), 30))
            if model == "suite-s" and step == STEPS[-1]:
                sup[cohort <= step] *= SHIFT
            ent = rng.gamma(2.0, 1.0, (len(ids), 30))
            m2 = ent**2 + rng.gamma(2.0, 0.5, (len(ids), 30))
            sup, ent, m2 = (a.astype(np.float32) for a in (sup, ent, m2))
            truth[model, step] = (sup, ent, m2)
            lake.write_partition(
                wh,
                "token_stats",
                {
                    "instance_id": ids,
                    "surprisal": list(sup),
                    "rank": list(np.zeros((len(ids), 30), np.int32)),
                    "entropy": list(ent),
                    "second_moment": list(m2),
                },
                {"model": model, "step": step, "shard": 0},
            )
    return wh, ids, cohort, rows, truth


def test_every_attack_against_a_direct_computation(planted):
    wh, ids, cohort, rows, truth = planted
    from transformers import AutoTokenizer

    spec = MiaSpec(bootstrap=200, reference={"suite-s": "suite-xs"})
    run_mia(wh, spec, ["suite-s"])
    scores = query.read(wh, "select * from mia_scores order by attack, step, instance_id")
    metrics = query.read(wh, "select * from mia_metrics")
    step = STEPS[-1]
    member = np.where(cohort <= step, True, np.where(cohort == 10**9, False, None))
    known = member != None  # noqa: E711 - elementwise
    sup, ent, m2 = (a.astype(np.float64) for a in truth["suite-s", step])
    ref = truth["suite-xs", step][0].astype(np.float64)
    tokenizer = AutoTokenizer.from_pretrained(str(wh.tokenizer))
    zbytes = np.array([len(zlib.compress(tokenizer.decode(r["tokens"]).encode())) for r in rows])
    z = (ent - sup) / np.sqrt(m2 - ent**2)
    direct = {
        "loss": -sup.mean(1),
        "zlib": -sup.mean(1) / zbytes,
        "min_k": np.array([_k_smallest_mean(-s) for s in sup]),
        "min_k_plus_plus": np.array([_k_smallest_mean(x) for x in z]),
        "reference": ref.mean(1) - sup.mean(1),
    }
    for attack, want in direct.items():
        got = scores.filter((pl.col("attack") == attack) & (pl.col("step") == step))
        assert got["instance_id"].to_list() == ids.tolist()
        np.testing.assert_allclose(got["score"].to_numpy(), want, rtol=1e-5, atol=1e-6)
        row = metrics.filter((pl.col("attack") == attack) & (pl.col("step") == step)).row(0, named=True)
        labels = member[known].astype(bool)
        assert row["auc"] == pytest.approx(roc_auc_score(labels, want[known]), abs=1e-4)
        assert row["auc_lower"] < row["auc"] < row["auc_upper"]
        assert (row["n_members"], row["n_nonmembers"]) == (labels.sum(), (~labels).sum())
    last = {r["attack"]: r for r in metrics.filter(pl.col("step") == step).iter_rows(named=True)}
    # the planted effect is found by the likelihood attacks (the reference's own noise blurs it),
    # and the blind baseline (which sees only the text of rows drawn from one distribution) finds
    # nothing
    assert last["loss"]["auc"] > 0.75 and last["reference"]["auc"] > 0.6
    assert last["blind"]["auc_lower"] < 0.5 < last["blind"]["auc_upper"]
    # before the effect: the likelihood attacks are at chance
    early = {r["attack"]: r for r in metrics.filter(pl.col("step") == STEPS[0]).iter_rows(named=True)}
    assert early["loss"]["auc_lower"] < 0.5 < early["loss"]["auc_upper"]
    assert "twin" not in last  # no twin trained
    # rows neither member nor non-member (not trained yet, planted) are scored, unlabelled
    assert scores.filter(pl.col("member").is_null()).height > 0


def test_cli_and_bad_input(planted, tmp_path):
    wh, *_ = planted
    env_wh = ["-w", str(wh.root), "--config", "tiny"]
    out = memlake(["mia", "-m", "suite-s", "--bootstrap", "0", *env_wh])
    assert out.returncode == 0, out.stderr
    assert "mia: suite-s@80: AUC loss" in " ".join(out.stderr.split())
    # the default reference of suite-s is the suite's smaller model, suite-xs
    assert "reference" in out.stderr
    for args, message in [
        (["--step", "999"], "no token statistics at step(s) [999]"),
        (["--reference", "suite-s=nope"], "no token statistics for model(s) ['nope']"),
        (["--reference", "suite-s"], "--reference takes MODEL=REFERENCE"),
    ]:
        out = memlake(["mia", "-m", "suite-s", *args, *env_wh])
        assert out.returncode == 2 and message in " ".join(out.stderr.split()), out.stderr
    # a model scored on training rows only: no non-members
    bare = Warehouse.at(tmp_path)
    shutil.copytree(wh.table("instances"), bare.table("instances"))
    shutil.copytree(wh.table("checkpoints"), bare.table("checkpoints"))
    train = lake.read_table(wh, "instances", columns=["instance_id", "cohort"]).to_pylist()
    ids = [r["instance_id"] for r in train if r["cohort"] is not None][:5]
    lake.write_partition(
        bare,
        "token_stats",
        {"instance_id": ids, "surprisal": [[1.0]] * 5, "rank": [[0]] * 5, "entropy": [[1.0]] * 5},
        {"model": "suite-s", "step": 80, "shard": 0},
    )
    with pytest.raises(MemlakeError, match="no never-trained rows"):
        run_mia(bare, MiaSpec(bootstrap=0), ["suite-s"], [80])
    assert not bare.marts.exists() or not any(bare.marts.rglob("*.parquet"))
