"""The derived SQL views the analyses own (`<analysis>/views/<name>.sql`), handed to the query
layer by whoever opens a connection that should see them."""

from __future__ import annotations

from pathlib import Path

SQL_VIEWS: dict[str, str] = {
    p.stem: p.read_text() for p in sorted(Path(__file__).resolve().parent.glob("*/views/*.sql"))
}
