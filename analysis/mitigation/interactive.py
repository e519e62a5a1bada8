"""The mitigation study's interactive Pareto view, shared by the report and `memlake serve`: every
run of one study as memorisation removed against accuracy kept, one trace per method, the front
drawn through the runs that no other run dominates (`mitigation_pareto.sql`), destroyed models
hollow. Hovering a run gives its method, hyper-parameters and numbers."""

from __future__ import annotations

import plotly.graph_objects as go
import polars as pl

from analysis.interactive import styled

KIND_SYMBOLS = {
    "regulariser": "square",
    "fine_tuning": "diamond",
    "neuron": "triangle-up",
    "weight": "circle",
}
HOVER_COLUMNS = ("method", "kind", "hparams", "mem_removed", "acc_kept", "ppl_after", "seconds", "run_id")
HOVER = (
    "<b>%{customdata[0]}</b> (%{customdata[1]})<br>%{customdata[2]}<br>memorisation removed "
    "%{customdata[3]:.4g} pp<br>accuracy kept %{customdata[4]:.4g} %<br>perplexity after "
    "%{customdata[5]:.4g}<br>%{customdata[6]:.3g} s<extra>%{customdata[7]}</extra>"
)


def pareto(runs: pl.DataFrame, study: str) -> go.Figure:
    """`runs`: rows of the `mitigation_pareto` view (any studies; `study` is drawn)."""
    part = runs.filter(pl.col("study") == study).sort("method", "run_id")
    fig = go.Figure()
    for method in part["method"].unique(maintain_order=True):
        rows = part.filter((pl.col("method") == method) & ~pl.col("destroyed"))
        if rows.height:
            fig.add_trace(_points(rows, method, KIND_SYMBOLS.get(rows["kind"][0], "circle")))
    bad = part.filter(pl.col("destroyed"))
    if bad.height:
        fig.add_trace(_points(bad, "model destroyed (acc < 50 % kept)", "circle-open", color="red"))
    front = part.filter(pl.col("on_front")).sort("mem_removed")
    fig.add_trace(
        go.Scatter(
            x=front["mem_removed"],
            y=front["acc_kept"],
            mode="lines",
            name="Pareto front",
            line={"color": "black", "dash": "dash", "width": 1},
            hoverinfo="skip",
        )  # fmt: skip
    )
    fig.add_hline(y=100, line={"color": "grey", "width": 0.8})
    if not part.filter(pl.col("mem_removed").is_not_nan() & pl.col("mem_removed").is_not_null()).height:
        # every run's memorisation is NaN: the model memorised none of its forget rows to begin with
        fig.add_annotation(text="nothing memorised before mitigation: no run has a memorisation to remove",
                           xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False)  # fmt: skip
    return styled(fig, study, "memorisation removed (percentage points)", "accuracy kept (% of before)")


def _points(rows: pl.DataFrame, name: str, symbol: str, color: str | None = None) -> go.Scatter:
    custom = rows.select([pl.col(c) if c in rows.columns else pl.lit(None).alias(c) for c in HOVER_COLUMNS])
    return go.Scatter(
        x=rows["mem_removed"],
        y=rows["acc_kept"],
        mode="markers",
        name=name,
        marker={"symbol": symbol, "size": 9, **({"color": color} if color else {})},
        customdata=custom.rows(),
        hovertemplate=HOVER,
    )
