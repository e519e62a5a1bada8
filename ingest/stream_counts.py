"""Duplicate counts and token frequencies over a training stream, as shards the executors run.

The taxonomy's corpus features are counts over the whole training stream (Pythia: 146,432,000
rows of 2,049 tokens), of which a warehouse holds only a panel of instances. Counting needs only
the query set: each instance's continuation window, tokens [prompt_len, prompt_len + k), and each
whole instance row (a `sample_only` instance holds only the sample of its row: it gets no
whole-row count). The stream's rows split into `shards` contiguous ranges (`panel.shard_slice`);
one unit per range reads its rows once, in chunks (transforms/stream_tally.py), and writes two
lake partitions:

- `stream_counts` (stream, queries, shards, shard): for each instance found in the range, its
  continuation windows and whole rows there;
- `stream_token_counts` (stream, shards, shard): the occurrences of each token id in the range.

`stream` is the stream's content digest (`TokenStream.key`), `queries` a digest of the instances
file and (prompt_len, k), so other instances or settings count again while token counts are
kept. A unit whose partitions are complete is skipped, so a killed run resumes, and the local,
Slurm and Ray executors run the same units. `count_stream` plans, runs and sums the shards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ingest.panel import shard_slice
from ingest.stream import TokenStream, digest, open_stream
from memlake.core import lake
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse
from memlake.core.unit import Computed, Output, WarehouseUnit
from transforms.stream_tally import tally

COUNTS = "stream_counts"
TOKEN_COUNTS = "stream_token_counts"
CHUNK_ROWS = 64  # rows hashed at once: 64 x 2,049 uint64 = 1 MiB per buffer, cache-sized


@dataclass(frozen=True)
class StreamSource:
    """A training stream to count, and how: `path` (see `ingest.stream.open_stream`), `row_len` for
    raw arrays, `shards` units run by `executor` with `executor_options` (as `--exec-opt`)."""

    path: str
    row_len: int | None = None
    shards: int = 1
    executor: str = "local"
    executor_options: tuple[tuple[str, Any], ...] = ()
    chunk_rows: int = CHUNK_ROWS
    threads: int = 1

    def open(self, check: bool = False) -> TokenStream:
        return open_stream(self.path, self.row_len, check=check)


# --------------------------------------------------------------------------- the query set


@dataclass(frozen=True)
class InstanceRows:
    """The instances sorted by id: `sample` [N, sample_len] for every one, `rows` [M, L] for the
    M whole rows (`whole` [N] marks them; `sample_only` instances hold just a sample)."""

    ids: np.ndarray
    split: np.ndarray
    sample: np.ndarray
    whole: np.ndarray
    rows: np.ndarray


def instance_rows(wh: Warehouse, sample_len: int) -> InstanceRows:
    """Read the instances; whole rows must share one length, every row hold `sample_len` tokens."""
    t = lake.read_table(wh, "instances", columns=["instance_id", "split", "tokens", "sample_only"])
    t = t.sort_by("instance_id")
    tokens = t["tokens"].combine_chunks()
    if tokens.null_count:
        bad = pc.filter(t["instance_id"], pc.is_null(t["tokens"]))[0].as_py()
        raise MemlakeError(f"instances column 'tokens' is null for instance_id {bad}")
    ids = t["instance_id"].to_numpy()
    whole = ~pc.fill_null(t["sample_only"], False).to_numpy(zero_copy_only=False)
    lengths = pc.list_value_length(tokens).to_numpy(zero_copy_only=False)
    width = int(lengths[whole][0]) if whole.any() else sample_len
    if (lengths[whole] != width).any():
        bad = ids[whole][int(np.flatnonzero(lengths[whole] != width)[0])]
        raise MemlakeError(
            f"instances column 'tokens': instance_id {bad} has a different length from the first "
            f"row's {width} (rows must be fixed-length)"
        )
    if width < sample_len:
        raise MemlakeError(
            f"instances rows have {width} tokens, fewer than taxonomy.prompt_len + taxonomy.k "
            f"= {sample_len}: lower them"
        )
    if (lengths[~whole] < sample_len).any():
        i = int(np.flatnonzero(~whole & (lengths < sample_len))[0])
        raise MemlakeError(
            f"instances column 'tokens': instance_id {ids[i]} (sample only) has {lengths[i]} tokens, "
            f"fewer than taxonomy.prompt_len + taxonomy.k = {sample_len}"
        )
    flat = pc.list_flatten(pc.list_slice(tokens, 0, sample_len)).to_numpy(zero_copy_only=False)
    sample = flat.astype(np.int64).reshape(len(ids), sample_len)
    full = pc.list_flatten(tokens.filter(pa.array(whole))).to_numpy(zero_copy_only=False)
    rows = full.astype(np.int64).reshape(int(whole.sum()), width)
    split = np.asarray(t["split"].to_pylist(), dtype=object)
    return InstanceRows(ids, split, sample, whole, rows)


def queries_key(wh: Warehouse, prompt_len: int, k: int) -> str:
    """Digest of what a shard counts: the instances file and the window setting."""
    data = lake.manifest(wh.table("instances"))["files"][lake.DATA_FILE]
    return digest({"instances_sha256": data, "prompt_len": prompt_len, "k": k})


# --------------------------------------------------------------------------- the unit


@dataclass(frozen=True)
class StreamShard(WarehouseUnit):
    """Count rows `shard_slice(rows, shard, num_shards)` of the stream: one unit of work, which
    writes the counts and the token counts of the shard (those missing) in one pass."""

    root: str  # the warehouse root (a string: units pickle)
    stream: str  # absolute path as resolved at planning
    row_len: int | None
    stream_key: str
    queries_key: str
    prompt_len: int
    k: int
    shard: int
    num_shards: int
    chunk_rows: int = CHUNK_ROWS
    threads: int = 1
    job: ClassVar[str] = "stream_counts"
    table = COUNTS

    @property
    def partition(self) -> dict[str, Any]:
        return {**self._tokens_partition, "queries": self.queries_key}

    @property
    def _tokens_partition(self) -> dict[str, Any]:
        return {"stream": self.stream_key, "shards": self.num_shards, "shard": self.shard}

    def outputs(self) -> list[Output]:
        return [Output(COUNTS, self.partition), Output(TOKEN_COUNTS, self._tokens_partition)]

    def compute(self, log) -> Computed:
        wh = self.warehouse
        todo = {o.table for o in self.pending()}
        stream = open_stream(self.stream, self.row_len, check=False)
        if stream.key() != self.stream_key:
            raise MemlakeError(
                f"{stream.path}: content changed since the counts were planned (digest {stream.key()}, "
                f"planned {self.stream_key}); run the command again"
            )
        q = None
        if COUNTS in todo:
            if queries_key(wh, self.prompt_len, self.k) != self.queries_key:
                raise MemlakeError(
                    f"{wh.table('instances')}: changed since the counts were planned; run again"
                )
            q = instance_rows(wh, self.prompt_len + self.k)
        sl = shard_slice(stream.rows, self.shard, self.num_shards)
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            t = tally(
                stream.chunks(sl.start, sl.stop, self.chunk_rows),
                windows=q.sample[:, self.prompt_len :] if q is not None else None,
                rows=q.rows if q is not None and len(q.rows) else None,
                count_tokens=TOKEN_COUNTS in todo,
                threads=self.threads,
            )
        except ValueError as e:
            raise MemlakeError(f"{stream.path}: rows [{sl.start}, {sl.stop}): {e}") from None
        provenance = {
            "stream": self.stream,
            "identity": stream.identity(),
            "rows": [sl.start, sl.stop],
            "tokens": t.tokens_read,
            "seconds": round(time.perf_counter() - t0, 3),
            "cpu_seconds": round(time.process_time() - c0, 3),
            "threads": self.threads,
            "chunk_rows": self.chunk_rows,
            "prompt_len": self.prompt_len,
            "k": self.k,
        }
        data = {}
        if TOKEN_COUNTS in todo:
            ids = np.flatnonzero(t.tokens)
            data[TOKEN_COUNTS] = pa.table({"token_id": ids.astype(np.int64), "count": t.tokens[ids]})
        if q is not None:
            whole = np.zeros(len(q.ids), dtype=np.int64)
            if t.rows is not None:
                whole[q.whole] = t.rows
            found = (t.windows > 0) | (whole > 0)
            data[COUNTS] = pa.table(
                {
                    "instance_id": q.ids[found],
                    "sequence_duplicates": t.windows[found],
                    "whole_sequence_duplicates": pa.array(whole[found], pa.int64(), mask=~q.whole[found]),
                }
            )
        return Computed(data, provenance=provenance, summary={"tokens": t.tokens_read})


# --------------------------------------------------------------------------- plan, run, reduce


@dataclass(frozen=True)
class StreamCounts:
    """Counts over a whole stream, aligned with `instance_rows(...).ids`."""

    ids: np.ndarray
    sequence_duplicates: np.ndarray  # int64 [N]
    whole_sequence_duplicates: np.ndarray  # int64 [N], 0 where not `whole`
    whole: np.ndarray  # bool [N]: the instance is a whole row (else its whole count is null)
    token_counts: np.ndarray  # int64 [max id + 1]
    stream: TokenStream
    units_run: int
    units_skipped: int
    seconds: float  # summed over the units run

    def vocabulary_counts(self, vocab: int, tokenizer: str) -> np.ndarray:
        """The token counts as a [vocab] vector; a stream token beyond the vocabulary is an error."""
        beyond = np.flatnonzero(self.token_counts[vocab:])
        if len(beyond):
            raise MemlakeError(
                f"{self.stream.path}: token id {vocab + int(beyond[0])} is outside the vocabulary of "
                f"tokenizer {tokenizer} (ids 0..{vocab - 1}): not a stream of this tokenizer"
            )
        return np.pad(self.token_counts[:vocab], (0, max(0, vocab - len(self.token_counts))))


def plan_shards(
    wh: Warehouse, source: StreamSource, prompt_len: int, k: int
) -> tuple[list[StreamShard], TokenStream, InstanceRows]:
    """The shard units of `source` for the warehouse's instances (and the stream and instances
    they count); the stream's index is checked in full first."""
    shards = source.shards
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise MemlakeError(f"stream shards must be a positive integer, got {shards!r}")
    stream = source.open(check=True)
    if not lake.is_complete(wh, "instances", {}):
        raise MemlakeError(f"no instances under {wh.table('instances')}: run `memlake suite corpus` first")
    q = instance_rows(wh, prompt_len + k)
    if stream.row_len < k:
        raise MemlakeError(f"{stream.path}: rows of {stream.row_len} tokens hold no {k}-token window")
    if len(q.rows) and q.rows.shape[1] != stream.row_len:
        raise MemlakeError(
            f"{stream.path}: rows of {stream.row_len} tokens, but the instances' whole rows have "
            f"{q.rows.shape[1]} (not the stream they were drawn from?)"
        )
    key, qkey = stream.key(), queries_key(wh, prompt_len, k)
    path = str((stream.index or stream.path).resolve())  # an .idx opens its pair
    units = [
        StreamShard(
            str(wh.root),
            path,
            source.row_len,
            key,
            qkey,
            prompt_len,
            k,
            i,
            shards,
            source.chunk_rows,
            source.threads,
        )
        for i in range(shards)
    ]
    return units, stream, q


def count_stream(wh: Warehouse, source: StreamSource, *, prompt_len: int, k: int) -> StreamCounts:
    """Plan the shards of `source`, run those not complete with its executor, and sum them all."""
    from ingest.executors import execute

    units, stream, q = plan_shards(wh, source, prompt_len, k)
    results = execute(units, source.executor, **dict(source.executor_options))
    seq = np.zeros(len(q.ids), dtype=np.int64)
    whole = np.zeros(len(q.ids), dtype=np.int64)
    tokens = np.zeros(0, dtype=np.int64)
    for u in units:
        counts, token_counts = u.outputs()
        t = _read_partition(
            wh, COUNTS, counts.partition, ["instance_id", "sequence_duplicates", "whole_sequence_duplicates"]
        )
        pos = np.searchsorted(q.ids, t["instance_id"].to_numpy())
        seq[pos] += t["sequence_duplicates"].to_numpy()
        whole[pos] += t["whole_sequence_duplicates"].fill_null(0).to_numpy()
        t = _read_partition(wh, TOKEN_COUNTS, token_counts.partition, ["token_id", "count"])
        ids = t["token_id"].to_numpy()
        if len(ids) and ids.max() >= len(tokens):
            tokens = np.pad(tokens, (0, int(ids.max()) + 1 - len(tokens)))
        tokens[ids] += t["count"].to_numpy()
    ran = [r for r in results if not r["skipped"]]
    return StreamCounts(
        q.ids,
        seq,
        np.where(q.whole, whole, 0),
        q.whole,
        tokens,
        stream,
        units_run=len(ran),
        units_skipped=len(results) - len(ran),
        seconds=sum(r["seconds"] for r in ran),
    )


def _read_partition(wh: Warehouse, table: str, partition: dict[str, Any], columns: list[str]) -> pa.Table:
    path = lake.partition_dir(wh, table, partition)
    if not (path / lake.MANIFEST).exists():
        raise MemlakeError(f"{path}: partition missing after its unit ran (another writer removed it?)")
    return pq.read_table(path / lake.DATA_FILE, columns=columns)
