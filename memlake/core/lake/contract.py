"""The lake contract: every table's schema, grain, keys, partition keys and row checks.

This module is the one definition of the contract: the writer (`store.py`) validates against
it and `models/staging/__sources.yml` is checked against it (tests/integration/test_warehouse.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from memlake.core.errors import MemlakeError


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
                    # the document of the corpus (or stream) its first token lies in: rows cut
                    # from one document share it; null: synthetic or unknown
                    ("document", pa.int64()),
                ]
            ),
            keys=("instance_id",),
            checks=(_split_values, _train_rows_have_cohorts),
            optional=("sample_only", "document"),
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
                    # a counterfactual twin: the model it is the twin of (null: not a twin)
                    ("twin_of", pa.string()),
                ]
            ),
            keys=("model", "step"),
            partition_by=("model",),
            optional=("revision", "first_epoch_end", "twin_of"),
        ),
        TableSpec(
            name="twin_heldout",
            grain="one row per (twin, held-out instance): a panel row the twin never trains on and "
            "the filler row it trains on at that row's stream positions instead",
            schema=pa.schema(
                [
                    ("model", pa.string()),  # the twin
                    ("instance_id", pa.int64()),
                    ("filler_tokens", TOKENS),
                ]
            ),
            keys=("model", "instance_id"),
            partition_by=("model",),
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
                    # sum_v p_v (log p_v)^2, nats^2 (ingest/token_stats.py); null where the writer
                    # had no logits (the public stats-raw imports) or predates it
                    ("second_moment", pa.list_(pa.float32())),
                ]
            ),
            keys=("model", "step", "instance_id"),
            partition_by=("model", "step", "shard"),
            optional=("second_moment",),
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
                    # on the forget set (ingest/mitigation/oracle.py): teacher-forced argmax accuracy
                    # and extraction strength over the window, Min-K% AUC against never-trained rows
                    ("exact_memorization", pa.float64()),
                    ("extraction_strength", pa.float64()),
                    ("mia_auc", pa.float64()),
                    # against the study's retrain oracle (null without one): MUSE's PrivLeak in
                    # percent, and the KS statistic and p-value of the forget losses (TOFU)
                    ("privleak", pa.float64()),
                    ("ks_distance", pa.float64()),
                    ("forget_quality", pa.float64()),
                    # the forget rows' instance ids (lake rows: suite studies) and, aligned, whether
                    # greedy decoding still reproduces each after the edit
                    ("forget_ids", pa.list_(pa.int64())),
                    ("forget_extracted", pa.list_(pa.bool_())),
                ]
            ),
            keys=("study", "run_id"),
            partition_by=("study", "run_id"),  # one partition per run: sweeps resume run by run
            optional=(
                "exact_memorization",
                "extraction_strength",
                "mia_auc",
                "privleak",
                "ks_distance",
                "forget_quality",
                "forget_ids",
                "forget_extracted",
            ),  # fmt: skip
        ),
        TableSpec(
            name="mitigation_oracles",
            grain="one row per study: its retrain oracle (the base model trained without the forget set)",
            schema=pa.schema(
                [
                    ("study", pa.string()),
                    ("model", pa.string()),
                    ("step", pa.int64()),
                    ("n_forget", pa.int64()),
                    ("n_nonmembers", pa.int64()),  # never-trained rows the MIA scores against
                    ("mem", pa.float64()),  # the study's own measures, as mitigation_runs' *_after
                    ("acc", pa.float64()),
                    ("ppl", pa.float64()),
                    ("exact_memorization", pa.float64()),  # the oracle's, on the forget set
                    ("extraction_strength", pa.float64()),
                    ("mia_auc", pa.float64()),
                    # the unedited base model against the oracle: where every run starts from
                    ("base_exact_memorization", pa.float64()),
                    ("base_extraction_strength", pa.float64()),
                    ("base_mia_auc", pa.float64()),
                    ("base_privleak", pa.float64()),
                    ("base_ks_distance", pa.float64()),
                    ("base_forget_quality", pa.float64()),
                    ("seconds", pa.float64()),  # training (or loading) the oracle
                    # as in mitigation_runs: a suite study's forget rows, and whether the oracle,
                    # which never trained on them, reproduces each anyway
                    ("forget_ids", pa.list_(pa.int64())),
                    ("forget_extracted", pa.list_(pa.bool_())),
                ]
            ),
            keys=("study",),
            partition_by=("study",),
            optional=("forget_ids", "forget_extracted"),
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
    source test), and tests/integration/test_warehouse.py checks them against TABLES with this, so that this
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
