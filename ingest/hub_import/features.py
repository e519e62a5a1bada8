"""The single `instance_features` partition that semantic-filters imports merge into: the first
row of an instance wins (pile files come first), an instance already there keeps its features,
and an instance of a pile file is marked as one of the representative sample.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.hub_import.instances import Candidates
from ingest.hub_import.partitions import existing_ids
from ingest.hub_import.reading import concat, first_occurrence
from ingest.hub_import.sources import Origin, SourceFile
from ingest.hub_import.units import MergeUnit, merged_files
from memlake.core import lake
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse

TABLE = "instance_features"


@dataclass(frozen=True, eq=False)
class FeaturesMerge(MergeUnit):
    """Features merged into `instance_features`; the rows there of an instance in `pile` (the
    ids of this import's pile files) are marked as representative."""

    pile: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def changes(self) -> bool:
        return True  # a pile file may mark rows already there

    def existing(self, pieces: Iterator[pa.Table]) -> Iterator[pa.Table]:
        column = "in_representative_sample"
        for t in pieces:
            marked = pc.or_kleene(t[column], pa.array(np.isin(t["instance_id"].to_numpy(), self.pile)))
            yield t.set_column(t.schema.get_field_index(column), column, marked)


def plan_features(
    wh: Warehouse,
    origin: Origin,
    scanned: list[tuple[SourceFile, np.ndarray, np.ndarray]],
    rows: Callable[[SourceFile], Iterator[pa.Table]],
) -> FeaturesMerge:
    """The unit that merges the features of the scanned files (with their ids) the manifest does
    not list yet into `instance_features`."""
    config = {}
    exists = lake.is_complete(wh, TABLE, {})
    if exists:
        config = lake.manifest(wh.table(TABLE)).get("config", {})
        if "imports" not in config:
            raise MemlakeError(
                f"{wh.table(TABLE)} holds features computed by `memlake taxonomy features`; import "
                "the published features into another --warehouse"
            )
    done = merged_files(config)
    cands = Candidates()
    for src, ids, _ in scanned:
        if (origin.kind, src.rel) not in done:
            cands.add(src, ids)
    ids, _, _ = cands.arrays()
    keep = first_occurrence(ids)
    if exists and cands.srcs:
        keep &= ~np.isin(ids, existing_ids(wh, TABLE, {}))
    pile = np.unique(concat([i for s, i in zip(cands.srcs, cands.ids) if s.origin == "pile"], np.int64))
    records = [origin.record(file=s.rel) for s in cands.srcs]
    return FeaturesMerge.planned(wh, TABLE, cands.srcs, rows, keep, records, {}, pile=pile)
