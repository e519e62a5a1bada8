"""The profiles paper's figures, drawn from the SQL views (never from raw files).

(the ATT(g, t) heatmap is interactive, shared with `memlake serve`: analysis/profiles/interactive.py)
instantaneous    t = g effect per cohort, with each model's learning-rate schedule
persistent       event-time curve with its uniform band
residual         each cohort's effect at the last checkpoint, opacity = significance
correlation      Pearson correlation of profiles across model sizes
units            the event-time curve of every fitted unit set (natural rows beside planted ones)
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from analysis.profiles.metrics import LABEL, SIGN  # noqa: E402
from analysis.views import SQL_VIEWS
from memlake.core.paths import Warehouse  # noqa: E402
from memlake.core.query import frame, view_names  # noqa: E402

DEFAULT = {
    "units": "single",
    "control_group": "never_treated",
    "base_period": "varying",
    "first_epoch": True,
    "design": "none",
}


def _select(con, view: str, metric: str, options: dict) -> pl.DataFrame:
    where = " and ".join(f"{k} = ${k}" for k in options)
    return frame(
        con, f"select * from {view} where metric = $metric and {where}", {"metric": metric, **options}
    )


def _models(frame: pl.DataFrame) -> list[str]:
    return sorted(frame["model"].unique().to_list())


def _grid(n: int, width: float = 4.2, height: float = 3.6):
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False, constrained_layout=True)
    return fig, axes[0]


def instantaneous(con, metric: str, options: dict) -> plt.Figure:
    cells = _select(con, "profiles_instantaneous", metric, options).sort("cohort")
    lr = frame(con, "select model, step, lr from checkpoints order by model, step")
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    ax2 = ax.twinx()
    for model in _models(cells):
        part = cells.filter(pl.col("model") == model)
        (line,) = ax.plot(part["cohort"], part["memorisation"], marker="o", label=model)
        sig = part.filter(~pl.col("significant"))
        ax.scatter(
            sig["cohort"], sig["memorisation"], facecolor="white", edgecolor=line.get_color(), zorder=3
        )
        sched = lr.filter(pl.col("model") == model)
        ax2.plot(sched["step"], sched["lr"], ls="--", color=line.get_color(), alpha=0.5)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel="cohort g (= checkpoint t)", ylabel=f"instantaneous memorisation\n{LABEL[metric]}")
    ax2.set_ylabel("learning rate (dashed)")
    ax.legend(title="hollow: not significant", fontsize=8)
    ax.set_title("Instantaneous memorisation and the learning-rate schedule")
    return fig


def _period_label(con, options: dict) -> str:
    """x label of event-time curves: e counts checkpoint periods; name their length if even."""
    steps = frame(con, "select distinct step from profiles_full order by step")["step"].to_numpy()
    gaps = np.unique(np.diff(steps))
    length = f" of {gaps[0]} steps" if len(gaps) == 1 else ""
    return f"checkpoints since training (event time e, periods{length})"


def breakdowns(con, metric: str, options: dict) -> dict[str, tuple[str, float]]:
    """HonestDiD breakdown of each model's average persistent memorisation: {model: (method, value)}."""
    if "profiles_honest" not in view_names(con):
        return {}
    rows = _select(con, "profiles_honest", metric, options).filter(pl.col("target") == "average")
    return {m: (meth, b) for m, meth, b in rows.select("model", "method", "breakdown").unique().iter_rows()}


def _breakdown_label(method: str, value: float | None) -> str:
    name = "M̄" if method == "relative_magnitude" else "M"
    if value is None or np.isnan(value):
        return "no breakdown: not significant"
    return f"breakdown {name} = {value:.2f}"


def persistent(con, metric: str, options: dict) -> plt.Figure:
    curve = _select(con, "profiles_persistent", metric, options).sort("event_time")
    honest = breakdowns(con, metric, options)
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    for model in _models(curve):
        part = curve.filter(pl.col("model") == model)
        lo, hi = part["ci_lower"] * SIGN[metric], part["ci_upper"] * SIGN[metric]
        label = model if model not in honest else f"{model} (HonestDiD {_breakdown_label(*honest[model])})"
        (line,) = ax.plot(part["event_time"], part["memorisation"], marker=".", label=label)
        ax.fill_between(
            part["event_time"], np.minimum(lo, hi), np.maximum(lo, hi), alpha=0.2, color=line.get_color()
        )
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel=_period_label(con, options), ylabel=f"persistent memorisation\n{LABEL[metric]}")
    ax.legend(title="uniform 95% band", fontsize=8)
    ax.set_title("Persistent memorisation (event-time aggregation)")
    return fig


def residual(con, metric: str, options: dict) -> plt.Figure:
    cells = _select(con, "profiles_residual", metric, options).sort("cohort")
    models = _models(cells)
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    width = 0.8 / max(len(models), 1)
    for i, model in enumerate(models):
        part = cells.filter(pl.col("model") == model)
        x = np.arange(len(part)) + i * width
        colors = [(f"C{i}", 1.0 if s else 0.3) for s in part["significant"]]
        ax.bar(x, part["memorisation"], width=width, color=colors, label=model)
        ax.set_xticks(np.arange(len(part)) + 0.4 - width / 2, [str(c) for c in part["cohort"]], rotation=45)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel="cohort g", ylabel=f"residual memorisation\n{LABEL[metric]}")
    ax.legend(title="faded: not significant", fontsize=8)
    ax.set_title("Residual memorisation at the last checkpoint")
    return fig


def correlation(con, metric: str, options: dict) -> plt.Figure:
    pairs = _select(con, "profiles_correlation", metric, options)
    models = sorted(set(pairs["model_a"]))
    m = np.full((len(models), len(models)), np.nan)
    for row in pairs.iter_rows(named=True):
        m[models.index(row["model_a"]), models.index(row["model_b"])] = row["pearson"]
    fig, ax = plt.subplots(
        figsize=(1.2 * len(models) + 2.5, 1.2 * len(models) + 1.5), constrained_layout=True
    )
    im = ax.imshow(m, vmin=-1, vmax=1, cmap="RdBu_r")
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, "" if np.isnan(v) else f"{v:.2f}", ha="center", va="center")
    ax.set_xticks(range(len(models)), models, rotation=45)
    ax.set_yticks(range(len(models)), models)
    fig.colorbar(im, ax=ax, label="Pearson r")
    ax.set_title("Profile correlation across sizes")
    return fig


def units(con, metric: str, options: dict) -> plt.Figure:
    """Every fitted unit set's event-time curve: natural single-exposure rows beside the planted
    sets (separate fits, same controls), one colour per set and one line style per model."""
    rest = {k: v for k, v in options.items() if k != "units"}
    curve = _select(con, "profiles_persistent", metric, rest).sort("event_time")
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    sets = sorted(curve["units"].unique().to_list(), key=lambda u: (u != options["units"], u))
    for i, model in enumerate(_models(curve)):
        for j, unit_set in enumerate(sets):
            part = curve.filter((pl.col("model") == model) & (pl.col("units") == unit_set))
            ax.plot(
                part["event_time"],
                part["memorisation"],
                color=f"C{j}",
                ls=("-", "--", ":", "-.")[i % 4],
                marker=".",
                label=f"{unit_set} ({model})",
            )
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel=_period_label(con, options), ylabel=f"memorisation\n{LABEL[metric]}")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Natural single-exposure rows beside the planted sets")
    return fig


FIGURES = {
    "instantaneous": instantaneous,
    "persistent": persistent,
    "residual": residual,
    "correlation": correlation,
    "units": units,
}


def draw_profiles(
    wh: Warehouse, metric: str = "sup_seq", options: dict | None = None, out: Path | None = None
) -> list[Path]:
    """Draw every profile figure for one metric and option set; return the PNG paths."""
    from memlake.core.query import connect

    options = {**DEFAULT, **(options or {})}
    out = out or wh.figures / "profiles"
    out.mkdir(parents=True, exist_ok=True)
    con = connect(wh, views=SQL_VIEWS)
    paths = []
    try:
        have = view_names(con)
        if "profiles_full" not in have:
            raise ValueError(f"no profiles in {wh.root}: run `memlake profiles fit` first")
        for name, make in FIGURES.items():
            fig = make(con, metric, options)
            path = out / f"{name}-{metric}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            paths.append(path)
    finally:
        con.close()
    return paths
