"""The taxonomy features of every instance: lake table `instance_features` (one row per instance).

The taxonomy paper (digest §2) describes each memorisation candidate by model-free features of
its 64-token *sample* (here tokens 0..prompt_len+k-1 of the instance row), most of them measured
against the whole training corpus. This job computes them once per corpus, since they do not
depend on a model or a checkpoint; the dbt marts join them to the extraction results of every
checkpoint. The pure computations live in `transforms/`; this module only gathers their inputs
from the warehouse and writes one partition:

- the training *stream* is the training rows in data order (`suite/data_order.npy` indexes the
  training rows sorted by instance_id; epochs beyond the first repeat rows), or every training
  row once when a warehouse has no data order (e.g. instances imported from the Hub). Duplicate
  counts and token frequencies are taken over that stream, so a row trained twice counts twice;
- `sequence_duplicates` counts the stream's k-token windows (never crossing rows) equal to the
  sample's continuation, tokens prompt_len..prompt_len+k-1; a training row finds itself.
  `whole_sequence_duplicates` counts stream rows equal to the whole instance row;
- `frequencies` lists the corpus frequency of each sample token, in order (the released list
  column); the six `*_frequency` statistics summarise it;
- `text` / `prompt_text` are decoded with the tokenizer that made the token ids: the warehouse
  tokenizer by default, the one the `instances` manifest records (Hub imports record Pythia's
  GPT-NeoX-20B tokenizer), or any local folder / Hub id passed as `tokenizer`
  (`memlake taxonomy features --tokenizer`); a token id beyond its vocabulary is an error naming
  the id;
- the *representative sample* (the semantic / textual match corpus, the paper's 5 M random
  rows) is `taxonomy.representative_sample` training rows drawn with the config seed; an
  instance never matches itself, but does match its duplicates (other instance ids).

A partition that is complete for the same inputs (config, instances file, data order, tokenizer,
contract columns) is skipped; different inputs rebuild it, `force` always does. The manifest
records the inputs, the code-vs-NL classifier's held-out accuracy and the seconds each step took.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from memlake import lake
from memlake.errors import MemlakeError
from memlake.paths import Warehouse
from memlake.progress import progress
from transforms import code_nl, huffman, semantic
from transforms.duplicates import continuation_duplicate_counts, sequence_duplicate_counts
from transforms.frequencies import frequency_stats, sequence_frequencies, token_counts
from transforms.templating import templating_flags

TABLE = "instance_features"
STREAM_CHUNK_ROWS = 4096  # stream rows gathered at once (fancy indexing of the training rows)
SETTINGS = ("prompt_len", "k", "representative_sample")  # the taxonomy keys the features depend on


def settings(cfg: dict[str, Any]) -> dict[str, int]:
    """The feature settings of `cfg["taxonomy"]`, validated (positive integers)."""
    tax = cfg.get("taxonomy")
    if not isinstance(tax, dict):
        raise MemlakeError(f"config has no 'taxonomy' section (needs keys {list(SETTINGS)})")
    out = {}
    for key in SETTINGS:
        value = tax.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise MemlakeError(f"config key taxonomy.{key} must be a positive integer, got {value!r}")
        out[key] = value
    return out


def build_features(
    cfg: dict[str, Any], wh: Warehouse, *, force: bool = False, tokenizer: str | None = None
) -> dict[str, Any]:
    """Compute and write `instance_features` for the warehouse's instances; skip if up to date.

    tokenizer: the tokenizer that made the instances' token ids, a local folder or a Hub id,
        loaded with `AutoTokenizer.from_pretrained` (decodes `text` / `prompt_text`; its vocabulary
        bounds the ids). Default: the one the `instances` manifest records (Hub imports record
        Pythia's), else the warehouse tokenizer (`suite/tokenizer`, the embedded corpus's).
    """
    s = settings(cfg)
    seed = int(cfg["seed"])
    if not lake.is_complete(wh, "instances", {}):
        raise MemlakeError(f"no instances under {wh.table('instances')}: run `memlake suite corpus` first")
    order_path = wh.suite / "data_order.npy"
    tokenizer_source = tokenizer_of(wh, tokenizer)
    inputs = {
        "seed": seed,
        "taxonomy": s,
        "instances_sha256": lake.manifest(wh.table("instances"))["files"][lake.DATA_FILE],
        "data_order_sha256": lake.sha256(order_path) if order_path.exists() else None,
        "code_nl_recipe": code_nl.RECIPE,
        "tokenizer": _tokenizer_key(wh, tokenizer_source),
        "columns": lake.spec(TABLE).schema.names,  # a contract change rebuilds an older partition
    }
    if lake.is_complete(wh, TABLE, {}) and not force:
        have = lake.manifest(wh.table(TABLE))
        if have.get("config", {}).get("inputs") == _jsonable(inputs):
            return {"skipped": True, "rows": have["rows"], "path": wh.table(TABLE)}

    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 2)
        clock = now

    with progress() as bar:
        task = bar.add_task("features: reading instances", total=8)
        ids, split, rows = _instances(wh)
        n, row_len = rows.shape
        sample_len = s["prompt_len"] + s["k"]
        if row_len < sample_len:
            raise MemlakeError(
                f"instances rows have {row_len} tokens, fewer than taxonomy.prompt_len + taxonomy.k "
                f"= {sample_len}: lower them"
            )
        train = rows[split == "train"]
        if not len(train):
            raise MemlakeError(f"{wh.table('instances')}: no training rows (split = 'train')")
        order = _data_order(order_path, len(train))
        sample = rows[:, :sample_len]
        tokenizer = _tokenizer(wh, tokenizer_source)
        vocab = max(len(tokenizer), 1)
        if int(rows.max(initial=0)) >= vocab or int(rows.min(initial=0)) < 0:
            outside = (rows >= vocab) | (rows < 0)
            row = int(np.flatnonzero(outside.any(axis=1))[0])
            value = int(rows[row][outside[row]][0])
            raise MemlakeError(
                f"instances column 'tokens': token id {value} (instance_id {int(ids[row])}) is outside "
                f"the vocabulary of tokenizer {tokenizer_source} (ids 0..{vocab - 1}); pass the "
                "tokenizer that made the instances (--tokenizer)"
            )
        text = tokenizer.batch_decode(sample.tolist(), clean_up_tokenization_spaces=False)
        prompt_text = tokenizer.batch_decode(
            sample[:, : s["prompt_len"]].tolist(), clean_up_tokenization_spaces=False
        )
        lap("read_and_decode")

        bar.update(task, advance=1, description="features: duplicates")

        def stream():
            for start in range(0, len(order), STREAM_CHUNK_ROWS):
                yield train[order[start : start + STREAM_CHUNK_ROWS]]

        chunk_rows = max(64, 65536 // row_len)
        cols: dict[str, Any] = {"instance_id": ids, "text": text, "prompt_text": prompt_text}
        cols["sequence_duplicates"] = continuation_duplicate_counts(
            rows, stream(), offset=s["prompt_len"], k=s["k"], chunk_rows=chunk_rows
        )
        cols["whole_sequence_duplicates"] = sequence_duplicate_counts(rows, stream(), chunk_rows=chunk_rows)
        lap("duplicates")

        bar.update(task, advance=1, description="features: token frequencies")
        counts = token_counts(stream(), vocab)
        cols.update(frequency_stats(sample, counts))
        cols["frequencies"] = pa.ListArray.from_arrays(
            np.arange(0, sample.size + 1, sample_len, dtype=np.int32),
            pa.array(sequence_frequencies(sample, counts).reshape(-1), pa.int64()),
        )
        lap("frequencies")

        bar.update(task, advance=1, description="features: templating, Huffman")
        flags = np.array([templating_flags(t) for t in text], dtype=bool).reshape(n, 2)
        cols["is_incrementing"], cols["is_repeating"] = flags[:, 0], flags[:, 1]
        cols["is_templating"] = flags.any(axis=1)
        cols["huffman_coding_length"] = huffman.coding_lengths(text)
        lap("templating_huffman")

        bar.update(task, advance=1, description="features: code vs NL")
        model, report = code_nl.load_or_train(code_nl.model_dir(wh), seed=seed)
        cols["nl_score"] = code_nl.nl_score(text, model)
        lap("code_nl")

        bar.update(task, advance=1, description=f"features: embedding {n} texts")
        picked = np.random.default_rng(seed).choice(
            len(train), size=min(s["representative_sample"], len(train)), replace=False
        )
        corpus_pos = np.flatnonzero(split == "train")[np.sort(picked)]  # rows of the instances table
        emb = embed_distinct(text)
        lap("embedding")

        bar.update(task, advance=1, description="features: semantic and textual matches")
        own = np.full(n, -1, dtype=np.int64)
        own[corpus_pos] = np.arange(len(corpus_pos))
        sm = semantic.semantic_match_counts(emb, emb[corpus_pos], semantic.THRESHOLDS, exclude_self=own)
        corpus_prompts = [prompt_text[i] for i in corpus_pos]
        cols.update(sm.columns())
        cols.update(semantic.textual_match_counts(prompt_text, corpus_prompts, sm))
        cols["in_representative_sample"] = own >= 0
        lap("matches")

        bar.update(task, advance=1, description="features: writing")
        table = pa.table({f.name: cols[f.name] for f in lake.spec(TABLE).schema})
        manifest_config = {
            "inputs": inputs,
            "tokenizer": tokenizer_source,
            "stream": {
                "source": str(order_path) if order_path.exists() else "every training row once",
                "rows": int(len(order)),
                "training_rows": int(len(train)),
            },
            "representative_sample_rows": int(len(corpus_pos)),
            "embedding_device": embedding_device(),
            "code_nl": {
                k: report[k]
                for k in ("recipe", "seed", "held_out_accuracy", "held_out_accuracy_all_code_windows")
            },
            "seconds": seconds,
        }
        path = lake.write_partition(wh, TABLE, table, config=manifest_config, overwrite=True)
        lap("write")
        bar.update(task, advance=1)
    return {
        "skipped": False,
        "rows": n,
        "path": path,
        "seconds": seconds,
        "held_out_accuracy": report["held_out_accuracy"],
        "stream_rows": int(len(order)),
        "representative_sample_rows": int(len(corpus_pos)),
    }


def embed_distinct(texts: list[str]) -> np.ndarray:
    """`semantic.embed(texts)`, embedding each distinct text once, in order of encoder length.

    Embedding is the cost of this job (a MiniLM forward per text, ~1.5k tokens/s per CPU core).
    Duplicated rows are embedded once, and sorting by the encoder's token count makes every
    batch pad to about its own length rather than the longest text's: the same vectors (to
    float rounding) for a fraction of the work.
    """
    from transformers import AutoTokenizer

    distinct, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    tokenizer = AutoTokenizer.from_pretrained(str(semantic.model_path()))
    lengths = [
        len(ids)
        for ids in tokenizer(list(distinct), truncation=True, max_length=semantic.MAX_SEQ_LENGTH)["input_ids"]
    ]
    by_length = np.argsort(lengths, kind="stable")
    emb = np.empty((len(distinct), semantic.EMBED_DIM), dtype=np.float32)
    emb[by_length] = semantic.embed([distinct[i] for i in by_length], device=embedding_device())
    return emb[inverse.reshape(-1)]


def embedding_device() -> str:
    """A GPU when there is one (the real path), else the CPU (the embedded default)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# --------------------------------------------------------------------------- inputs


def _instances(wh: Warehouse) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(instance_id [N], split [N], tokens [N, L]) sorted by instance_id; rows must share one length."""
    t = lake.read_table(wh, "instances", columns=["instance_id", "split", "tokens"])
    t = t.sort_by("instance_id")
    tokens = t["tokens"].combine_chunks()
    if tokens.null_count:
        bad = pc.filter(t["instance_id"], pc.is_null(t["tokens"]))[0].as_py()
        raise MemlakeError(f"instances column 'tokens' is null for instance_id {bad}")
    lengths = pc.list_value_length(tokens).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths != lengths[0]).any():
        bad = t["instance_id"][int(np.flatnonzero(lengths != lengths[0])[0])].as_py()
        raise MemlakeError(
            f"instances column 'tokens': instance_id {bad} has a different length from the first "
            f"row's {int(lengths[0])} (rows must be fixed-length)"
        )
    width = int(lengths[0]) if len(lengths) else 0
    flat = tokens.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    ids = t["instance_id"].to_numpy()
    split = np.asarray(t["split"].to_pylist(), dtype=object)
    return ids, split, flat.reshape(len(ids), width)


def _data_order(path: Path, n_train: int) -> np.ndarray:
    """Positions of training rows in the order they were trained on (every row once without a file)."""
    if not path.exists():
        return np.arange(n_train)
    try:
        order = np.load(path)
    except (OSError, ValueError) as e:
        raise MemlakeError(f"{path}: unreadable ({str(e).splitlines()[0]})") from None
    if order.ndim != 1 or not np.issubdtype(order.dtype, np.integer):
        raise MemlakeError(f"{path}: expected a 1-D integer array, got {order.dtype} {order.shape}")
    if len(order) and (order.min() < 0 or order.max() >= n_train):
        bad = int(order[(order < 0) | (order >= n_train)][0])
        raise MemlakeError(f"{path}: value {bad} is not a training row (the instances have {n_train})")
    return order.astype(np.int64)


def tokenizer_of(wh: Warehouse, explicit: str | None = None) -> str:
    """The tokenizer to decode the instances with: `explicit`, else the one the `instances`
    manifest records (`config.tokenizer`, written by Hub imports), else the warehouse tokenizer."""
    if explicit:
        return str(explicit)
    recorded = lake.manifest(wh.table("instances")).get("config", {}).get("tokenizer")
    return str(recorded) if recorded else str(wh.tokenizer)


def _tokenizer_key(wh: Warehouse, source: str) -> dict[str, str | None]:
    """What identifies a tokenizer for the skip check: its name ('warehouse' for the warehouse's
    own, wherever the warehouse lives), and for a local folder the hash of its `tokenizer.json`
    (a Hub id is taken as it is)."""
    path = Path(source) / "tokenizer.json"
    name = "warehouse" if source == str(wh.tokenizer) else source
    return {"source": name, "sha256": lake.sha256(path) if path.is_file() else None}


def _tokenizer(wh: Warehouse, source: str | None = None):
    """`AutoTokenizer.from_pretrained(source)`: a local folder or a Hub id (the real loading path)."""
    from transformers import AutoTokenizer

    source = str(wh.tokenizer) if source is None else source
    if source == str(wh.tokenizer) and not (wh.tokenizer / "tokenizer_config.json").exists():
        raise MemlakeError(f"no tokenizer at {wh.tokenizer}: run `memlake suite corpus` first")
    try:
        return AutoTokenizer.from_pretrained(source)
    except Exception as e:  # OSError, ValueError, HTTP and offline errors: one line whatever the type
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MemlakeError(f"tokenizer {source}: cannot load ({first})") from None


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=str))
