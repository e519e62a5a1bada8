"""Counterfactual twins: the held-out set, the fillers, the twin's training against its model's,
the true effect of training read from the lake, bad input and resumption."""

import shutil

import numpy as np
import polars as pl
import pyarrow.compute as pc
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import GPTNeoXForCausalLM

from ingest.panel import panel_instance_ids
from ingest.suite.train import Stopped, TrainUnit, _train, step_dir, train_model
from ingest.suite.twins import Draw, heldout_ids, substitutions
from memlake.core import config, lake, query, settings
from memlake.core.paths import Warehouse
from memlake.core.query import connect
from memlake.core.twins import twin_models, twins_of
from memlake.pipeline.scoring import default_models
from tests.helpers import memlake

MODEL, TWIN = "suite-xs", "suite-xs-twin"
# one intra-op thread: the model and its twin must run the same kernels to compare bit for bit
SET = ["--set", "suite.threads=1"]


def _corpus_copy(src: Warehouse, root) -> Warehouse:
    wh = Warehouse.at(root)
    shutil.copytree(src.table("instances"), wh.table("instances"))
    shutil.copytree(src.tokenizer, wh.tokenizer)
    shutil.copy(src.suite / "data_order.npy", wh.suite / "data_order.npy")
    return wh


@pytest.fixture(scope="module")
def twins(tiny_corpus, tmp_path_factory):
    """The tiny corpus with suite-xs and its twin trained, and token stats of both at step0, the
    first checkpoint and the last."""
    threads = torch.get_num_threads()
    wh = _corpus_copy(tiny_corpus, tmp_path_factory.mktemp("wh-twins"))
    out = memlake(["suite", "train", "--config", "tiny", *SET, "--twins", "-m", MODEL, "-w", wh.root])
    assert out.returncode == 0, out.stderr
    args = ["ingest", "token-stats", "--config", "tiny", "-m", MODEL, "-m", TWIN, "-r", "step0,step16,step80"]
    out = memlake([*args, "-w", wh.root])
    assert out.returncode == 0, out.stderr
    torch.set_num_threads(threads)
    return wh


def _settings() -> settings.Settings:
    return settings.of(config.load("tiny", ["suite.threads=1"]))


def _heldout(wh: Warehouse) -> pl.DataFrame:
    return pl.from_arrow(lake.read_table(wh, "twin_heldout"))


def _weights(wh: Warehouse, name: str, step: int) -> dict[str, torch.Tensor]:
    return load_file(step_dir(wh, name, step) / "model.safetensors")


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _first_step(wh: Warehouse, ids) -> int:
    """The first optimiser step whose batch holds one of `ids`."""
    order = np.load(wh.suite / "data_order.npy")
    return int(np.flatnonzero(np.isin(order, list(ids)))[0]) // _settings().order.batch_size + 1


def test_heldout_set_is_a_seeded_half_of_the_panels_natural_training_rows(twins):
    s = _settings()
    inst = lake.read_table(
        twins, "instances", columns=["instance_id", "split", "artifact", "source", "tokens"]
    )
    panel = panel_instance_ids(twins, s.ingest.panel.record(), s.seed)
    rows = inst.filter(pc.is_in(inst["instance_id"], inst["instance_id"].take(panel)))
    natural = rows.filter(pc.and_(pc.equal(rows["split"], "train"), pc.equal(rows["artifact"], "none")))
    held = _heldout(twins).sort("instance_id")
    assert held["model"].unique().to_list() == [TWIN]
    assert len(held) == natural.num_rows // 2 > 0
    assert set(held["instance_id"]) <= set(natural["instance_id"].to_pylist())
    # a pure function of the config: drawn again, the same rows; another seed, others
    assert heldout_ids(inst, s.ingest.panel, s.seed, twins).tolist() == held["instance_id"].to_list()
    assert heldout_ids(inst, s.ingest.panel, s.seed + 1, twins).tolist() != held["instance_id"].to_list()
    # fillers: whole rows of fresh text, distinct, in no instance
    fillers = [tuple(f) for f in held["filler_tokens"].to_list()]
    assert {len(f) for f in fillers} == {s.corpus.row_len} and len(set(fillers)) == len(fillers)
    assert not set(fillers) & {tuple(t) for t in inst["tokens"].to_pylist()}


def test_checkpoints_say_which_model_is_a_twin(twins):
    ck = pl.from_arrow(lake.read_table(twins, "checkpoints"))
    of = dict(ck.select("model", "twin_of").unique().iter_rows())
    assert of == {MODEL: None, TWIN: MODEL}
    steps = {m: ck.filter(pl.col("model") == m)["step"].sort().to_list() for m in (MODEL, TWIN)}
    assert steps[MODEL] == steps[TWIN] == [0, 16, 32, 48, 64, 80]
    assert twins_of(twins) == {TWIN: MODEL}
    con = connect(twins)
    assert twin_models(con) == {TWIN}
    con.close()
    # the twin is scored over its model's panel by default; the per-model analyses' inputs skip it
    cfg = config.load("tiny")
    assert default_models("token_stats", cfg, twins) == ["suite-xs", "suite-s", TWIN]
    assert default_models("extraction", cfg, twins) == ["suite-xs", "suite-s"]


def test_twin_weights_equal_the_models_until_a_heldout_row_is_trained(twins):
    replaced = substitutions(twins, TWIN)
    assert set(_heldout(twins)["instance_id"]) <= set(replaced)
    first = _first_step(twins, replaced)
    for step in (0, 16, 32, 48, 64, 80):
        same = _same(_weights(twins, MODEL, step), _weights(twins, TWIN, step))
        assert same == (step < first), step


def test_a_substitution_leaves_every_earlier_checkpoint_bit_identical(twins, tmp_path):
    """The twin's training is the model's up to the first batch holding a substituted row: with
    rows first trained after step 16 substituted, step 16 is the model's to the bit."""
    s = _settings()
    order = np.load(twins.suite / "data_order.npy")
    first = {
        int(i): int(np.flatnonzero(order == i)[0]) // s.order.batch_size + 1 for i in range(order.max() + 1)
    }
    late = {i: row for i, row in substitutions(twins, TWIN).items() if first[i] > 20}
    assert late and _first_step(twins, late) > 16
    wh = _corpus_copy(twins, tmp_path)
    unit = TrainUnit(
        s.suite.models[0], s.suite, s.order, s.corpus.row_len, s.seed, str(wh.root), stop_after=32
    )
    threads = torch.get_num_threads()
    with pytest.raises(Stopped):
        _train(unit, late)
    torch.set_num_threads(threads)
    assert _same(_weights(wh, MODEL, 16), _weights(twins, MODEL, 16))
    assert not _same(_weights(wh, MODEL, 32), _weights(twins, MODEL, 32))


def _surprisal(wh: Warehouse, name: str, step: int, tokens: np.ndarray) -> np.ndarray:
    """Per-position -log p of the next token, computed with transformers from the checkpoint."""
    model = GPTNeoXForCausalLM.from_pretrained(str(step_dir(wh, name, step))).eval()
    x = torch.from_numpy(tokens.astype(np.int64))
    with torch.no_grad():
        logp = F.log_softmax(model(input_ids=x).logits[:, :-1].float(), dim=-1)
    return -logp.gather(-1, x[:, 1:, None])[..., 0].numpy()


def test_true_effect_of_training_by_hand_matches_the_lake(twins):
    """tau_i = loss under the twin - loss under the model: computed from the checkpoints directly
    it is the lake's token statistics' difference, positive on average on trained held-out rows
    and near zero on never-trained rows."""
    inst = pl.from_arrow(lake.read_table(twins, "instances", columns=["instance_id", "split", "tokens"]))
    ts = pl.from_arrow(
        lake.read_table(twins, "token_stats", columns=["model", "step", "instance_id", "surprisal"])
    )
    last = ts.filter(pl.col("step") == 80).with_columns(pl.col("surprisal").list.mean().alias("loss"))
    tau = last.pivot(on="model", index="instance_id", values="loss").select(
        "instance_id", (pl.col(TWIN) - pl.col(MODEL)).alias("tau")
    )
    held = set(_heldout(twins)["instance_id"])

    by_hand = sorted(held)[:4]
    tokens = np.stack(
        inst.filter(pl.col("instance_id").is_in(by_hand)).sort("instance_id")["tokens"].to_list()
    )
    hand = {name: _surprisal(twins, name, 80, tokens) for name in (MODEL, TWIN)}
    for name in (MODEL, TWIN):
        rows = last.filter((pl.col("model") == name) & pl.col("instance_id").is_in(by_hand)).sort(
            "instance_id"
        )
        np.testing.assert_allclose(np.stack(rows["surprisal"].to_list()), hand[name], atol=2e-4)
    expected = hand[TWIN].mean(axis=1) - hand[MODEL].mean(axis=1)
    got = tau.filter(pl.col("instance_id").is_in(by_hand)).sort("instance_id")["tau"].to_numpy()
    np.testing.assert_allclose(got, expected, atol=2e-5)

    val_ids = inst.filter(pl.col("split") == "validation")["instance_id"]
    on_h = tau.filter(pl.col("instance_id").is_in(list(held)))["tau"].to_numpy()
    on_val = tau.filter(pl.col("instance_id").is_in(val_ids.to_list()))["tau"].to_numpy()
    assert len(on_h) == len(held) and len(on_val) > 30
    se = on_h.std(ddof=1) / np.sqrt(len(on_h))
    assert on_h.mean() > 3 * se, (on_h.mean(), se)
    assert abs(on_val.mean()) < on_h.mean() / 4, (on_val.mean(), on_h.mean())
    # before any training, model and twin are one model
    first = ts.filter(pl.col("step") == 0).sort("model", "instance_id")
    assert first.filter(pl.col("model") == MODEL)["surprisal"].to_list() == (
        first.filter(pl.col("model") == TWIN)["surprisal"].to_list()
    )


def test_a_second_run_skips_and_an_interrupted_twin_resumes(twins, tmp_path):
    parts = {t: lake.partition_dir(twins, t, {"model": TWIN}) for t in ("checkpoints", "twin_heldout")}
    before = {t: lake.manifest(d) for t, d in parts.items()}
    out = memlake(["suite", "train", "--config", "tiny", *SET, "--twins", "-m", MODEL, "-w", twins.root])
    assert out.returncode == 0, out.stderr
    assert f"{MODEL}: already trained" in out.stdout + out.stderr
    assert f"{TWIN}: already trained" in out.stdout + out.stderr
    assert {t: lake.manifest(d) for t, d in parts.items()} == before

    s = _settings()
    wh = _corpus_copy(twins, tmp_path)
    args = (s.suite.models[0], s.suite, s.order, s.corpus.row_len, s.seed, wh)
    draw = Draw(s.corpus, s.ingest.panel)
    threads = torch.get_num_threads()
    assert train_model(*args, stop_after=20, twin=draw) == {"model": TWIN, "stopped_at": 20}
    assert not lake.is_complete(wh, "checkpoints", {"model": TWIN})
    train_model(*args, twin=draw)  # resumes from step16
    torch.set_num_threads(threads)
    assert _same(_weights(wh, TWIN, 80), _weights(twins, TWIN, 80))
    assert _heldout(wh).equals(_heldout(twins))


def _listing(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            "pythia-70m-deduped",
            "'pythia-70m-deduped' is a Hub-registered model; a twin needs the model's training",
        ),
        ("suite-xl", "'suite-xl' is not a model of the config's suite; a twin needs the model's training"),
    ],
)
def test_twins_of_models_this_config_does_not_train_are_refused(tiny_corpus, tmp_path, model, message):
    wh = _corpus_copy(tiny_corpus, tmp_path / "wh")
    out = memlake(["suite", "register", "EleutherAI/pythia-70m-deduped", "-w", wh.root])
    assert out.returncode == 0, out.stderr
    before = _listing(wh.root)
    out = memlake(["suite", "train", "--config", "tiny", "--twins", "-m", model, "-w", wh.root])
    assert out.returncode != 0
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert _listing(wh.root) == before


def test_per_model_analyses_skip_twins_unless_named(twins, tmp_path, monkeypatch):
    from analysis.profiles import models_in
    from analysis.taxonomy import data

    wh = Warehouse.at(tmp_path)
    shutil.copytree(twins.table("checkpoints"), wh.table("checkpoints"))
    wh.marts.mkdir(parents=True)
    rows = pl.DataFrame(
        {"model": [MODEL, TWIN], "step": [80, 80], "instance_id": [0, 0], "memorised": [False, True]}
    )
    rows.write_parquet(wh.marts / "sequence_panel.parquet")
    assert models_in(wh) == [MODEL]

    rows.with_columns(split=pl.lit("train")).write_parquet(wh.marts / "sequence_features.parquet")
    monkeypatch.setattr(
        data, "rows_sql", lambda con, perplexity="per_window": "select * from sequence_features"
    )
    monkeypatch.setattr(data, "require_marts", lambda con, *names: None)
    con = connect(wh)
    try:
        assert data.select_pairs(con, None, None) == [(MODEL, 80)]
        assert data.select_pairs(con, TWIN, None) == [(TWIN, 80)]
        assert data.main_pair(con) == (MODEL, 80)  # though only the twin memorises
    finally:
        con.close()


def test_checkpoints_written_before_twins_read_twin_of_as_null(twins, tmp_path):
    from tests.helpers import rewrite_file

    wh = Warehouse.at(tmp_path)
    shutil.copytree(twins.table("checkpoints"), wh.table("checkpoints"))
    model = lake.partition_dir(wh, "checkpoints", {"model": MODEL})
    rewrite_file(model, lambda t: t.drop_columns(["twin_of"]))
    assert set(lake.read_table(wh, "checkpoints")["twin_of"].to_pylist()) == {None, MODEL}
    assert twins_of(wh) == {TWIN: MODEL}
    rewrite_file(
        lake.partition_dir(wh, "checkpoints", {"model": TWIN}), lambda t: t.drop_columns(["twin_of"])
    )
    con = connect(wh)
    try:
        assert twin_models(con) == set() and twins_of(wh) == {}
    finally:
        con.close()
    assert twins_of(Warehouse.at(tmp_path / "empty")) == {}


@pytest.fixture(scope="module")
def validated(twins):
    """Every checkpoint of the model and its twin scored, the warehouse built, and `memlake
    profiles validate` run over it (both control groups, sup_seq and acc_seq)."""
    rest = ["-r", "step32,step48,step64"]
    out = memlake(
        ["ingest", "token-stats", "--config", "tiny", "-m", MODEL, "-m", TWIN, *rest, "-w", twins.root]
    )
    assert out.returncode == 0, out.stderr
    out = memlake(["build", "-w", twins.root])
    assert out.returncode == 0, out.stderr
    args = ["--metrics", "sup_seq,acc_seq", "--bootstrap", "200", "--config", "tiny", "-w", twins.root]
    out = memlake(["profiles", "validate", *args])
    assert out.returncode == 0, out.stderr
    return twins, " ".join(out.stderr.split())


def test_the_true_attgt_is_the_mean_effect_on_the_heldout_rows_of_a_cohort(validated):
    wh, log = validated
    cells = query.read(wh, "select * from counterfactual_attgt")
    assert set(cells["control_group"]) == {"never_treated", "not_yet_treated"}
    assert set(cells["metric"]) == {"sup_seq", "acc_seq"}
    # one cell by hand, from the lake's token statistics
    inst = pl.from_arrow(lake.read_table(wh, "instances", columns=["instance_id", "cohort"]))
    held = _heldout(wh).join(inst, on="instance_id")
    cohort, step = 32, 64
    ids = held.filter(pl.col("cohort") == cohort)["instance_id"].to_list()
    ts = pl.from_arrow(
        lake.read_table(wh, "token_stats", columns=["model", "step", "instance_id", "surprisal"])
    )
    loss = (
        ts.filter((pl.col("step") == step) & pl.col("instance_id").is_in(ids))
        .group_by("model")
        .agg(pl.col("surprisal").list.mean().mean())
    )
    by_model = dict(loss.iter_rows())
    row = cells.filter(
        (pl.col("metric") == "sup_seq") & (pl.col("cohort") == cohort) & (pl.col("step") == step)
    ).row(0, named=True)
    assert row["att_true"] == pytest.approx(by_model[MODEL] - by_model[TWIN], abs=1e-6)
    assert row["n_treated"] == len(ids)
    assert row["ci_lower"] < row["att_did"] < row["ci_upper"]
    # the DiD's treated units are exactly the held-out rows
    assert cells.filter(pl.col("post"))["n_treated"].sum() > 0
    assert set(cells["n_treated"]) <= set(held.group_by("cohort").len()["len"])


def test_did_validation_reports_bias_rmse_and_coverage(validated):
    wh, log = validated
    summary = query.read(wh, "select * from did_validation order by all")
    assert set(summary["level"]) == {"attgt", "event"}
    assert len(summary) == 2 * 2 * 2  # metrics x control groups x levels
    assert summary["rmse"].min() > 0 and (summary["rmse"] >= summary["bias"].abs()).all()
    assert summary["coverage_pointwise"].is_between(0, 1).all()
    assert set(summary["coverage_uniform"].drop_nulls()) <= {0.0, 1.0}
    cells = query.read(wh, "select * from counterfactual_attgt where post and metric = 'sup_seq'")
    nt = cells.filter(pl.col("control_group") == "never_treated")
    want = summary.filter(
        (pl.col("metric") == "sup_seq")
        & (pl.col("control_group") == "never_treated")
        & (pl.col("level") == "attgt")
    ).row(0, named=True)
    err = (nt["att_did"] - nt["att_true"]).to_numpy()
    assert want["bias"] == pytest.approx(err.mean()) and want["rmse"] == pytest.approx(
        np.sqrt((err**2).mean())
    )
    inside = ((nt["ci_lower"] <= nt["att_true"]) & (nt["att_true"] <= nt["ci_upper"])).mean()
    assert want["coverage_pointwise"] == pytest.approx(inside)
    assert want["control_shift"] == pytest.approx(nt["control_shift"].mean())
    # the control shift at a step, from the lake: never-trained rows under the model minus the twin
    ts = pl.from_arrow(
        lake.read_table(wh, "token_stats", columns=["model", "step", "instance_id", "surprisal"])
    )
    inst = pl.from_arrow(lake.read_table(wh, "instances", columns=["instance_id", "cohort"]))
    never = inst.filter(pl.col("cohort").is_null())["instance_id"]
    at = ts.filter((pl.col("step") == 80) & pl.col("instance_id").is_in(never.to_list()))
    loss = dict(at.group_by("model").agg(pl.col("surprisal").list.mean().mean()).iter_rows())
    got = nt.filter(pl.col("step") == 80)["control_shift"][0]
    assert got == pytest.approx(loss[MODEL] - loss[TWIN], abs=1e-6)
    assert "validate: suite-xs/sup_seq/never_treated: bias" in log


def test_validation_needs_a_twin(tiny_suite):
    out = memlake(["profiles", "validate", "--config", "tiny", "-w", tiny_suite.root])
    assert out.returncode == 2 and "has a twin" in " ".join(out.stderr.split())


def test_the_twin_attack_is_the_oracle_of_membership(validated):
    """The twin-calibrated score separates the held-out rows from never-trained rows far better
    than the loss does (the twin removes each row's own difficulty), with the held-out rows as
    its only members."""
    from analysis.mia import MiaSpec, run_mia

    wh, _ = validated
    metrics = run_mia(wh, MiaSpec(bootstrap=0), [MODEL], [80])[MODEL]
    by_attack = {r["attack"]: r for r in metrics.iter_rows(named=True)}
    assert by_attack["twin"]["n_members"] == len(_heldout(wh))
    assert by_attack["twin"]["auc"] > by_attack["loss"]["auc"] + 0.15
    assert by_attack["twin"]["auc"] > 0.75
    scores = query.read(wh, "select * from mia_scores where attack = 'twin' and step = 80")
    held = set(_heldout(wh)["instance_id"])
    assert set(scores.filter(pl.col("member"))["instance_id"]) == held


def test_a_suite_studys_retrain_oracle_is_its_models_run_without_the_forget_rows(twins):
    """The mitigation oracle of a suite study (ingest/mitigation/studies.py) reuses the twins'
    machinery: bit-identical to the model until a forget row's first batch, different after,
    trained once, and trained again for another forget set."""
    from ingest.mitigation.studies import _suite_oracle

    cfg = config.load("tiny", ["suite.threads=1"])
    training = {k: cfg[k] for k in ("suite", "order", "corpus", "seed")}
    order = np.load(twins.suite / "data_order.npy")
    bs = _settings().order.batch_size
    cols = ["instance_id", "split", "artifact", "source"]
    inst = pl.from_arrow(lake.read_table(twins, "instances", columns=cols))
    natural = inst.filter((pl.col("split") == "train") & (pl.col("artifact") == "none"))["instance_id"]
    first_seen = {int(i): int(np.flatnonzero(order == i)[0]) // bs + 1 for i in natural.to_list()[:400]}
    late = np.array(sorted(i for i, s in first_seen.items() if s > 16)[:5])
    oracle, why = _suite_oracle(twins, MODEL, 80, late, training, None, "cpu")
    assert why == "" and _first_step(twins, late) > 16
    model = oracle()
    out = twins.root / "mitigation" / MODEL / "oracle"
    weights = {s: load_file(out / f"step{s}" / "model.safetensors") for s in (16, 80)}
    assert _same(weights[16], _weights(twins, MODEL, 16))
    assert not _same(weights[80], _weights(twins, MODEL, 80))
    assert torch.equal(model.get_input_embeddings().weight, weights[80]["gpt_neox.embed_in.weight"])
    stamp = (out / "step80" / "model.safetensors").stat().st_mtime_ns
    oracle()  # loaded, not trained again
    assert (out / "step80" / "model.safetensors").stat().st_mtime_ns == stamp
    # a planted template (source "synthetic": no fresh rows of its own) takes a prose filler
    template = inst.filter((pl.col("split") == "train") & (pl.col("source") == "synthetic"))["instance_id"][0]
    other, _ = _suite_oracle(twins, MODEL, 80, np.r_[late[:2], template], training, None, "cpu")
    other()
    assert not _same(load_file(out / "step80" / "model.safetensors"), weights[80])
    hub, why = _suite_oracle(twins, "pythia-70m", 80, late, training, None, "cpu")
    assert hub is None and "not a model of the config's suite" in why
