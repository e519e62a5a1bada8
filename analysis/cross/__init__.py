"""Cross-analyses that join the three pipelines: memorisation profiles by taxonomy category
(`profiles_by_category`), membership-inference AUC against the DiD per cohort (`mia_vs_did`), and
which categories each unlearning method removes (the dbt mart `mitigation_by_category`)."""

from __future__ import annotations

from collections.abc import Callable

from analysis.cross.mia_vs_did import agreement, mia_vs_did
from analysis.cross.profiles_by_category import profiles_by_category
from analysis.views import SQL_VIEWS
from memlake.core import marts, query
from memlake.core.paths import Warehouse

MARTS = marts.declare("profiles_by_category", "mia_vs_did")

__all__ = ["MARTS", "agreement", "cross_analyses", "mia_vs_did", "profiles_by_category"]


def cross_analyses(
    wh: Warehouse, models: list[str], metrics: list[str], headline: str, log: Callable[[str], None] = print
) -> dict[str, int]:
    """Write both Python marts for every model (rows written per mart)."""
    con = query.connect(wh, views=SQL_VIEWS)
    written = {name: 0 for name in MARTS}
    try:
        for model in models:
            by_category, notes = profiles_by_category(con, model, metrics)
            for note in notes:
                log(f"cross: {note}")
            marts.write(wh, "profiles_by_category", marts.file_key(model), by_category)
            versus = mia_vs_did(con, model, headline)
            marts.write(wh, "mia_vs_did", marts.file_key(model), versus)
            written["profiles_by_category"] += len(by_category)
            written["mia_vs_did"] += len(versus)
    finally:
        con.close()
    return written
