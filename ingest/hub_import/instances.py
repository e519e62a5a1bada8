"""The single `instances` partition that every import merges into: one training stream per
warehouse, a whole row replaces the sample of its index, and the first 64 tokens of every row of
an index must agree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ingest.hub_import.reading import concat, token_digests
from ingest.hub_import.sources import PYTHIA_TOKENIZER, SAMPLE_LEN, Origin, SourceFile
from ingest.hub_import.units import MergeUnit, masked, merged_files
from memlake.core import lake
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse

_LEGACY = {"pile-deduped-subset": "pile-deduped"}  # instances manifests that predate `corpus`


def _corpus_of(config: dict[str, Any]) -> str | None:
    return config.get("corpus") or _LEGACY.get(config.get("import", ""))


def instances_config(wh: Warehouse, corpus: str) -> dict[str, Any]:
    """The instances manifest config, after checking that it holds rows of `corpus`'s stream."""
    if not lake.is_complete(wh, "instances", {}):
        return {}
    config = lake.manifest(wh.table("instances")).get("config", {})
    have = _corpus_of(config)
    if have != corpus:  # instance ids of two training streams would collide
        raise MemlakeError(
            f"{wh.root} already holds an instances table from another corpus "
            f"({have or 'the embedded corpus'}, not {corpus}); use another --warehouse"
        )
    return config


@dataclass
class Candidates:
    """The rows an import offers a single-partition table, in stream order."""

    srcs: list[SourceFile] = field(default_factory=list)
    ids: list[np.ndarray] = field(default_factory=list)
    digests: list[np.ndarray] = field(default_factory=list)

    def add(self, src: SourceFile, ids: np.ndarray, digests: np.ndarray | None = None) -> None:
        self.srcs.append(src)
        self.ids.append(ids)
        self.digests.append(digests if digests is not None else np.zeros(len(ids), np.uint64))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, digests, index of the file of each row)."""
        owner = [np.full(len(i), n, np.int32) for n, i in enumerate(self.ids)]
        return concat(self.ids, np.int64), concat(self.digests, np.uint64), concat(owner, np.int32)


def existing_instances(wh: Warehouse, digests: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, digests of the first 64 tokens (zeros unless `digests`), sample_only) of the
    instances partition, in file order."""
    path = wh.table("instances") / lake.DATA_FILE
    f = pq.ParquetFile(path)
    columns = ["instance_id"] + (["tokens"] if digests else [])
    columns += ["sample_only"] if "sample_only" in f.schema_arrow.names else []
    ids, digest, sample = [], [], []
    for b in f.iter_batches(batch_size=8192, columns=columns):
        ids.append(b.column("instance_id").to_numpy())
        digest.append(token_digests(b.column("tokens")) if digests else np.zeros(b.num_rows, np.uint64))
        flag = b.column("sample_only") if "sample_only" in columns else pa.nulls(b.num_rows, pa.bool_())
        sample.append(pc.fill_null(flag, False).to_numpy(zero_copy_only=False))
    return concat(ids, np.int64), concat(digest, np.uint64), concat(sample, bool)


_NO_INSTANCES = (np.zeros(0, np.int64), np.zeros(0, np.uint64), np.zeros(0, bool))


@dataclass(frozen=True, eq=False)
class InstancesMerge(MergeUnit):
    """Rows merged into `instances`: whole rows replace the samples `drop` marks (per row there)."""

    drop: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def changes(self) -> bool:
        return super().changes() or bool(self.drop.any())

    def existing(self, pieces: Iterator[pa.Table]) -> Iterator[pa.Table]:
        return masked(pieces, ~self.drop) if self.drop.any() else pieces


def plan_instances(
    wh: Warehouse,
    cands: Candidates,
    rows: Callable[[SourceFile], Iterator[pa.Table]],
    *,
    corpus: str,
    whole: bool,
    id_col: str,
    records: list[dict[str, Any]],
    tokenizer: str | None = None,
) -> InstancesMerge:
    """Check `cands` against each other and the instances partition; the unit that merges them
    into it (with nothing to do if they add nothing). A sample row is added only for an index
    that is not an instance yet; a whole row replaces a sample of its index. The first 64 tokens
    of every row of an index must agree."""
    config = instances_config(wh, corpus)
    exists = lake.is_complete(wh, "instances", {})
    ids, digests, owner = cands.arrays()
    n = len(ids)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    first = np.ones(n, dtype=bool)
    first[1:] = sorted_ids[1:] != sorted_ids[:-1]
    lead = order[np.maximum.accumulate(np.where(first, np.arange(n), 0))] if n else order
    differ = np.flatnonzero(digests[order] != digests[lead])
    if len(differ):
        i, j = order[differ[0]], lead[differ[0]]
        raise MemlakeError(
            f"{cands.srcs[owner[i]].path}: column 'tokens' of {id_col} {ids[i]} differs from the "
            f"tokens of the same {id_col} in {cands.srcs[owner[j]].path}"
        )
    if whole and not first.all():
        i = order[np.flatnonzero(~first)[0]]
        raise MemlakeError(f"{cands.srcs[owner[i]].path}: duplicated key {id_col} {ids[i]}")
    keep = np.zeros(n, dtype=bool)
    keep[order[first]] = True
    ex_ids, ex_digests, ex_sample = existing_instances(wh) if exists and n else _NO_INSTANCES
    drop = np.zeros(len(ex_ids), dtype=bool)
    if len(ex_ids) and n:
        ex_order = np.argsort(ex_ids)
        pos = np.minimum(np.searchsorted(ex_ids[ex_order], ids), len(ex_ids) - 1)
        match = ex_order[pos]
        hit = ex_ids[match] == ids
        bad = np.flatnonzero(hit & (ex_digests[match] != digests))
        if len(bad):
            i = bad[0]
            raise MemlakeError(
                f"{cands.srcs[owner[i]].path}: column 'tokens' of {id_col} {ids[i]} differs from the "
                f"first {SAMPLE_LEN} tokens of instance_id {ids[i]} in {wh.table('instances')}"
            )
        if whole:
            taken = np.flatnonzero(hit & ~ex_sample[match])
            if len(taken):
                i = taken[0]
                raise MemlakeError(
                    f"{cands.srcs[owner[i]].path}: {id_col} {ids[i]} is already a whole row of "
                    f"{wh.table('instances')} (from another import)"
                )
            drop[match[hit]] = True  # samples of these indices give way to the whole rows
        else:
            keep &= ~hit
    config = {"corpus": corpus, "tokenizer": str(tokenizer or config.get("tokenizer") or PYTHIA_TOKENIZER)}
    return InstancesMerge.planned(wh, "instances", cands.srcs, rows, keep, records, config, drop=drop)


def plan_samples(
    wh: Warehouse,
    origin: Origin,
    scheme: str,
    scanned: list[tuple[SourceFile, np.ndarray, np.ndarray]],
    rows: Callable[[SourceFile], Iterator[pa.Table]],
    id_col: str,
) -> InstancesMerge:
    """The unit that adds the 64-token samples of the scanned files (with their ids and token
    digests) of `scheme`'s stream to `instances`, less the files its manifest lists already."""
    corpus = f"pile-{scheme}"
    done = merged_files(instances_config(wh, corpus))
    cands = Candidates()
    for src, ids, digests in scanned:
        if (origin.kind, src.rel) not in done:
            cands.add(src, ids, digests)
    records = [origin.record(file=s.rel) for s in cands.srcs]
    return plan_instances(wh, cands, rows, corpus=corpus, whole=False, id_col=id_col, records=records)
