"""The derived SQL views the analyses own (`<analysis>/views/<name>.sql`), handed to the query
layer by whoever opens a connection that should see them."""

from __future__ import annotations

from pathlib import Path

SQL_VIEWS: dict[str, str] = {
    p.stem: p.read_text() for p in sorted(Path(__file__).resolve().parent.glob("*/views/*.sql"))
}

# The analyses' mart declarations (and the column defaults of their older files) must be known
# before a connection builds these views: importing the modules that write the marts declares them.
import analysis.profiles.fitting  # noqa: E402, F401
