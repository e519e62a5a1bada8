"""`pythia-memorized-evals`: the sequences each model reproduces exactly at 32 -> 32, as
`extraction` rows and 64-token instance samples.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ingest.hub_import.sources import PYTHIA_STREAM_ROWS, SIZE_RE, ImportSummary, Origin, SplitNames
from ingest.hub_import.splits import SampleRows, import_splits
from memlake.core.paths import Warehouse


def _downloads(scheme: str, sizes: list[str]) -> list[str]:
    patterns = [p for s in sizes for p in (f"data/{scheme}.{s}-*.parquet", f"data/{scheme}.{s}.*")]
    return patterns + [f"*/{scheme}.{s}/*.parquet" for s in sizes]


# memorized-evals splits: <scheme>.<size>, or <scheme>.<size>.<step> for intermediate checkpoints
_SPLITS = SplitNames(
    re.compile(rf"^(?P<scheme>deduped|duped)\.(?P<size>{SIZE_RE})(?:\.(?P<step>\d+))?$"),
    "<duped|deduped>.<size>[.<step>]",
    _downloads,
)


def import_pythia_memorized_evals(
    source: str,
    wh: Warehouse,
    *,
    scheme: str = "deduped",
    splits: str | Sequence[str] | None = None,
    sizes: str | Sequence[str] | None = None,
    stream_rows: int = PYTHIA_STREAM_ROWS,
    revision: str | None = None,
) -> ImportSummary:
    """`EleutherAI/pythia-memorized-evals` -> `extraction`, one partition per (model, step, shard
    = file), and `instances`: each index's 64-token sample (`sample_only`) unless the index is an
    instance already. Every row is a sequence whose 32-token greedy continuation matched
    exactly, at step 143000 (or the step a `<scheme>.<size>.<step>` split names). Only the
    splits of `scheme`'s training stream are imported (one stream per warehouse); indices must
    be rows of it (< `stream_rows`)."""
    origin = Origin("pythia-memorized-evals", source, revision)
    reader = SampleRows("index", stream_rows)
    return import_splits(
        origin,
        wh,
        _SPLITS,
        reader,
        scheme=scheme,
        splits=splits,
        sizes=sizes,
        tables=["extraction", "instances"],
    )
