"""Import public Hugging Face Hub datasets into the lake tables the embedded pipeline writes.

| kind                       | Hub dataset                              | lake table    |
|----------------------------|------------------------------------------|---------------|
| `pile-deduped-subset`      | `pietrolesci/pile-deduped-subset`        | `instances`   |
| `pythia-deduped-stats-raw` | `pietrolesci/pythia-deduped-stats-raw`   | `token_stats` |
| `pythia-memorized-evals`   | `EleutherAI/pythia-memorized-evals`      | `extraction`  |

Every importer takes `source`: a Hub dataset id (only the files needed are fetched with
`huggingface_hub.snapshot_download`) or a local directory holding the same files. Files are
streamed in record batches and converted to the lake types batch by batch; each source file
becomes one lake partition (`instances` is a single partition), so memory is bounded by one
converted file, and a re-import skips partitions that are already complete.
"""

from __future__ import annotations

import inspect
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from memlake import lake
from memlake.errors import MemlakeError
from memlake.paths import Warehouse

# Pythia's training stream: 1024 rows per optimiser step, a checkpoint every 1000 steps, and
# the memorisation evaluations at the final checkpoint with 32-token prompts/continuations.
PYTHIA_BATCH_SIZE = 1024
PYTHIA_CHECKPOINT_EVERY = 1000
PYTHIA_FINAL_STEP = 143_000
PROMPT_LEN = 32
GEN_LEN = 32
READ_BATCH_ROWS = 1024  # a stats-raw row holds 3 x 2048 values: ~25 MB per batch
# The tokenizer of every Pythia model (GPT-NeoX-20B's); the pile subset's token ids are its ids.
# Recorded in the instances manifest (`config.tokenizer`) so later jobs decode with it.
PYTHIA_TOKENIZER = "EleutherAI/pythia-70m-deduped"

HUB_REPOS = {
    "pile-deduped-subset": "pietrolesci/pile-deduped-subset",
    "pythia-deduped-stats-raw": "pietrolesci/pythia-deduped-stats-raw",
    "pythia-memorized-evals": "EleutherAI/pythia-memorized-evals",
}

_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_SPLIT_FILE = re.compile(r"^(?P<split>.+?)-\d{5}-of-\d{5}")  # push_to_hub: <split>-00000-of-00001
_SIZE = r"\d+(?:\.\d+)?[mb]"
# hydra run_name of the stats-raw runs: pythia-deduped-<size>-step<N>_<timestamp>
_RUN_DIR = re.compile(rf"^pythia-(?P<scheme>deduped|duped)-(?P<size>{_SIZE})-step(?P<step>\d+)(?:_.*)?$")
# memorized-evals splits: <scheme>.<size>, or <scheme>.<size>.<step> for intermediate checkpoints
_EVAL_SPLIT = re.compile(rf"^(?P<scheme>deduped|duped)\.(?P<size>{_SIZE})(?:\.(?P<step>\d+))?$")


@dataclass
class ImportSummary:
    kind: str
    table: str
    written: int = 0  # partitions written by this call
    skipped: int = 0  # partitions that were already complete
    rows: int = 0  # rows written by this call


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


# --------------------------------------------------------------------------- reading


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t)


_INT = ("an integer", pa.types.is_integer)
_INT_LIST = ("a list of integers", lambda t: _is_list(t) and pa.types.is_integer(t.value_type))
_FLOAT_LIST = ("a list of floats", lambda t: _is_list(t) and pa.types.is_floating(t.value_type))


def _batches(
    path: Path, want: dict[str, tuple[str, Callable[[pa.DataType], bool]]]
) -> Iterator[pa.RecordBatch]:
    """Stream the `want` columns of `path` after checking that they exist with the right types."""
    try:
        f = pq.ParquetFile(path)
        schema = f.schema_arrow
    except (pa.ArrowInvalid, OSError) as e:
        raise MemlakeError(f"{path}: unreadable Parquet ({str(e).splitlines()[0]})") from None
    for name, (label, ok) in want.items():
        if name not in schema.names:
            raise MemlakeError(f"{path}: missing column {name!r} (has {schema.names})")
        if not ok(schema.field(name).type):
            raise MemlakeError(
                f"{path}: column {name!r} has type {schema.field(name).type}, expected {label}"
            )
    yield from f.iter_batches(batch_size=READ_BATCH_ROWS, columns=list(want))


def _ids(path: Path, batch: pa.RecordBatch, name: str) -> np.ndarray:
    col = batch.column(name)
    if col.null_count:
        raise MemlakeError(f"{path}: column {name!r} has null values")
    return col.to_numpy().astype(np.int64)


def _cast(path: Path, name: str, arr: pa.Array, typ: pa.DataType) -> pa.Array:
    try:
        return arr.cast(typ, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise MemlakeError(f"{path}: column {name!r} does not fit {typ} ({str(e).splitlines()[0]})") from None


def _write(
    wh: Warehouse, table: str, pieces: list[pa.Table], partition: dict, config: dict, where: Path
) -> int:
    data = pa.concat_tables(pieces) if pieces else lake.spec(table).file_schema.empty_table()
    try:
        lake.write_partition(wh, table, data, partition, config=config)
    except MemlakeError as e:  # the contract names the column; add the file it came from
        raise MemlakeError(f"{where}: {e}") from None
    return data.num_rows


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


# --------------------------------------------------------------------------- importers


def import_pile_deduped_subset(
    source: str, wh: Warehouse, *, revision: str | None = None, tokenizer: str = PYTHIA_TOKENIZER
) -> ImportSummary:
    """`pietrolesci/pile-deduped-subset` -> `instances` (one partition).

    Train rows are rows of Pythia's preshuffled training stream: batch = seq_idx // 1024 and
    cohort (DiD treatment time) = the first checkpoint after that batch, 1000 * (seq_idx //
    1_024_000 + 1). Validation rows (seq_idx = -100 - i) were never trained on: no cohort.
    `tokenizer` (a Hub id or local folder; Pythia's by default) is recorded in the manifest as the
    tokenizer of the token ids, and `memlake taxonomy features` decodes with it.
    """
    kind = "pile-deduped-subset"
    out = ImportSummary(kind, "instances")
    if lake.is_complete(wh, "instances", {}):
        have = lake.manifest(wh.table("instances")).get("config", {})
        if have.get("import") != kind:  # instance ids of two corpora would collide
            raise MemlakeError(
                f"{wh.root} already holds an instances table from another corpus; use another --warehouse"
            )
        out.skipped = 1
        return out
    root = resolve_source(source, ["*.parquet"], revision)
    files = _parquet_files(root)
    pieces = []
    for path in files:
        split = _split_of(path)
        if split not in ("train", "validation"):
            raise MemlakeError(f"{path}: unknown split {split!r} (expected train or validation)")
        train = split == "train"
        for batch in _batches(path, {"seq_idx": _INT, "input_ids": _INT_LIST}):
            seq = _ids(path, batch, "seq_idx")
            bad = seq[seq < 0] if train else seq[seq >= 0]
            if bad.size:  # the sign is what tells the two splits apart in the public data
                rule = ">= 0" if train else "< 0"
                raise MemlakeError(f"{path}: {split} row has seq_idx {int(bad[0])} (expected {rule})")
            n = len(seq)
            batch_idx = seq // PYTHIA_BATCH_SIZE
            cohort = PYTHIA_CHECKPOINT_EVERY * (batch_idx // PYTHIA_CHECKPOINT_EVERY + 1)
            pieces.append(
                pa.table(
                    {
                        "instance_id": seq,
                        "split": pa.array([split] * n, pa.string()),
                        "tokens": _cast(path, "input_ids", batch.column("input_ids"), lake.TOKENS),
                        "batch_idx": pa.array(batch_idx, pa.int64()) if train else pa.nulls(n, pa.int64()),
                        "cohort": pa.array(cohort, pa.int64()) if train else pa.nulls(n, pa.int64()),
                        "source": pa.array(["pile"] * n, pa.string()),
                        "artifact": pa.array(["none"] * n, pa.string()),
                        "copies": pa.nulls(n, pa.int32()),  # unknown for the Pile
                        "clean_tokens": pa.nulls(n, lake.TOKENS),
                    }
                )
            )
    files_read = [str(p.relative_to(root)) for p in files]
    config = _provenance(kind, source, revision, tokenizer=str(tokenizer), files=files_read)
    out.rows = _write(wh, "instances", pieces, {}, config, root)
    out.written = 1
    return out


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
    is downloaded and imported."""
    kind = "pythia-deduped-stats-raw"
    out = ImportSummary(kind, "token_stats")
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
    for (model, step), run in sorted(runs.items()):
        for shard, path in enumerate(sorted(files[run])):
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


def import_pythia_memorized_evals(
    source: str, wh: Warehouse, *, splits: str | Sequence[str] | None = None, revision: str | None = None
) -> ImportSummary:
    """`EleutherAI/pythia-memorized-evals` -> `extraction`, one partition per (model, step, shard =
    file index within the split). Every row is a sequence whose 32-token greedy continuation
    matched exactly, at step 143000 (or the step a `<scheme>.<size>.<step>` split names)."""
    kind = "pythia-memorized-evals"
    out = ImportSummary(kind, "extraction")
    splits = _as_list(splits)
    patterns = [p for s in splits for p in (f"data/{s}-*.parquet", f"*/{s}/*.parquet")] if splits else None
    root = resolve_source(source, patterns or ["*.parquet"], revision)
    by_split: dict[str, list[Path]] = defaultdict(list)
    for path in _parquet_files(root):
        split = _split_of(path)
        if not splits or split in splits:
            by_split[split].append(path)
    absent = sorted(set(splits or []) - set(by_split))
    if absent:
        raise MemlakeError(f"{root}: split(s) {absent} not found (have {sorted(by_split) or 'none'})")
    n_tokens = PROMPT_LEN + GEN_LEN
    for split, paths in sorted(by_split.items()):
        m = _EVAL_SPLIT.match(split.lower())
        if not m:
            raise MemlakeError(f"{paths[0]}: split {split!r} is not <duped|deduped>.<size>[.<step>]")
        model, step = _model(m.group("scheme"), m.group("size")), int(m.group("step") or PYTHIA_FINAL_STEP)
        for shard, path in enumerate(sorted(paths)):
            # prompt/gen lengths are partition keys in newer contracts: take the keys from the spec
            full = {
                "model": model,
                "step": step,
                "prompt_len": PROMPT_LEN,
                "gen_len": GEN_LEN,
                "shard": shard,
            }
            partition = {k: full[k] for k in lake.spec("extraction").partition_by}
            if lake.is_complete(wh, "extraction", partition):
                out.skipped += 1
                continue
            pieces = []
            for b in _batches(path, {"index": _INT, "tokens": _INT_LIST}):
                tokens = b.column("tokens")
                lengths = pc.fill_null(pc.list_value_length(tokens), 0)
                wrong = pc.filter(lengths, pc.not_equal(lengths, n_tokens))
                if len(wrong):
                    raise MemlakeError(
                        f"{path}: column 'tokens' has a row of {wrong[0].as_py()} tokens (expected "
                        f"{n_tokens} = {PROMPT_LEN}-token prompt + {GEN_LEN}-token continuation)"
                    )
                n = b.num_rows
                generated = pc.list_slice(tokens, PROMPT_LEN, n_tokens)
                pieces.append(
                    pa.table(
                        {
                            "instance_id": _ids(path, b, "index"),
                            "prompt_len": pa.array(np.full(n, PROMPT_LEN), pa.int32()),
                            "gen_len": pa.array(np.full(n, GEN_LEN), pa.int32()),
                            "generated": _cast(path, "tokens", generated, lake.TOKENS),
                            "match_fraction": pa.array(np.ones(n), pa.float32()),
                            "memorised": pa.array(np.ones(n, dtype=bool), pa.bool_()),
                        }
                    )
                )
            config = _provenance(kind, source, revision, file=str(path.relative_to(root)))
            out.rows += _write(wh, "extraction", pieces, partition, config, path)
            out.written += 1
    return out


# --------------------------------------------------------------------------- entry point

IMPORTERS: dict[str, Callable[..., ImportSummary]] = {
    "pile-deduped-subset": import_pile_deduped_subset,
    "pythia-deduped-stats-raw": import_pythia_stats_raw,
    "pythia-memorized-evals": import_pythia_memorized_evals,
}


def import_dataset(kind: str, source: str | None, wh: Warehouse, **opts: Any) -> ImportSummary:
    """Run the importer for `kind`; `source` None means the public Hub repo; None options are
    dropped so that a CLI can pass every option it has."""
    if kind not in IMPORTERS:
        raise MemlakeError(f"unknown import kind {kind!r} (known: {sorted(IMPORTERS)})")
    fn = IMPORTERS[kind]
    opts = {k: v for k, v in opts.items() if v is not None}
    takes = [p for p in inspect.signature(fn).parameters if p not in ("source", "wh")]
    unknown = sorted(set(opts) - set(takes))
    if unknown:
        raise MemlakeError(f"import {kind}: unknown option(s) {unknown} (takes {takes})")
    return fn(source or HUB_REPOS[kind], wh, **opts)
