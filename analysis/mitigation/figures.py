"""Mitigation figures from the SQL views: time cost, per-duplication-class effects, distance to the
oracle. (The Pareto view is interactive, shared with `memlake serve`: analysis/mitigation/interactive.py.)"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from analysis.figure_files import save_all  # noqa: E402
from analysis.views import SQL_VIEWS
from memlake.core.paths import Warehouse  # noqa: E402
from memlake.core.query import connect, frame, view_names  # noqa: E402

KIND_MARKERS = {"regulariser": "s", "fine_tuning": "D", "neuron": "^", "weight": "o", "baseline": "x"}


def time_cost(best: pl.DataFrame) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(8, 4), constrained_layout=True)
    studies = sorted(best["study"].unique())
    methods = sorted(best["method"].unique())
    width = 0.8 / max(len(studies), 1)
    for i, s in enumerate(studies):
        part = dict(best.filter(pl.col("study") == s).select("method", "seconds").iter_rows())
        ax.bar(np.arange(len(methods)) + i * width, [part.get(m, np.nan) for m in methods], width, label=s)
    ax.set_xticks(np.arange(len(methods)) + 0.4 - width / 2, methods, rotation=60, ha="right")
    ax.set(yscale="log", ylabel="seconds (best run)", title="Time cost per method")
    ax.legend(fontsize=8)
    return fig


def dup_classes(best: pl.DataFrame) -> plt.Figure:
    cols = [c for c in best.columns if c.startswith("mem_after_dup")]
    present = [c for c in cols if best[c].null_count() < len(best)]
    fig, ax = plt.subplots(figsize=(8, 4), constrained_layout=True)
    rows = best.sort("study", "method")
    labels = [
        f"{s}\n{m}" if len(rows["study"].unique()) > 1 else m
        for s, m in rows.select("study", "method").iter_rows()
    ]
    width = 0.8 / max(len(present), 1)
    for i, c in enumerate(present):
        p = c.removeprefix("mem_after_dup")
        removed = rows[f"mem_before_dup{p}"] - rows[c]
        ax.bar(np.arange(len(rows)) + i * width, removed.fill_null(np.nan), width, label=f"10^{p} copies")
    ax.set_xticks(np.arange(len(rows)) + 0.4 - width / 2, labels, rotation=60, ha="right", fontsize=7)
    ax.set(ylabel="memorisation removed (pp)", title="Effect per duplication class (best runs)")
    ax.legend(fontsize=8)
    return fig


def oracle_distance(vs: pl.DataFrame, study: str) -> plt.Figure:
    """Each run's distance to the retrain oracle (KS distance of the forget losses) against the
    accuracy it kept; the unedited model and the oracle itself marked."""
    part = vs.filter(pl.col("study") == study)
    fig, ax = plt.subplots(figsize=(7.5, 5), constrained_layout=True)
    methods = sorted(part["method"].unique())
    for i, m in enumerate(methods):
        rows = part.filter((pl.col("method") == m) & ~pl.col("destroyed"))
        marker = KIND_MARKERS.get(part.filter(pl.col("method") == m)["kind"][0], "o")
        ax.scatter(
            rows["ks_distance"], rows["acc_kept"], label=m, color=f"C{i % 10}", marker=marker, alpha=0.8
        )
    front = part.filter(pl.col("on_oracle_front")).sort("ks_distance")
    ax.plot(front["ks_distance"], front["acc_kept"], color="black", lw=1, ls="--", label="front")
    first = part.row(0, named=True)
    ax.scatter([first["base_ks_distance"]], [100.0], marker="*", s=160, color="black", label="unedited model")
    oracle_kept = 100 * first["oracle_acc"] / first["acc_before"]
    ax.scatter([0.0], [oracle_kept], marker="P", s=160, color="green", label="retrain oracle")
    ax.set(
        xlabel="KS distance of forget losses to the oracle's (0 = the oracle)",
        ylabel="accuracy kept (% of before)",
        title=f"{study}: distance to the retrain oracle",
    )
    ax.set_xlim(-0.03, 1.03)
    ax.legend(fontsize=7, ncol=2, loc="best")
    return fig


def draw_mitigation(wh: Warehouse, out: Path | None = None) -> list[Path]:
    """Every mitigation figure; PNGs under warehouse/figures/mitigation/."""
    out = out or wh.figures / "mitigation"
    con = connect(wh, views=SQL_VIEWS)
    try:
        have = view_names(con)
        if "mitigation_pareto" not in have:
            raise ValueError(f"no mitigation runs in {wh.root}: run `memlake mitigate sweep` first")
        best = frame(con, "select * from mitigation_best_runs")
        vs = frame(con, "select * from mitigation_vs_oracle") if "mitigation_vs_oracle" in have else None
    finally:
        con.close()
    figs = (
        {f"oracle-{s}": oracle_distance(vs, s) for s in sorted(vs["study"].unique())}
        if vs is not None
        else {}
    )
    figs["time_cost"] = time_cost(best)
    figs["dup_classes"] = dup_classes(best)
    return save_all(figs, out)
