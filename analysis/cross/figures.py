"""The cross-analyses' figures, from their marts: profiles by taxonomy category, MIA AUC against
the DiD per cohort, and the taxonomy categories each unlearning method removes."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from analysis.figure_files import save_all  # noqa: E402
from analysis.profiles.metrics import SIGN  # noqa: E402
from analysis.views import SQL_VIEWS  # noqa: E402
from memlake.core.paths import Warehouse  # noqa: E402
from memlake.core.query import connect, frame, view_names  # noqa: E402

COLORS = {"recitation": "C3", "reconstruction": "C2", "recollection": "C0", "uncategorised": "C7"}


def by_category(rows: pl.DataFrame, metric: str) -> plt.Figure:
    """Per model: the DiD's memorisation by event time per category (95 % interval), and the share
    of the category's rows k-extractable."""
    rows = rows.filter(pl.col("metric") == metric)
    models = sorted(rows["model"].unique())
    fig, axes = plt.subplots(2, len(models), figsize=(4.6 * len(models), 6.4), squeeze=False,
                             sharex="col", constrained_layout=True)  # fmt: skip
    for j, model in enumerate(models):
        top, bottom = axes[0, j], axes[1, j]
        for category in rows.filter(pl.col("model") == model)["category"].unique().sort():
            part = rows.filter((pl.col("model") == model) & (pl.col("category") == category)).sort(
                "event_time"
            )
            a, b = (part[c].to_numpy() * SIGN[metric] for c in ("ci_lower", "ci_upper"))
            lo, hi = np.minimum(a, b), np.maximum(a, b)
            n = part["n_treated"][0]
            top.plot(part["event_time"], part["memorisation"], marker="o", color=COLORS[category],
                     label=f"{category} ({n} rows)")  # fmt: skip
            top.fill_between(part["event_time"], lo, hi, color=COLORS[category], alpha=0.15)
            bottom.plot(part["event_time"], part["memorised_share"], marker=".", color=COLORS[category])
        top.axhline(0, color="grey", lw=0.8)
        top.axvline(-0.5, color="grey", lw=0.8, ls=":")
        top.set(title=model, ylabel=f"memorisation ({metric}, DiD)")
        top.legend(fontsize=7)
        bottom.set(xlabel="event time (checkpoint periods)", ylabel="k-extractable share")
    return fig


def versus(rows: pl.DataFrame) -> plt.Figure:
    """Per model: each attack's per-cohort AUC against the DiD's memorisation of the same cell."""
    models = sorted(rows["model"].unique())
    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 4.4), squeeze=False,
                             constrained_layout=True)  # fmt: skip
    attacks = sorted(rows["attack"].unique())
    for j, model in enumerate(models):
        ax = axes[0, j]
        for i, attack in enumerate(attacks):
            part = rows.filter((pl.col("model") == model) & (pl.col("attack") == attack))
            ax.scatter(part["memorisation"], part["auc"], s=14, alpha=0.7, color=f"C{i % 10}", label=attack)
        ax.axhline(0.5, color="grey", lw=0.8)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set(title=model, xlabel="DiD memorisation of the cell (headline metric)",
               ylabel="attack AUC: the cohort's rows vs never-trained rows")  # fmt: skip
        ax.legend(fontsize=7)
    return fig


def by_method(rows: pl.DataFrame) -> plt.Figure:
    """Per study: the share of each category's forget rows each method's best run removed."""
    studies = sorted(rows["study"].unique())
    fig, axes = plt.subplots(len(studies), 1, figsize=(8, 3.8 * len(studies)), squeeze=False,
                             constrained_layout=True)  # fmt: skip
    for i, study in enumerate(studies):
        ax, part = axes[i, 0], rows.filter(pl.col("study") == study)
        methods = sorted(part["method"].unique())
        categories = [c for c in COLORS if c in set(part["category"])]
        width = 0.8 / max(len(categories), 1)
        for k, category in enumerate(categories):
            got = {m: (s, n) for m, s, n in part.filter(pl.col("category") == category)
                   .select("method", "removed_share", "n_forget").iter_rows()}  # fmt: skip
            n = max((v[1] for v in got.values()), default=0)
            ax.bar(np.arange(len(methods)) + k * width, [got.get(m, (np.nan, 0))[0] for m in methods], width,
                   color=COLORS[category], label=f"{category} ({n} rows)")  # fmt: skip
        ax.set_xticks(np.arange(len(methods)) + 0.4 - width / 2, methods, rotation=45, ha="right")
        ax.set(ylim=(0, 1.05), ylabel="share of forget rows removed", title=f"{study}: best run per method")
        ax.legend(fontsize=7)
    return fig


BEST_BY_CATEGORY = """
    select c.*
    from mitigation_by_category as c
    join mitigation_best_runs as b on c.study = b.study and c.run_id = b.run_id
    union all
    select * from mitigation_by_category where kind = 'oracle'
"""


def draw_cross(wh: Warehouse, metric: str, out: Path | None = None) -> list[Path]:
    """Every cross-analysis figure whose mart has rows; PNGs under warehouse/figures/cross/."""
    out = out or wh.figures / "cross"
    con = connect(wh, views=SQL_VIEWS)
    figs = {}
    try:
        have = view_names(con)
        if "profiles_by_category" in have:
            rows = frame(con, "select * from profiles_by_category where metric = $m", {"m": metric})
            if not rows.is_empty():
                figs["profiles_by_category"] = by_category(rows, metric)
        if "mia_vs_did" in have:
            rows = frame(con, "select * from mia_vs_did")
            if not rows.is_empty():
                figs["mia_vs_did"] = versus(rows)
        if {"mitigation_by_category", "mitigation_best_runs"} <= have:
            best = frame(con, BEST_BY_CATEGORY)
            if not best.is_empty():
                figs["mitigation_by_category"] = by_method(best)
    finally:
        con.close()
    return save_all(figs, out)
