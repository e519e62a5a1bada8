"""Figures of the filter-normalised random-plane loss landscapes (Li et al. 2018), drawn from the
`mitigation_landscape` mart that `ingest.mitigation.landscape` computes: per study, the loss of the
unedited model, a good and a bad edit over the same seeded plane of directions, one figure in
warehouse/figures/mitigation/landscape-<study>.png.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from analysis.views import SQL_VIEWS  # noqa: E402
from memlake.core import marts  # noqa: E402
from memlake.core.paths import Warehouse  # noqa: E402
from memlake.core.query import connect, frame, view_names  # noqa: E402

MART = marts.declare("mitigation_landscape")[0]
EDITS = ("unedited", "good", "bad")
LOSSES = (("forget_loss", "forget loss"), ("retain_loss", "retain loss"))


def centre_and_rim(z: np.ndarray, alphas: np.ndarray, betas: np.ndarray) -> tuple[float, float]:
    """Mean loss at the grid point(s) nearest the centre and on the grid's outer ring."""
    ring = np.maximum.outer(np.abs(alphas), np.abs(betas))
    return float(z[ring == ring.min()].mean()), float(z[ring == ring.max()].mean())


def figure(rows: pl.DataFrame) -> plt.Figure:
    """Contours: columns unedited / good / bad, rows forget loss / retain loss. Each panel has its
    own log colour scale (a destroyed model's loss sits far above the others' whole range); its
    centre and rim values are printed in the panel, so the three stay comparable by number."""
    study = rows["study"][0]
    edits = [e for e in EDITS if e in set(rows["edit"])]
    fig, axes = plt.subplots(
        2, len(edits), figsize=(4.4 * len(edits), 7.6), constrained_layout=True, squeeze=False
    )
    for j, edit in enumerate(edits):
        part = rows.filter(pl.col("edit") == edit).sort("alpha", "beta")
        alphas = np.unique(part["alpha"].to_numpy())
        betas = np.unique(part["beta"].to_numpy())
        head = part.row(0, named=True)
        for i, (loss, label) in enumerate(LOSSES):
            z = part[loss].to_numpy().reshape(len(alphas), len(betas))
            ok = z[np.isfinite(z) & (z > 0)]
            lo, hi = (ok.min(), ok.max()) if len(ok) else (1e-3, 1.0)
            hi = max(hi, lo * 1.001)
            levels = np.geomspace(lo, hi, 16)
            ax = axes[i, j]
            cs = ax.contourf(betas, alphas, np.clip(z, lo, hi), levels=levels, norm=LogNorm(lo, hi))
            ax.contour(betas, alphas, np.clip(z, lo, hi), levels=levels[1::3], colors="white", linewidths=0.5)
            ax.plot(0, 0, "r+", ms=10)
            centre, rim = centre_and_rim(z, alphas, betas)
            note = f"centre {centre:.3g}, rim {rim:.3g}"
            box = {"fc": "white", "alpha": 0.7, "lw": 0}
            ax.text(0.02, 0.02, note, transform=ax.transAxes, fontsize=7, bbox=box)
            fig.colorbar(cs, ax=ax, shrink=0.8, format="%.3g", ticks=levels[::5])
            ax.set(xlabel="beta (d2)", ylabel=f"{label}\nalpha (d1)" if j == 0 else None, aspect="equal")
        hp = json.loads(head["hparams"])
        hp_text = ", ".join(f"{k}={v}" for k, v in sorted(hp.items())) or "(the method's defaults)"
        what = "unedited" if head["method"] is None else f"{edit}: {head['method']}\n{hp_text}"
        axes[0, j].set_title(f"{what}\nmem {head['mem']:.1f} %, acc {head['acc']:.1f} %", fontsize=8)
    fig.suptitle(f"Filter-normalised random-plane loss landscape: {study}", fontsize=10)
    return fig


def save_figure(wh: Warehouse, rows: pl.DataFrame, out: Path | None = None) -> Path:
    """warehouse/figures/mitigation/landscape-<study>.png of one study's rows."""
    study = rows["study"][0]
    out = out or wh.figures / "mitigation"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"landscape-{marts.file_key(study)}.png"
    fig = figure(rows)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_landscapes(wh: Warehouse, out: Path | None = None) -> list[Path]:
    """Redraw every study's landscape figure from the mart."""
    con = connect(wh, views=SQL_VIEWS)
    try:
        if MART not in view_names(con):
            return []
        rows = frame(con, f"select * from {MART}")
    finally:
        con.close()
    paths = []
    for study in sorted(rows["study"].unique()):
        paths.append(save_figure(wh, rows.filter(pl.col("study") == study), out))
    return paths
