"""`semantic-filters` and `semantic-filters-intermediate`: the taxonomy paper's published
features, memorisation labels and perplexities, -> `instance_features`, `extraction`,
`published_perplexities` and 64-token instance samples.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.hub_import.instances import Candidates, instances_todo, plan_instances
from ingest.hub_import.partitions import (
    existing_ids,
    masked,
    plan_per_file,
    table_batches,
    write_per_file,
    write_stream,
)
from ingest.hub_import.reading import (
    BOOL,
    INT,
    INT_LIST,
    NUM,
    STR,
    concat,
    first_occurrence,
    read_columns,
    sample_tokens,
    schema_of,
    token_digests,
    train_id_column,
    validated,
)
from ingest.hub_import.rows import (
    checkpoint_partition,
    extraction_partition,
    extraction_table,
    instance_table,
)
from ingest.hub_import.sources import (
    PYTHIA_FINAL_STEP,
    PYTHIA_STREAM_ROWS,
    SAMPLE_BATCH_ROWS,
    SIZE_RE,
    ImportSummary,
    SourceFile,
    as_list,
    check_scheme,
    model_name,
    provenance,
    resolve_source,
    select_files,
    split_patterns,
)
from memlake.core import lake
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse
from transforms.frequencies import STAT_COLUMNS

# semantic-filters splits: pile_<scheme>_<size> (the representative sample, scored by that model)
# and memories_<scheme>_<size>[.<step>] (its memorised rows)
_FILTER_SPLIT = re.compile(
    rf"^(?P<origin>pile|memories)_(?P<scheme>deduped|duped)_(?P<size>{SIZE_RE})(?:\.(?P<step>\d+))?$"
)


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


def _filter_src(path: Path, root: Path, split: str) -> SourceFile:
    m = _FILTER_SPLIT.match(split.lower())
    if not m:
        raise MemlakeError(
            f"{path}: split {split!r} is not pile_<scheme>_<size> or memories_<scheme>_<size>[.<step>]"
        )
    step = int(m.group("step") or PYTHIA_FINAL_STEP)
    model = model_name(m.group("scheme"), m.group("size"))
    rel = str(path.relative_to(root))
    return SourceFile(path, rel, split, m.group("scheme"), model, step, m.group("origin"))


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
    kind = _kind
    out = ImportSummary(kind, ["instances", "instance_features", "extraction", "published_perplexities"])
    scheme = check_scheme(scheme)
    splits, sizes = as_list(splits), [str(s).lower() for s in as_list(sizes) or []] or None
    if splits:
        patterns = split_patterns(splits)
    else:
        patterns = [
            f"{where}{origin}_{scheme}_{s}{tail}"
            for origin in ("pile", "memories")
            for s in sizes or ["*"]
            for where, tail in (
                ("data/", "-*.parquet"),
                ("data/", ".*-*.parquet"),
                ("*/", "/*.parquet"),
                ("*/", ".*/*.parquet"),
            )
        ]
    root = resolve_source(source, patterns, revision)
    srcs = select_files(root, _filter_src, scheme=scheme, splits=splits, sizes=sizes)
    srcs.sort(key=lambda s: (s.origin != "pile", s.split, s.rel))
    has_ppl = {s.path: any(c in schema_of(s.path).names for c in _PERPLEXITIES) for s in srcs}

    def scan(src: SourceFile, columns: Sequence[str]) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        want = {c: (_FEATURES | dict.fromkeys(_PERPLEXITIES, NUM))[c] for c in ("sequence_id", *columns)}
        for b in read_columns(src.path, want, SAMPLE_BATCH_ROWS):
            yield b, train_id_column(src.path, b, "sequence_id", stream_rows)

    def sample_rows(src: SourceFile) -> Iterator[pa.Table]:
        for b, ids in scan(src, ["tokens"]):
            yield instance_table(ids, sample_tokens(src.path, b, "tokens"), "train", sample=True)

    def feature_rows(src: SourceFile) -> Iterator[pa.Table]:
        cols = [c for c in _FEATURES if c not in ("sequence_id", "tokens", "memorization_score")]
        for b, ids in scan(src, cols):
            yield _feature_rows(src, b, ids, swap_matches)

    def extraction_rows(src: SourceFile) -> Iterator[pa.Table]:
        for b, ids in scan(src, ["tokens", "memorization_score"]):
            yield extraction_table(ids, sample_tokens(src.path, b, "tokens"), _scores(src, b, ids))

    def perplexity_rows(src: SourceFile) -> Iterator[pa.Table]:
        for b, ids in scan(src, _PERPLEXITIES):
            yield pa.table({"instance_id": ids} | {c: b.column(c) for c in _PERPLEXITIES})

    scanned = []
    every = [c for c in _FEATURES if c != "sequence_id"]
    for src in srcs:  # every check and conversion before anything is written
        ids_l, digests = [], []
        cols = every + (list(_PERPLEXITIES) if has_ppl[src.path] else [])
        for b, ids in scan(src, cols):
            tokens = sample_tokens(src.path, b, "tokens")
            once = pa.array(first_occurrence(ids))  # a repeated id is dropped when written
            converted = {
                "instance_features": _feature_rows(src, b, ids, swap_matches),
                "extraction": extraction_table(ids, tokens, _scores(src, b, ids)),
            }
            if has_ppl[src.path]:
                converted["published_perplexities"] = pa.table(
                    {"instance_id": ids} | {c: b.column(c) for c in _PERPLEXITIES}
                )
            for table, rows in converted.items():
                validated(src.path, table, rows.filter(once), extraction_partition(src))
            ids_l.append(ids)
            digests.append(token_digests(tokens))
        scanned.append((src, concat(ids_l, np.int64), concat(digests, np.uint64)))

    corpus = f"pile-{scheme}"
    cands = Candidates()
    for src, ids, digests in instances_todo(wh, corpus, scanned, kind):
        cands.add(src, ids, digests)
    records = [provenance(kind, source, revision, file=s.rel) for s in cands.srcs]
    write_instances = None
    if cands.srcs:
        write_instances = plan_instances(
            wh, cands, sample_rows, corpus=corpus, whole=False, id_col="sequence_id", records=records
        )
    write_features = _plan_features(wh, kind, source, revision, scanned, feature_rows)
    extraction, done_x = plan_per_file(
        wh, "extraction", kind, [(s, i) for s, i, _ in scanned], extraction_partition
    )
    with_ppl = [(s, i) for s, i, _ in scanned if has_ppl[s.path]]
    perplexities, done_p = plan_per_file(wh, "published_perplexities", kind, with_ppl, checkpoint_partition)
    out.skipped = done_x + done_p + (write_instances is None) + (write_features is None)
    for write in (write_instances, write_features):
        if write is not None:
            out.rows += write()
            out.written += 1
    for plans, rows in ((extraction, extraction_rows), (perplexities, perplexity_rows)):
        for plan in plans:
            config = provenance(kind, source, revision, file=plan.src.rel)
            out.rows += write_per_file(wh, plan, rows(plan.src), config)
            out.written += 1
    return out


def _plan_features(
    wh: Warehouse,
    kind: str,
    source: str,
    revision: str | None,
    scanned: list[tuple[SourceFile, np.ndarray, np.ndarray]],
    rows: Callable[[SourceFile], Iterator[pa.Table]],
) -> Callable[[], int] | None:
    """The write that merges the scanned files' features into `instance_features`: the first row
    of an instance wins (pile files come first), an instance already there keeps its features,
    and an instance of a pile file is marked as one of the representative sample."""
    table = "instance_features"
    config: dict[str, Any] = {}
    if lake.is_complete(wh, table, {}):
        config = lake.manifest(wh.table(table)).get("config", {})
        if "imports" not in config:
            raise MemlakeError(
                f"{wh.table(table)} holds features computed by `memlake taxonomy features`; import "
                "the published features into another --warehouse"
            )
    done = {(r.get("import"), r.get("file")) for r in config.get("imports", [])}
    todo = [(s, i) for s, i, _ in scanned if (kind, s.rel) not in done]
    if not todo:
        return None
    cands = Candidates()
    for src, ids in todo:
        cands.add(src, ids)
    ids, _, _ = cands.arrays()
    keep = first_occurrence(ids)
    pile = np.unique(np.concatenate([i for s, i in todo if s.origin == "pile"] or [np.zeros(0, np.int64)]))
    exists = bool(config)
    if exists:
        have = existing_ids(wh, table, {})
        keep &= ~np.isin(ids, have)
    merged = {
        "imports": config.get("imports", [])
        + [provenance(kind, source, revision, file=s.rel) for s, _ in todo]
    }

    def pieces() -> Iterator[pa.Table]:
        if exists:
            for t in table_batches(wh.table(table) / lake.DATA_FILE):
                marked = pc.or_kleene(
                    t["in_representative_sample"], pa.array(np.isin(t["instance_id"].to_numpy(), pile))
                )
                yield t.set_column(
                    t.schema.get_field_index("in_representative_sample"), "in_representative_sample", marked
                )
        yield from masked((t for src in cands.srcs for t in rows(src)), keep)

    return lambda: write_stream(wh, table, pieces(), {}, merged, overwrite=True)


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
