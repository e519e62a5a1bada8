"""Writing the analyses' figures: one PNG per figure, at one resolution, the figure closed after."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_all(figs: dict[str, plt.Figure], out: Path) -> list[Path]:
    """`out/<name>.png` for every figure, in order."""
    return [save(fig, out / f"{name}.png") for name, fig in figs.items()]
