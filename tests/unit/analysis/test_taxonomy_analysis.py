"""Taxonomy analyses on synthetic mart rows with planted structure: shares (and the
paper's pooled-percentage bug), Chatterjee's xi, KL-vs-duplicates, the two model protocols, the
greedy partition search, and the warehouse round trip (marts written, figures drawn)."""

import numpy as np
import polars as pl
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from analysis.taxonomy import (
    best,
    candidate_count,
    candidates,
    data,
    draw_taxonomy,
    fit_models,
    run_correlations,
    run_kl,
    run_models,
    run_search,
    run_shares,
    search,
    search_results,
    synthetic,
)
from analysis.taxonomy.correlations import _tie_broken_order, correlation_table, xi_correlation
from analysis.taxonomy.features import CONTINUOUS
from analysis.taxonomy.kl import histogram_divergence, kl_by_duplicates, vector_divergence
from analysis.taxonomy.metrics import average_precision, ece, roc_auc, subset_metrics, subsets
from analysis.taxonomy.model import design
from analysis.taxonomy.shares import (
    category_counts,
    category_shares,
    code_nl_breakdown,
    code_nl_counts,
    memorised_given_code_nl,
)
from memlake.core import query
from memlake.core.paths import Warehouse

SEARCH_SUBSET = ("huffman_coding_length", "sequence_duplicates", "avg_frequency")


@pytest.fixture(scope="module")
def planted():
    return synthetic.rows(3000, seed=1)


# ---------------------------------------------------------------- shares


def test_shares_sum_to_100_per_model_and_step():
    rows = synthetic.rows(600, models=("s", "m"), steps=(1000, 2000), seed=2)
    counts = category_counts(rows)
    for pooled in (False, True):
        shares = category_shares(counts, pooled=pooled)
        assert shares.height == 4 * 3  # every (model, step) x category, zeros included
        sums = shares.group_by("model", "step").agg(pl.col("share").sum())["share"].to_numpy()
        assert np.allclose(sums, 100.0)
    direct = rows.filter(pl.col("memorised") & (pl.col("model") == "s") & (pl.col("step") == 1000))
    shares = category_shares(counts).filter((pl.col("model") == "s") & (pl.col("step") == 1000))
    assert shares["total"][0] == direct.height
    got = dict(zip(shares["category"], shares["count"]))
    assert got == {c: direct.filter(pl.col("category") == c).height for c in got}


# the appendix table at step 143000 (reference §5) and 12b at 86 % of training
PUBLISHED = {
    "70m": (362_550, 30_430, 18_468),
    "410m": (690_726, 46_076, 74_238),
    "1b": (878_456, 49_253, 105_163),
    "1.4b": (887_549, 49_435, 111_120),
    "2.8b": (1_141_180, 52_416, 161_620),
    "6.9b": (1_416_014, 53_968, 210_314),
    "12b": (1_566_369, 55_114, 249_733),
}


def _published_counts():
    rows = [
        (model, 143_000, category, count)
        for model, counts in PUBLISHED.items()
        for category, count in zip(("recitation", "reconstruction", "recollection"), counts)
    ]
    intermediate = zip(("recitation", "reconstruction", "recollection"), (1_308_538, 47_145, 208_372))
    rows += [("12b", 123_000, category, count) for category, count in intermediate]
    return pl.DataFrame(rows, schema=["model", "step", "category", "count"], orient="row")


def _cell(shares, model, step):
    part = shares.filter((pl.col("model") == model) & (pl.col("step") == step))
    return {c: round(s, 2) for c, s in zip(part["category"], part["share"])}


def test_pooled_option_reproduces_the_published_12b_bug():
    counts = _published_counts()
    per_model, pooled = category_shares(counts), category_shares(counts, pooled=True)
    # the paper's 12b cells are the pooled ones; 12b's own shares are 83.71 / 2.95 / 13.35
    assert _cell(pooled, "12b", 143_000) == {
        "recitation": 84.56,
        "reconstruction": 4.10,
        "recollection": 11.34,
    }
    assert _cell(per_model, "12b", 143_000) == {
        "recitation": 83.71,
        "reconstruction": 2.95,
        "recollection": 13.35,
    }
    # the other models' published cells are correct per-model shares
    assert _cell(per_model, "70m", 143_000) == {
        "recitation": 88.12,
        "reconstruction": 7.40,
        "recollection": 4.49,
    }
    # a step holding one model: pooled == per model (the paper's intermediate checkpoints)
    assert _cell(pooled, "12b", 123_000) == _cell(per_model, "12b", 123_000)
    assert set(pooled["computation"]) == {"pooled"} and set(per_model["computation"]) == {"per_model"}


def test_pooled_share_by_hand():
    rows = pl.DataFrame(
        {
            "model": ["a"] * 5 + ["b"] * 4,
            "step": [1] * 9,
            "memorised": [True, True, True, True, False, True, True, True, True],
            "category": ["recitation"] * 3 + ["recollection", "recitation"]
            + ["recitation"] + ["reconstruction"] * 3,
        }
    )  # fmt: skip
    pooled = category_shares(category_counts(rows), pooled=True)
    # 4 memorised recitations of 8 memorised rows over both models; both models' rows show it
    assert _cell(pooled, "a", 1)["recitation"] == 50.0 == _cell(pooled, "b", 1)["recitation"]
    assert _cell(category_shares(category_counts(rows)), "a", 1)["recitation"] == 75.0


def test_code_nl_breakdown_and_memorisation_rate():
    rows = pl.DataFrame(
        {
            "model": ["a"] * 8,
            "step": [1] * 8,
            "category": ["recitation"] * 4 + ["recollection"] * 4,
            "code_nl": ["code", "code", "nl", "uncertain", "code", "nl", "nl", "nl"],
            "memorised": [True, True, True, True, True, True, False, False],
        }
    )
    counts = code_nl_counts(rows)
    breakdown = code_nl_breakdown(counts)
    share = {(r["category"], r["code_nl"]): r["share"] for r in breakdown.iter_rows(named=True)}
    assert share["recitation", "code"] == pytest.approx(200 / 3)  # uncertain left out
    assert share["recollection", "code"] == 50.0
    assert share["all", "code"] == 60.0  # 3 code of 5 confident memorised
    rate = {r["code_nl"]: r["p_memorised"] for r in memorised_given_code_nl(counts).iter_rows(named=True)}
    assert rate == {"code": 1.0, "nl": 0.5, "uncertain": 1.0}


# ---------------------------------------------------------------- xi


def brute_force_xi(x, y, order):
    n = len(x)
    ys = [y[i] for i in order]
    r = [sum(1 for j in range(n) if ys[j] <= ys[i]) for i in range(n)]
    l = [sum(1 for j in range(n) if ys[j] >= ys[i]) for i in range(n)]  # noqa: E741
    return 1 - n * sum(abs(r[i + 1] - r[i]) for i in range(n - 1)) / (2 * sum(li * (n - li) for li in l))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_xi_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, 6, 60), rng.integers(0, 3, 60)  # ties in both
    order = _tie_broken_order(x.astype(float), np.random.default_rng(seed))
    assert xi_correlation(x, y, seed=seed).statistic == pytest.approx(brute_force_xi(x, y, order), abs=1e-12)
    x = rng.permutation(60)  # no ties in x: the seed does not matter
    assert xi_correlation(x, y, seed=0).statistic == pytest.approx(xi_correlation(x, y, seed=9).statistic)


def test_xi_properties():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 2000)
    assert xi_correlation(x, np.sin(4 * x)).statistic > 0.97  # noiseless, non-monotone function
    assert xi_correlation(x, x > 0.2).statistic > 0.97  # a binary label that is a function of x
    # asymmetric: x**2 is a function of x, x is not a function of x**2 (only |x| is)
    assert xi_correlation(x, x**2).statistic > 0.97 and xi_correlation(x**2, x).statistic < 0.35
    independent = xi_correlation(x, rng.normal(size=2000))
    assert abs(independent.statistic) < 0.06 and independent.pvalue > 0.01
    assert independent.variance == pytest.approx(0.4, abs=1e-3)  # 2/5 without ties
    assert xi_correlation(x, np.sin(4 * x) + rng.normal(0, 0.3, 2000)).pvalue < 1e-10
    assert np.isnan(xi_correlation(x, np.ones(2000)).statistic)


def test_xi_null_calibration_with_a_binary_label():
    rng = np.random.default_rng(5)
    p = [xi_correlation(rng.integers(0, 10, 200), rng.random(200) < 0.3, seed=k).pvalue for k in range(300)]
    assert 0.02 <= np.mean(np.array(p) < 0.05) <= 0.10


def test_correlation_table_finds_the_planted_signs(planted):
    table = correlation_table(planted, features=("generation_perplexity", "sequence_duplicates", "nl_score"))
    assert table.height == 4 * 3 * 3 * 3  # groups x subsets x features x methods
    assert set(table["group"]) == {"baseline", "recitation", "reconstruction", "recollection"}

    def stat(group, feature, method, subset="all"):
        return table.filter(
            (pl.col("group") == group) & (pl.col("feature") == feature) & (pl.col("method") == method)
            & (pl.col("subset") == subset)
        ).row(0, named=True)  # fmt: skip

    assert stat("recollection", "generation_perplexity", "spearman")["statistic"] < -0.3
    assert stat("recollection", "generation_perplexity", "xi")["p_value"] < 1e-6
    assert stat("recitation", "sequence_duplicates", "spearman")["statistic"] > 0.2
    assert abs(stat("recitation", "nl_score", "pearson")["statistic"]) < 0.15  # not planted
    code, every = (stat("baseline", "sequence_duplicates", "pearson", s)["n"] for s in ("code", "all"))
    assert 0 < code < every


# ---------------------------------------------------------------- KL


def test_divergences_vector_parity_and_symmetry():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(1, 3, (4, 50)), rng.uniform(1, 5, (4, 50))
    expected = [stats.entropy(a[i], b[i]) + stats.entropy(b[i], a[i]) for i in range(4)]
    assert np.allclose(vector_divergence(a, b), expected)
    assert np.allclose(
        vector_divergence(a, b, symmetric=False), [stats.entropy(a[i], b[i]) for i in range(4)]
    )
    edges = np.linspace(0, 2, 11)
    assert np.allclose(
        histogram_divergence(np.log(a), np.log(b), edges), histogram_divergence(np.log(b), np.log(a), edges)
    )
    same = histogram_divergence(np.log(a), np.log(a), edges)
    assert np.allclose(same, 0.0)


def test_kl_by_duplicates_sees_the_planted_perplexity_gap(planted):
    kl = kl_by_duplicates(planted, n_bootstrap=100, seed=3)
    assert kl.columns[:3] == ["duplicates", "method", "symmetric"] and (kl["std"] > 0).all()
    low, high = kl.filter(pl.col("duplicates") <= 5), kl.filter(pl.col("duplicates") > 5)
    # memorisation follows perplexity below the threshold (recollection), duplicates above it
    assert low["excess"].mean() > 0.5 > high["excess"].mean()
    assert kl.equals(kl_by_duplicates(planted, n_bootstrap=100, seed=3))
    vector = kl_by_duplicates(planted, method="vector", n_bootstrap=50)
    assert vector.height == kl.height and set(vector["method"]) == {"vector"}


# ---------------------------------------------------------------- metrics and models


def test_own_aucs_match_sklearn_with_weights():
    rng = np.random.default_rng(0)
    for _ in range(30):
        y, s = rng.random(80) < 0.3, np.round(rng.random(80), 1)
        w = rng.integers(0, 3, 80).astype(float)
        if y[w > 0].all() or not y[w > 0].any():
            continue
        assert roc_auc(y, s, w) == pytest.approx(roc_auc_score(y, s, sample_weight=w))
        assert average_precision(y, s, w) == pytest.approx(average_precision_score(y, s, sample_weight=w))


def test_ece_by_hand():
    y = np.array([1, 0, 1, 1])
    p = np.array([0.9, 0.2, 0.6, 0.4])  # confidences 0.9, 0.8, 0.6, 0.6; correct T, T, T, F
    # 2 bins: (0.5, 1] holds all four: |3/4 - 0.725| = 0.025
    assert ece(y, p, bins=2) == pytest.approx(0.025)
    # 5 bins: (0.8, 1]: 0.9 ok -> 0.1; (0.6, 0.8]: 0.8 ok -> 0.2; (0.4, 0.6]: 0.6 ok, 0.6 wrong -> 0.1
    assert ece(y, p, bins=5) == pytest.approx((0.1 + 0.2 + 2 * 0.1) / 4)


def test_published_subsets_are_kfold_training_sets_and_bootstrap_resamples():
    folds = np.stack(list(subsets(200, 10, "kfold", 1024)))
    assert (folds.sum(axis=1) == 180).all() and (folds.max(axis=0) == 1).all()
    assert ((1 - folds).sum(axis=0) == 1).all()  # each row left out exactly once
    boot = np.stack(list(subsets(200, 10, "bootstrap", 0)))
    assert (boot.sum(axis=1) == 200).all() and boot.max() > 1


def test_leakage_free_scaler_is_fit_on_train_rows_only(planted):
    free, published = design(planted, "leakage_free"), design(planted, "published")
    k = len(CONTINUOUS)
    assert np.array_equal(free.train, published.train) and not set(free.train) & set(free.test)
    assert np.allclose(free.scaler.mean_, free.raw[free.train, :k].mean(axis=0))
    assert not np.allclose(free.scaler.mean_, free.raw[:, :k].mean(axis=0))
    assert np.allclose(published.scaler.mean_, published.raw[:, :k].mean(axis=0))
    assert np.allclose(free.x[free.train, :k].mean(axis=0), 0, atol=1e-9)
    # stratified on label x category: every stratum keeps its share in the test set
    for category in ("recitation", "recollection"):
        rate = [
            np.mean(d.y[idx][d.category[idx] == category])
            for d, idx in ((free, free.train), (free, free.test))
        ]
        assert rate[0] == pytest.approx(rate[1], abs=0.03)


def test_rows_without_perplexities_are_dropped_and_reported(planted):
    holes = planted.with_columns(
        pl.when(pl.col("instance_id") % 10 == 0).then(None).otherwise(pl.col("generation_perplexity"))
        .alias("generation_perplexity")
    )  # fmt: skip
    assert design(holes, "leakage_free").dropped == planted.height // 10
    with pytest.raises(ValueError, match="all missing: generation_perplexity"):
        design(planted.with_columns(pl.lit(None, pl.Float64).alias("generation_perplexity")))


def test_probability_aucs_differ_from_hard_label_aucs(planted):
    res = fit_models(planted, "leakage_free", n_subsets=5)
    y, p = res.design.y[res.design.test], res.predictions["taxonomic"]
    w = np.ones(len(y))
    hard = subset_metrics(y, p, w, hard_auc=True, ece_bins=5)
    soft = subset_metrics(y, p, w, hard_auc=False, ece_bins=5)
    assert abs(hard["roc_auc"] - soft["roc_auc"]) > 0.02 and abs(hard["pr_auc"] - soft["pr_auc"]) > 0.02
    tpr, tnr = np.mean(p[y] > 0.5), np.mean(p[~y] <= 0.5)
    assert hard["roc_auc"] == pytest.approx((tpr + tnr) / 2)  # one threshold: balanced accuracy
    assert {k: hard[k] for k in ("precision", "recall", "f1", "ece")} == {
        k: soft[k] for k in ("precision", "recall", "f1", "ece")
    }


def test_taxonomic_model_beats_the_baseline_on_a_planted_interaction(planted):
    res = fit_models(planted, "leakage_free", n_subsets=20)
    assert res.metrics.height == 2 * 4 * 6  # kinds x (3 categories + aggregate) x metrics
    m = {(r["model_kind"], r["group"], r["metric"]): r["mean"] for r in res.metrics.iter_rows(named=True)}
    assert m["taxonomic", "aggregate", "roc_auc"] > m["baseline", "aggregate", "roc_auc"] + 0.03
    assert m["taxonomic", "aggregate", "f1"] > m["baseline", "aggregate", "f1"]
    assert m["taxonomic", "recollection", "pr_auc"] > m["baseline", "recollection", "pr_auc"]
    w = {(r["category"], r["feature"]): r["weight"] for r in res.weights.iter_rows(named=True)}
    assert w["recitation", "min_frequency"] > 0 > w["recollection", "min_frequency"]  # the sign flip
    assert w["recollection", "generation_perplexity"] < -1
    published = fit_models(planted, "published", n_subsets=20).metrics

    def f1_std(metrics):
        return metrics.filter(
            (pl.col("model_kind") == "taxonomic")
            & (pl.col("group") == "aggregate")
            & (pl.col("metric") == "f1")
        )["std"][0]

    assert f1_std(published) < f1_std(res.metrics) / 2  # 95 %-overlapping KFold subsets understate spread


# ---------------------------------------------------------------- search


def test_there_are_810_candidates(planted):
    found = candidates(planted)
    assert len(found) == 810 == candidate_count() and [c.index for c in found] == list(range(810))
    assert all(c.first_feature != c.second_feature for c in found)
    assert (
        len({(c.first_feature, c.first_quantile, c.second_feature, c.second_quantile) for c in found}) == 810
    )


@pytest.fixture(scope="module")
def partitioned():
    rows = synthetic.partitioned_rows(2500, seed=4)
    return rows, search(rows, features=SEARCH_SUBSET, n_subsets=10)


def test_search_finds_the_planted_partition(partitioned):
    rows, results = partitioned
    assert results.height == 9 * 6
    top = best(results)
    assert (top["first_feature"], top["first_quantile"]) == ("huffman_coding_length", 0.5)
    assert (top["second_feature"], top["second_quantile"]) == ("sequence_duplicates", 0.5)
    assert top["first_threshold"] == pytest.approx(4, abs=0.2)
    assert top["second_threshold"] == pytest.approx(50, abs=6)
    assert not results["skipped"].any()
    baseline = fit_models(rows, "published", n_subsets=10).metrics
    base_f1 = baseline.filter(
        (pl.col("model_kind") == "baseline") & (pl.col("group") == "aggregate") & (pl.col("metric") == "f1")
    )["mean"][0]
    assert top["f1"] > base_f1 + 0.1


def test_degenerate_partitions_are_skipped(partitioned):
    rows, _ = partitioned
    # is_templating's memorised quartiles are all 0: "is_templating >= 0" puts every row in group 1
    found = search(rows, 0, 3, features=("is_templating", "huffman_coding_length"), n_subsets=0)
    assert found["skipped"].all() and found["f1"].is_nan().all()
    assert set(found["reason"]) == {"group 2 has no training rows"}


def test_sharded_search_equals_unsharded(partitioned):
    rows, results = partitioned
    shards = [search(rows, lo, hi, features=SEARCH_SUBSET, n_subsets=10) for lo, hi in ((0, 20), (20, 54))]
    assert pl.concat(shards).equals(results)
    with pytest.raises(ValueError, match="outside"):
        search(rows, 50, 60, features=SEARCH_SUBSET)


# ---------------------------------------------------------------- the warehouse round trip


def sql(wh, text):
    return query.read(wh, text)


def test_rows_read_the_marts_under_the_analyses_names(warehouse):
    wh, frames = warehouse
    con = query.connect(wh)
    try:
        per_window = data.rows(con, model="suite-s", step=1000)
        shared = data.rows(con, model="suite-s", step=1000, perplexity="shared")
    finally:
        con.close()
    source = frames["sequence_features"].filter(
        (pl.col("model") == "suite-s") & (pl.col("step") == 1000) & (pl.col("split") == "train")
    )
    assert per_window.height == source.height and "text" not in per_window.columns
    assert per_window["generation_perplexity"].equals(source["continuation_perplexity"], check_names=False)
    assert shared["generation_perplexity"].equals(source["continuation_perplexity_shared"], check_names=False)
    assert shared["prompt_perplexity"].equals(source["prompt_perplexity_shared"], check_names=False)
    keys = source.select("model", "step", "instance_id")
    assert (
        per_window["category"].to_list()
        == frames["taxonomy"].join(keys, on=keys.columns)["category"].to_list()
    )


def test_runs_write_the_marts_and_draw_the_figures(warehouse):
    wh, frames = warehouse
    run_shares(wh)
    shares = sql(wh, "select * from taxonomy_shares where computation = 'per_model'")
    trained = frames["sequence_features"].filter(pl.col("memorised") & (pl.col("split") == "train"))
    assert shares["count"].sum() == trained.height  # split='train' by default
    assert sql(wh, "select count(*) as n from taxonomy_code_nl")["n"][0] == 4 * 4 * 2
    assert sql(wh, "select count(*) as n from taxonomy_p_memorised")["n"][0] == 4 * 3

    run_correlations(wh, model="suite-m", step=2000)
    run_kl(wh, model="suite-m", step=2000, n_bootstrap=30)
    for protocol in ("leakage_free", "published"):
        run_models(wh, protocol=protocol, model="suite-m", step=2000, n_subsets=5)
    metrics = sql(wh, "select * from taxonomy_model_metrics")
    assert metrics.group_by("protocol").len().sort("protocol")["len"].to_list() == [48, 48]
    assert {"model", "step", "split", "protocol", "ece_bins", "mean", "std"} <= set(metrics.columns)
    assert sql(wh, "select distinct step from taxonomy_model_weights")["step"].dtype == pl.Int64
    lrt = sql(wh, "select * from taxonomy_model_tests where test = 'lrt' order by protocol")
    assert lrt["protocol"].to_list() == ["leakage_free", "published"] and (lrt["df"] > 0).all()
    assert (lrt["p_value"] < 1e-3).all()  # the planted category interaction
    assert lrt["statistic"][0] == pytest.approx(lrt["statistic"][1])  # same training rows
    assert set(sql(wh, "select distinct method from taxonomy_kl")["method"]) == {"histogram", "vector"}

    first = run_search(
        wh, 0, 12, model="suite-m", step=2000, shard_size=5, n_subsets=5, features=SEARCH_SUBSET
    )
    shard_files = sorted((wh.marts / "taxonomy_search").glob("*.parquet"))
    assert [p.stem[-9:] for p in shard_files] == ["0000-0005", "0005-0010", "0010-0012"]
    stamps = [p.stat().st_mtime_ns for p in shard_files]
    again = run_search(
        wh, 0, 12, model="suite-m", step=2000, shard_size=5, n_subsets=5, features=SEARCH_SUBSET
    )
    assert again.equals(first) and [p.stat().st_mtime_ns for p in shard_files] == stamps  # resumed
    assert search_results(wh).height == 12

    paths = draw_taxonomy(wh)
    names = sorted(p.name.split("-")[0] for p in paths)
    groups = ["duplication", "frequency", "perplexity", "templating"]  # one histogram figure each
    assert names == sorted(
        ["feature_histograms"] * len(groups)
        + ["shares.png", "kl_duplicates", "correlations", "lr_weights", "model_metrics"]
    )
    hist = sorted(p.name.split("-")[1] for p in paths if p.name.startswith("feature_histograms"))
    assert hist == groups
    assert all(p.parent == wh.figures / "taxonomy" for p in paths)
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5_000 for p in paths)


def test_missing_marts_are_reported(tmp_path):
    with pytest.raises(ValueError, match="memlake build"):
        run_shares(Warehouse.at(tmp_path))


def test_main_search_covers_the_pair_with_the_most_memorised_rows(warehouse, tmp_path):
    import shutil

    from analysis.taxonomy import run_main_search
    from memlake.pipeline.taxonomy import search_summary

    src, frames = warehouse
    wh = Warehouse.at(tmp_path / "wh")
    shutil.copytree(src.marts, wh.marts)
    shutil.rmtree(wh.marts / "taxonomy_search", ignore_errors=True)  # other tests' shards
    features = frames["sequence_features"]
    train = features.filter(pl.col("split") == "train")
    counts = train.group_by("model", "step").agg(pl.col("memorised").sum()).sort("memorised", "model")
    main = tuple(counts.row(-1)[:2])
    found = run_main_search(wh, n_subsets=0, features=SEARCH_SUBSET)
    assert set(found.select("model", "step").unique().iter_rows()) == {main}
    assert found.height == candidate_count(SEARCH_SUBSET)
    stored = search_results(wh).sort("candidate")
    assert stored["candidate"].equals(found["candidate"]) and stored["f1"].equals(found["f1"])
    summary = search_summary(found)
    assert (
        summary.startswith(f"partition search (taxonomy_search): {main[0]}@{main[1]} ") and "F1 0." in summary
    )
    # nothing memorised anywhere: no thresholds to search with, so nothing is run
    features.with_columns(memorised=pl.lit(False)).write_parquet(wh.marts / "sequence_features.parquet")
    assert run_main_search(wh, n_subsets=0, features=SEARCH_SUBSET).is_empty()
    assert "not run" in search_summary(pl.DataFrame())


def test_headline_reads_the_finding_from_the_marts(warehouse, tmp_path):
    import shutil

    from analysis.report import write_report
    from analysis.taxonomy.headline import MIN_POSITIVES, taxonomy_headline

    src, frames = warehouse
    wh = Warehouse.at(tmp_path / "wh")
    shutil.copytree(src.marts, wh.marts)
    main = query.connect(wh)
    try:
        model, step = data.main_pair(main)
    finally:
        main.close()
    run_models(wh, protocol="leakage_free", model=model, step=step, n_subsets=0)
    run_search(wh, 0, 6, model=model, step=step, n_subsets=0, features=SEARCH_SUBSET)
    con = query.connect(wh)
    try:
        h = taxonomy_headline(con)
    finally:
        con.close()
    feats = frames["sequence_features"].filter(
        (pl.col("model") == h.model) & (pl.col("step") == h.step) & (pl.col("split") == "train")
    )
    want = feats.join(
        frames["taxonomy"].select("model", "step", "instance_id", "category"),
        on=["model", "step", "instance_id"],
    )
    want = dict(want.filter(pl.col("memorised")).group_by("category").len().iter_rows())
    assert h.counts == {c: want.get(c, 0) for c in ("recitation", "reconstruction", "recollection")}
    assert h.lrt["protocol"] == "leakage_free" and h.lrt["p_value"] < 1e-3  # the planted interaction
    assert "the paper's finding holds here" in h.sentence() and h.search is not None
    assert set(h.weights) == set(h.counts) and all(len(w) == 3 for w in h.weights.values())
    assert not h.flags()
    h.counts["reconstruction"] = MIN_POSITIVES - 1  # a small category is flagged, not hidden
    assert h.flags() == [
        f"reconstruction: {MIN_POSITIVES - 1} memorised rows (< {MIN_POSITIVES}), too few to mean anything"
    ]
    page = write_report(wh, tmp_path / "report").read_text()
    assert "likelihood-ratio test" in page and f"{h.model}@{h.step}" in page


def test_headline_flags_a_search_over_one_category():
    """One category memorised (the demo's case): the search's F1 and the shares are flagged, and
    the page carries each count with its key."""
    from analysis.taxonomy.headline import TaxonomyHeadline

    search = {"first_feature": "max_frequency", "first_quantile": 0.25, "second_feature": "min_frequency",
              "second_quantile": 0.25, "f1": 1.0}  # fmt: skip
    counts = {"recitation": 26, "reconstruction": 0, "recollection": 0}
    h = TaxonomyHeadline("suite-s", 144, counts, None, "one class")
    h.search = search
    flags = h.flags()
    assert any("partition search" in f for f in flags) and sum("0 memorised rows" in f for f in flags) == 2
    assert 'data-key="taxonomy.count.recitation" data-value="26"' in h.html()
    h.counts = {"recitation": 26, "reconstruction": 12, "recollection": 0}
    assert not any("partition search" in f for f in h.flags())
