"""Cross-analyses: profiles by taxonomy category, attacks against the DiD, and the categories
each unlearning method removes."""

from __future__ import annotations

import json

from memlake.core import settings
from memlake.core.paths import Warehouse
from memlake.pipeline._stage import Log, quiet, relabel
from memlake.warehouse import dbt

# the dbt mart over mitigation runs (written after the main build) and the views it reads
MITIGATION_SELECT = ["stg_lake__mitigation_runs", "stg_lake__mitigation_oracles", "mitigation_by_category"]


@relabel("cross")
def run(cfg, wh: Warehouse, models: list[str] | None = None, log: Log = quiet) -> str:
    """Rebuild `mitigation_by_category`, write the two Python marts for every model of the panel
    (twins aside) and draw the figures; a summary line."""
    from analysis.cross import cross_analyses
    from analysis.cross.figures import draw_cross
    from analysis.profiles import models_in

    metrics = list(settings.of(cfg).profiles.metrics)
    dbt.dbt_build(wh, ["--quiet", "--select", *MITIGATION_SELECT, "--vars", json.dumps(dbt.dbt_vars(cfg))])
    written = cross_analyses(wh, models or models_in(wh), metrics, metrics[0], log=log)
    figures = draw_cross(wh, metrics[0])
    counts = ", ".join(f"{name} {n} rows" for name, n in written.items())
    return f"{counts}; {len(figures)} figures in {wh.figures / 'cross'}"
