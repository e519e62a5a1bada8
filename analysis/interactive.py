"""Interactive figures (Plotly) as HTML fragments, for the static report and `memlake serve` alike.

The figure functions live with their study (`analysis/profiles/interactive.py`,
`analysis/mitigation/interactive.py`); this module only turns a figure into a `<div>` that draws
it. Plotly's JavaScript ships inside the Python package (`PLOTLY_JS`), so a page that loads it from
beside itself works with no network.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import plotly
import plotly.graph_objects as go

PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
CONFIG = {"displaylogo": False, "responsive": True}


def styled(fig: go.Figure, title: str | None, x: str, y: str, height: int = 460, **more) -> go.Figure:
    """The layout every memlake figure shares: axis titles, white plot, compact margins."""
    top = 50 if title else 30
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, height=height, plot_bgcolor="white",
                      margin={"l": 60, "r": 20, "t": top, "b": 50}, **more)  # fmt: skip
    return fig


def clean(value, unpack: bool = False):
    """JSON-safe: NaN and infinities become null (JSON has neither), recursively. Plotly's packed
    arrays (`{"dtype", "bdata"}`, base64 that plotly.js reads as typed arrays) stay packed, which
    keeps a 20,000-cell figure small and fast to write; `unpack=True` turns them into plain lists,
    for a reader that wants the numbers (the tests)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        if "bdata" in value and "dtype" in value:
            return clean(_unpack(value)) if unpack else value
        return {k: clean(v, unpack) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v, unpack) for v in value]
    return value


def plain(spec: dict) -> dict:
    """A figure's JSON (as a page holds it) with every packed array as a plain list."""
    return clean(spec, unpack=True)


def fragment(fig: go.Figure, div_id: str) -> str:
    """A `<div>` and the script that draws `fig` into it (Plotly must be loaded first). The
    figure's JSON sits in a `<script type=application/json>`, so what is drawn can be read back
    (`plain(json.loads(...))`)."""
    spec = json.dumps(clean(fig.to_plotly_json()), default=_jsonable, separators=(",", ":"))
    spec = spec.replace("</", "<\\/")  # never closes the script element early
    ident = html.escape(div_id)
    return (
        f'<div id="{ident}" class="plot"></div>'
        f'<script type="application/json" id="{ident}-spec">{spec}</script>'
        f"<script>(function(){{const s=JSON.parse(document.getElementById('{ident}-spec').textContent);"
        f"Plotly.newPlot('{ident}', s.data, s.layout, {json.dumps(CONFIG)});}})();</script>"
    )


def _unpack(packed: dict) -> list:
    import base64

    import numpy as np

    values = np.frombuffer(base64.b64decode(packed["bdata"]), dtype=np.dtype(packed["dtype"]))
    if "shape" in packed:
        values = values.reshape([int(n) for n in str(packed["shape"]).split(",")])
    return values.tolist()


def _jsonable(v):
    import numpy as np

    if isinstance(v, np.ndarray):
        return clean(v.tolist())
    if isinstance(v, np.generic):
        return clean(v.item())
    return str(v)
