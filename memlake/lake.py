"""The lake contract: schemas, grains, partition keys, an atomic writer and a strict reader.

Layout: `lake/<table>/<k1>=<v1>/<k2>=<v2>/part-0.parquet` plus `_manifest.json` in the same
directory (Hive style: partition columns live in the path, not in the file). A partition is
complete iff its manifest exists; writers build the whole directory under `lake/_tmp/` and
rename it into place, so readers never see half a partition.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from memlake.errors import MemlakeError
from memlake.paths import REPO_ROOT, Warehouse

MANIFEST = "_manifest.json"
DATA_FILE = "part-0.parquet"
_TRACKED_PACKAGES = ("torch", "transformers", "tokenizers", "duckdb", "pyarrow", "polars")


@dataclass(frozen=True)
class TableSpec:
    name: str
    grain: str  # one row per ...
    schema: pa.Schema  # every column, partition keys included
    keys: tuple[str, ...]  # columns that identify a row (unique, not null)
    partition_by: tuple[str, ...] = ()
    checks: tuple[Callable[[pa.Table], str | None], ...] = field(default=())
    # Columns a writer may leave out (filled with nulls): additive contract changes that older
    # writers and partitions do not know about. dbt reads them with union_by_name.
    optional: tuple[str, ...] = ()

    @property
    def file_schema(self) -> pa.Schema:
        """Columns stored inside the Parquet file (partition keys live in the path)."""
        return pa.schema([f for f in self.schema if f.name not in self.partition_by])

    @property
    def partition_schema(self) -> pa.Schema:
        return pa.schema([self.schema.field(k) for k in self.partition_by])


def _train_rows_have_cohorts(t: pa.Table) -> str | None:
    train = pc.equal(t["split"], "train")
    missing = pc.and_(train, pc.is_null(t["cohort"]))
    if pc.any(missing).as_py():
        ids = pc.filter(t["instance_id"], missing).slice(0, 3).to_pylist()
        return f"column 'cohort' is null for training instance_id(s) {ids}"
    val_cohort = pc.and_(pc.invert(train), pc.is_valid(t["cohort"]))
    if pc.any(val_cohort).as_py():
        ids = pc.filter(t["instance_id"], val_cohort).slice(0, 3).to_pylist()
        return f"column 'cohort' must be null for never-treated instance_id(s) {ids}"
    return None


def _split_values(t: pa.Table) -> str | None:
    bad = pc.invert(pc.is_in(t["split"], pa.array(["train", "validation"])))
    if pc.any(bad).as_py():
        return f"column 'split' has value {pc.filter(t['split'], bad)[0].as_py()!r}"
    return None


def _matches_are_nested(t: pa.Table) -> str | None:
    """Textual matches are a subset of semantic ones, and 0.9 matches a subset of 0.8 ones."""
    for small, big in (
        ("textual_matches_0_8", "semantic_matches_0_8"),
        ("textual_matches_0_9", "semantic_matches_0_9"),
        ("semantic_matches_0_9", "semantic_matches_0_8"),
        ("textual_matches_0_9", "textual_matches_0_8"),
    ):
        bad = pc.greater(t[small], t[big])
        if pc.any(bad).as_py():
            i = pc.filter(t["instance_id"], bad)[0].as_py()
            return f"column {small!r} exceeds {big!r} for instance_id {i}"
    return None


TOKENS = pa.list_(pa.int32())

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in [
        TableSpec(
            name="instances",
            grain="one row per instance (a fixed-length token row of the training stream or "
            "the never-trained validation split)",
            schema=pa.schema(
                [
                    ("instance_id", pa.int64()),
                    ("split", pa.string()),  # train / validation
                    ("tokens", TOKENS),
                    ("batch_idx", pa.int64()),  # null for validation
                    ("cohort", pa.int64()),  # first checkpoint step after training; null: never
                    ("source", pa.string()),  # code / prose / synthetic
                    ("artifact", pa.string()),  # none/duplicate/incrementing/repeating/noise/...
                    ("copies", pa.int32()),  # times these exact tokens occur in training
                    ("clean_tokens", TOKENS),  # noise artifacts: the un-noised row
                    # true: `tokens` hold only a sample of the training row (the 64-token
                    # prompt + continuation of pythia-memorized-evals), not the whole row
                    ("sample_only", pa.bool_()),
                ]
            ),
            keys=("instance_id",),
            checks=(_split_values, _train_rows_have_cohorts),
            optional=("sample_only",),
        ),
        TableSpec(
            name="checkpoints",
            grain="one row per checkpoint (model, step)",
            schema=pa.schema(
                [
                    ("model", pa.string()),
                    ("step", pa.int64()),
                    ("path", pa.string()),  # directory loadable with from_pretrained
                    ("lr", pa.float64()),  # learning rate at that step
                    ("tokens_seen", pa.int64()),
                    ("epoch", pa.float64()),  # tokens_seen / training tokens
                    ("train_loss", pa.float64()),  # mean loss over the steps since last ckpt
                    ("revision", pa.string()),  # the branch name: step<N>
                    ("first_epoch_end", pa.int64()),  # last step of the first pass over the data
                ]
            ),
            keys=("model", "step"),
            partition_by=("model",),
            optional=("revision", "first_epoch_end"),
        ),
        TableSpec(
            name="token_stats",
            grain="one row per (checkpoint, instance); lists hold one value per scored position",
            schema=pa.schema(
                [
                    ("model", pa.string()),
                    ("step", pa.int64()),
                    ("shard", pa.int32()),
                    ("instance_id", pa.int64()),
                    ("surprisal", pa.list_(pa.float32())),  # -log p(x_i | x_<i), nats
                    ("rank", pa.list_(pa.int32())),  # logits strictly greater than the truth
                    ("entropy", pa.list_(pa.float32())),  # nats
                ]
            ),
            keys=("model", "step", "instance_id"),
            partition_by=("model", "step", "shard"),
        ),
        TableSpec(
            name="extraction",
            grain="one row per (checkpoint, instance, prompt_len, gen_len)",
            schema=pa.schema(
                [
                    ("model", pa.string()),
                    ("step", pa.int64()),
                    ("shard", pa.int32()),
                    ("instance_id", pa.int64()),
                    ("prompt_len", pa.int32()),
                    ("gen_len", pa.int32()),
                    ("generated", TOKENS),
                    ("match_fraction", pa.float32()),
                    ("memorised", pa.bool_()),
                ]
            ),
            keys=("model", "step", "instance_id", "prompt_len", "gen_len"),
            # prompt/gen lengths are partition keys so that a new setting is a new unit of work
            partition_by=("model", "step", "prompt_len", "gen_len", "shard"),
        ),
        TableSpec(
            name="instance_features",
            grain="one row per instance: the taxonomy paper's model-free features of its sample "
            "(tokens 0..prompt_len+k-1), computed against the whole training stream",
            schema=pa.schema(
                [
                    ("instance_id", pa.int64()),
                    ("text", pa.string()),  # decoded sample (prompt_len + k tokens)
                    ("prompt_text", pa.string()),  # decoded first prompt_len tokens
                    ("sequence_duplicates", pa.int64()),  # stream windows equal to the continuation
                    ("whole_sequence_duplicates", pa.int64()),  # stream rows equal to the whole row
                    ("max_frequency", pa.int64()),  # corpus token frequencies over the sample
                    ("avg_frequency", pa.float64()),
                    ("min_frequency", pa.int64()),
                    ("median_frequency", pa.float64()),
                    ("p25_frequency", pa.float64()),
                    ("p75_frequency", pa.float64()),
                    ("frequencies", pa.list_(pa.int64())),  # per sample token, in order
                    ("is_incrementing", pa.bool_()),
                    ("is_repeating", pa.bool_()),  # only tested when not incrementing (as released)
                    ("is_templating", pa.bool_()),
                    ("huffman_coding_length", pa.float64()),  # bits per character
                    ("nl_score", pa.float64()),  # P(natural language)
                    ("semantic_matches_0_8", pa.int64()),  # representative rows, cosine >= 0.8
                    ("semantic_matches_0_9", pa.int64()),
                    ("textual_matches_0_8", pa.int64()),  # ... whose prompt is 1-19 edits away
                    ("textual_matches_0_9", pa.int64()),
                    ("in_representative_sample", pa.bool_()),
                ]
            ),
            keys=("instance_id",),
            checks=(_matches_are_nested,),
        ),
        TableSpec(
            name="stream_counts",
            grain="one row per (training stream, query set, shard, instance) that occurs in the shard: "
            "duplicate counts over one contiguous range of the stream's rows (sum the shards)",
            schema=pa.schema(
                [
                    ("stream", pa.string()),  # digest of the stream's content (ingest/stream.py)
                    ("queries", pa.string()),  # digest of the instances and the window counted
                    ("shards", pa.int32()),  # the stream's rows split into this many ranges
                    ("shard", pa.int32()),
                    ("instance_id", pa.int64()),
                    ("sequence_duplicates", pa.int64()),  # windows equal to the continuation
                    ("whole_sequence_duplicates", pa.int64()),  # rows equal to the row; null: sample only
                ]
            ),
            keys=("stream", "queries", "shards", "shard", "instance_id"),
            partition_by=("stream", "queries", "shards", "shard"),
        ),
        TableSpec(
            name="stream_token_counts",
            grain="one row per (training stream, shard, token id) that occurs in the shard",
            schema=pa.schema(
                [
                    ("stream", pa.string()),
                    ("shards", pa.int32()),
                    ("shard", pa.int32()),
                    ("token_id", pa.int32()),
                    ("count", pa.int64()),
                ]
            ),
            keys=("stream", "shards", "shard", "token_id"),
            partition_by=("stream", "shards", "shard"),
        ),
        TableSpec(
            name="representative_sample",
            grain="one row per (scheme, instance): a uniformly drawn training row of the scheme's "
            "training stream, its first prompt_len + k tokens (the taxonomy's match corpus)",
            schema=pa.schema(
                [
                    ("scheme", pa.string()),  # the training stream: deduped / duped
                    ("shard", pa.int32()),  # source file
                    ("instance_id", pa.int64()),  # row of that stream
                    ("tokens", TOKENS),
                ]
            ),
            keys=("scheme", "instance_id"),
            partition_by=("scheme", "shard"),
        ),
        TableSpec(
            name="representative_scores",
            grain="one row per (checkpoint, instance) of the representative sample: its score",
            schema=pa.schema(
                [
                    ("model", pa.string()),
                    ("step", pa.int64()),
                    ("shard", pa.int32()),  # source file
                    ("instance_id", pa.int64()),
                    # share of the greedy 32-token continuation of the 32-token prompt that is right
                    ("memorization_score", pa.float32()),
                ]
            ),
            keys=("model", "step", "instance_id"),
            partition_by=("model", "step", "shard"),
        ),
        TableSpec(
            name="published_perplexities",
            grain="one row per (checkpoint, instance): perplexities of the instance's 64-token sample "
            "as the taxonomy paper released them",
            schema=pa.schema(
                [
                    ("model", pa.string()),
                    ("step", pa.int64()),
                    ("shard", pa.int32()),  # source file
                    ("instance_id", pa.int64()),
                    # each window's surprisal sum over all 63 scored positions (shared denominator)
                    ("prompt_perplexity", pa.float64()),
                    ("generation_perplexity", pa.float64()),
                    ("sequence_perplexity", pa.float64()),
                    ("loss", pa.float64()),  # mean loss of the scoring batch, not of the row
                ]
            ),
            keys=("model", "step", "instance_id"),
            partition_by=("model", "step", "shard"),
        ),
        TableSpec(
            name="mitigation_runs",
            grain="one row per mitigation run (method, hyper-parameters, seed) of a study",
            schema=pa.schema(
                [
                    ("study", pa.string()),
                    ("run_id", pa.string()),
                    ("method", pa.string()),
                    ("kind", pa.string()),  # regulariser / fine_tuning / neuron / weight / baseline
                    ("hparams", pa.string()),  # JSON
                    ("seed", pa.int64()),
                    ("model", pa.string()),
                    ("step", pa.int64()),  # base checkpoint step (TinyMem: epochs)
                    ("n_forget", pa.int64()),  # memorised sequences the method was asked to forget
                    ("mem_before", pa.float64()),  # percent memorised before the edit
                    ("mem_after", pa.float64()),
                    ("clean_before", pa.float64()),  # percent giving the clean continuation (TinyMem)
                    ("clean_after", pa.float64()),
                    ("acc_before", pa.float64()),  # percent, clean test sets averaged
                    ("acc_after", pa.float64()),
                    ("ppl_before", pa.float64()),  # perplexity, clean tests / held-out rows
                    ("ppl_after", pa.float64()),
                    ("seconds", pa.float64()),
                    ("stats", pa.string()),  # JSON: method-specific (neurons removed, ...)
                    ("mem_before_dup0", pa.float64()),
                    ("mem_after_dup0", pa.float64()),
                    ("mem_before_dup1", pa.float64()),
                    ("mem_after_dup1", pa.float64()),
                    ("mem_before_dup2", pa.float64()),
                    ("mem_after_dup2", pa.float64()),
                    ("mem_before_dup3", pa.float64()),
                    ("mem_after_dup3", pa.float64()),
                ]
            ),
            keys=("study", "run_id"),
            partition_by=("study", "run_id"),  # one partition per run: sweeps resume run by run
        ),
    ]
}


def spec(table: str) -> TableSpec:
    try:
        return TABLES[table]
    except KeyError:
        raise MemlakeError(f"unknown lake table {table!r} (known: {sorted(TABLES)})") from None


_DUCKDB_SCALARS = {
    pa.string(): "varchar",
    pa.int64(): "bigint",
    pa.int32(): "integer",
    pa.float64(): "double",
    pa.float32(): "float",
    pa.bool_(): "boolean",
}


def duckdb_type(arrow_type: pa.DataType) -> str:
    """The DuckDB type name (as `models/staging/__sources.yml` spells it) of a contract column type:
    the dbt sources restate each lake column's type (an empty table's relation, the contract-column
    source test), and tests/test_warehouse.py checks them against TABLES with this, so that this
    module stays the one definition of the contract."""
    if pa.types.is_list(arrow_type):
        return duckdb_type(arrow_type.value_type) + "[]"
    try:
        return _DUCKDB_SCALARS[arrow_type]
    except KeyError:
        raise MemlakeError(
            f"no DuckDB type for Arrow type {arrow_type} (known: {', '.join(map(str, _DUCKDB_SCALARS))}, "
            "and lists of them)"
        ) from None


# --------------------------------------------------------------------------- provenance


@cache
def code_version() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from memlake import __version__

    return __version__


@cache
def package_versions() -> dict[str, str]:
    versions = {}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


# --------------------------------------------------------------------------- paths


_SAFE_VALUE = re.compile(r"^[A-Za-z0-9._+-]+$")


def partition_dir(wh: Warehouse, table: str, partition: Mapping[str, Any]) -> Path:
    s = spec(table)
    if set(partition) != set(s.partition_by):
        raise MemlakeError(
            f"table {table!r} is partitioned by {list(s.partition_by)}, got {sorted(partition)}"
        )
    path = wh.table(table)
    for key in s.partition_by:
        value = str(partition[key])
        if not _SAFE_VALUE.match(value):
            raise MemlakeError(f"table {table!r}: partition value {key}={value!r} is not path-safe")
        path = path / f"{key}={value}"
    return path


def is_complete(wh: Warehouse, table: str, partition: Mapping[str, Any]) -> bool:
    return (partition_dir(wh, table, partition) / MANIFEST).exists()


# --------------------------------------------------------------------------- validation


def _as_table(data: Any) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, dict):
        return pa.table(data)
    if hasattr(data, "to_arrow"):  # polars
        return data.to_arrow()
    raise MemlakeError(f"cannot write object of type {type(data).__name__} to the lake")


def validate(table: str, data: Any, partition: Mapping[str, Any] | None = None) -> pa.Table:
    """Cast `data` to the table's file schema or raise a one-line error naming the problem."""
    s = spec(table)
    t = _as_table(data)
    partition = dict(partition or {})
    # Partition columns may be present in the data; they must agree with the path.
    for key in s.partition_by:
        if key in t.column_names:
            values = pc.unique(t[key]).to_pylist()
            if values and [str(v) for v in values] != [str(partition.get(key))]:
                raise MemlakeError(
                    f"table {table!r}: column {key!r} has {values[:3]} but partition "
                    f"says {partition.get(key)!r}"
                )
            t = t.drop_columns([key])
    want = s.file_schema
    for name in s.optional:
        if name in want.names and name not in t.column_names:
            t = t.append_column(name, pa.nulls(t.num_rows, want.field(name).type))
    missing = [f.name for f in want if f.name not in t.column_names]
    if missing:
        raise MemlakeError(f"table {table!r}: missing required column(s) {missing}")
    extra = [c for c in t.column_names if c not in want.names]
    if extra:
        raise MemlakeError(f"table {table!r}: unknown column(s) {extra} (not in the contract)")
    columns = []
    for f in want:
        col = t[f.name]
        if not col.type.equals(f.type):
            try:
                col = col.cast(f.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise MemlakeError(
                    f"table {table!r}: column {f.name!r} has type {col.type}, expected "
                    f"{f.type} ({str(e).splitlines()[0]})"
                ) from None
        columns.append(col)
    t = pa.Table.from_arrays(columns, schema=want)
    for key in s.keys:
        if key in t.column_names and t[key].null_count:
            raise MemlakeError(f"table {table!r}: key column {key!r} has null values")
    file_keys = [k for k in s.keys if k in t.column_names]
    if file_keys and t.num_rows:
        n_unique = t.group_by(file_keys).aggregate([]).num_rows
        if n_unique != t.num_rows:
            dup = _first_duplicate(t, file_keys)
            raise MemlakeError(f"table {table!r}: duplicated key {dict(zip(file_keys, dup))}")
    for check in s.checks:
        problem = check(t)
        if problem:
            raise MemlakeError(f"table {table!r}: {problem}")
    return t


def _first_duplicate(t: pa.Table, keys: list[str]) -> tuple:
    counts = t.group_by(keys).aggregate([([], "count_all")])
    dup = counts.filter(pc.greater(counts["count_all"], 1)).slice(0, 1).to_pylist()[0]
    return tuple(dup[k] for k in keys)


# --------------------------------------------------------------------------- writer


def write_partition(
    wh: Warehouse,
    table: str,
    data: Any,
    partition: Mapping[str, Any] | None = None,
    *,
    config: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    _before_rename: Callable[[Path], None] | None = None,
) -> Path:
    """Validate and atomically write one partition; skip it if it is already complete.

    The data file and manifest are written into a fresh directory under `lake/_tmp/` and the
    directory is renamed into place, which is atomic on one filesystem.
    """
    return write_partition_stream(
        wh, table, [data], partition, config=config, overwrite=overwrite, _before_rename=_before_rename
    )


_FLUSH_BYTES = 64 << 20  # row groups of about this size: few enough for the footer, small in memory


def write_partition_stream(
    wh: Warehouse,
    table: str,
    pieces: Iterable[Any],
    partition: Mapping[str, Any] | None = None,
    *,
    config: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    _before_rename: Callable[[Path], None] | None = None,
) -> Path:
    """`write_partition` for data that need not fit in memory: `pieces` (each anything `validate`
    takes) are validated and appended one at a time, keys are checked unique across all of them
    (checks must be row-wise), and the partition appears only once the last piece is written
    (nothing on an error)."""
    partition = dict(partition or {})
    final = partition_dir(wh, table, partition)
    if (final / MANIFEST).exists() and not overwrite:
        return final
    s = spec(table)
    file_keys = [k for k in s.keys if k not in s.partition_by]
    tmp = wh.staging / f"{table}-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    try:
        data_path = tmp / DATA_FILE
        rows, keys, buffer, buffered = 0, [], [], 0
        with pq.ParquetWriter(data_path, s.file_schema, compression="zstd") as writer:
            for piece in pieces:
                t = validate(table, piece, partition)
                rows += t.num_rows
                keys.append(t.select(file_keys))
                buffer.append(t)
                buffered += t.nbytes
                if buffered >= _FLUSH_BYTES:
                    writer.write_table(pa.concat_tables(buffer))
                    buffer, buffered = [], 0
            if buffer or not rows:
                writer.write_table(pa.concat_tables(buffer) if buffer else s.file_schema.empty_table())
        if len(keys) > 1 and file_keys and rows:
            all_keys = pa.concat_tables(keys)
            if all_keys.group_by(file_keys).aggregate([]).num_rows != rows:
                dup = _first_duplicate(all_keys, file_keys)
                raise MemlakeError(f"table {table!r}: duplicated key {dict(zip(file_keys, dup))}")
        del keys
        manifest = {
            "table": table,
            "grain": s.grain,
            "partition": partition,
            "rows": rows,
            "files": {DATA_FILE: sha256(data_path)},
            "schema": [f"{f.name}: {f.type}" for f in s.file_schema],
            "config": dict(config or {}),
            "code_version": code_version(),
            "packages": package_versions(),
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        if _before_rename is not None:  # test hook: simulate a crash mid-write
            _before_rename(tmp)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # an incomplete leftover or an overwrite: move it aside first
            trash = wh.staging / f"trash-{uuid.uuid4().hex}"
            os.rename(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- reader


def partitions(wh: Warehouse, table: str) -> list[Path]:
    """Every complete partition directory of `table`; raises on an incomplete one."""
    s = spec(table)
    root = wh.table(table)
    if not root.exists():
        return []
    depth = len(s.partition_by)
    dirs = [root] if depth == 0 else sorted(p for p in root.glob("/".join(["*"] * depth)))
    out = []
    for d in dirs:
        if not d.is_dir():
            continue
        if not (d / MANIFEST).exists():
            if any(d.glob("*.parquet")):
                raise MemlakeError(
                    f"{d}: partition has data but no {MANIFEST} (an interrupted or foreign "
                    "write); delete it and re-run the job that writes it"
                )
            continue
        out.append(d)
    return out


def data_files(wh: Warehouse, table: str) -> list[Path]:
    return [d / DATA_FILE for d in partitions(wh, table)]


def manifest(partition: Path) -> dict[str, Any]:
    return json.loads((partition / MANIFEST).read_text())


def read_table(wh: Warehouse, table: str, columns: list[str] | None = None, verify: bool = False) -> pa.Table:
    """Read every complete partition of `table` as one Arrow table (partition keys included)."""
    s = spec(table)
    parts = partitions(wh, table)
    if not parts:
        raise MemlakeError(f"lake table {table!r} is empty: no complete partitions under {wh.table(table)}")
    pieces = []
    for d in parts:
        path = d / DATA_FILE
        if verify:
            expected = manifest(d)["files"][DATA_FILE]
            if sha256(path) != expected:
                raise MemlakeError(f"{path}: content hash does not match its manifest")
        try:
            file_schema = pq.read_schema(path)
        except (pa.ArrowInvalid, OSError) as e:
            raise MemlakeError(f"{path}: unreadable Parquet ({str(e).splitlines()[0]})") from None
        wanted = [c for c in columns or s.file_schema.names if c not in s.partition_by]
        absent = [c for c in wanted if c not in file_schema.names and c in s.optional]
        wanted = [c for c in wanted if c not in absent]
        missing = [c for c in wanted if c not in file_schema.names]
        if missing:
            raise MemlakeError(
                f"{path}: schema does not match the {table!r} contract (missing column(s) {missing})"
            )
        for name in wanted:
            if not file_schema.field(name).type.equals(s.schema.field(name).type):
                raise MemlakeError(
                    f"{path}: schema does not match the {table!r} contract "
                    f"(column {name!r} is {file_schema.field(name).type})"
                )
        piece = pq.read_table(path, columns=wanted)
        for name in absent:  # an optional column this older partition predates
            field_ = s.schema.field(name)
            piece = piece.append_column(field_, pa.nulls(piece.num_rows, field_.type))
        values = _partition_values(d, s)
        for key in s.partition_by:
            if columns is None or key in columns:
                arr = pa.array([values[key]] * piece.num_rows, s.schema.field(key).type)
                piece = piece.append_column(s.schema.field(key), arr)
        pieces.append(piece)
    out = pa.concat_tables(pieces)
    order = [c for c in (columns or s.schema.names) if c in out.column_names]
    return out.select(order)


def _partition_values(d: Path, s: TableSpec) -> dict[str, Any]:
    values = {}
    for part in d.parts[-len(s.partition_by) :] if s.partition_by else []:
        k, v = part.split("=", 1)
        typ = s.schema.field(k).type
        values[k] = int(v) if pa.types.is_integer(typ) else v
    return values
