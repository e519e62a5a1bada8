"""The greedy search as units of work: one range of candidates at one (model, step) is one file
of the `taxonomy_search` mart (`memlake.core.unit`), so any executor runs a search, several
processes can share one, and a re-run skips the shards already written."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from analysis.taxonomy import data
from analysis.taxonomy.features import SEARCH_FEATURES, SEED
from analysis.taxonomy.keys import keyed, pair_keys
from analysis.taxonomy.search import candidate_count, search
from analysis.views import SQL_VIEWS
from memlake.core import query
from memlake.core.paths import Warehouse
from memlake.core.unit import Computed, Output, Unit, run_unit


@dataclass(frozen=True)
class SearchShard(Unit):
    """Candidates [lo, hi) of the search at (model, step): one mart file, keyed by the pair's
    options and the range (`force`: recompute it even if it exists)."""

    job: ClassVar[str] = "taxonomy search"
    table: ClassVar[str] = "taxonomy_search"

    root: str  # the warehouse root (a string: units pickle to other processes)
    model: str
    step: int
    lo: int
    hi: int
    split: str | None = "train"
    perplexity: str = "per_window"
    protocol: str = "published"
    n_subsets: int = 100
    features: tuple[str, ...] = SEARCH_FEATURES
    seed: int = SEED
    force: bool = False

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse.at(self.root)

    @property
    def keys(self) -> dict[str, Any]:
        """The key columns inside the file."""
        return pair_keys(self.model, self.step, self.split, self.perplexity, protocol=self.protocol)

    @property
    def partition(self) -> dict[str, Any]:
        return {**self.keys, "range": f"{self.lo:04d}-{self.hi:04d}"}

    def outputs(self) -> list[Output]:
        return [Output(self.table, self.partition, mart=True)]

    @property
    def path(self) -> Path:
        return self.warehouse.marts / self.table / f"{self.outputs()[0].key}.parquet"

    def compute(self, log) -> Computed:
        con = query.connect(self.warehouse, views=SQL_VIEWS)
        try:
            rows = data.rows(
                con, model=self.model, step=self.step, split=self.split, perplexity=self.perplexity
            )
        finally:
            con.close()
        options = {"features": self.features, "n_subsets": self.n_subsets, "seed": self.seed}
        found = search(rows, self.lo, self.hi, protocol=self.protocol, **options)
        return Computed(keyed(found, **self.keys).to_arrow())

    def run(self, log=print) -> dict[str, Any]:
        return run_unit(self, log, force=self.force)


def plan_search(
    wh: Warehouse,
    pairs: list[tuple[str, int]],
    start: int,
    end: int | None,
    shard_size: int | None,
    **options,
) -> list[SearchShard]:
    """The shards of candidates [start, end) (default: to the last) at every (model, step) pair,
    `shard_size` candidates each (default: one shard a pair); `options` are `SearchShard`'s."""
    options["features"] = tuple(options.get("features", SEARCH_FEATURES))
    last = candidate_count(options["features"]) if end is None else end
    size = shard_size or max(last - start, 1)
    return [
        SearchShard(str(wh.root), m, s, lo, min(lo + size, last), **options)
        for m, s in pairs
        for lo in range(start, last, size)
    ]
