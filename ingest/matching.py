"""What the taxonomy features' semantic and textual matches compare: the match corpus (a lake
table or Parquet files of `instance_id` and `tokens`, identified by content hashes) and the
sentence embeddings of both sides, each distinct text embedded once and cached per machine.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from ingest import embedding_cache
from ingest.lm import sentence_encoder as encoder
from memlake.core import lake
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse


def match_corpus_identity(wh: Warehouse, spec: str) -> dict[str, Any]:
    """What identifies the match corpus `spec` (a lake table, `table:scheme`, or a Parquet path):
    its source and content hashes; `absent: true` for a lake table with no partitions yet."""
    path = Path(spec).expanduser()
    if path.exists():
        files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
        if not files:
            raise MemlakeError(f"match corpus {path}: no Parquet files")
        return {"path": str(path.resolve()), "sha256": [lake.sha256(f) for f in files]}
    table, _, scheme = spec.partition(":")
    usable = sorted(n for n, t in lake.TABLES.items() if {"instance_id", "tokens"} <= set(t.schema.names))
    if table not in usable:
        raise MemlakeError(
            f"match corpus {spec!r}: neither a Parquet file or folder nor a lake table with instance_id "
            f"and tokens ({', '.join(usable)})"
        )
    parts = lake.partitions(wh, table)
    if scheme:
        parts = [p for p in parts if f"scheme={scheme}" in p.parts]
    if not parts:
        return {"table": table, "scheme": scheme or None, "absent": True}
    return {
        "table": table,
        "scheme": scheme or None,
        "sha256": [lake.manifest(p)["files"][lake.DATA_FILE] for p in parts],
    }


def match_corpus_rows(
    wh: Warehouse, identity: dict[str, Any], sample_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """(instance_id [C], first `sample_len` tokens [C, sample_len]) of the match corpus."""
    import pyarrow.dataset as ds

    if "path" in identity:
        where = identity["path"]
        data = ds.dataset(where, format="parquet", partitioning="hive")
        missing = {"instance_id", "tokens"} - set(data.schema.names)
        if missing:
            raise MemlakeError(f"match corpus {where}: no column(s) {sorted(missing)}")
        t = data.to_table(columns=["instance_id", "tokens"])
    else:
        where = identity["table"]
        columns = ["instance_id", "tokens"] + (
            ["scheme"] if "scheme" in lake.spec(where).schema.names else []
        )
        t = lake.read_table(wh, where, columns=columns)
        if "scheme" in columns:
            schemes = sorted(set(t["scheme"].to_pylist()))
            if identity["scheme"]:
                t = t.filter(pc.equal(t["scheme"], identity["scheme"]))
            elif len(schemes) > 1:
                raise MemlakeError(
                    f"match corpus {where}: holds schemes {schemes}; name one ({where}:{schemes[0]})"
                )
    tokens = t["tokens"].combine_chunks()
    short = pc.less(pc.fill_null(pc.list_value_length(tokens), 0), sample_len)
    if pc.any(short).as_py():
        bad = pc.filter(t["instance_id"], short)[0].as_py()
        raise MemlakeError(
            f"match corpus {where}: instance_id {bad} has fewer than taxonomy.prompt_len + taxonomy.k "
            f"= {sample_len} tokens"
        )
    flat = pc.list_flatten(pc.list_slice(tokens, 0, sample_len)).to_numpy(zero_copy_only=False)
    return t["instance_id"].to_numpy(), flat.astype(np.int64).reshape(t.num_rows, sample_len)


def embed_distinct(texts: list[str], cache: bool = True) -> np.ndarray:
    """Sentence embeddings of `texts`, embedding each distinct text once, in order of encoder length.

    Embedding is the cost of this job (a MiniLM forward per text). Duplicated rows are embedded
    once; texts embedded before on this machine are read from the embedding cache
    (`ingest.embedding_cache`, off with `cache=False`); and sorting by the encoder's token count
    makes every batch pad to about its own length rather than the longest text's: the same
    vectors (to float rounding) for a fraction of the work.
    """
    distinct, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    distinct = distinct.tolist()
    if cache:
        key = hashlib.sha256(encoder.RECIPE.encode()).hexdigest()
        emb = embedding_cache.cached_embed(
            distinct, _embed_by_length, embedding_cache.cache_dir(key), encoder.EMBED_DIM
        )
    else:
        emb = _embed_by_length(distinct)
    return emb[inverse.reshape(-1)]


def _embed_by_length(texts: list[str]) -> np.ndarray:
    enc = encoder.SentenceEncoder(embedding_device())  # loaded for this call's misses only
    by_length = np.argsort(enc.lengths(texts), kind="stable")
    emb = np.empty((len(texts), encoder.EMBED_DIM), dtype=np.float32)
    emb[by_length] = enc.embed([texts[i] for i in by_length])
    return emb


def embedding_device() -> str:
    """A GPU when there is one (the real path), else the CPU (the embedded default)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
