"""The profiles' interactive figures, shared by the report and `memlake serve`.

attgt_heatmap  every ATT(g, t) cell of one fit, coloured by memorisation where significant and
               grey elsewhere; hovering a cell gives ATT, its uniform band, n treated and n control
trajectory     one instance's metric over checkpoints, its cohort marked, beside the
               never-treated instances' mean
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import polars as pl

from analysis.interactive import styled
from analysis.profiles.metrics import LABEL

CELL_COLUMNS = ("att", "ci_lower", "ci_upper", "n_treated", "n_control", "event_time")
HOVER = (
    "cohort g = %{y}, step t = %{x}<br>memorisation %{z:.4g}<br>ATT %{customdata[0]:.4g} "
    "[%{customdata[1]:.4g}, %{customdata[2]:.4g}]<br>n treated %{customdata[3]}, "
    "n control %{customdata[4]}<br>event time %{customdata[5]}<extra>%{fullData.name}</extra>"
)


def heatmap_grid(cells: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(cohorts, steps, memorisation [cohort, step], customdata [cohort, step, CELL_COLUMNS]):
    cells that a fit has no estimate for stay NaN."""
    cohorts, steps = np.unique(cells["cohort"].to_numpy()), np.unique(cells["step"].to_numpy())
    gi = np.searchsorted(cohorts, cells["cohort"].to_numpy())
    ti = np.searchsorted(steps, cells["step"].to_numpy())
    z = np.full((len(cohorts), len(steps)), np.nan)
    z[gi, ti] = cells["memorisation"].to_numpy()
    custom = np.full((len(cohorts), len(steps), len(CELL_COLUMNS)), np.nan)
    for k, col in enumerate(CELL_COLUMNS):
        custom[gi, ti, k] = cells[col].cast(pl.Float64).to_numpy()
    return cohorts, steps, z, custom


def attgt_heatmap(cells: pl.DataFrame, metric: str, title: str = "") -> go.Figure:
    """One fit's cells (`profiles_attgt` rows of one model, metric and option set): every cell
    coloured by memorisation and hoverable; cells whose uniform band holds zero are veiled grey
    by a second layer that takes no hover."""
    cohorts, steps, z, custom = heatmap_grid(cells)
    sig = np.zeros_like(z, dtype=bool)
    flagged = cells.select("cohort", "step", pl.col("zero_not_in_cband").fill_null(False))
    gi, ti = np.searchsorted(cohorts, flagged["cohort"]), np.searchsorted(steps, flagged["step"])
    sig[gi, ti] = flagged["zero_not_in_cband"].to_numpy()
    finite = z[sig & np.isfinite(z)]
    vmax = float(np.abs(finite).max()) if finite.size else 1.0
    veil = np.where(np.isfinite(z) & ~sig, 0.0, np.nan)
    fig = go.Figure(
        [
            go.Heatmap(
                x=steps, y=cohorts, z=z, customdata=custom, hovertemplate=HOVER, name="ATT(g, t)",
                colorscale="RdBu", reversescale=True, zmin=-vmax, zmax=vmax,
                colorbar={"title": {"text": "memorisation"}},
            ),
            go.Heatmap(
                x=steps, y=cohorts, z=veil, colorscale=[[0, "#e4e4e4"], [1, "#e4e4e4"]], showscale=False,
                hoverinfo="skip", name="not significant",
            ),
        ]
    )  # fmt: skip
    return styled(
        fig, title or f"ATT(g, t): {LABEL[metric]}", "checkpoint step t", "cohort g (treatment step)"
    )


def fit_heatmaps(con, metric: str, options: dict) -> dict[str, go.Figure]:
    """One heatmap per model for the fit named by `metric` and `options` (the key columns but
    model), read from `profiles_attgt`; {} before any fit."""
    from memlake.core.query import frame, view_names

    if "profiles_attgt" not in view_names(con):
        return {}
    where = " and ".join(f"{k} = ${k}" for k in options)
    cells = frame(
        con, f"select * from profiles_attgt where metric = $metric and {where}", {"metric": metric, **options}
    )
    return {
        model: attgt_heatmap(
            cells.filter(pl.col("model") == model), metric, f"{model}: ATT(g, t), {LABEL[metric]}"
        )
        for model in sorted(cells["model"].unique())
    }


def trajectory(own: pl.DataFrame, controls: pl.DataFrame, metric: str, cohort: int | None) -> go.Figure:
    """`own` and `controls`: (step, value) rows of one model; `cohort` the instance's treatment
    step (None: never trained)."""
    fig = go.Figure(
        [
            go.Scatter(x=own["step"], y=own["value"], mode="lines+markers", name="this instance"),
            go.Scatter(
                x=controls["step"],
                y=controls["value"],
                mode="lines",
                name="never-trained mean",
                line={"dash": "dash", "color": "grey"},
            ),
        ]
    )
    if cohort is not None:
        fig.add_vline(x=cohort, line={"color": "#b2182b", "width": 1.5}, annotation_text=f"cohort {cohort}")
    return styled(
        fig, None, "checkpoint step", LABEL[metric], height=320, legend={"orientation": "h", "y": 1.12}
    )
