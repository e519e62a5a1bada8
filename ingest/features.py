"""The taxonomy features of the panel: lake table `instance_features` (one row per panel instance).

The taxonomy paper (Prashanth et al. 2024) describes each memorisation candidate by model-free
features of its 64-token *sample* (here tokens 0..prompt_len+k-1 of the instance row), most of them
measured against the whole training corpus. This job computes them once per corpus, since they do not
depend on a model or a checkpoint; the dbt marts join them to the extraction results of every
checkpoint. The pure computations live in `transforms/`; this module only gathers their inputs
from the warehouse (the match corpus and the embeddings through `ingest.matching`, the
code-vs-NL classifier through `ingest.code_nl_classifier`) and writes one partition, over the
rows `ingest.panel.described_rows` names (the panel's; a Hub import's every row):

- the training *stream* is the training rows in data order (`suite/data_order.npy` indexes the
  whole training rows sorted by instance_id; epochs beyond the first repeat rows), or every
  training row once when a warehouse has no data order (e.g. instances imported from the Hub).
  Duplicate counts and token frequencies are taken over that stream, so a row trained twice
  counts twice. A warehouse whose instances are a panel of a larger stream (Pythia: 16k rows of
  146 M) passes the stream itself (`stream`, `memlake taxonomy features --stream`): a Megatron
  pair, .npy or raw token file, counted in shards by `ingest.stream_counts`;
- `sequence_duplicates` counts the stream's k-token windows (never crossing rows) equal to the
  sample's continuation, tokens prompt_len..prompt_len+k-1; a training row finds itself.
  `whole_sequence_duplicates` counts stream rows equal to the whole instance row (null for a
  `sample_only` instance, which holds only the sample of its row);
- `frequencies` lists the corpus frequency of each sample token, in order (the released list
  column); the six `*_frequency` statistics summarise it;
- `text` / `prompt_text` are decoded with the tokenizer that made the token ids: the warehouse
  tokenizer by default, the one the `instances` manifest records (Hub imports record Pythia's
  GPT-NeoX-20B tokenizer), or any local folder / Hub id passed as `tokenizer`
  (`memlake taxonomy features --tokenizer`); a token id beyond its vocabulary is an error naming
  the id;
- the *representative sample* (the semantic / textual match corpus, the paper's 5 M random
  rows) is `taxonomy.representative_sample` whole training rows drawn with the config seed, or
  a corpus given as `match_corpus` (the lake table `representative_sample` that the Hub import
  of the published sample writes); an instance never matches itself (the same instance_id), but
  does match its duplicates (other instance ids).

A partition that is complete for the same inputs (config, instances file, data order or stream
content, match corpus, tokenizer, contract columns) is skipped; different inputs rebuild it,
`force` always does. The manifest records the inputs, the code-vs-NL classifier's held-out
accuracy and the seconds each step took.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ingest import code_nl_classifier
from ingest.matching import embed_distinct, embedding_device, match_corpus_identity, match_corpus_rows
from ingest.panel import described_rows
from ingest.stream_counts import StreamSource, count_stream, instance_rows
from ingest.tokenizer import load_tokenizer, tokenizer_key, tokenizer_of
from memlake.core import lake, settings
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse
from memlake.core.progress import progress
from memlake.core.unit import Computed, Output, WarehouseUnit, run_unit
from transforms import code_nl, semantic
from transforms.duplicates import continuation_duplicate_counts, sequence_duplicate_counts
from transforms.filters import FILTERS, apply_filters
from transforms.frequencies import frequency_stats, sequence_frequencies, token_counts

TABLE = "instance_features"
STREAM_CHUNK_ROWS = 4096  # stream rows gathered at once (fancy indexing of the training rows)
SETTINGS = ("prompt_len", "k", "representative_sample")  # the taxonomy keys the features depend on


@dataclass(frozen=True)
class Current(Output):
    """A lake partition complete only while its manifest records these `inputs`; a stale one is
    replaced when written."""

    inputs: dict[str, Any] = field(default_factory=dict)

    def is_complete(self, wh: Warehouse) -> bool:
        if not super().is_complete(wh):
            return False
        have = lake.manifest(lake.partition_dir(wh, self.table, self.partition)).get("config", {})
        return have.get("inputs") == self.inputs

    def write(self, wh: Warehouse, data, provenance: dict[str, Any], overwrite: bool) -> int:
        return super().write(wh, data, provenance, overwrite=True)


@dataclass(frozen=True)
class FeaturesUnit(WarehouseUnit):
    """The features of the warehouse's instances; see `build_features` for the options."""

    taxonomy: settings.Taxonomy
    panel: settings.Panel
    seed: int
    root: str  # the warehouse root (a string: units pickle)
    tokenizer: str | None = None
    stream: StreamSource | None = None
    match_corpus: str | None = None
    table = TABLE

    @property
    def partition(self) -> dict[str, Any]:
        return {}

    def check(self) -> None:
        wh = self.warehouse
        if not lake.is_complete(wh, "instances", {}):
            raise MemlakeError(
                f"no instances under {wh.table('instances')}: run `memlake suite corpus` first"
            )

    @functools.cached_property
    def tokenizer_source(self) -> str:
        return tokenizer_of(self.warehouse, self.tokenizer)

    @functools.cached_property
    def corpus_id(self) -> dict[str, Any] | None:
        if self.match_corpus is None:
            return None
        return match_corpus_identity(self.warehouse, self.match_corpus)

    @functools.cached_property
    def inputs(self) -> dict[str, Any]:
        """What the features depend on: a partition computed from other inputs is rebuilt."""
        wh = self.warehouse
        order_path = wh.suite / "data_order.npy"
        opened = self.stream.open() if self.stream is not None else None  # the identity only: cheap
        inputs = {
            "seed": self.seed,
            "taxonomy": {k: getattr(self.taxonomy, k) for k in SETTINGS},
            "instances_sha256": lake.manifest(wh.table("instances"))["files"][lake.DATA_FILE],
            "data_order_sha256": lake.sha256(order_path) if order_path.exists() and opened is None else None,
            "code_nl_recipe": code_nl_classifier.RECIPE,
            "tokenizer": tokenizer_key(wh, self.tokenizer_source),
            "columns": lake.spec(TABLE).schema.names,  # a contract change rebuilds an older partition
            "panel": self.panel.record(),  # the rows it covers
        }
        if opened is not None:  # only when given, so partitions of the default stay up to date
            inputs["stream"] = {"identity": opened.identity(), "key": opened.key()}
        if self.corpus_id is not None:
            inputs["match_corpus"] = self.corpus_id
        return _jsonable(inputs)

    def outputs(self) -> list[Output]:
        return [Current(TABLE, {}, inputs=self.inputs)]

    def compute(self, log) -> Computed:
        return _compute(self)


def build_features(
    taxonomy: settings.Taxonomy,
    panel: settings.Panel,
    seed: int,
    wh: Warehouse,
    *,
    force: bool = False,
    tokenizer: str | None = None,
    stream: StreamSource | None = None,
    match_corpus: str | None = None,
) -> dict[str, Any]:
    """Compute and write `instance_features` for the warehouse's instances; skip if up to date.

    tokenizer: the tokenizer that made the instances' token ids, a local folder or a Hub id,
        loaded with `AutoTokenizer.from_pretrained` (decodes `text` / `prompt_text`; its vocabulary
        bounds the ids). Default: the one the `instances` manifest records (Hub imports record
        Pythia's), else the warehouse tokenizer (`suite/tokenizer`, the embedded corpus's).
    stream: the training stream to count duplicates and token frequencies over, in shards
        (`ingest.stream_counts`); default: the warehouse's own training rows in data order.
    match_corpus: the semantic / textual match corpus: a lake table with `instance_id` and
        `tokens` (`representative_sample`, or `representative_sample:<scheme>`; absent: the
        default) or a Parquet file / folder with those columns; default: a seeded sample of
        `taxonomy.representative_sample` training rows.
    """
    unit = FeaturesUnit(taxonomy, panel, seed, str(wh.root), tokenizer, stream, match_corpus)
    r = run_unit(unit, force=force)
    if r["skipped"]:
        return {"skipped": True, "rows": lake.manifest(wh.table(TABLE))["rows"], "path": wh.table(TABLE)}
    keys = ("seconds", "held_out_accuracy", "stream_rows", "representative_sample_rows")
    return {"skipped": False, "rows": r["rows"], "path": wh.table(TABLE), **{k: r[k] for k in keys}}


def _compute(unit: FeaturesUnit) -> Computed:
    wh, seed, stream, corpus_id = unit.warehouse, unit.seed, unit.stream, unit.corpus_id
    prompt_len, k = unit.taxonomy.prompt_len, unit.taxonomy.k
    order_path = wh.suite / "data_order.npy"
    tokenizer_source = unit.tokenizer_source
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 2)
        clock = now

    with progress() as bar:
        task = bar.add_task("features: reading instances", total=7)
        sample_len = prompt_len + k
        inst = instance_rows(wh, sample_len)
        # every training row makes the stream and the match corpus; the features are the panel's
        # (the rows the scoring jobs see), so a corpus planted by the thousand costs no more
        train_pos = np.flatnonzero(inst.whole & (inst.split == "train"))  # rows of the instances table
        train = inst.rows[inst.split[inst.whole] == "train"]
        # sample-only rows (memorised samples of a Hub import) are never scored but have features
        keep = described_rows(wh, inst.ids, inst.whole, unit.panel.record(), seed)
        ids, sample, whole = inst.ids[keep], inst.sample[keep], inst.whole[keep]
        whole_rows = inst.rows[keep[inst.whole]]
        n = len(ids)
        order = None
        if stream is None:
            if not len(train):
                raise MemlakeError(
                    f"{wh.table('instances')}: no whole training rows (split = 'train') to count over; "
                    "pass the training stream (--stream)"
                )
            order = _data_order(order_path, len(train))
        tokenizer = load_tokenizer(wh, tokenizer_source)
        vocab = max(len(tokenizer), 1)
        for own_ids, matrix in ((ids[whole], whole_rows), (ids[~whole], sample[~whole])):
            outside = (matrix >= vocab) | (matrix < 0)
            if outside.any():
                row = int(np.flatnonzero(outside.any(axis=1))[0])
                value = int(matrix[row][outside[row]][0])
                raise MemlakeError(
                    f"instances column 'tokens': token id {value} (instance_id {int(own_ids[row])}) is "
                    f"outside the vocabulary of tokenizer {tokenizer_source} (ids 0..{vocab - 1}); pass "
                    "the tokenizer that made the instances (--tokenizer)"
                )
        text = tokenizer.batch_decode(sample.tolist(), clean_up_tokenization_spaces=False)
        prompt_text = tokenizer.batch_decode(
            sample[:, :prompt_len].tolist(), clean_up_tokenization_spaces=False
        )
        lap("read_and_decode")

        bar.update(task, advance=1, description="features: duplicates")
        cols: dict[str, Any] = {"instance_id": ids, "text": text, "prompt_text": prompt_text}
        whole_counts = np.zeros(n, dtype=np.int64)
        if stream is None:

            def rows_in_order():
                for start in range(0, len(order), STREAM_CHUNK_ROWS):
                    yield train[order[start : start + STREAM_CHUNK_ROWS]]

            chunk_rows = max(64, 65536 // train.shape[1])
            cols["sequence_duplicates"] = continuation_duplicate_counts(
                sample, rows_in_order(), offset=prompt_len, k=k, chunk_rows=chunk_rows
            )
            whole_counts[whole] = sequence_duplicate_counts(
                whole_rows, rows_in_order(), chunk_rows=chunk_rows
            )
            lap("duplicates")
            bar.update(task, advance=1, description="features: token frequencies")
            counts = token_counts(rows_in_order(), vocab)
            stream_record = {
                "source": str(order_path) if order_path.exists() else "every training row once",
                "rows": int(len(order)),
                "training_rows": int(len(train)),
            }
        else:
            sc = count_stream(wh, stream, prompt_len=prompt_len, k=k)
            if not np.array_equal(sc.ids, inst.ids):
                raise MemlakeError(
                    f"{wh.table('instances')}: changed while the stream was counted; run again"
                )
            cols["sequence_duplicates"] = sc.sequence_duplicates[keep]
            whole_counts = sc.whole_sequence_duplicates[keep]
            lap("duplicates")
            bar.update(task, advance=1, description="features: token frequencies")
            counts = sc.vocabulary_counts(vocab, tokenizer_source)
            stream_record = {
                "source": str(stream.path),
                "format": sc.stream.format,
                "key": sc.stream.key(),
                "rows": sc.stream.rows,
                "row_len": sc.stream.row_len,
                "shards": stream.shards,
                "shards_run": sc.units_run,
                "shards_skipped": sc.units_skipped,
                "executor": stream.executor,
                "count_seconds": round(sc.seconds, 2),
            }
        cols["whole_sequence_duplicates"] = pa.array(whole_counts, pa.int64(), mask=~whole)
        cols.update(frequency_stats(sample, counts))
        cols["frequencies"] = pa.ListArray.from_arrays(
            np.arange(0, sample.size + 1, sample_len, dtype=np.int32),
            pa.array(sequence_frequencies(sample, counts).reshape(-1), pa.int64()),
        )
        lap("frequencies")

        bar.update(task, advance=1, description=f"features: filters ({', '.join(FILTERS)})")
        cols.update(apply_filters(text))
        lap("filters")

        bar.update(task, advance=1, description="features: code vs NL")
        model, report = code_nl_classifier.load_or_train(code_nl_classifier.model_dir(wh), seed=seed)
        cols["nl_score"] = code_nl.nl_score(text, model)
        lap("code_nl")

        corpus = (
            match_corpus_rows(wh, corpus_id, sample_len)
            if corpus_id and not corpus_id.get("absent")
            else None
        )
        if corpus is None:  # the default: a seeded sample of the training rows
            if not len(train_pos):
                raise MemlakeError(
                    f"{wh.table('instances')}: no whole training rows to draw the match corpus from; "
                    "pass one (--match-corpus representative_sample)"
                )
            picked = np.random.default_rng(seed).choice(
                len(train_pos), size=min(unit.taxonomy.representative_sample, len(train_pos)), replace=False
            )
            corpus_pos = train_pos[np.sort(picked)]
            corpus_sample = inst.sample[corpus_pos]
            own = np.full(len(inst.ids), -1, dtype=np.int64)
            own[corpus_pos] = np.arange(len(corpus_pos))
            own = own[keep]
            corpus_rows = len(corpus_pos)
        else:
            corpus_ids, corpus_sample = corpus
            corpus_rows = len(corpus_ids)
            known, first = np.unique(corpus_ids, return_index=True)
            own = np.full(n, -1, dtype=np.int64)
            if len(known):
                at = np.minimum(np.searchsorted(known, ids), len(known) - 1)
                own = np.where(known[at] == ids, first[at], -1)
        bar.update(task, advance=1, description=f"features: embedding {n} + {corpus_rows} texts")
        corpus_text = tokenizer.batch_decode(corpus_sample.tolist(), clean_up_tokenization_spaces=False)
        corpus_prompts = tokenizer.batch_decode(
            corpus_sample[:, :prompt_len].tolist(), clean_up_tokenization_spaces=False
        )
        both = embed_distinct(text + corpus_text)  # a text in both is embedded once
        emb, corpus_emb = both[:n], both[n:]
        lap("embedding")

        bar.update(task, advance=1, description="features: semantic and textual matches")
        sm = semantic.semantic_match_counts(emb, corpus_emb, semantic.THRESHOLDS, exclude_self=own)
        cols.update(sm.columns())
        cols.update(semantic.textual_match_counts(prompt_text, corpus_prompts, sm))
        cols["in_representative_sample"] = own >= 0
        lap("matches")

        bar.update(task, advance=1)
    table = pa.table({f.name: cols[f.name] for f in lake.spec(TABLE).schema})
    manifest_config = {
        "inputs": unit.inputs,
        "tokenizer": tokenizer_source,
        "stream": stream_record,
        "match_corpus": corpus_id or "seeded sample of the training rows",
        "representative_sample_rows": int(corpus_rows),
        "embedding_device": embedding_device(),
        "code_nl": {
            key: report[key]
            for key in ("recipe", "seed", "held_out_accuracy", "held_out_accuracy_all_code_windows")
        },
        "seconds": seconds,
    }
    summary = {
        "seconds": seconds,
        "held_out_accuracy": report["held_out_accuracy"],
        "stream_rows": int(stream_record["rows"]),
        "representative_sample_rows": int(corpus_rows),
    }
    return Computed(table, provenance=manifest_config, summary=summary)


# --------------------------------------------------------------------------- inputs


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


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=str))
