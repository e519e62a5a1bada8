"""Sentence embeddings kept per machine, keyed by the encoder's weights and the text's hash.

Embedding is the costly part of the taxonomy features (a MiniLM forward per text), and the
same texts recur: the match corpus is shared by every model size of a suite, and a warehouse
rebuilt from scratch embeds the same panel again. An embedding is a pure function of the
encoder and the text, so it is computed once and read back afterwards.

Layout: `<cache_root>/embeddings/<encoder sha256[:16]>/part-<uuid>.parquet`, each file a batch
of (`key`: sha256 of the UTF-8 text, `embedding`: float32[dim]). Files are written whole and
renamed into place, so concurrent jobs never read half a file; a key present in several files
has the same vector in each (up to float rounding of the batch it was computed in).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from memlake.core.paths import cache_root


def cache_dir(encoder_sha256: str) -> Path:
    return cache_root() / "embeddings" / encoder_sha256[:16]


def text_keys(texts: Sequence[str]) -> list[bytes]:
    return [hashlib.sha256(t.encode("utf-8")).digest() for t in texts]


def cached_embed(
    texts: Sequence[str], embed: Callable[[list[str]], np.ndarray], directory: Path, dim: int
) -> np.ndarray:
    """`embed(texts)` [N, dim] float32, computing only the texts `directory` does not hold and
    adding them to it. `texts` should be distinct (duplicates are looked up, not re-embedded)."""
    keys = text_keys(texts)
    out = np.empty((len(texts), dim), dtype=np.float32)
    found = np.zeros(len(texts), dtype=bool)
    if directory.is_dir() and any(directory.glob("part-*.parquet")):
        wanted = pa.array(keys, pa.binary(32))
        hits = ds.dataset(str(directory), format="parquet").to_table(filter=pc.field("key").isin(wanted))
        if hits.num_rows:
            row_of = {k: i for i, k in enumerate(keys)}
            vectors = np.asarray(hits["embedding"].combine_chunks().flatten(), dtype=np.float32)
            vectors = vectors.reshape(hits.num_rows, dim)
            for key, vec in zip(hits["key"].to_pylist(), vectors):
                i = row_of[key]
                out[i], found[i] = vec, True
    missing = np.flatnonzero(~found)
    if len(missing):
        fresh = np.asarray(embed([texts[i] for i in missing]), dtype=np.float32)
        out[missing] = fresh
        _write(directory, [keys[i] for i in missing], fresh)
    return out


def _write(directory: Path, keys: list[bytes], vectors: np.ndarray) -> None:
    table = pa.table(
        {
            "key": pa.array(keys, pa.binary(32)),
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(vectors.reshape(-1), pa.float32()), vectors.shape[1]
            ),
        }
    )
    name = f"part-{uuid.uuid4().hex}.parquet"
    tmp = directory / f".{name}.tmp"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, tmp)
        os.replace(tmp, directory / name)
    except OSError:  # a read-only cache costs the next run a recomputation, never this one
        with contextlib.suppress(OSError):
            tmp.unlink()
