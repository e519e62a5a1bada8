"""The embedded corpus: determinism, planted-artifact counts, data order, validation split."""

from collections import Counter

import numpy as np
import polars as pl
import pytest

from ingest.corpus.build import _per_count, checkpoint_steps, cohort_of
from memlake.core import config, lake
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse
from tests.helpers import corpus_from
from transforms.duplicates import continuation_duplicate_counts
from transforms.templating import templating_flags


@pytest.fixture(scope="module")
def instances(tiny_corpus):
    return pl.from_arrow(lake.read_table(tiny_corpus, "instances"))


def test_same_seed_same_instances(tiny_corpus, tiny_cfg, tmp_path):
    again = Warehouse.at(tmp_path / "again")
    corpus_from(tiny_cfg, again)
    a = lake.read_table(tiny_corpus, "instances")
    b = lake.read_table(again, "instances")
    assert a.equals(b)
    assert (tiny_corpus.tokenizer / "tokenizer.json").read_text() == (
        again.tokenizer / "tokenizer.json"
    ).read_text()
    other = Warehouse.at(tmp_path / "other")
    corpus_from(config.apply_overrides(tiny_cfg, ["seed=7"]), other)
    assert not lake.read_table(other, "instances")["tokens"].equals(a["tokens"])


def test_rebuild_with_other_config_is_refused(tiny_corpus, tiny_cfg):
    assert corpus_from(tiny_cfg, tiny_corpus)["skipped"]
    with pytest.raises(MemlakeError, match="different config"):
        corpus_from(config.apply_overrides(tiny_cfg, ["seed=99"]), tiny_corpus)


def test_planted_artifact_counts(instances, tiny_cfg):
    p = tiny_cfg["corpus"]["planted"]
    train = instances.filter(pl.col("split") == "train")
    dups = train.filter(pl.col("artifact") == "duplicate")
    # For every planted count c: duplicates_per_count distinct sequences, each occurring c times.
    per_count = dups.group_by("copies").agg(pl.col("tokens").n_unique().alias("seqs"), pl.len())
    got = {r["copies"]: (r["seqs"], r["len"]) for r in per_count.iter_rows(named=True)}
    assert got == {c: (k, k * c) for c, k in zip(p["duplicate_counts"], _per_count(p))}
    kinds = Counter(train["artifact"].to_list())
    assert kinds["incrementing"] == p["incrementing"]
    assert kinds["repeating"] == p["repeating"]
    assert kinds["noise"] == p["noise"]["sequences"] * p["noise"]["copies"]
    assert kinds["backdoor"] == p["backdoor"]["sequences"]


def test_copies_is_exact_occurrence_count(instances):
    train = instances.filter(pl.col("split") == "train")
    counts = Counter(tuple(t) for t in train["tokens"].to_list())
    assert [counts[tuple(t)] for t in train["tokens"].to_list()] == train["copies"].to_list()


def test_noise_rows_keep_their_clean_counterpart(instances, tiny_cfg):
    noise = instances.filter(pl.col("artifact") == "noise")
    for noisy, clean in zip(noise["tokens"].to_list(), noise["clean_tokens"].to_list()):
        assert clean is not None and len(clean) == len(noisy) and noisy[0] == clean[0]
    train_rows = {tuple(t) for t in instances.filter(pl.col("split") == "train")["tokens"].to_list()}
    assert not any(tuple(c) in train_rows for c in noise["clean_tokens"].to_list())


def test_validation_is_never_trained(instances):
    val = instances.filter(pl.col("split") == "validation")
    train_rows = {tuple(t) for t in instances.filter(pl.col("split") == "train")["tokens"].to_list()}
    assert len(val) > 0 and not any(tuple(t) in train_rows for t in val["tokens"].to_list())
    assert val["cohort"].null_count() == len(val) and val["batch_idx"].null_count() == len(val)
    assert (val["copies"] == 0).all()


def test_data_order_and_cohorts(instances, tiny_corpus, tiny_cfg):
    bs, every = tiny_cfg["order"]["batch_size"], tiny_cfg["order"]["checkpoint_every"]
    train = instances.filter(pl.col("split") == "train").sort("instance_id")
    n = len(train)
    assert n % bs == 0 and train["instance_id"].to_list() == list(range(n))
    assert train["batch_idx"].to_list() == [i // bs for i in range(n)]
    total = n // bs
    grid = checkpoint_steps(total, every)
    assert grid[0] == 0 and grid[-1] == total
    # Cohort = the first checkpoint at or after the step that consumed the batch (b + 1).
    for b, g in zip(train["batch_idx"].to_list(), train["cohort"].to_list()):
        assert g in grid and g >= b + 1 and not any(b + 1 <= c < g for c in grid)
    order = np.load(tiny_corpus.suite / "data_order.npy")
    assert order.tolist() == list(range(n))  # one epoch: the stream is the instance order


def test_cohort_formula_edges():
    assert cohort_of(np.array([0, 15, 16, 31, 32]), 16, 40).tolist() == [16, 16, 32, 32, 40]
    assert checkpoint_steps(40, 16) == [0, 16, 32, 40]


def test_sources_and_rows_have_fixed_length(instances, tiny_cfg):
    assert set(instances["source"].unique()) == {"code", "prose", "synthetic"}
    assert set(instances["tokens"].list.len().unique()) == {tiny_cfg["corpus"]["row_len"]}


def test_tokenizer_is_hugging_face_format(tiny_corpus, tiny_cfg):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_corpus.tokenizer))
    assert tok.eos_token_id == 0 and tok.pad_token_id == 1
    assert len(tok) == tiny_cfg["corpus"]["vocab_size"]
    text = "def f(x):\n    return x + 1  # the answer"
    assert tok.decode(tok(text)["input_ids"]) == text


def _stream(instances, wh):
    """The training stream (every epoch) as token rows, in the order the optimiser sees them."""
    train = instances.filter(pl.col("split") == "train").sort("instance_id")
    return np.stack(train["tokens"].to_numpy())[np.load(wh.suite / "data_order.npy")]


def test_templated_rows_are_flagged_and_not_recitation(instances, tiny_corpus, tiny_cfg):
    """Reconstruction candidates: every planted counter is `is_incrementing` and every repeated
    span `is_repeating`, while the continuation's 32-gram occurs at most `recitation_threshold`
    times in the stream, so only the template, not duplication, can explain their memorisation."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_corpus.tokenizer))
    tax = tiny_cfg["taxonomy"]
    stream = _stream(instances, tiny_corpus)
    for kind, column in (("incrementing", 0), ("repeating", 1)):
        rows = instances.filter(pl.col("artifact") == kind)
        assert len(rows) == tiny_cfg["corpus"]["planted"][kind]
        tokens = np.stack(rows["tokens"].to_numpy())
        texts = tok.batch_decode(tokens.tolist(), clean_up_tokenization_spaces=False)
        assert all(templating_flags(t)[column] for t in texts), kind
        dups = continuation_duplicate_counts(tokens, stream, offset=tax["prompt_len"], k=tax["k"])
        assert dups.min() >= 1 and dups.max() <= tax["recitation_threshold"], (kind, dups.max())
    # distinct rows: a counter or span planted twice would be a duplicate, not a template
    templated = instances.filter(pl.col("artifact").is_in(["incrementing", "repeating"]))
    assert templated["tokens"].n_unique() == len(templated)


def test_recollection_rows_have_two_to_five_exposures(instances, tiny_corpus, tiny_cfg):
    """Recollection candidates: planted non-templated sequences seen 2..5 times in the stream."""
    p, threshold = tiny_cfg["corpus"]["planted"], tiny_cfg["taxonomy"]["recitation_threshold"]
    want = {c: k for c, k in zip(p["duplicate_counts"], _per_count(p)) if 2 <= c <= threshold}
    assert sum(want.values()) >= 8
    first = instances.filter(pl.col("split") == "train").unique("tokens", keep="first", maintain_order=True)
    rows = first.filter((pl.col("artifact") == "duplicate") & pl.col("copies").is_between(2, threshold))
    assert dict(Counter(rows["copies"].to_list())) == want
    # exposures in the first epoch (later epochs, if any, add theirs: the taxonomy counts them)
    epoch = _stream(instances, tiny_corpus)[: (instances["split"] == "train").sum()]
    exposures = Counter(r.tobytes() for r in epoch.astype(np.int32))
    tokens = np.stack(rows["tokens"].to_numpy()).astype(np.int32)
    assert [exposures[t.tobytes()] for t in tokens] == rows["copies"].to_list()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_corpus.tokenizer))
    texts = tok.batch_decode(tokens.tolist(), clean_up_tokenization_spaces=False)
    assert not any(any(templating_flags(t)) for t in texts)


def test_duplicates_per_count_must_match_the_counts():
    with pytest.raises(MemlakeError, match="duplicates_per_count"):
        _per_count({"duplicate_counts": [2, 3], "duplicates_per_count": [1, 2, 3]})
    assert _per_count({"duplicate_counts": [2, 3], "duplicates_per_count": 4}) == [4, 4]


def test_rows_know_their_document(instances, tiny_corpus, tiny_cfg):
    """Each natural row names the corpus document its first token lies in (checked against the
    documents' text), rows cut from one document share it, planted copies keep their base's, and
    synthetic rows have none."""
    from transformers import AutoTokenizer

    from ingest.corpus.build import _shuffled_documents

    synthetic = instances["source"] == "synthetic"
    assert instances.filter(synthetic)["document"].null_count() == synthetic.sum()
    assert instances.filter(~synthetic)["document"].null_count() == 0
    # identical tokens, same document (exact and fuzzy copies of one row)
    per_row = (
        instances.filter(~synthetic).group_by(pl.col("tokens").hash()).agg(pl.col("document").n_unique())
    )
    assert (per_row["document"] == 1).all()
    noise = instances.filter(pl.col("artifact") == "noise")
    clean = instances.filter(pl.col("artifact") == "none").select(
        "tokens", pl.col("document").alias("clean_doc")
    )
    joined = noise.join(clean, left_on="clean_tokens", right_on="tokens", how="inner")
    assert len(joined) == 0 or (joined["document"] == joined["clean_doc"]).all()
    # the decoded start of a row is text of its document (up to its first end of document)
    docs = _shuffled_documents(np.random.default_rng(tiny_cfg["seed"]))
    tok = AutoTokenizer.from_pretrained(str(tiny_corpus.tokenizer))
    natural = instances.filter(pl.col("artifact") == "none").head(60)
    checked = 0
    for tokens, doc in zip(natural["tokens"].to_list(), natural["document"].to_list()):
        head = tokens[: tokens.index(0)] if 0 in tokens else tokens
        text = tok.decode(head[1:12]).strip()  # the first token may be a word's second half
        if len(text) > 8:
            assert text in docs[doc].text, (doc, text)
            checked += 1
    assert checked > 30
    # documents longer than a row span several rows, so some rows share a document
    counts = instances.filter(~synthetic).group_by("document").len()
    assert (counts["len"] > 1).any()
