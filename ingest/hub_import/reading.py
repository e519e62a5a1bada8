"""Reading public Parquet files: columns streamed in record batches after a type check, ids and
token samples checked against the training stream and converted to the lake's types, and the
token digests that compare samples without holding them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ingest.hub_import.sources import GEN_LEN, PROMPT_LEN, READ_BATCH_ROWS, SAMPLE_BATCH_ROWS, SAMPLE_LEN
from memlake.core import lake
from memlake.core.errors import MemlakeError


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t)


INT = ("an integer", pa.types.is_integer)
NUM = ("a number", lambda t: pa.types.is_integer(t) or pa.types.is_floating(t))
BOOL = ("a boolean", pa.types.is_boolean)
STR = ("a string", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t))
INT_LIST = ("a list of integers", lambda t: _is_list(t) and pa.types.is_integer(t.value_type))
FLOAT_LIST = ("a list of floats", lambda t: _is_list(t) and pa.types.is_floating(t.value_type))


def read_columns(
    path: Path, want: dict[str, tuple[str, Callable[[pa.DataType], bool]]], rows: int = READ_BATCH_ROWS
) -> Iterator[pa.RecordBatch]:
    """Stream the `want` columns of `path` after checking that they exist with the right types."""
    schema = schema_of(path)
    for name, (label, ok) in want.items():
        if name not in schema.names:
            raise MemlakeError(f"{path}: missing column {name!r} (has {schema.names})")
        if not ok(schema.field(name).type):
            raise MemlakeError(
                f"{path}: column {name!r} has type {schema.field(name).type}, expected {label}"
            )
    # unbuffered column reads: pre-buffering would hold whole row groups (~100 MB each on the Hub)
    f = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
    yield from f.iter_batches(batch_size=rows, columns=list(want))


def schema_of(path: Path) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise MemlakeError(f"{path}: unreadable Parquet ({str(e).splitlines()[0]})") from None


def id_column(path: Path, batch: pa.RecordBatch, name: str) -> np.ndarray:
    col = batch.column(name)
    if col.null_count:
        raise MemlakeError(f"{path}: column {name!r} has null values")
    return col.to_numpy().astype(np.int64)


def train_id_column(path: Path, batch: pa.RecordBatch, name: str, stream_rows: int) -> np.ndarray:
    """Row indices of the training stream: 0 <= id < stream_rows (Pythia: 143,000 steps x 1,024)."""
    ids = id_column(path, batch, name)
    bad = (ids < 0) | (ids >= stream_rows)
    if bad.any():
        raise MemlakeError(
            f"{path}: column {name!r} has value {int(ids[bad][0])}, not a row of the training stream "
            f"(0..{stream_rows - 1:,}; stream_rows = {stream_rows:,})"
        )
    return ids


def train_batches(
    path: Path, id_col: str, stream_rows: int, want: dict[str, tuple[str, Callable[[pa.DataType], bool]]]
) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """Batches of `want` from a file of training-stream rows keyed by `id_col`, with the checked ids."""
    for b in read_columns(path, {id_col: INT} | want, SAMPLE_BATCH_ROWS):
        yield b, train_id_column(path, b, id_col, stream_rows)


def sample_tokens(path: Path, batch: pa.RecordBatch, name: str) -> pa.Array:
    """The column's 64-token samples (prompt + continuation) as the lake's token type."""
    tokens = batch.column(name)
    lengths = pc.fill_null(pc.list_value_length(tokens), 0)
    wrong = pc.filter(lengths, pc.not_equal(lengths, SAMPLE_LEN))
    if len(wrong):
        raise MemlakeError(
            f"{path}: column {name!r} has a row of {wrong[0].as_py()} tokens (expected "
            f"{SAMPLE_LEN} = {PROMPT_LEN}-token prompt + {GEN_LEN}-token continuation)"
        )
    return cast_column(path, name, tokens, lake.TOKENS)


def cast_column(path: Path, name: str, arr: pa.Array, typ: pa.DataType) -> pa.Array:
    try:
        return arr.cast(typ, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise MemlakeError(f"{path}: column {name!r} does not fit {typ} ({str(e).splitlines()[0]})") from None


def validated(path: Path, table: str, data: pa.Table, partition: dict[str, Any] | None = None) -> pa.Table:
    """The contract's checks on converted rows, before anything is written; errors name the file."""
    try:
        return lake.validate(table, data, partition)
    except MemlakeError as e:
        raise MemlakeError(f"{path}: {e}") from None


# odd 64-bit multipliers: a row's digest is sum(token_i * _MIX[i]) mod 2^64 plus its length
_MIX = np.random.default_rng(0x5EED).integers(1, 1 << 62, SAMPLE_LEN, dtype=np.uint64) * np.uint64(2)
_MIX += np.uint64(1)


def token_digests(tokens: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A 64-bit digest of each row's first 64 tokens: equal samples, equal digests; a different
    sample collides with probability ~2^-48 (token ids are < 2^16)."""
    if isinstance(tokens, pa.ChunkedArray):
        tokens = tokens.combine_chunks()
    head = pc.list_slice(tokens, 0, SAMPLE_LEN)
    lengths = pc.fill_null(pc.list_value_length(head), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.list_flatten(head).to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64)
    out = lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    if not len(flat):
        return out
    if (lengths == lengths[0]).all():
        out += (flat.reshape(len(lengths), -1) * _MIX[: lengths[0]]).sum(axis=1, dtype=np.uint64)
        return out
    starts = np.cumsum(lengths) - lengths
    pos = np.arange(len(flat)) - np.repeat(starts, lengths)
    nonempty = lengths > 0
    out[nonempty] += np.add.reduceat(flat * _MIX[pos], starts[nonempty], dtype=np.uint64)
    return out


def concat(arrays: list[np.ndarray], dtype: Any) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype)


def first_occurrence(ids: np.ndarray) -> np.ndarray:
    keep = np.zeros(len(ids), dtype=bool)
    keep[np.unique(ids, return_index=True)[1]] = True
    return keep
