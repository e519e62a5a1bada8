"""`pythia-memorized-evals`: the sequences each model reproduces exactly at 32 -> 32, as
`extraction` rows and 64-token instance samples.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from ingest.hub_import.instances import Candidates, instances_todo, plan_instances
from ingest.hub_import.partitions import plan_per_file, write_per_file
from ingest.hub_import.reading import (
    INT,
    INT_LIST,
    concat,
    read_columns,
    sample_tokens,
    token_digests,
    train_id_column,
)
from ingest.hub_import.rows import extraction_partition, extraction_table, instance_table
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
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse

# memorized-evals splits: <scheme>.<size>, or <scheme>.<size>.<step> for intermediate checkpoints
_EVAL_SPLIT = re.compile(rf"^(?P<scheme>deduped|duped)\.(?P<size>{SIZE_RE})(?:\.(?P<step>\d+))?$")


def _eval_src(path: Path, root: Path, split: str) -> SourceFile:
    m = _EVAL_SPLIT.match(split.lower())
    if not m:
        raise MemlakeError(f"{path}: split {split!r} is not <duped|deduped>.<size>[.<step>]")
    model, step = model_name(m.group("scheme"), m.group("size")), int(m.group("step") or PYTHIA_FINAL_STEP)
    return SourceFile(path, str(path.relative_to(root)), split, m.group("scheme"), model, step)


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
    kind = "pythia-memorized-evals"
    out = ImportSummary(kind, ["extraction", "instances"])
    scheme = check_scheme(scheme)
    splits, sizes = as_list(splits), [str(s).lower() for s in as_list(sizes) or []] or None
    if splits:
        patterns = split_patterns(splits)
    else:
        patterns = [
            p for s in sizes or ["*"] for p in (f"data/{scheme}.{s}-*.parquet", f"data/{scheme}.{s}.*")
        ]
        patterns += [f"*/{scheme}.{s}/*.parquet" for s in sizes or ["*"]]
    root = resolve_source(source, patterns, revision)
    srcs = select_files(root, _eval_src, scheme=scheme, splits=splits, sizes=sizes)
    want = {"index": INT, "tokens": INT_LIST}

    def scan(src: SourceFile) -> Iterator[tuple[np.ndarray, pa.Array]]:
        for b in read_columns(src.path, want, SAMPLE_BATCH_ROWS):
            yield train_id_column(src.path, b, "index", stream_rows), sample_tokens(src.path, b, "tokens")

    def sample_rows(src: SourceFile) -> Iterator[pa.Table]:
        for ids, tokens in scan(src):
            yield instance_table(ids, tokens, "train", sample=True)

    def extraction_rows(src: SourceFile) -> Iterator[pa.Table]:
        for ids, tokens in scan(src):
            yield extraction_table(ids, tokens, np.ones(len(ids)))

    scanned = []
    for src in srcs:  # every check before anything is written
        ids, digests = [], []
        for i, tokens in scan(src):
            ids.append(i)
            digests.append(token_digests(tokens))
        scanned.append((src, concat(ids, np.int64), concat(digests, np.uint64)))
    corpus = f"pile-{scheme}"
    cands = Candidates()
    for src, ids, digests in instances_todo(wh, corpus, scanned, kind):
        cands.add(src, ids, digests)
    records = [provenance(kind, source, revision, file=s.rel) for s in cands.srcs]
    write_instances = None
    if cands.srcs:
        write_instances = plan_instances(
            wh, cands, sample_rows, corpus=corpus, whole=False, id_col="index", records=records
        )
    plans, done = plan_per_file(wh, "extraction", kind, [(s, i) for s, i, _ in scanned], extraction_partition)
    out.skipped = done + (write_instances is None)
    if write_instances is not None:
        out.rows += write_instances()
        out.written += 1
    for plan in plans:
        config = provenance(kind, source, revision, file=plan.src.rel)
        out.rows += write_per_file(wh, plan, extraction_rows(plan.src), config)
        out.written += 1
    return out
