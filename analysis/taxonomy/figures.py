"""The taxonomy paper's figures, drawn from frames; `draw_taxonomy(wh)` reads those frames through SQL.

feature_histograms  every feature, memorised vs not (density; log10 axis for heavy tails), one
                    figure per group of related features so each reads at page width
shares              memorised counts (log) and stacked category shares across model x step
kl_duplicates       divergence of memorised vs non-memorised perplexity per duplicate count, with
                    the divergence two samples of the pooled values show at the same n
lr_weights          per-category (and baseline) logistic-regression weights, symlog axis
correlations        Pearson / Spearman / xi of each feature with the label, per group x subset
model_metrics       PR AUC, precision, recall, F1, ECE, ROC AUC per category, baseline vs taxonomic
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from analysis.figure_files import save  # noqa: E402
from analysis.taxonomy.features import AGGREGATE, BASELINE, CATEGORIES, HISTOGRAM_FEATURES  # noqa: E402
from analysis.taxonomy.keys import split_key  # noqa: E402
from analysis.views import SQL_VIEWS
from memlake.core import marts  # noqa: E402
from memlake.core.paths import Warehouse  # noqa: E402

COLOURS = {"recitation": "C0", "reconstruction": "C1", "recollection": "C2", BASELINE: "grey", "all": "grey"}


def _panels(n: int, ncols: int, width: float = 3.4, height: float = 2.8):
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, constrained_layout=True
    )
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()


# the histogram figures: a title and its features (any feature in no group goes to "other")
HISTOGRAM_GROUPS = {
    "duplication": (
        "Duplication and matches",
        ["sequence_duplicates", "whole_sequence_duplicates", "semantic_matches_0_8", "textual_matches_0_8",
         "semantic_matches_0_9", "textual_matches_0_9"],
    ),
    "frequency": (
        "Token frequencies in the training stream",
        ["max_frequency", "avg_frequency", "min_frequency", "median_frequency", "p25_frequency",
         "p75_frequency"],
    ),
    "perplexity": (
        "Perplexities and compressibility",
        ["generation_perplexity", "prompt_perplexity", "sequence_perplexity", "huffman_coding_length"],
    ),
    "templating": ("Templating and code", ["is_templating", "is_incrementing", "is_repeating", "nl_score"]),
}  # fmt: skip


def histogram_groups(features: list[str]) -> dict[str, tuple[str, list[str]]]:
    """HISTOGRAM_GROUPS narrowed to `features`, plus the rest as "other"; empty groups dropped."""
    out = {k: (title, [f for f in fs if f in features]) for k, (title, fs) in HISTOGRAM_GROUPS.items()}
    grouped = {f for _, fs in HISTOGRAM_GROUPS.values() for f in fs}
    out["other"] = ("Other features", [f for f in features if f not in grouped])
    return {k: v for k, v in out.items() if v[1]}


def feature_histograms(
    rows: pl.DataFrame, features=HISTOGRAM_FEATURES, bins: int = 40, title: str | None = None
) -> plt.Figure:
    """One panel per feature: memorised vs non-memorised densities on shared bins."""
    features = [f for f in features if f in rows.columns]
    fig, axes = _panels(len(features), 3, width=3.6, height=2.9)
    memorised = rows["memorised"].cast(pl.Boolean).to_numpy()
    for ax, feature in zip(axes, features):
        v = rows[feature].cast(pl.Float64).fill_null(np.nan).to_numpy()
        ok = np.isfinite(v)
        label = feature
        if ok.any() and v[ok].min() > 0 and v[ok].max() / v[ok].min() > 100:
            v, label = np.log10(np.where(ok, v, 1.0)), f"log10 {feature}"
        if not ok.any():
            continue
        edges = np.histogram_bin_edges(v[ok], bins=bins)
        for mask, name, colour in ((memorised, "memorised", "C3"), (~memorised, "not memorised", "C7")):
            sel = ok & mask
            if sel.any():
                ax.hist(v[sel], bins=edges, density=True, histtype="step", color=colour, label=name)
        ax.set_xlabel(label, fontsize=10)
        ax.tick_params(labelsize=9)
    axes[0].legend(fontsize=9)
    fig.suptitle(title or "Features of memorised vs non-memorised sequences")
    return fig


def _pair_labels(frame: pl.DataFrame) -> list[str]:
    return [f"{m}\n@{s}" for m, s in frame.select("model", "step").unique(maintain_order=True).iter_rows()]


def shares(frame: pl.DataFrame) -> plt.Figure:
    """Counts per category (log scale) and the stacked per-model percentages across model x step;
    where the pooled (paper) computation is present, its share boundaries are marked with x."""
    per_model = frame.filter(pl.col("computation") == "per_model").sort("model", "step", "category")
    pooled = frame.filter(pl.col("computation") == "pooled").sort("model", "step", "category")
    labels = _pair_labels(per_model)
    x = np.arange(len(labels))
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(8, 1.2 * len(x) + 4), 4), constrained_layout=True)
    bottom, pooled_bottom = np.zeros(len(x)), np.zeros(len(x))
    for category in CATEGORIES:
        part = per_model.filter(pl.col("category") == category)
        left.plot(x, part["count"], marker="o", color=COLOURS[category], label=category)
        share = part["share"].fill_null(0).to_numpy()
        right.bar(x, share, bottom=bottom, color=COLOURS[category], label=category)
        bottom += share
        p = pooled.filter(pl.col("category") == category)
        if p.height == len(x) and category != CATEGORIES[-1]:
            pooled_bottom += p["share"].fill_null(0).to_numpy()
            right.scatter(x, pooled_bottom, marker="x", color="black", zorder=3)
    left.set_yscale("log")
    left.set(ylabel="memorised sequences", title="Counts per category")
    right.set(ylabel="% of memorised", title="Shares per model (x: pooled, as published)")
    for ax in (left, right):
        ax.set_xticks(x, labels, fontsize=7)
    left.legend(fontsize=8)
    return fig


def kl_duplicates(kl: pl.DataFrame) -> plt.Figure:
    """Divergence (bootstrap mean and 95 % interval) against the exact duplicate count."""
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    for i, method in enumerate(sorted(kl["method"].unique().to_list())):
        part = kl.filter(pl.col("method") == method).sort("duplicates")
        ax.plot(part["duplicates"], part["divergence"], marker=".", color=f"C{i}", label=method)
        ax.fill_between(part["duplicates"], part["ci_low"], part["ci_high"], color=f"C{i}", alpha=0.2)
        if "null_divergence" in part.columns:
            ax.plot(part["duplicates"], part["null_divergence"], ls="--", lw=0.8, color=f"C{i}")
        if part.height:
            top = part.sort("divergence", descending=True).row(0, named=True)
            ax.axvline(top["duplicates"], color=f"C{i}", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set(xlabel="exact duplicates of the continuation", ylabel="symmetric KL (memorised vs not)")
    ax.set_title("Perplexity divergence by duplicates (dashed: null; dotted: peak)")
    ax.legend(fontsize=8)
    return fig


def _grouped_bars(ax, frame: pl.DataFrame, x_col: str, series_col: str, y_col: str, series: list[str]):
    xs = frame[x_col].unique(maintain_order=True).to_list()
    width = 0.8 / max(len(series), 1)
    for i, s in enumerate(series):
        part = frame.filter(pl.col(series_col) == s)
        lookup = dict(zip(part[x_col].to_list(), part[y_col].to_list()))
        values = [np.nan if lookup.get(v) is None else lookup[v] for v in xs]
        ax.bar(np.arange(len(xs)) + i * width, values, width=width, color=COLOURS.get(s, f"C{i}"), label=s)
    ax.set_xticks(np.arange(len(xs)) + 0.4 - width / 2, xs, rotation=60, ha="right", fontsize=7)
    ax.axhline(0, color="black", lw=0.6)
    return xs


def lr_weights(weights: pl.DataFrame) -> plt.Figure:
    """Per-category LR weights beside the baseline's, on a symlog axis (weights span decades)."""
    frame = weights.filter(pl.col("feature") != "intercept").with_columns(
        pl.when(pl.col("model_kind") == "baseline")
        .then(pl.lit(BASELINE))
        .otherwise(pl.col("category"))
        .alias("series")
    )
    fig, ax = plt.subplots(figsize=(10, 4.5), constrained_layout=True)
    _grouped_bars(ax, frame, "feature", "series", "weight", [BASELINE, *CATEGORIES])
    ax.set_yscale("symlog", linthresh=0.1)
    ax.set(ylabel="weight (per z-score unit)", title="Logistic-regression weights per category")
    ax.legend(fontsize=8)
    return fig


def correlations(corr: pl.DataFrame) -> plt.Figure:
    """Rows: method; columns: subset (all / code / nl); bars: feature x group."""
    methods = [m for m in ("pearson", "spearman", "xi") if m in set(corr["method"])]
    subsets = [s for s in ("all", "code", "nl") if s in set(corr["subset"])]
    fig, axes = plt.subplots(
        len(methods), len(subsets), figsize=(5.5 * len(subsets), 3.2 * len(methods)), squeeze=False,
        constrained_layout=True,
    )  # fmt: skip
    for i, method in enumerate(methods):
        for j, subset in enumerate(subsets):
            part = corr.filter((pl.col("method") == method) & (pl.col("subset") == subset))
            _grouped_bars(axes[i, j], part, "feature", "group", "statistic", [BASELINE, *CATEGORIES])
            axes[i, j].set_title(f"{method}, {subset}", fontsize=9)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Correlation of each feature with memorisation")
    return fig


def model_metrics(metrics: pl.DataFrame) -> plt.Figure:
    """Mean +- std per metric, category + aggregate, baseline vs taxonomic (the paper's Fig. 5)."""
    names = [
        m for m in ("pr_auc", "precision", "recall", "f1", "ece", "roc_auc") if m in set(metrics["metric"])
    ]
    groups = [*CATEGORIES, AGGREGATE]
    fig, axes = _panels(len(names), 3, width=3.8, height=3.0)
    for ax, name in zip(axes, names):
        part = metrics.filter(pl.col("metric") == name)
        for i, kind in enumerate(("baseline", "taxonomic")):
            rows = {r["group"]: r for r in part.filter(pl.col("model_kind") == kind).iter_rows(named=True)}
            # a metric undefined for a group (one class in its test rows) is null: leave a gap
            mean = [np.nan if rows.get(g, {}).get("mean") is None else rows[g]["mean"] for g in groups]
            std = [np.nan if rows.get(g, {}).get("std") is None else rows[g]["std"] for g in groups]
            ax.bar(np.arange(len(groups)) + 0.4 * i, mean, width=0.4, yerr=std, color=f"C{i + 4}", label=kind)
        ax.set_xticks(np.arange(len(groups)) + 0.2, groups, rotation=30, fontsize=7)
        ax.set_title(name, fontsize=9)
    axes[0].legend(fontsize=7)
    return fig


def draw_taxonomy(
    wh: Warehouse,
    *,
    model: str | None = None,
    step: int | None = None,
    protocol: str = "leakage_free",
    split: str | None = "train",
    perplexity: str = "per_window",
    max_rows: int = 200_000,
    out: Path | None = None,
) -> list[Path]:
    """Draw every taxonomy figure whose inputs exist; return the PNG paths.

    Single-model figures use (model, step), by default the pair with the most memorised rows
    (the paper's 12b at step 143000), and the marts' rows written with the same split,
    perplexity and (model figures) protocol. Histograms read the features through the same
    projection as the analyses, at most `max_rows` rows (a repeatable sample). Figures whose
    mart has not been written yet are skipped.
    """
    from analysis.taxonomy import data
    from memlake.core.query import connect, frame, view_names

    out = out or wh.figures / "taxonomy"
    con = connect(wh, views=SQL_VIEWS)
    paths: list[Path] = []
    try:
        have = view_names(con)
        if model is None or step is None:
            model, step = data.main_pair(con, split)
        tag = marts.file_key(model, step)
        pair = {"model": model, "step": step, "split_key": split_key(split), "perplexity": perplexity}
        where = "model = $model and step = $step and split = $split_key and perplexity = $perplexity"
        source = data.rows_sql(con, perplexity)
        columns = set(frame(con, f"select * from ({source}) limit 0").columns)
        features = [f for f in HISTOGRAM_FEATURES if f in columns]
        params = {"model": model, "step": step, **({"split": split} if split is not None else {})}
        rows = frame(
            con,
            f"""select * from (select memorised, {", ".join(features)} from ({source})
                where model = $model and step = $step {"and split = $split" if split is not None else ""})
                using sample reservoir({int(max_rows)} rows) repeatable (0)""",
            params,
        )
        for group, (title, fs) in histogram_groups(features).items():
            fig = feature_histograms(rows, fs, title=f"{title}: memorised vs not")
            paths.append(save(fig, out / f"feature_histograms-{group}-{tag}.png"))
        if "taxonomy_shares" in have:
            found = frame(con, "select * from taxonomy_shares where split = $s", {"s": pair["split_key"]})
            if found.height:
                paths.append(save(shares(found), out / "shares.png"))
        if "taxonomy_kl" in have:
            kl = frame(con, f"select * from taxonomy_kl where {where}", pair)
            if kl.height:
                paths.append(save(kl_duplicates(kl), out / f"kl_duplicates-{tag}.png"))
        if "taxonomy_correlations" in have:
            corr = frame(con, f"select * from taxonomy_correlations where {where} order by feature", pair)
            if corr.height:
                paths.append(save(correlations(corr), out / f"correlations-{tag}.png"))
        with_protocol = {**pair, "protocol": protocol}
        model_figures = {"lr_weights": ("taxonomy_model_weights", lr_weights),
                         "model_metrics": ("taxonomy_model_metrics", model_metrics)}  # fmt: skip
        for name, (mart, draw) in model_figures.items():
            if mart in have:
                sql = f"select * from {mart} where {where} and protocol = $protocol"
                fit = frame(con, sql, with_protocol)
                if fit.height:
                    paths.append(save(draw(fit), out / f"{name}-{tag}__{protocol}.png"))
    finally:
        con.close()
    return paths
