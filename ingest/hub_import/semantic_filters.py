"""`semantic-filters` and `semantic-filters-intermediate`: the taxonomy paper's published
features, memorisation labels and perplexities, -> `instance_features`, `extraction`,
`published_perplexities` and 64-token instance samples.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.hub_import.features import plan_features
from ingest.hub_import.partitions import plan_per_file
from ingest.hub_import.reading import BOOL, INT, INT_LIST, NUM, STR, first_occurrence, schema_of, validated
from ingest.hub_import.rows import checkpoint_partition, extraction_partition, extraction_table
from ingest.hub_import.sources import (
    PYTHIA_STREAM_ROWS,
    SIZE_RE,
    ImportSummary,
    Origin,
    SourceFile,
    SplitNames,
)
from ingest.hub_import.splits import SampleRows, Scanned, TypeCheck, import_splits
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse
from memlake.core.unit import Unit
from transforms.frequencies import STAT_COLUMNS

_FEATURES = {
    "sequence_id": INT,
    "tokens": INT_LIST,
    "text": STR,
    "is_incrementing": BOOL,
    "is_repeating": BOOL,
    "sequence_duplicates": INT,
    "max_frequency": NUM,
    "avg_frequency": NUM,
    "min_frequency": NUM,
    "median_frequency": NUM,
    "p25_frequency": NUM,
    "p75_frequency": NUM,
    "frequencies": INT_LIST,
    "nl_scores": NUM,
    "0_8_snowclones": INT,
    "0_9_snowclones": INT,
    "0_8_templates": INT,
    "0_9_templates": INT,
    "huffman_coding_length": NUM,
    "memorization_score": NUM,
}
# usvsnsp/semantic-filters' files as released: column order and types (the importer accepts any
# integer or float width, `_FEATURES`; writers of files of the public shape use this)
RELEASE_SCHEMA = pa.schema(
    [
        ("sequence_id", pa.int64()),
        ("loss", pa.float32()),
        ("prompt_perplexity", pa.float32()),
        ("generation_perplexity", pa.float32()),
        ("sequence_perplexity", pa.float32()),
        ("text", pa.string()),
        ("is_incrementing", pa.bool_()),
        ("is_repeating", pa.bool_()),
        ("sequence_duplicates", pa.int64()),
        ("max_frequency", pa.int64()),
        ("avg_frequency", pa.float64()),
        ("min_frequency", pa.int64()),
        ("median_frequency", pa.float64()),
        ("p25_frequency", pa.int64()),
        ("p75_frequency", pa.int64()),
        ("frequencies", pa.list_(pa.int64())),
        ("tokens", pa.list_(pa.int64())),
        ("repeating_offset", pa.int32()),
        ("num_repeating", pa.int32()),
        ("smallest_repeating_chunk", pa.list_(pa.int64())),
        ("nl_scores", pa.float32()),
        ("0_8_snowclones", pa.int64()),
        ("0_9_snowclones", pa.int64()),
        ("0_8_templates", pa.int64()),
        ("0_9_templates", pa.int64()),
        ("huffman_coding_length", pa.float64()),
        ("memorization_score", pa.float64()),
    ]
)

_PERPLEXITIES = ("prompt_perplexity", "generation_perplexity", "sequence_perplexity", "loss")
_SAME_NAME = (
    "text",
    "sequence_duplicates",
    *STAT_COLUMNS,
    "frequencies",
    "is_incrementing",
    "is_repeating",
    "huffman_coding_length",
)


def _match_columns(swap: bool) -> dict[str, str]:
    """lake column -> published column. The paper's figures call `snowclones` semantic and
    `templates` textual matches; `swap` reads a release that has the names the other way round."""
    sem, tex = ("templates", "snowclones") if swap else ("snowclones", "templates")
    return {
        "semantic_matches_0_8": f"0_8_{sem}",
        "semantic_matches_0_9": f"0_9_{sem}",
        "textual_matches_0_8": f"0_8_{tex}",
        "textual_matches_0_9": f"0_9_{tex}",
    }


def _feature_rows(src: SourceFile, b: pa.RecordBatch, ids: np.ndarray, swap: bool) -> pa.Table:
    n = len(ids)
    matches = _match_columns(swap)
    for t in ("0_8", "0_9"):  # textual matches are semantic matches whose prompt is close
        sem, tex = matches[f"semantic_matches_{t}"], matches[f"textual_matches_{t}"]
        over = pc.fill_null(pc.greater(b.column(tex), b.column(sem)), False).to_numpy(zero_copy_only=False)
        if over.any():
            raise MemlakeError(
                f"{src.path}: column {tex!r} (textual matches) exceeds {sem!r} (semantic matches) for "
                f"sequence_id {int(ids[over][0])}; if this release names them the other way round, "
                "import with swap_matches (--swap-matches)"
            )
    cols = {"instance_id": pa.array(ids, pa.int64())}
    cols |= {c: b.column(c) for c in _SAME_NAME}
    cols |= {
        "prompt_text": pa.nulls(n, pa.string()),
        "whole_sequence_duplicates": pa.nulls(n, pa.int64()),
        "is_templating": pc.or_kleene(b.column("is_incrementing"), b.column("is_repeating")),
        "nl_score": b.column("nl_scores"),
        "in_representative_sample": pa.array(np.full(n, src.origin == "pile"), pa.bool_()),
    }
    cols |= {name: b.column(col) for name, col in matches.items()}
    return pa.table(cols)


def _scores(src: SourceFile, b: pa.RecordBatch, ids: np.ndarray) -> np.ndarray:
    """memorization_score: the representative rows' own; memorised rows' 1 (null read as 1)."""
    v = pc.cast(b.column("memorization_score"), pa.float64()).to_numpy(zero_copy_only=False)
    if src.origin == "memories":
        bad = ~np.isnan(v) & (v != 1.0)
        if bad.any():
            raise MemlakeError(
                f"{src.path}: column 'memorization_score' is {v[bad][0]} for sequence_id "
                f"{int(ids[bad][0])} of a memories split (memorised rows score 1)"
            )
        return np.ones(len(ids))
    bad = ~((v >= 0) & (v <= 1))
    if bad.any():
        raise MemlakeError(
            f"{src.path}: column 'memorization_score' is {v[bad][0]} for sequence_id {int(ids[bad][0])} "
            "(a score is in [0, 1])"
        )
    return v


def _downloads(scheme: str, sizes: list[str]) -> list[str]:
    return [
        f"{where}{origin}_{scheme}_{s}{tail}"
        for origin in ("pile", "memories")
        for s in sizes
        for where, tail in (
            ("data/", "-*.parquet"),
            ("data/", ".*-*.parquet"),
            ("*/", "/*.parquet"),
            ("*/", ".*/*.parquet"),
        )
    ]


# semantic-filters splits: pile_<scheme>_<size> (the representative sample, scored by that model)
# and memories_<scheme>_<size>[.<step>] (its memorised rows)
_SPLITS = SplitNames(
    re.compile(
        rf"^(?P<origin>pile|memories)_(?P<scheme>deduped|duped)_(?P<size>{SIZE_RE})(?:\.(?P<step>\d+))?$"
    ),
    "pile_<scheme>_<size> or memories_<scheme>_<size>[.<step>]",
    _downloads,
)
_TYPES = _FEATURES | dict.fromkeys(_PERPLEXITIES, NUM)


def _has_perplexities(src: SourceFile) -> bool:
    return any(c in schema_of(src.path).names for c in _PERPLEXITIES)


@dataclass(frozen=True)
class _Reader(SampleRows):
    """The rows a semantic-filters file gives each table, streamed in batches."""

    swap_matches: bool = False
    score_columns = {"memorization_score": NUM}

    def columns(self, src: SourceFile) -> dict[str, TypeCheck]:
        every = [c for c in _FEATURES if c != "sequence_id"]
        return {c: _TYPES[c] for c in every + (list(_PERPLEXITIES) if _has_perplexities(src) else [])}

    def check(self, src: SourceFile, batch: pa.RecordBatch, ids: np.ndarray, tokens: pa.Array) -> None:
        once = pa.array(first_occurrence(ids))  # a repeated id is dropped when written
        converted = {
            "instance_features": _feature_rows(src, batch, ids, self.swap_matches),
            "extraction": extraction_table(ids, tokens, self.scores(src, batch, ids)),
        }
        if _PERPLEXITIES[0] in batch.schema.names:
            converted["published_perplexities"] = _perplexities(batch, ids)
        for table, rows in converted.items():
            validated(src.path, table, rows.filter(once), extraction_partition(src))

    def scores(self, src: SourceFile, batch: pa.RecordBatch, ids: np.ndarray) -> np.ndarray:
        return _scores(src, batch, ids)

    def feature_rows(self, src: SourceFile) -> Iterator[pa.Table]:
        cols = [c for c in _FEATURES if c not in ("sequence_id", "tokens", "memorization_score")]
        for b, ids in self.batches(src, {c: _TYPES[c] for c in cols}):
            yield _feature_rows(src, b, ids, self.swap_matches)

    def perplexity_rows(self, src: SourceFile) -> Iterator[pa.Table]:
        for b, ids in self.batches(src, dict.fromkeys(_PERPLEXITIES, NUM)):
            yield _perplexities(b, ids)


def _perplexities(batch: pa.RecordBatch, ids: np.ndarray) -> pa.Table:
    return pa.table({"instance_id": ids} | {c: batch.column(c) for c in _PERPLEXITIES})


def import_semantic_filters(
    source: str,
    wh: Warehouse,
    *,
    scheme: str = "deduped",
    splits: str | Sequence[str] | None = None,
    sizes: str | Sequence[str] | None = None,
    swap_matches: bool = False,
    stream_rows: int = PYTHIA_STREAM_ROWS,
    revision: str | None = None,
    _kind: str = "semantic-filters",
) -> ImportSummary:
    """`usvsnsp/semantic-filters` (splits pile_<scheme>_<size>, memories_<scheme>_<size>) and
    `usvsnsp/semantic-filters-intermediate` (memories_<scheme>_12b.<step>): the taxonomy paper's
    published features -> `instance_features` (merged; a pile row marks the instance as one of
    the representative sample), its memorisation labels -> `extraction` (pile: the row's score;
    memories: 1), its perplexities -> `published_perplexities`, and the 64-token samples of
    indices that are not instances yet -> `instances`. A row's tokens must equal the first 64
    tokens of the instance of its sequence_id. Pile splits are imported before memories splits,
    so a (model, step, instance) in both keeps the pile row (as the paper deduplicated)."""
    origin = Origin(_kind, source, revision)
    reader = _Reader("sequence_id", stream_rows, swap_matches)

    def more(scanned: list[Scanned]) -> list[Unit]:
        with_ppl = [(src, ids) for src, ids, _ in scanned if _has_perplexities(src)]
        return [
            plan_features(wh, origin, scanned, reader.feature_rows),
            *plan_per_file(
                wh, "published_perplexities", origin, with_ppl, checkpoint_partition, reader.perplexity_rows
            ),
        ]

    return import_splits(
        origin,
        wh,
        _SPLITS,
        reader,
        scheme=scheme,
        splits=splits,
        sizes=sizes,
        tables=["instances", "instance_features", "extraction", "published_perplexities"],
        order=lambda s: (s.origin != "pile", s.split, s.rel),
        more=more,
    )


def import_semantic_filters_intermediate(
    source: str,
    wh: Warehouse,
    *,
    scheme: str = "deduped",
    splits: str | Sequence[str] | None = None,
    swap_matches: bool = False,
    stream_rows: int = PYTHIA_STREAM_ROWS,
    revision: str | None = None,
) -> ImportSummary:
    """`usvsnsp/semantic-filters-intermediate` (splits memories_<scheme>_12b.<step>): as
    `import_semantic_filters`, at the step each split names."""
    return import_semantic_filters(
        source,
        wh,
        scheme=scheme,
        splits=splits,
        swap_matches=swap_matches,
        stream_rows=stream_rows,
        revision=revision,
        _kind="semantic-filters-intermediate",
    )
