"""Import public Hugging Face Hub datasets into the lake tables the embedded pipeline writes.

| kind | Hub dataset | lake tables |
|---|---|---|
| `pile-deduped-subset` | pietrolesci/pile-deduped-subset | instances (whole rows) |
| `pythia-deduped-stats-raw` | pietrolesci/pythia-deduped-stats-raw | token_stats |
| `pythia-memorized-evals` | EleutherAI/pythia-memorized-evals | extraction, instances (samples) |
| `pile-deduped-pythia-random-sampled` | EleutherAI/(same name) | representative_sample, _scores |
| `pile-duped-pythia-random-sampled` | EleutherAI/(same name) | representative_sample, _scores |
| `semantic-filters` | usvsnsp/semantic-filters | instance_features, extraction, |
| | | published_perplexities, instances (samples) |
| `semantic-filters-intermediate` | usvsnsp/semantic-filters-intermediate | as semantic-filters |

Every public column and its memlake name (model = `pythia-<size>` plus `-deduped` for the
deduped scheme, the Hub name without owner; step = 143000 unless a split names one):

| public column | lake table.column |
|---|---|
| **pile-deduped-subset** | |
| `seq_idx` | instances.instance_id (< 0: validation) |
| | instances.batch_idx = seq_idx // 1024, cohort = 1000 * (seq_idx // 1,024,000 + 1) |
| `input_ids` (2,049 tokens) | instances.tokens (sample_only false) |
| **pythia-deduped-stats-raw** | |
| folder `<size>/pythia-<scheme>-<size>-step<N>_*` | token_stats.model, step |
| `seq_idx`, `sup`, `rank`, `entropy` | token_stats.instance_id, surprisal, rank, entropy |
| **pythia-memorized-evals** | |
| split `<scheme>.<size>[.<step>]` | extraction.model, step |
| `index` | extraction.instance_id, instances.instance_id |
| `tokens` (64) | instances.tokens (sample_only); extraction.generated = tokens 32..63 |
| (every row) | extraction.match_fraction 1, memorised, prompt_len = gen_len = 32 |
| **pile-{deduped,duped}-pythia-random-sampled** | |
| (dataset name) | representative_sample.scheme |
| `Index` | representative_sample / representative_scores .instance_id |
| `Tokens` (64, uint16) | representative_sample.tokens |
| `70M` ... `12B` | representative_scores.memorization_score of that model |
| **semantic-filters, semantic-filters-intermediate** | |
| split `{pile,memories}_<scheme>_<size>[.<step>]` | model, step of every table below |
| `sequence_id` | instance_id of every table |
| `tokens` (64) | instances.tokens (sample_only, where the instance is absent) |
| `text` | instance_features.text (prompt_text: null) |
| `is_incrementing`, `is_repeating` | instance_features, same names; is_templating = either |
| `sequence_duplicates` | instance_features, same name (whole_sequence_duplicates: null) |
| `max/avg/min/median/p25/p75_frequency` | instance_features, same names |
| `frequencies` | instance_features.frequencies |
| `nl_scores` | instance_features.nl_score |
| `0_8_snowclones`, `0_9_snowclones` | instance_features.semantic_matches_0_8, _0_9 |
| `0_8_templates`, `0_9_templates` | instance_features.textual_matches_0_8, _0_9 |
| `huffman_coding_length` | instance_features, same name |
| (split origin) | instance_features.in_representative_sample = a pile split |
| `memorization_score` | extraction.match_fraction (memories: 1), memorised = score 1, |
| | extraction.generated = tokens 32..63 where memorised |
| `prompt_perplexity`, `generation_perplexity` | published_perplexities, same names |
| `sequence_perplexity`, `loss` | published_perplexities, same names |
| `repeating_offset`, `num_repeating` | - (unused by the taxonomy) |
| `smallest_repeating_chunk` | - (unused by the taxonomy) |

`swap_matches` reads `templates` as the semantic and `snowclones` as the textual counts, for a
release whose names are the other way round (textual matches never exceed semantic ones).

Every importer takes `source`: a Hub dataset id (only the files needed are fetched with
`huggingface_hub.snapshot_download`) or a local directory holding the same files. Files are
streamed in record batches and written with `lake.write_partition_stream`, so memory is bounded
by a batch plus a few bytes per row (ids and token digests); a re-import skips what its
manifests record as imported.

One warehouse holds one training stream (`instances` is keyed by the row's index in it): the
Pythia `deduped` stream unless `scheme="duped"`. `instances` is one partition, rewritten
atomically by every import that adds rows; its manifest lists the imported files. A sample row
(64 tokens, `sample_only`) is added only for an index that is not an instance yet, and a whole
row replaces the sample of its index, so the imports compose in any order; the first 64 tokens
of every row of an index must agree (else a one-line error, nothing written). Likewise the
rows of an (model, step, instance) already in `extraction` or `published_perplexities` are kept
(within one semantic-filters import the pile split's row wins over the memories split's, as
in the paper). Stats-raw runs must cover exactly the panel (the whole rows of `instances`): the
import that comes second, stats or panel, checks it.
"""

from __future__ import annotations

import inspect
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from memlake.core import lake
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse

# Pythia's training stream: 1024 rows per optimiser step, a checkpoint every 1000 steps, and
# the memorisation evaluations at the final checkpoint with 32-token prompts/continuations.
PYTHIA_BATCH_SIZE = 1024
PYTHIA_CHECKPOINT_EVERY = 1000
PYTHIA_FINAL_STEP = 143_000
PYTHIA_STREAM_ROWS = PYTHIA_FINAL_STEP * PYTHIA_BATCH_SIZE  # 146,432,000 rows
PROMPT_LEN = 32
GEN_LEN = 32
SAMPLE_LEN = PROMPT_LEN + GEN_LEN
READ_BATCH_ROWS = 1024  # a stats-raw row holds 3 x 2048 values: ~25 MB per batch
SAMPLE_BATCH_ROWS = 16_384  # a row of a 64-token sample with its features: ~1.5 KB, ~25 MB per batch
# The tokenizer of every Pythia model (GPT-NeoX-20B's); the pile subset's token ids are its ids.
# Recorded in the instances manifest (`config.tokenizer`) so later jobs decode with it.
PYTHIA_TOKENIZER = "EleutherAI/pythia-70m-deduped"
SCHEMES = ("deduped", "duped")

HUB_REPOS = {
    "pile-deduped-subset": "pietrolesci/pile-deduped-subset",
    "pythia-deduped-stats-raw": "pietrolesci/pythia-deduped-stats-raw",
    "pythia-memorized-evals": "EleutherAI/pythia-memorized-evals",
    "pile-deduped-pythia-random-sampled": "EleutherAI/pile-deduped-pythia-random-sampled",
    "pile-duped-pythia-random-sampled": "EleutherAI/pile-duped-pythia-random-sampled",
    "semantic-filters": "usvsnsp/semantic-filters",
    "semantic-filters-intermediate": "usvsnsp/semantic-filters-intermediate",
}

_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_SPLIT_FILE = re.compile(r"^(?P<split>.+?)-\d{5}-of-\d{5}")  # push_to_hub: <split>-00000-of-00001
_SIZE = r"\d+(?:\.\d+)?[mb]"
# hydra run_name of the stats-raw runs: pythia-deduped-<size>-step<N>_<timestamp>
_RUN_DIR = re.compile(rf"^pythia-(?P<scheme>deduped|duped)-(?P<size>{_SIZE})-step(?P<step>\d+)(?:_.*)?$")
# memorized-evals splits: <scheme>.<size>, or <scheme>.<size>.<step> for intermediate checkpoints
_EVAL_SPLIT = re.compile(rf"^(?P<scheme>deduped|duped)\.(?P<size>{_SIZE})(?:\.(?P<step>\d+))?$")
# semantic-filters splits: pile_<scheme>_<size> (the representative sample, scored by that model)
# and memories_<scheme>_<size>[.<step>] (its memorised rows)
_FILTER_SPLIT = re.compile(
    rf"^(?P<origin>pile|memories)_(?P<scheme>deduped|duped)_(?P<size>{_SIZE})(?:\.(?P<step>\d+))?$"
)
_SCORE_COLUMN = re.compile(rf"^(?P<size>{_SIZE})$", re.IGNORECASE)  # random-sampled: 70M ... 12B


@dataclass
class ImportSummary:
    kind: str
    tables: list[str] = field(default_factory=list)  # lake tables this import writes
    written: int = 0  # partitions written by this call
    skipped: int = 0  # partitions already complete (or imports already merged)
    rows: int = 0  # rows written by this call

    @property
    def table(self) -> str:
        return ", ".join(self.tables)


# --------------------------------------------------------------------------- sources


def resolve_source(source: str, allow_patterns: list[str] | None = None, revision: str | None = None) -> Path:
    """A local directory as is, or a Hub dataset id downloaded (only `allow_patterns`) to the cache."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists() or not _REPO_ID.match(source):
        raise MemlakeError(f"{source!r} is neither a local directory nor a Hub dataset id (owner/name)")
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(
            repo_id=source, repo_type="dataset", allow_patterns=allow_patterns, revision=revision
        )
    except Exception as e:  # offline, unknown repo, HTTP errors: many exception types, one message
        first = str(e).splitlines()[0] if str(e) else ""
        raise MemlakeError(f"cannot download Hub dataset {source!r} ({type(e).__name__}: {first})") from None
    return Path(local)


def _parquet_files(root: Path) -> list[Path]:
    # Hidden folders hold download caches (.cache/huggingface), never data.
    files = sorted(
        p for p in root.rglob("*.parquet") if not any(s.startswith(".") for s in p.relative_to(root).parts)
    )
    if not files:
        raise MemlakeError(f"{root}: no Parquet files found")
    return files


def _split_of(path: Path) -> str:
    """`data/<split>-00000-of-00001*.parquet` (push_to_hub), else the parent folder's name."""
    m = _SPLIT_FILE.match(path.name)
    return m.group("split") if m else path.parent.name


def _split_patterns(splits: Sequence[str]) -> list[str]:
    return [p for s in splits for p in (f"data/{s}-*.parquet", f"*/{s}/*.parquet")]


@dataclass(frozen=True)
class _Src:
    """A source file and what its split name says."""

    path: Path
    rel: str  # path inside the dataset: what manifests record
    split: str
    scheme: str | None = None
    model: str | None = None
    step: int | None = None
    origin: str | None = None  # semantic-filters: pile (representative rows) or memories


# --------------------------------------------------------------------------- reading


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t)


_INT = ("an integer", pa.types.is_integer)
_NUM = ("a number", lambda t: pa.types.is_integer(t) or pa.types.is_floating(t))
_BOOL = ("a boolean", pa.types.is_boolean)
_STR = ("a string", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t))
_INT_LIST = ("a list of integers", lambda t: _is_list(t) and pa.types.is_integer(t.value_type))
_FLOAT_LIST = ("a list of floats", lambda t: _is_list(t) and pa.types.is_floating(t.value_type))


def _batches(
    path: Path, want: dict[str, tuple[str, Callable[[pa.DataType], bool]]], rows: int = READ_BATCH_ROWS
) -> Iterator[pa.RecordBatch]:
    """Stream the `want` columns of `path` after checking that they exist with the right types."""
    schema = _schema(path)
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


def _schema(path: Path) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise MemlakeError(f"{path}: unreadable Parquet ({str(e).splitlines()[0]})") from None


def _ids(path: Path, batch: pa.RecordBatch, name: str) -> np.ndarray:
    col = batch.column(name)
    if col.null_count:
        raise MemlakeError(f"{path}: column {name!r} has null values")
    return col.to_numpy().astype(np.int64)


def _train_ids(path: Path, batch: pa.RecordBatch, name: str, stream_rows: int) -> np.ndarray:
    """Row indices of the training stream: 0 <= id < stream_rows (Pythia: 143,000 steps x 1,024)."""
    ids = _ids(path, batch, name)
    bad = (ids < 0) | (ids >= stream_rows)
    if bad.any():
        raise MemlakeError(
            f"{path}: column {name!r} has value {int(ids[bad][0])}, not a row of the training stream "
            f"(0..{stream_rows - 1:,}; stream_rows = {stream_rows:,})"
        )
    return ids


def _sample_tokens(path: Path, batch: pa.RecordBatch, name: str) -> pa.Array:
    """The column's 64-token samples (prompt + continuation) as the lake's token type."""
    tokens = batch.column(name)
    lengths = pc.fill_null(pc.list_value_length(tokens), 0)
    wrong = pc.filter(lengths, pc.not_equal(lengths, SAMPLE_LEN))
    if len(wrong):
        raise MemlakeError(
            f"{path}: column {name!r} has a row of {wrong[0].as_py()} tokens (expected "
            f"{SAMPLE_LEN} = {PROMPT_LEN}-token prompt + {GEN_LEN}-token continuation)"
        )
    return _cast(path, name, tokens, lake.TOKENS)


def _cast(path: Path, name: str, arr: pa.Array, typ: pa.DataType) -> pa.Array:
    try:
        return arr.cast(typ, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise MemlakeError(f"{path}: column {name!r} does not fit {typ} ({str(e).splitlines()[0]})") from None


def _validated(path: Path, table: str, data: pa.Table, partition: dict[str, Any] | None = None) -> pa.Table:
    """The contract's checks on converted rows, before anything is written; errors name the file."""
    try:
        return lake.validate(table, data, partition)
    except MemlakeError as e:
        raise MemlakeError(f"{path}: {e}") from None


# odd 64-bit multipliers: a row's digest is sum(token_i * _MIX[i]) mod 2^64 plus its length
_MIX = np.random.default_rng(0x5EED).integers(1, 1 << 62, SAMPLE_LEN, dtype=np.uint64) * np.uint64(2)
_MIX += np.uint64(1)


def _digests(tokens: pa.Array | pa.ChunkedArray) -> np.ndarray:
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


def _cat(arrays: list[np.ndarray], dtype: Any) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype)


def _first_occurrence(ids: np.ndarray) -> np.ndarray:
    keep = np.zeros(len(ids), dtype=bool)
    keep[np.unique(ids, return_index=True)[1]] = True
    return keep


def _provenance(kind: str, source: str, revision: str | None, **where: Any) -> dict[str, Any]:
    """The manifest config of an imported partition: which dataset, revision and file(s)."""
    return {"import": kind, "source": source, "revision": revision, **where}


def _as_list(value: Any) -> list | None:
    # A lone string (or number) from a CLI means one item, not a sequence of characters.
    if value is None or isinstance(value, str | int):
        return None if value is None else [value]
    return list(value) or None


def _model(scheme: str, size: str) -> str:
    # Pythia's naming: the deduped suite carries a suffix, the standard ("duped") one does not.
    return f"pythia-{size.lower()}" + ("-deduped" if scheme.lower() == "deduped" else "")


def _scheme(scheme: str) -> str:
    s = str(scheme).lower()
    if s not in SCHEMES:
        raise MemlakeError(f"scheme {scheme!r}: expected one of {list(SCHEMES)}")
    return s


def _write(
    wh: Warehouse, table: str, pieces: list[pa.Table], partition: dict, config: dict, where: Path
) -> int:
    data = pa.concat_tables(pieces) if pieces else lake.spec(table).file_schema.empty_table()
    try:
        lake.write_partition(wh, table, data, partition, config=config)
    except MemlakeError as e:  # the contract names the column; add the file it came from
        raise MemlakeError(f"{where}: {e}") from None
    return data.num_rows


def _write_stream(
    wh: Warehouse, table: str, pieces: Iterator[pa.Table], partition: dict, config: dict, *, overwrite=False
) -> int:
    rows = 0

    def counted() -> Iterator[pa.Table]:
        nonlocal rows
        for t in pieces:
            rows += t.num_rows
            yield t

    lake.write_partition_stream(wh, table, counted(), partition, config=config, overwrite=overwrite)
    return rows


# --------------------------------------------------------------------------- partitioned tables


def _partition_dirs(wh: Warehouse, table: str, fixed: dict[str, Any]) -> list[tuple[Path, dict[str, str]]]:
    """Partition directories of `table` whose keys equal `fixed` (complete or not), with their values."""
    s = lake.spec(table)
    if not s.partition_by:
        return [(wh.table(table), {})] if wh.table(table).is_dir() else []
    pattern = "/".join(f"{k}={fixed[k]}" if k in fixed else f"{k}=*" for k in s.partition_by)
    out = []
    for d in sorted(wh.table(table).glob(pattern)):
        if d.is_dir():
            out.append((d, dict(p.split("=", 1) for p in d.relative_to(wh.table(table)).parts)))
    return out


def _imported(wh: Warehouse, table: str, fixed: dict[str, Any], kind: str, rel: str) -> bool:
    """Whether a complete partition under `fixed` holds the rows of `kind`'s file `rel`."""
    for d, _ in _partition_dirs(wh, table, fixed):
        if (d / lake.MANIFEST).exists():
            config = lake.manifest(d).get("config", {})
            if config.get("import") == kind and config.get("file") == rel:
                return True
    return False


def _next_shard(wh: Warehouse, table: str, fixed: dict[str, Any]) -> int:
    shards = [int(v["shard"]) for _, v in _partition_dirs(wh, table, fixed)]
    return max(shards, default=-1) + 1


def _existing_ids(wh: Warehouse, table: str, fixed: dict[str, Any]) -> np.ndarray:
    ids = [
        pq.read_table(d / lake.DATA_FILE, columns=["instance_id"])["instance_id"].to_numpy()
        for d, _ in _partition_dirs(wh, table, fixed)
        if (d / lake.MANIFEST).exists()
    ]
    return np.concatenate(ids) if ids else np.zeros(0, np.int64)


@dataclass
class _PerFile:
    """One source file's rows of a (model, step)-partitioned table, less rows already there."""

    table: str
    src: _Src
    fixed: dict[str, Any]  # partition keys but the shard
    keep: np.ndarray  # per source row, in file order


def _plan_per_file(
    wh: Warehouse, table: str, kind: str, scanned: list[tuple[_Src, np.ndarray]], fixed_of: Callable
) -> tuple[list[_PerFile], int]:
    """Which rows of each file to write: a (model, step, instance) already in the table, or in an
    earlier file of this import, is kept as it is. Returns the plans and the files already done."""
    plans, done = [], 0
    seen: dict[tuple, np.ndarray] = {}
    for src, ids in scanned:
        fixed = fixed_of(src)
        key = tuple(sorted(fixed.items()))
        if _imported(wh, table, fixed, kind, src.rel):
            done += 1
            continue
        if key not in seen:
            seen[key] = _existing_ids(wh, table, fixed)
        keep = _first_occurrence(ids) & ~np.isin(ids, seen[key])
        seen[key] = np.concatenate([seen[key], ids[keep]])
        plans.append(_PerFile(table, src, fixed, keep))
    return plans, done


def _write_per_file(wh: Warehouse, plan: _PerFile, pieces: Iterator[pa.Table], config: dict[str, Any]) -> int:
    partition = {**plan.fixed, "shard": _next_shard(wh, plan.table, plan.fixed)}
    return _write_stream(wh, plan.table, _masked(pieces, plan.keep), partition, config)


def _masked(pieces: Iterator[pa.Table], keep: np.ndarray) -> Iterator[pa.Table]:
    """The rows of `pieces` whose position (counted over all pieces) is kept."""
    at = 0
    for t in pieces:
        mask = keep[at : at + t.num_rows]
        at += t.num_rows
        yield t if mask.all() else t.filter(pa.array(mask))


# --------------------------------------------------------------------------- instances


_LEGACY = {"pile-deduped-subset": "pile-deduped"}  # instances manifests that predate `corpus`


def _corpus_of(config: dict[str, Any]) -> str | None:
    return config.get("corpus") or _LEGACY.get(config.get("import", ""))


def _imports_of(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The files merged into a single-partition table, from its manifest config."""
    if "imports" in config:
        return list(config["imports"])
    if config.get("import"):  # one import, its files listed together
        keep = {k: config.get(k) for k in ("import", "source", "revision")}
        return [{**keep, "file": f} for f in config.get("files", [])]
    return []


def _instances_config(wh: Warehouse, corpus: str) -> dict[str, Any]:
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
class _Candidates:
    """The rows an import offers a single-partition table, in stream order."""

    srcs: list[_Src] = field(default_factory=list)
    ids: list[np.ndarray] = field(default_factory=list)
    digests: list[np.ndarray] = field(default_factory=list)

    def add(self, src: _Src, ids: np.ndarray, digests: np.ndarray | None = None) -> None:
        self.srcs.append(src)
        self.ids.append(ids)
        self.digests.append(digests if digests is not None else np.zeros(len(ids), np.uint64))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, digests, index of the file of each row)."""
        owner = [np.full(len(i), n, np.int32) for n, i in enumerate(self.ids)]
        return _cat(self.ids, np.int64), _cat(self.digests, np.uint64), _cat(owner, np.int32)


def _existing_instances(wh: Warehouse, digests: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, digests of the first 64 tokens (zeros unless `digests`), sample_only) of the
    instances partition, in file order."""
    path = wh.table("instances") / lake.DATA_FILE
    f = pq.ParquetFile(path)
    columns = ["instance_id"] + (["tokens"] if digests else [])
    columns += ["sample_only"] if "sample_only" in f.schema_arrow.names else []
    ids, digest, sample = [], [], []
    for b in f.iter_batches(batch_size=8192, columns=columns):
        ids.append(b.column("instance_id").to_numpy())
        digest.append(_digests(b.column("tokens")) if digests else np.zeros(b.num_rows, np.uint64))
        flag = b.column("sample_only") if "sample_only" in columns else pa.nulls(b.num_rows, pa.bool_())
        sample.append(pc.fill_null(flag, False).to_numpy(zero_copy_only=False))
    return _cat(ids, np.int64), _cat(digest, np.uint64), _cat(sample, bool)


_NO_INSTANCES = (np.zeros(0, np.int64), np.zeros(0, np.uint64), np.zeros(0, bool))


def _plan_instances(
    wh: Warehouse,
    cands: _Candidates,
    rows: Callable[[_Src], Iterator[pa.Table]],
    *,
    corpus: str,
    whole: bool,
    id_col: str,
    records: list[dict[str, Any]],
    tokenizer: str | None = None,
) -> Callable[[], int] | None:
    """Check `cands` against each other and the instances partition; return the write that merges
    them into it (None if there is nothing to add). A sample row is added only for an index that
    is not an instance yet; a whole row replaces a sample of its index. The first 64 tokens of
    every row of an index must agree."""
    config = _instances_config(wh, corpus)
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
    ex_ids, ex_digests, ex_sample = _existing_instances(wh) if exists else _NO_INSTANCES
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
    if not keep.any() and not drop.any():
        return None
    merged = {
        "corpus": corpus,
        "tokenizer": str(tokenizer or config.get("tokenizer") or PYTHIA_TOKENIZER),
        "imports": _imports_of(config) + records,
    }

    def pieces() -> Iterator[pa.Table]:
        if exists:
            yield from _masked(_read_batches(wh.table("instances") / lake.DATA_FILE), ~drop)
        yield from _masked((t for src in cands.srcs for t in rows(src)), keep)

    return lambda: _write_stream(wh, "instances", pieces(), {}, merged, overwrite=True)


def _read_batches(path: Path) -> Iterator[pa.Table]:
    for b in pq.ParquetFile(path).iter_batches(batch_size=8192):
        yield pa.Table.from_batches([b])


def _cohorts(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(batch_idx, cohort) of training rows: the batch that consumed the row, and the first
    checkpoint after it (floor form; the DiD treatment time)."""
    batch_idx = ids // PYTHIA_BATCH_SIZE
    return batch_idx, PYTHIA_CHECKPOINT_EVERY * (batch_idx // PYTHIA_CHECKPOINT_EVERY + 1)


def _instance_rows(ids: np.ndarray, tokens: pa.Array, split: str, *, sample: bool) -> pa.Table:
    n = len(ids)
    train = split == "train"
    batch_idx, cohort = _cohorts(ids)
    return pa.table(
        {
            "instance_id": pa.array(ids, pa.int64()),
            "split": pa.array([split] * n, pa.string()),
            "tokens": tokens,
            "batch_idx": pa.array(batch_idx, pa.int64()) if train else pa.nulls(n, pa.int64()),
            "cohort": pa.array(cohort, pa.int64()) if train else pa.nulls(n, pa.int64()),
            "source": pa.array(["pile"] * n, pa.string()),
            "artifact": pa.array(["none"] * n, pa.string()),
            "copies": pa.nulls(n, pa.int32()),  # unknown for the Pile
            "clean_tokens": pa.nulls(n, lake.TOKENS),
            "sample_only": pa.array(np.full(n, sample), pa.bool_()),
        }
    )


def _instances_todo(wh: Warehouse, corpus: str, scanned: list, kind: str) -> list:
    """The scanned files whose rows the instances manifest does not record yet."""
    done = {(r.get("import"), r.get("file")) for r in _imports_of(_instances_config(wh, corpus))}
    return [s for s in scanned if (kind, s[0].rel) not in done]


# --------------------------------------------------------------------------- stats vs panel


def _panel_ids(wh: Warehouse) -> np.ndarray | None:
    """Instance ids of the whole rows (the panel), or None when there are none."""
    if not lake.is_complete(wh, "instances", {}):
        return None
    ids, _, sample = _existing_instances(wh, digests=False)
    ids = ids[~sample]
    return np.sort(ids) if len(ids) else None


def _check_run_covers_panel(where: str, files: dict[str, np.ndarray], panel: np.ndarray) -> None:
    """A stats run (all its files, by name) must score exactly the panel's rows."""
    for name, ids in files.items():
        extra = ids[~np.isin(ids, panel)]
        if len(extra):
            raise MemlakeError(
                f"{name}: seq_idx {int(extra[0])} is not a panel row of instances "
                f"({len(panel)} whole rows); its seq_idx set differs from the panel's"
            )
    got = _cat(list(files.values()), np.int64)
    missing = panel[~np.isin(panel, got)]
    if len(missing):
        raise MemlakeError(
            f"{where}: panel row seq_idx {int(missing[0])} is missing ({len(np.unique(got))} of "
            f"{len(panel)} panel rows scored); its seq_idx set differs from the panel's"
        )


STATS_KIND = "pythia-deduped-stats-raw"


def _check_stats_cover(wh: Warehouse, panel: np.ndarray) -> None:
    """Every imported stats run in the lake scores exactly `panel` (the panel after an import)."""
    runs: dict[tuple[str, str], dict[str, np.ndarray]] = defaultdict(dict)
    for d, values in _partition_dirs(wh, "token_stats", {}):
        if not (d / lake.MANIFEST).exists():
            continue
        config = lake.manifest(d).get("config", {})
        if config.get("import") != STATS_KIND:
            continue
        name = f"token_stats {values['model']} step {values['step']} (imported from {config.get('file')})"
        ids = pq.read_table(d / lake.DATA_FILE, columns=["instance_id"])["instance_id"].to_numpy()
        runs[values["model"], values["step"]][name] = ids
    for (model, step), files in sorted(runs.items()):
        where = next(iter(files)) if len(files) == 1 else f"token_stats {model} step {step}"
        _check_run_covers_panel(where, files, panel)


# --------------------------------------------------------------------------- pile-deduped-subset


def import_pile_deduped_subset(
    source: str,
    wh: Warehouse,
    *,
    revision: str | None = None,
    tokenizer: str = PYTHIA_TOKENIZER,
    stream_rows: int = PYTHIA_STREAM_ROWS,
) -> ImportSummary:
    """`pietrolesci/pile-deduped-subset` -> `instances` (one partition, merged).

    Train rows are rows of Pythia's preshuffled training stream: batch = seq_idx // 1024 and
    cohort (DiD treatment time) = the first checkpoint after that batch, 1000 * (seq_idx //
    1_024_000 + 1). Validation rows (seq_idx = -100 - i) were never trained on: no cohort.
    `tokenizer` (a Hub id or local folder; Pythia's by default) is recorded in the manifest as the
    tokenizer of the token ids, and `memlake taxonomy features` decodes with it. Whole rows
    replace 64-token samples of the same index (their first 64 tokens must agree); stats-raw
    runs already in the lake must score exactly the resulting panel.
    """
    kind = "pile-deduped-subset"
    out = ImportSummary(kind, ["instances"])
    corpus = "pile-deduped"
    config = _instances_config(wh, corpus)
    if any(r.get("import") == kind for r in _imports_of(config)):
        out.skipped = 1
        return out
    root = resolve_source(source, ["*.parquet"], revision)
    srcs = []
    for path in _parquet_files(root):
        split = _split_of(path)
        if split not in ("train", "validation"):
            raise MemlakeError(f"{path}: unknown split {split!r} (expected train or validation)")
        srcs.append(_Src(path, str(path.relative_to(root)), split))

    def rows(src: _Src) -> Iterator[pa.Table]:
        train = src.split == "train"
        for batch in _batches(src.path, {"seq_idx": _INT, "input_ids": _INT_LIST}):
            seq = _ids(src.path, batch, "seq_idx")
            bad = seq[seq < 0] if train else seq[seq >= 0]
            if bad.size:  # the sign is what tells the two splits apart in the public data
                rule = ">= 0" if train else "< 0"
                raise MemlakeError(f"{src.path}: {src.split} row has seq_idx {int(bad[0])} (expected {rule})")
            if train:
                _train_ids(src.path, batch, "seq_idx", stream_rows)
            tokens = _cast(src.path, "input_ids", batch.column("input_ids"), lake.TOKENS)
            yield _instance_rows(seq, tokens, src.split, sample=False)

    cands = _Candidates()
    for src in srcs:  # every check before anything is written
        ids, digests = [], []
        for t in rows(src):
            _validated(src.path, "instances", t)
            ids.append(t["instance_id"].to_numpy())
            digests.append(_digests(t["tokens"]))
        cands.add(src, _cat(ids, np.int64), _cat(digests, np.uint64))
    records = [_provenance(kind, source, revision, file=s.rel) for s in srcs]
    write = _plan_instances(
        wh,
        cands,
        rows,
        corpus=corpus,
        whole=True,
        id_col="seq_idx",
        records=records,
        tokenizer=str(tokenizer),
    )
    if write is None:
        out.skipped = 1
        return out
    before = _panel_ids(wh)
    _check_stats_cover(wh, np.unique(np.concatenate([*cands.ids, *([before] if before is not None else [])])))
    out.rows = write()
    out.written = 1
    return out


# --------------------------------------------------------------------------- stats-raw


def _stats_run(path: Path) -> tuple[str, int]:
    """(model, step) from the run folder `<size>/pythia-deduped-<size>-step<N>_<timestamp>/`."""
    run = path.parent
    m = _RUN_DIR.match(run.name.lower())
    if not m:
        raise MemlakeError(
            f"{path}: cannot parse model and step from folder {run.name!r} "
            "(expected pythia-deduped-<size>-step<N>_<timestamp>)"
        )
    size_dir = run.parent.name.lower()
    if re.fullmatch(_SIZE, size_dir) and size_dir != m.group("size"):
        raise MemlakeError(
            f"{path}: run folder {run.name!r} is for size {m.group('size')} but sits in {size_dir}/"
        )
    return _model(m.group("scheme"), m.group("size")), int(m.group("step"))


def _stats_patterns(sizes: Sequence[str] | None, steps: Sequence[int] | None) -> list[str]:
    runs = [p for n in steps for p in (f"*-step{n}_*", f"*-step{n}")] if steps else ["*"]
    return [f"{s}/{r}/*.parquet" for s in (sizes or ["*"]) for r in runs]


def import_pythia_stats_raw(
    source: str,
    wh: Warehouse,
    *,
    sizes: str | Sequence[str] | None = None,
    steps: int | Sequence[int] | None = None,
    revision: str | None = None,
) -> ImportSummary:
    """`pietrolesci/pythia-deduped-stats-raw` -> `token_stats`, one partition per (model, step,
    shard = file index within the run folder). `sizes` (e.g. ["70m"]) and `steps` restrict what
    is downloaded and imported. When `instances` holds whole rows (the panel), every run's files
    together must score exactly them (checked before anything is written); stats imported before
    the panel are checked by the panel's import."""
    kind = STATS_KIND
    out = ImportSummary(kind, ["token_stats"])
    sizes = [str(s).lower() for s in _as_list(sizes) or []] or None
    steps = [int(n) for n in _as_list(steps) or []] or None
    root = resolve_source(source, _stats_patterns(sizes, steps), revision)
    runs: dict[tuple[str, int], Path] = {}
    files: dict[Path, list[Path]] = defaultdict(list)
    for path in _parquet_files(root):
        model, step = _stats_run(path)
        if (sizes and model.split("-")[1] not in sizes) or (steps and step not in steps):
            continue
        first = runs.setdefault((model, step), path.parent)
        if first != path.parent:  # two runs of one checkpoint would share shard numbers
            raise MemlakeError(f"{first} and {path.parent} both hold {model} step {step}; keep one of them")
        files[path.parent].append(path)
    if not files:
        raise MemlakeError(f"{root}: no runs match sizes={sizes} steps={steps}")
    want = {"seq_idx": _INT, "sup": _FLOAT_LIST, "rank": _INT_LIST, "entropy": _FLOAT_LIST}
    todo = {
        key: [(shard, p) for shard, p in enumerate(sorted(files[run]))]
        for key, run in runs.items()
        if not all(
            lake.is_complete(wh, "token_stats", {"model": key[0], "step": key[1], "shard": shard})
            for shard in range(len(files[run]))
        )
    }
    panel = _panel_ids(wh)
    if panel is not None:
        for (model, step), paths in sorted(todo.items()):
            seq = {str(p): _read_ids(p, "seq_idx") for _, p in paths}
            _check_run_covers_panel(str(paths[0][1] if len(paths) == 1 else runs[model, step]), seq, panel)
    out.skipped = sum(len(files[run]) for key, run in runs.items() if key not in todo)
    for (model, step), paths in sorted(todo.items()):
        for shard, path in paths:
            partition = {"model": model, "step": step, "shard": shard}
            if lake.is_complete(wh, "token_stats", partition):
                out.skipped += 1
                continue
            pieces = [
                pa.table(
                    {
                        "instance_id": _ids(path, b, "seq_idx"),
                        "surprisal": _cast(path, "sup", b.column("sup"), pa.list_(pa.float32())),
                        "rank": _cast(path, "rank", b.column("rank"), pa.list_(pa.int32())),
                        "entropy": _cast(path, "entropy", b.column("entropy"), pa.list_(pa.float32())),
                    }
                )
                for b in _batches(path, want)
            ]
            config = _provenance(kind, source, revision, file=str(path.relative_to(root)))
            out.rows += _write(wh, "token_stats", pieces, partition, config, path)
            out.written += 1
    return out


def _read_ids(path: Path, name: str) -> np.ndarray:
    return _cat([_ids(path, b, name) for b in _batches(path, {name: _INT}, 1 << 20)], np.int64)


# --------------------------------------------------------------------------- memorized-evals


def _select(
    root: Path,
    parse: Callable[[Path, Path, str], _Src],
    *,
    scheme: str,
    splits: list[str] | None,
    sizes: list[str] | None,
) -> list[_Src]:
    """The files of `root` whose split parses, is of `scheme` and passes the split/size filters."""
    srcs, seen = [], set()
    for path in _parquet_files(root):
        split = _split_of(path)
        if splits and split not in splits:
            continue
        src = parse(path, root, split)
        seen.add(split)
        if src.scheme != scheme:
            if splits:
                raise MemlakeError(
                    f"{path}: split {split!r} indexes the {src.scheme} training stream, this import the "
                    f"{scheme} one (scheme={scheme!r}); one stream per warehouse"
                )
            continue
        if sizes and src.model.split("-")[1] not in sizes:
            continue
        srcs.append(src)
    absent = sorted(set(splits or []) - seen)
    if absent:
        raise MemlakeError(f"{root}: split(s) {absent} not found (have {sorted(seen) or 'none'})")
    if not srcs:
        raise MemlakeError(f"{root}: no {scheme} splits match sizes={sizes} splits={splits}")
    return srcs


def _eval_src(path: Path, root: Path, split: str) -> _Src:
    m = _EVAL_SPLIT.match(split.lower())
    if not m:
        raise MemlakeError(f"{path}: split {split!r} is not <duped|deduped>.<size>[.<step>]")
    model, step = _model(m.group("scheme"), m.group("size")), int(m.group("step") or PYTHIA_FINAL_STEP)
    return _Src(path, str(path.relative_to(root)), split, m.group("scheme"), model, step)


def _extraction_fixed(src: _Src) -> dict[str, Any]:
    # prompt/gen lengths are partition keys in newer contracts: take the keys from the spec
    full = {"model": src.model, "step": src.step, "prompt_len": PROMPT_LEN, "gen_len": GEN_LEN}
    return {k: full[k] for k in lake.spec("extraction").partition_by if k != "shard"}


def _checkpoint_fixed(src: _Src) -> dict[str, Any]:
    return {"model": src.model, "step": src.step}


def _extraction_rows(ids: np.ndarray, tokens: pa.Array, score: np.ndarray) -> pa.Table:
    """Extraction rows at 32 -> 32; the generated continuation is known only where it matched."""
    n = len(ids)
    memorised = score == 1.0
    cont = pc.list_slice(tokens, PROMPT_LEN, SAMPLE_LEN)
    generated = cont if memorised.all() else pc.if_else(pa.array(memorised), cont, pa.nulls(n, cont.type))
    return pa.table(
        {
            "instance_id": pa.array(ids, pa.int64()),
            "prompt_len": pa.array(np.full(n, PROMPT_LEN), pa.int32()),
            "gen_len": pa.array(np.full(n, GEN_LEN), pa.int32()),
            "generated": generated.cast(lake.TOKENS),
            "match_fraction": pa.array(score, pa.float32()),
            "memorised": pa.array(memorised, pa.bool_()),
        }
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
    kind = "pythia-memorized-evals"
    out = ImportSummary(kind, ["extraction", "instances"])
    scheme = _scheme(scheme)
    splits, sizes = _as_list(splits), [str(s).lower() for s in _as_list(sizes) or []] or None
    if splits:
        patterns = _split_patterns(splits)
    else:
        patterns = [
            p for s in sizes or ["*"] for p in (f"data/{scheme}.{s}-*.parquet", f"data/{scheme}.{s}.*")
        ]
        patterns += [f"*/{scheme}.{s}/*.parquet" for s in sizes or ["*"]]
    root = resolve_source(source, patterns, revision)
    srcs = _select(root, _eval_src, scheme=scheme, splits=splits, sizes=sizes)
    want = {"index": _INT, "tokens": _INT_LIST}

    def scan(src: _Src) -> Iterator[tuple[np.ndarray, pa.Array]]:
        for b in _batches(src.path, want, SAMPLE_BATCH_ROWS):
            yield _train_ids(src.path, b, "index", stream_rows), _sample_tokens(src.path, b, "tokens")

    def sample_rows(src: _Src) -> Iterator[pa.Table]:
        for ids, tokens in scan(src):
            yield _instance_rows(ids, tokens, "train", sample=True)

    def extraction_rows(src: _Src) -> Iterator[pa.Table]:
        for ids, tokens in scan(src):
            yield _extraction_rows(ids, tokens, np.ones(len(ids)))

    scanned = []
    for src in srcs:  # every check before anything is written
        ids, digests = [], []
        for i, tokens in scan(src):
            ids.append(i)
            digests.append(_digests(tokens))
        scanned.append((src, _cat(ids, np.int64), _cat(digests, np.uint64)))
    corpus = f"pile-{scheme}"
    cands = _Candidates()
    for src, ids, digests in _instances_todo(wh, corpus, scanned, kind):
        cands.add(src, ids, digests)
    records = [_provenance(kind, source, revision, file=s.rel) for s in cands.srcs]
    write_instances = None
    if cands.srcs:
        write_instances = _plan_instances(
            wh, cands, sample_rows, corpus=corpus, whole=False, id_col="index", records=records
        )
    plans, done = _plan_per_file(wh, "extraction", kind, [(s, i) for s, i, _ in scanned], _extraction_fixed)
    out.skipped = done + (write_instances is None)
    if write_instances is not None:
        out.rows += write_instances()
        out.written += 1
    for plan in plans:
        config = _provenance(kind, source, revision, file=plan.src.rel)
        out.rows += _write_per_file(wh, plan, extraction_rows(plan.src), config)
        out.written += 1
    return out


# --------------------------------------------------------------------------- random-sampled


def _import_random_sampled(
    scheme: str, source: str, wh: Warehouse, *, stream_rows: int, revision: str | None
) -> ImportSummary:
    """`EleutherAI/pile-<scheme>-pythia-random-sampled` -> `representative_sample` (scheme,
    instance_id, its first 64 tokens) and `representative_scores` (one row per model column
    `70M` ... `12B`: the memorisation score at step 143000), one partition per file."""
    kind = f"pile-{scheme}-pythia-random-sampled"
    out = ImportSummary(kind, ["representative_sample", "representative_scores"])
    root = resolve_source(source, ["*.parquet"], revision)
    files = _parquet_files(root)
    sizes: dict[Path, dict[str, str]] = {}  # score column -> model size, per file
    for path in files:
        names = _schema(path).names
        sizes[path] = {c: m.group("size").lower() for c in names if (m := _SCORE_COLUMN.match(c))}
        if not sizes[path]:
            raise MemlakeError(f"{path}: no memorisation-score columns (70M ... 12B) in {names}")

    def scan(path: Path, columns: Sequence[str]) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        want = {"Index": _INT} | {c: _INT_LIST if c == "Tokens" else _NUM for c in columns}
        for b in _batches(path, want, SAMPLE_BATCH_ROWS):
            yield b, _train_ids(path, b, "Index", stream_rows)

    every = []
    for path in files:  # every check before anything is written
        for b, ids in scan(path, ["Tokens", *sizes[path]]):
            _sample_tokens(path, b, "Tokens")
            for col in sizes[path]:
                v = pc.cast(b.column(col), pa.float64()).to_numpy(zero_copy_only=False)
                bad = (v < 0) | (v > 1)
                if bad.any():
                    raise MemlakeError(
                        f"{path}: column {col!r} has value {v[bad][0]} for Index {int(ids[bad][0])} "
                        "(a score is in [0, 1])"
                    )
            every.append(ids)
    ids = np.sort(_cat(every, np.int64))
    dup = np.flatnonzero(ids[1:] == ids[:-1])
    if len(dup):
        raise MemlakeError(f"{root}: duplicated key Index {int(ids[dup[0]])}")
    for shard, path in enumerate(files):
        config = _provenance(kind, source, revision, file=str(path.relative_to(root)))
        partition = {"scheme": scheme, "shard": shard}
        if lake.is_complete(wh, "representative_sample", partition):
            out.skipped += 1
        else:
            sample = (
                pa.table({"instance_id": i, "tokens": _sample_tokens(path, b, "Tokens")})
                for b, i in scan(path, ["Tokens"])
            )
            out.rows += _write_stream(wh, "representative_sample", sample, partition, config)
            out.written += 1
        for col, size in sizes[path].items():
            partition = {"model": _model(scheme, size), "step": PYTHIA_FINAL_STEP, "shard": shard}
            if lake.is_complete(wh, "representative_scores", partition):
                out.skipped += 1
                continue
            rows = (
                pa.table({"instance_id": i, "memorization_score": b.column(col)})
                for b, i in scan(path, [col])
            )
            out.rows += _write_stream(wh, "representative_scores", rows, partition, {**config, "column": col})
            out.written += 1
    return out


def import_pile_deduped_random_sampled(
    source: str, wh: Warehouse, *, stream_rows: int = PYTHIA_STREAM_ROWS, revision: str | None = None
) -> ImportSummary:
    """`EleutherAI/pile-deduped-pythia-random-sampled`: 5 M random rows of the deduped stream."""
    return _import_random_sampled("deduped", source, wh, stream_rows=stream_rows, revision=revision)


def import_pile_duped_random_sampled(
    source: str, wh: Warehouse, *, stream_rows: int = PYTHIA_STREAM_ROWS, revision: str | None = None
) -> ImportSummary:
    """`EleutherAI/pile-duped-pythia-random-sampled`: 5 M random rows of the duped stream."""
    return _import_random_sampled("duped", source, wh, stream_rows=stream_rows, revision=revision)


# --------------------------------------------------------------------------- semantic-filters

_FEATURES = {
    "sequence_id": _INT,
    "tokens": _INT_LIST,
    "text": _STR,
    "is_incrementing": _BOOL,
    "is_repeating": _BOOL,
    "sequence_duplicates": _INT,
    "max_frequency": _NUM,
    "avg_frequency": _NUM,
    "min_frequency": _NUM,
    "median_frequency": _NUM,
    "p25_frequency": _NUM,
    "p75_frequency": _NUM,
    "frequencies": _INT_LIST,
    "nl_scores": _NUM,
    "0_8_snowclones": _INT,
    "0_9_snowclones": _INT,
    "0_8_templates": _INT,
    "0_9_templates": _INT,
    "huffman_coding_length": _NUM,
    "memorization_score": _NUM,
}
_PERPLEXITIES = ("prompt_perplexity", "generation_perplexity", "sequence_perplexity", "loss")
_SAME_NAME = (
    "text",
    "sequence_duplicates",
    "max_frequency",
    "avg_frequency",
    "min_frequency",
    "median_frequency",
    "p25_frequency",
    "p75_frequency",
    "frequencies",
    "is_incrementing",
    "is_repeating",
    "huffman_coding_length",
)


def _filter_src(path: Path, root: Path, split: str) -> _Src:
    m = _FILTER_SPLIT.match(split.lower())
    if not m:
        raise MemlakeError(
            f"{path}: split {split!r} is not pile_<scheme>_<size> or memories_<scheme>_<size>[.<step>]"
        )
    step = int(m.group("step") or PYTHIA_FINAL_STEP)
    model = _model(m.group("scheme"), m.group("size"))
    return _Src(path, str(path.relative_to(root)), split, m.group("scheme"), model, step, m.group("origin"))


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


def _feature_rows(src: _Src, b: pa.RecordBatch, ids: np.ndarray, swap: bool) -> pa.Table:
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


def _scores(src: _Src, b: pa.RecordBatch, ids: np.ndarray) -> np.ndarray:
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
    scheme = _scheme(scheme)
    splits, sizes = _as_list(splits), [str(s).lower() for s in _as_list(sizes) or []] or None
    if splits:
        patterns = _split_patterns(splits)
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
    srcs = _select(root, _filter_src, scheme=scheme, splits=splits, sizes=sizes)
    srcs.sort(key=lambda s: (s.origin != "pile", s.split, s.rel))
    has_ppl = {s.path: any(c in _schema(s.path).names for c in _PERPLEXITIES) for s in srcs}

    def scan(src: _Src, columns: Sequence[str]) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        want = {c: (_FEATURES | dict.fromkeys(_PERPLEXITIES, _NUM))[c] for c in ("sequence_id", *columns)}
        for b in _batches(src.path, want, SAMPLE_BATCH_ROWS):
            yield b, _train_ids(src.path, b, "sequence_id", stream_rows)

    def sample_rows(src: _Src) -> Iterator[pa.Table]:
        for b, ids in scan(src, ["tokens"]):
            yield _instance_rows(ids, _sample_tokens(src.path, b, "tokens"), "train", sample=True)

    def feature_rows(src: _Src) -> Iterator[pa.Table]:
        cols = [c for c in _FEATURES if c not in ("sequence_id", "tokens", "memorization_score")]
        for b, ids in scan(src, cols):
            yield _feature_rows(src, b, ids, swap_matches)

    def extraction_rows(src: _Src) -> Iterator[pa.Table]:
        for b, ids in scan(src, ["tokens", "memorization_score"]):
            yield _extraction_rows(ids, _sample_tokens(src.path, b, "tokens"), _scores(src, b, ids))

    def perplexity_rows(src: _Src) -> Iterator[pa.Table]:
        for b, ids in scan(src, _PERPLEXITIES):
            yield pa.table({"instance_id": ids} | {c: b.column(c) for c in _PERPLEXITIES})

    scanned = []
    every = [c for c in _FEATURES if c != "sequence_id"]
    for src in srcs:  # every check and conversion before anything is written
        ids_l, digests = [], []
        cols = every + (list(_PERPLEXITIES) if has_ppl[src.path] else [])
        for b, ids in scan(src, cols):
            tokens = _sample_tokens(src.path, b, "tokens")
            once = pa.array(_first_occurrence(ids))  # a repeated id is dropped when written
            converted = {
                "instance_features": _feature_rows(src, b, ids, swap_matches),
                "extraction": _extraction_rows(ids, tokens, _scores(src, b, ids)),
            }
            if has_ppl[src.path]:
                converted["published_perplexities"] = pa.table(
                    {"instance_id": ids} | {c: b.column(c) for c in _PERPLEXITIES}
                )
            for table, rows in converted.items():
                _validated(src.path, table, rows.filter(once), _extraction_fixed(src))
            ids_l.append(ids)
            digests.append(_digests(tokens))
        scanned.append((src, _cat(ids_l, np.int64), _cat(digests, np.uint64)))

    corpus = f"pile-{scheme}"
    cands = _Candidates()
    for src, ids, digests in _instances_todo(wh, corpus, scanned, kind):
        cands.add(src, ids, digests)
    records = [_provenance(kind, source, revision, file=s.rel) for s in cands.srcs]
    write_instances = None
    if cands.srcs:
        write_instances = _plan_instances(
            wh, cands, sample_rows, corpus=corpus, whole=False, id_col="sequence_id", records=records
        )
    write_features = _plan_features(wh, kind, source, revision, scanned, feature_rows)
    extraction, done_x = _plan_per_file(
        wh, "extraction", kind, [(s, i) for s, i, _ in scanned], _extraction_fixed
    )
    with_ppl = [(s, i) for s, i, _ in scanned if has_ppl[s.path]]
    perplexities, done_p = _plan_per_file(wh, "published_perplexities", kind, with_ppl, _checkpoint_fixed)
    out.skipped = done_x + done_p + (write_instances is None) + (write_features is None)
    for write in (write_instances, write_features):
        if write is not None:
            out.rows += write()
            out.written += 1
    for plans, rows in ((extraction, extraction_rows), (perplexities, perplexity_rows)):
        for plan in plans:
            config = _provenance(kind, source, revision, file=plan.src.rel)
            out.rows += _write_per_file(wh, plan, rows(plan.src), config)
            out.written += 1
    return out


def _plan_features(
    wh: Warehouse,
    kind: str,
    source: str,
    revision: str | None,
    scanned: list[tuple[_Src, np.ndarray, np.ndarray]],
    rows: Callable[[_Src], Iterator[pa.Table]],
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
    cands = _Candidates()
    for src, ids in todo:
        cands.add(src, ids)
    ids, _, _ = cands.arrays()
    keep = _first_occurrence(ids)
    pile = np.unique(np.concatenate([i for s, i in todo if s.origin == "pile"] or [np.zeros(0, np.int64)]))
    exists = bool(config)
    if exists:
        have = _existing_ids(wh, table, {})
        keep &= ~np.isin(ids, have)
    merged = {
        "imports": config.get("imports", [])
        + [_provenance(kind, source, revision, file=s.rel) for s, _ in todo]
    }

    def pieces() -> Iterator[pa.Table]:
        if exists:
            for t in _read_batches(wh.table(table) / lake.DATA_FILE):
                marked = pc.or_kleene(
                    t["in_representative_sample"], pa.array(np.isin(t["instance_id"].to_numpy(), pile))
                )
                yield t.set_column(
                    t.schema.get_field_index("in_representative_sample"), "in_representative_sample", marked
                )
        yield from _masked((t for src in cands.srcs for t in rows(src)), keep)

    return lambda: _write_stream(wh, table, pieces(), {}, merged, overwrite=True)


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


# --------------------------------------------------------------------------- entry point

IMPORTERS: dict[str, Callable[..., ImportSummary]] = {
    "pile-deduped-subset": import_pile_deduped_subset,
    "pythia-deduped-stats-raw": import_pythia_stats_raw,
    "pythia-memorized-evals": import_pythia_memorized_evals,
    "pile-deduped-pythia-random-sampled": import_pile_deduped_random_sampled,
    "pile-duped-pythia-random-sampled": import_pile_duped_random_sampled,
    "semantic-filters": import_semantic_filters,
    "semantic-filters-intermediate": import_semantic_filters_intermediate,
}


def import_dataset(kind: str, source: str | None, wh: Warehouse, **opts: Any) -> ImportSummary:
    """Run the importer for `kind`; `source` None means the public Hub repo; None options are
    dropped so that a CLI can pass every option it has."""
    if kind not in IMPORTERS:
        raise MemlakeError(f"unknown import kind {kind!r} (known: {sorted(IMPORTERS)})")
    fn = IMPORTERS[kind]
    opts = {k: v for k, v in opts.items() if v is not None}
    takes = [
        p for p in inspect.signature(fn).parameters if p not in ("source", "wh") and not p.startswith("_")
    ]
    unknown = sorted(set(opts) - set(takes))
    if unknown:
        raise MemlakeError(f"import {kind}: unknown option(s) {unknown} (takes {takes})")
    summary = fn(source or HUB_REPOS[kind], wh, **opts)
    _register_models(wh)
    return summary


def _register_models(wh: Warehouse) -> None:
    """Imported rows of a known suite (Pythia) get that suite's `checkpoints`, so a warehouse of
    imports alone builds and fits; a model already registered is left as it is."""
    from ingest.hub_suites import ensure_registered, family_hub_id

    keys = {d.name.split("=", 1)[1] for d in wh.lake.glob("*/model=*") if d.parent.name != "checkpoints"}
    for key in sorted(keys):
        if family_hub_id(key):
            ensure_registered(wh, key)
