"""Where things live. Everything hangs off one warehouse root (default `./warehouse`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def default_warehouse() -> Path:
    return Path(os.environ.get("MEMLAKE_WAREHOUSE", REPO_ROOT / "warehouse")).resolve()


def cache_root() -> Path:
    """The per-user cache shared by every warehouse (`$MEMLAKE_CACHE`, else the XDG cache folder):
    only results that are a pure function of their key live here, so any warehouse may reuse them."""
    if os.environ.get("MEMLAKE_CACHE"):
        return Path(os.environ["MEMLAKE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "memlake"


@dataclass(frozen=True)
class Warehouse:
    root: Path

    @classmethod
    def at(cls, root: str | Path | None = None) -> Warehouse:
        return cls(Path(root).resolve() if root else default_warehouse())

    @property
    def lake(self) -> Path:  # Parquet written by ingest jobs
        return self.root / "lake"

    @property
    def staging(self) -> Path:  # atomic writes land here first, then rename into lake/
        return self.root / "lake" / "_tmp"

    @property
    def marts(self) -> Path:  # Parquet written by dbt (materialized='external')
        return self.root / "marts"

    @property
    def catalog(self) -> Path:  # DuckDB file owned by dbt
        return self.root / "memlake.duckdb"

    @property
    def suite(self) -> Path:  # tokenizer + checkpoints of the embedded model suite
        return self.root / "suite"

    @property
    def figures(self) -> Path:  # PNG/SVG figures drawn from the marts
        return self.root / "figures"

    @property
    def tokenizer(self) -> Path:
        return self.suite / "tokenizer"

    def table(self, name: str) -> Path:
        return self.lake / name
