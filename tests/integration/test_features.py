"""Taxonomy features end to end on the tiny corpus: the `instance_features` lake table (exact
duplicate counts and frequencies against a brute-force pass over the training stream, planted
templates flagged, matches nested, idempotence, bad input), then the `sequence_features`,
`taxonomy` and `sequence_features_published` marts after the demo's stages on the tiny suite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ingest import features as feat
from ingest.panel import panel_instance_ids
from memlake.core import config, lake, query
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse
from tests.helpers import features_from

MEMLAKE = [sys.executable, "-c", "from memlake.cli import main; main()"]
CATEGORIES = {"recitation", "reconstruction", "recollection"}


def memlake(args, wh):
    env = {**os.environ, "MEMLAKE_WAREHOUSE": str(wh.root)}
    return subprocess.run(MEMLAKE + args, capture_output=True, text=True, env=env)


def copy_corpus(src: Warehouse, dst: Warehouse) -> Warehouse:
    """The corpus part of a warehouse (instances, tokenizer, data order): all the features need."""
    shutil.copytree(src.table("instances"), dst.table("instances"))
    shutil.copytree(src.tokenizer, dst.tokenizer)
    shutil.copy(src.suite / "data_order.npy", dst.suite / "data_order.npy")
    return dst


@pytest.fixture(scope="module")
def built(tiny_corpus, tiny_cfg, tmp_path_factory):
    """build_features over a copy of the session corpus (features are corpus-level: never the
    original), with the whole panel (every natural row and the first copy of every planted one)."""
    wh = copy_corpus(tiny_corpus, Warehouse.at(tmp_path_factory.mktemp("wh-features")))
    cfg = config.apply_overrides(tiny_cfg, ["ingest.panel={per_cohort: 1000000, validation: 1000000}"])
    result = features_from(cfg, wh)
    inst = pl.from_arrow(lake.read_table(wh, "instances"))
    frame = inst.join(pl.from_arrow(lake.read_table(wh, "instance_features")), on="instance_id")
    return wh, result, frame


def training_stream(wh: Warehouse) -> np.ndarray:
    """Every training row in data order (the panel is a sample of them)."""
    train = (
        pl.from_arrow(lake.read_table(wh, "instances")).filter(pl.col("split") == "train").sort("instance_id")
    )
    rows = np.array(train["tokens"].to_list())
    return rows[np.load(wh.suite / "data_order.npy")]


# --------------------------------------------------------------------------- lake table


def test_one_row_per_instance_with_the_contract(built):
    wh, result, frame = built
    panel = panel_instance_ids(wh, {"per_cohort": None, "validation": None}, 0)
    assert not result["skipped"] and result["rows"] == len(frame) == len(panel)
    assert frame["instance_id"].to_list() == sorted(panel.tolist())  # one row per panel instance
    inst = lake.read_table(wh, "instances")
    assert 1000 < len(panel) < inst.num_rows  # later copies of a planted row are not units
    assert lake.read_table(wh, "instance_features").schema == lake.spec("instance_features").schema
    m = lake.manifest(wh.table("instance_features"))
    assert 0.9 < m["config"]["code_nl"]["held_out_accuracy"] <= 1
    assert (
        m["config"]["stream"]["rows"]
        == result["stream_rows"]
        == pc.sum(pc.equal(inst["split"], "train")).as_py()
    )
    assert set(m["config"]["seconds"]) >= {"duplicates", "embedding", "matches"}
    assert frame["text"].str.len_chars().min() > 0 and frame["prompt_text"].str.len_chars().min() > 0
    assert (frame["text"].str.starts_with(frame["prompt_text"])).all()


def test_duplicate_counts_match_a_brute_force_pass_over_the_stream(built):
    wh, _, frame = built
    stream = training_stream(wh)
    windows = Counter(tuple(row[j : j + 32]) for row in stream for j in range(row.shape[0] - 32 + 1))
    whole = Counter(tuple(row) for row in stream)
    tokens = frame["tokens"].to_list()
    assert frame["sequence_duplicates"].to_list() == [windows[tuple(t[32:64])] for t in tokens]
    assert frame["whole_sequence_duplicates"].to_list() == [whole[tuple(t)] for t in tokens]


def test_planted_duplicates_count_at_least_their_copies(built):
    _, _, frame = built
    dup = frame.filter(pl.col("artifact") == "duplicate")
    assert len(dup) and (dup["sequence_duplicates"] >= dup["copies"]).all()
    # one epoch: a training row occurs `copies` times in the stream; validation rows never
    assert (frame["whole_sequence_duplicates"] == frame["copies"]).all()
    train = frame.filter(pl.col("split") == "train")
    assert (train["sequence_duplicates"] >= 1).all()  # a training row finds itself


def test_frequencies_are_the_stream_token_counts(built):
    wh, _, frame = built
    counts = np.bincount(training_stream(wh).ravel())
    for row in frame.sample(50, seed=0).iter_rows(named=True):
        f = counts[np.array(row["tokens"][:64])]
        assert row["max_frequency"] == f.max() and row["min_frequency"] == f.min()
        assert row["avg_frequency"] == pytest.approx(f.mean())
        assert row["median_frequency"] == pytest.approx(np.median(f))
        assert row["p25_frequency"] == np.quantile(f, 0.25, method="inverted_cdf")
        assert row["frequencies"] == f.tolist()  # the list column, per sample token in order


def test_planted_templates_are_flagged_and_natural_rows_are_not(built):
    _, _, frame = built
    rates = frame.group_by("artifact").agg(
        pl.len().alias("n"),
        pl.col("is_incrementing").mean().alias("incrementing"),
        pl.col("is_repeating").mean().alias("repeating"),
        pl.col("is_templating").mean().alias("templating"),
    )
    print(rates.sort("artifact"))  # the rates the README reports (pytest -s)
    rate = {r["artifact"]: r for r in rates.iter_rows(named=True)}
    assert rate["incrementing"]["incrementing"] >= 0.9
    assert rate["repeating"]["repeating"] >= 0.9
    assert rate["none"]["templating"] <= 0.01
    assert (frame["is_templating"] == (frame["is_incrementing"] | frame["is_repeating"])).all()
    assert not (frame["is_incrementing"] & frame["is_repeating"]).any()  # repeating tested only if not


def test_code_nl_scores_follow_the_source(built):
    _, _, frame = built
    mean = dict(frame.group_by("source").agg(pl.col("nl_score").mean()).iter_rows())
    assert mean["prose"] > 0.8 and mean["code"] < 0.4


def test_matches_are_nested_and_exclude_the_instance_itself(built):
    _, result, frame = built
    sample = frame.filter(pl.col("in_representative_sample"))  # the sample's rows in the panel
    assert result["representative_sample_rows"] == 300 and 200 < len(sample) <= 300
    assert (sample["split"] == "train").all()
    for t in ("0_8", "0_9"):
        assert (frame[f"textual_matches_{t}"] <= frame[f"semantic_matches_{t}"]).all()
    assert (frame["semantic_matches_0_9"] <= frame["semantic_matches_0_8"]).all()
    # exact copies of a row inside the sample (other instance ids) match it at cosine 1
    in_sample = Counter(sample["text"].to_list())
    others = [in_sample[t] - s for t, s in zip(frame["text"], frame["in_representative_sample"])]
    assert (frame["semantic_matches_0_9"].to_numpy() >= np.array(others)).all()
    # a row planted 50+ times has copies among the sample's 300 training rows, panel or not
    many = frame.filter((pl.col("artifact") == "duplicate") & (pl.col("copies") >= 50))
    assert len(many) and (many["semantic_matches_0_9"] >= 2).all()
    # ... and a sample row never matches itself: unique sample rows mostly have no match at 0.9
    unique = sample.filter(pl.col("text").is_unique())
    assert (unique["semantic_matches_0_9"] == 0).mean() > 0.9


def test_second_run_is_skipped_and_other_settings_rebuild(built, tiny_cfg, tmp_path, monkeypatch):
    wh, _, frame = built
    before = lake.manifest(wh.table("instance_features"))
    again = features_from(
        config.apply_overrides(tiny_cfg, ["ingest.panel={per_cohort: 1000000, validation: 1000000}"]), wh
    )
    assert again["skipped"] and again["rows"] == len(frame)
    assert lake.manifest(wh.table("instance_features")) == before
    # force, or another sample size, rebuilds (on a copy; a fake embedding keeps it fast)
    copy = Warehouse.at(tmp_path / "wh")
    shutil.copytree(wh.root, copy.root)
    rng = np.random.default_rng(0)

    def fake_embed(texts):
        x = rng.normal(size=(len(texts), 384)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    monkeypatch.setattr(feat, "embed_distinct", fake_embed)
    cfg = config.apply_overrides(tiny_cfg, ["ingest.panel={per_cohort: 1000000, validation: 1000000}"])
    forced = features_from(cfg, copy, force=True)
    assert not forced["skipped"]
    redone = pl.from_arrow(lake.read_table(copy, "instance_features"))
    same = ["instance_id", "text", "sequence_duplicates", "min_frequency", "is_templating", "nl_score"]
    assert redone.select(same).equals(frame.select(same))
    other = config.apply_overrides(cfg, ["taxonomy.representative_sample=100"])
    assert not features_from(other, copy)["skipped"]
    in_sample = pl.from_arrow(lake.read_table(copy, "instance_features"))["in_representative_sample"].sum()
    assert 50 < in_sample <= 100 and features_from(other, copy)["skipped"]


def test_a_failed_rebuild_keeps_the_features_as_they_were(built, tiny_cfg, tmp_path, monkeypatch):
    copy = Warehouse.at(tmp_path / "wh")
    shutil.copytree(built[0].root, copy.root)
    before = lake.manifest(copy.table("instance_features"))

    def killed(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(feat, "apply_filters", killed)  # after the duplicates and frequencies
    with pytest.raises(RuntimeError, match="killed"):
        features_from(tiny_cfg, copy, force=True)
    assert lake.manifest(copy.table("instance_features")) == before
    assert not (copy.staging.exists() and any(copy.staging.iterdir()))


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "override, message",
    [
        ("taxonomy.k=40", "rows have 64 tokens, fewer than taxonomy.prompt_len + taxonomy.k = 72"),
        # the typed taxonomy section refuses these where the config is checked
        ("taxonomy.prompt_len=0", r"config key taxonomy.prompt_len: .*greater than or equal to 1 \(got 0\)"),
        ("taxonomy.representative_sample=many", "config key taxonomy.representative_sample: .*valid integer"),
    ],
)
def test_bad_settings_are_one_line_errors(built, tiny_cfg, override, message):
    wh, _, _ = built
    with pytest.raises(MemlakeError, match=message.replace("+", r"\+")):
        features_from(config.apply_overrides(tiny_cfg, [override]), wh, force=True)


def test_bad_inputs_name_the_file(tiny_corpus, tiny_cfg, tmp_path):
    wh = copy_corpus(tiny_corpus, Warehouse.at(tmp_path / "wh"))
    np.save(wh.suite / "data_order.npy", np.array([0, 1, 5000]))
    with pytest.raises(MemlakeError, match=r"data_order.npy: value 5000 is not a training row"):
        features_from(tiny_cfg, wh)
    shutil.rmtree(wh.tokenizer)
    os.remove(wh.suite / "data_order.npy")
    with pytest.raises(MemlakeError, match="no tokenizer at"):
        features_from(tiny_cfg, wh)
    no_section = {k: v for k, v in tiny_cfg.items() if k != "taxonomy"}
    with pytest.raises(MemlakeError, match="config key taxonomy: Field required"):
        features_from(no_section, wh)
    with pytest.raises(MemlakeError, match="no instances under"):
        features_from(tiny_cfg, Warehouse.at(tmp_path / "empty"))
    assert not (wh.table("instance_features")).exists()


def test_rows_of_different_lengths_are_refused(tiny_corpus, tiny_cfg, tmp_path):
    wh = Warehouse.at(tmp_path / "wh")
    shutil.copytree(tiny_corpus.tokenizer, wh.tokenizer)
    lake.write_partition(
        wh,
        "instances",
        {
            "instance_id": [0, 1],
            "split": ["train", "train"],
            "tokens": [list(range(2, 66)), list(range(2, 60))],
            "batch_idx": [0, 0],
            "cohort": [1, 1],
            "source": ["code", "code"],
            "artifact": ["none", "none"],
            "copies": [1, 1],
            "clean_tokens": pa.nulls(2, lake.TOKENS),
        },
    )
    with pytest.raises(MemlakeError, match="instance_id 1 has a different length"):
        features_from(tiny_cfg, wh)


def test_lake_refuses_textual_above_semantic(built):
    wh, _, _ = built
    t = lake.read_table(wh, "instance_features").slice(0, 3)
    t = t.set_column(
        t.schema.get_field_index("textual_matches_0_8"),
        "textual_matches_0_8",
        pa.array([10**6] * 3, pa.int64()),
    )
    with pytest.raises(MemlakeError, match="'textual_matches_0_8' exceeds 'semantic_matches_0_8'"):
        lake.validate("instance_features", t)


# --------------------------------------------------------------------------- marts


@pytest.fixture(scope="module")
def stages(tiny_suite, built, tmp_path_factory):
    """The demo's stages up to the dbt build, as CLI commands, over a copy of the session's corpus
    and suite: token statistics, extraction, `memlake taxonomy features`, `memlake build` (the
    later demo stages belong to other analyses). The code-vs-NL classifier of the features
    fixture is copied too (it is cached per warehouse). Returns the warehouse and the features log."""
    wh = Warehouse.at(tmp_path_factory.mktemp("wh-taxonomy-demo"))
    for table in ("instances", "checkpoints"):
        shutil.copytree(tiny_suite.table(table), wh.table(table))
    shutil.copytree(tiny_suite.suite, wh.suite)
    shutil.copytree(built[0].root / "models", wh.root / "models")
    target = tmp_path_factory.mktemp("dbt-taxonomy")
    logs = {}
    for name, args in (
        ("token_stats", ["ingest", "token-stats", "--config", "tiny"]),
        ("extraction", ["ingest", "extraction", "--config", "tiny"]),
        ("features", ["taxonomy", "features", "--config", "tiny"]),
        ("build", ["build", "--target-path", str(target), "--log-path", str(target / "logs")]),
    ):
        out = memlake(args, wh)
        assert out.returncode == 0, (name, out.stdout[-3000:], out.stderr[-3000:])
        logs[name] = out.stdout + out.stderr
    return wh, logs


def sql(wh, text):
    return query.read(wh, text)


def test_features_cli_computes_once(stages):
    wh, logs = stages
    n = len(panel_instance_ids(wh, config.load("tiny")["ingest"]["panel"], config.load("tiny")["seed"]))
    assert f"features: {n} instances in" in logs["features"] and "held-out accuracy" in logs["features"]
    assert "ERROR=0" in logs["build"] and "test_taxonomy_category_rules" in logs["build"]
    out = memlake(["taxonomy", "features", "--config", "tiny"], wh)
    assert out.returncode == 0 and f"{n} instances (cached)" in out.stderr


def test_demo_runs_features_between_extraction_and_the_build():
    from memlake.pipeline.demo import STAGES

    labels = [name for name, _ in STAGES]
    assert labels.index("extraction over every checkpoint") < labels.index("taxonomy features")
    assert labels.index("taxonomy features") < labels.index("dbt build")


def test_taxonomy_grain_categories_and_planted_artifacts(stages):
    wh, _ = stages
    tax = sql(wh, "select * from taxonomy")
    extracted = sql(wh, "select * from memorised_sequences where prompt_len = 32 and gen_len = 32")
    assert len(tax) == len(extracted) > 0
    assert tax.select("model", "step", "instance_id").is_duplicated().sum() == 0
    assert set(tax["category"]) <= CATEGORIES and (tax["recitation_threshold"] == 5).all()
    dup = tax.filter((pl.col("artifact") == "duplicate") & (pl.col("copies") > 5))
    assert len(dup) and (dup["category"] == "recitation").all()  # memorised ones included
    templated = tax.filter(pl.col("artifact").is_in(["incrementing", "repeating"]))
    share = (templated["category"] == "reconstruction").mean()
    print(f"templated -> reconstruction: {share:.2f} of {len(templated)} rows")
    assert share > 0.6  # the rest: a repeating row holds its own continuation > 5 times -> recitation
    recited = templated.filter(pl.col("category") == "recitation")
    assert (recited["sequence_duplicates"] > 5).all()


def test_sequence_features_and_published_parity_view(stages):
    wh, _ = stages
    seq = sql(wh, "select * from sequence_features")
    tax = sql(wh, "select * from taxonomy")
    assert len(seq) == len(tax) and set(seq["code_nl"]) <= {"nl", "code", "uncertain"}
    assert seq["prompt_perplexity"].null_count() == 0  # token stats cover the same panel
    pub = sql(wh, "select * from sequence_features_published")
    assert pub.columns == [
        "model",
        "step",
        "sequence_id",
        "tokens",
        "text",
        "is_incrementing",
        "is_repeating",
        "sequence_duplicates",
        "max_frequency",
        "avg_frequency",
        "min_frequency",
        "median_frequency",
        "p25_frequency",
        "p75_frequency",
        "frequencies",
        "nl_scores",
        "0_8_snowclones",
        "0_9_snowclones",
        "0_8_templates",
        "0_9_templates",
        "huffman_coding_length",
        "memorization_score",
        "prompt_perplexity",
        "generation_perplexity",
        "sequence_perplexity",
    ]
    assert len(pub) == len(seq) and (pub["tokens"].list.len() == 64).all()
    assert (pub["frequencies"].list.len() == 64).all()
    assert (pub["frequencies"].list.max() == pub["max_frequency"]).all()
    assert (pub["frequencies"].list.min() == pub["min_frequency"]).all()
    keys = ["model", "step", "instance_id"]
    same = pub.rename({"sequence_id": "instance_id"}).join(seq, on=keys, suffix="_seq")
    assert len(same) == len(seq) and (same["frequencies"] == same["frequencies_seq"]).all()
    assert np.allclose(pub["prompt_perplexity"] * pub["generation_perplexity"], pub["sequence_perplexity"])
    assert (pub["0_8_templates"] <= pub["0_8_snowclones"]).all()


@pytest.mark.slow  # a second dbt build of the features warehouse
def test_threshold_ablation_is_a_dbt_var(stages, tmp_path):
    wh, _ = stages
    paths = ["--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs")]
    count = "select count(*) filter (where category = 'recitation') as n from taxonomy"
    before = sql(wh, count)["n"].item()
    try:
        proc = memlake(["build", "--select", "taxonomy", "--vars", "{recitation_threshold: 1}", *paths], wh)
        assert proc.returncode == 0, proc.stdout[-3000:]
        tax = sql(wh, "select * from taxonomy")
        assert (tax["recitation_threshold"] == 1).all()
        assert tax.filter(pl.col("category") == "recitation")["sequence_duplicates"].min() == 2
        assert sql(wh, count)["n"].item() > before
    finally:  # the other tests read the default mart
        assert memlake(["build", "--select", "taxonomy", *paths], wh).returncode == 0
    assert sql(wh, count)["n"].item() == before


# --------------------------------------------------------------------------- Hub-imported instances


def _stdlib_text(chars: int = 120_000) -> str:
    """Standard-library sources, enough for a tokenizer and ~a dozen 2049-token rows."""
    import argparse
    import json
    import textwrap
    from pathlib import Path

    paths = [
        Path(textwrap.__file__),
        Path(argparse.__file__),
        *sorted(Path(json.__file__).parent.glob("*.py")),
    ]
    return "".join(p.read_text() for p in paths)[:chars]


@pytest.fixture(scope="module")
def hub_tokenizer(tmp_path_factory):
    """A tokenizer folder in the Hub's format (tokenizer.json + tokenizer_config.json +
    special_tokens_map.json): a byte-level BPE trained here, saved with `save_pretrained`. Not the
    warehouse tokenizer: a different vocabulary, as Pythia's is for Hub-imported instances."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([_stdlib_text()], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    folder = tmp_path_factory.mktemp("hub-tokenizer") / "tiny-neox-like"
    fast.save_pretrained(folder)
    return folder


def _pile_files(root, rows: dict[str, list[list[int]]], ids: dict[str, list[int]]):
    """`pietrolesci/pile-deduped-subset`'s layout and schema (data/<split>-00000-of-00001.parquet)."""
    from tests.integration.test_hub_import import PILE_SCHEMA, _write

    for split in rows:
        cols = {"input_ids": rows[split], "seq_idx": ids[split]}
        _write(root / "data" / f"{split}-00000-of-00001.parquet", cols, PILE_SCHEMA)
    return root


@pytest.fixture(scope="module")
def hub_warehouse(hub_tokenizer, built, tmp_path_factory):
    """Pile-subset instances (2049-token rows of the local tokenizer's ids, one row duplicated)
    imported by `ingest.hub_import`, plus the features fixture's cached code-vs-NL classifier."""
    from transformers import AutoTokenizer

    from ingest.hub_import import import_dataset

    ids = AutoTokenizer.from_pretrained(hub_tokenizer)(_stdlib_text())["input_ids"]
    rows = [ids[i : i + 2049] for i in range(0, len(ids) - 2049, 2049)][:12]
    assert len(rows) == 12
    train, validation = rows[:9] + [rows[1]], rows[9:]  # seq 4000 repeats seq 10
    seq = {"train": [0, 10, 20, 1024, 2048, 3000, 3001, 3002, 3003, 4000], "validation": [-100, -101, -102]}
    root = _pile_files(
        tmp_path_factory.mktemp("pile-subset"), {"train": train, "validation": validation}, seq
    )
    wh = Warehouse.at(tmp_path_factory.mktemp("wh-hub"))
    import_dataset("pile-deduped-subset", str(root), wh)
    shutil.copytree(built[0].root / "models", wh.root / "models")
    return wh, root


def test_hub_instances_record_pythia_and_decode_with_the_given_tokenizer(
    hub_warehouse, hub_tokenizer, tiny_cfg, tmp_path
):
    from transformers import AutoTokenizer

    from ingest.hub_import import PYTHIA_TOKENIZER

    wh, _ = hub_warehouse
    assert feat.tokenizer_of(wh) == PYTHIA_TOKENIZER  # what the import recorded
    assert feat.tokenizer_of(wh, str(hub_tokenizer)) == str(hub_tokenizer)
    result = features_from(tiny_cfg, wh, tokenizer=str(hub_tokenizer))
    assert not result["skipped"] and result["stream_rows"] == 10
    m = lake.manifest(wh.table("instance_features"))
    assert m["config"]["tokenizer"] == str(hub_tokenizer)
    assert m["config"]["inputs"]["tokenizer"]["sha256"] == lake.sha256(hub_tokenizer / "tokenizer.json")
    frame = pl.from_arrow(lake.read_table(wh, "instances")).join(
        pl.from_arrow(lake.read_table(wh, "instance_features")), on="instance_id"
    )
    tok = AutoTokenizer.from_pretrained(hub_tokenizer)
    counts = np.bincount(np.array(frame.filter(pl.col("split") == "train")["tokens"].to_list()).ravel())
    for row in frame.iter_rows(named=True):
        assert row["text"] == tok.decode(row["tokens"][:64], clean_up_tokenization_spaces=False)
        assert row["prompt_text"] == tok.decode(row["tokens"][:32], clean_up_tokenization_spaces=False)
        assert row["frequencies"] == counts[row["tokens"][:64]].tolist()
    assert "def " in "".join(frame["text"])  # real source text, not the warehouse tokenizer's reading
    dup = frame.filter(pl.col("instance_id").is_in([10, 4000]))
    assert (dup["sequence_duplicates"] == 2).all() and (dup["whole_sequence_duplicates"] == 2).all()
    assert features_from(tiny_cfg, wh, tokenizer=str(hub_tokenizer))["skipped"]
    # a tokenizer recorded by the import is the default (same tokenizer: same inputs, skipped)
    other = Warehouse.at(tmp_path / "wh")
    from ingest.hub_import import import_dataset

    import_dataset("pile-deduped-subset", str(hub_warehouse[1]), other, tokenizer=str(hub_tokenizer))
    shutil.copytree(wh.root / "models", other.root / "models")
    shutil.copytree(wh.table("instance_features"), other.table("instance_features"))
    assert feat.tokenizer_of(other) == str(hub_tokenizer)
    assert features_from(tiny_cfg, other)["skipped"]  # same tokenizer, same inputs


def test_vocabulary_mismatch_and_unloadable_tokenizer_are_one_line_errors(
    hub_tokenizer, built, tiny_cfg, tmp_path
):
    from tests.integration.test_hub_import import _row

    root = _pile_files(tmp_path / "pile", {"train": [_row(s) for s in (0, 1, 2)]}, {"train": [0, 1, 2]})
    wh = Warehouse.at(tmp_path / "wh")
    from ingest.hub_import import import_dataset

    import_dataset("pile-deduped-subset", str(root), wh)
    out = memlake(["taxonomy", "features", "--config", "tiny", "--tokenizer", str(hub_tokenizer)], wh)
    assert out.returncode == 2
    # _row(0) = 0, 1, 2, ...: the first id beyond the 400-id vocabulary is 400, in instance 0
    line = (
        "error: instances column 'tokens': token id 400 (instance_id 0) is outside the vocabulary "
        f"of tokenizer {hub_tokenizer} (ids 0..399)"
    )
    assert out.stderr.replace("\n", "").startswith(line), out.stderr
    assert "Traceback" not in out.stderr
    with pytest.raises(MemlakeError, match=r"^tokenizer .*no-such-tokenizer: cannot load \(") as err:
        features_from(tiny_cfg, wh, tokenizer=str(tmp_path / "no-such-tokenizer"))
    assert "\n" not in str(err.value)
    assert not wh.table("instance_features").exists()


# --------------------------------------------------------------------------- the tiny demo


def test_tiny_demo_taxonomy_puts_planted_artifacts_in_their_categories(tiny_demo):
    """`memlake demo --config tiny`: every planted duplicate with more copies than the recitation
    threshold is recitation in every panel cell, incrementing rows are reconstruction (unless
    their own continuation recurs > threshold times, which the rule order makes recitation), and
    the model tests are in their mart and on the demo's taxonomy line."""
    wh, log = tiny_demo
    tax = sql(wh, "select * from taxonomy")
    threshold = int(tax["recitation_threshold"][0])
    dup = tax.filter((pl.col("artifact") == "duplicate") & (pl.col("copies") > threshold))
    assert dup["instance_id"].n_unique() >= 4 and (dup["category"] == "recitation").all()
    assert (tax.filter(pl.col("category") == "recitation")["sequence_duplicates"] > threshold).all()
    inc = tax.filter(pl.col("artifact") == "incrementing")
    assert inc["instance_id"].n_unique() >= 8
    assert (inc.filter(pl.col("sequence_duplicates") <= threshold)["category"] == "reconstruction").all()
    assert (inc["category"] == "reconstruction").mean() >= 0.9
    tests = sql(wh, "select * from taxonomy_model_tests where test = 'lrt'")
    pairs = sql(wh, "select count(distinct (model, step)) as n from taxonomy")["n"][0]
    assert len(tests) == 2 * pairs  # one LRT per (model, step) and protocol
    assert "tests (taxonomy_model_tests): " in log.replace("\n", "")
    assert "; partition search" in log.replace("\n", "")  # run, or why not, at final checkpoints
