"""ingest.embedding_cache: texts embedded once per machine, read back bit for bit."""

import numpy as np

from ingest import embedding_cache
from ingest.features import embed_distinct
from ingest.lm.sentence_encoder import SentenceEncoder


def _counting(dim):
    seen = []

    def embed(texts):
        seen.append(list(texts))
        return np.stack([np.full(dim, len(t), np.float32) + np.arange(dim, dtype=np.float32) for t in texts])

    return embed, seen


def test_only_new_texts_are_embedded(tmp_path):
    embed, seen = _counting(4)
    first = embedding_cache.cached_embed(["a", "bb", "ccc"], embed, tmp_path, 4)
    again = embedding_cache.cached_embed(["ccc", "a", "dddd"], embed, tmp_path, 4)
    assert seen == [["a", "bb", "ccc"], ["dddd"]]
    np.testing.assert_array_equal(again[:2], first[[2, 0]])
    np.testing.assert_array_equal(again[2], embed(["dddd"])[0])
    assert len(list(tmp_path.glob("part-*.parquet"))) == 2 and not list(tmp_path.glob(".*"))
    embedding_cache.cached_embed(["a", "bb", "ccc", "dddd"], embed, tmp_path, 4)
    assert len(seen) == 3  # the call above and nothing more: every text was cached


def test_an_unwritable_cache_still_embeds(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    embed, _ = _counting(2)
    got = embedding_cache.cached_embed(["x"], embed, blocker / "sub", 2)  # mkdir fails
    np.testing.assert_array_equal(got, embed(["x"]))


def test_embed_distinct_reads_back_what_it_computed(monkeypatch, tmp_path):
    monkeypatch.setenv("MEMLAKE_CACHE", str(tmp_path))
    texts = ["def f(x):\n    return x", "The river was high that spring.", "def f(x):\n    return x"]
    cold = embed_distinct(texts)
    assert list(tmp_path.rglob("part-*.parquet"))
    monkeypatch.setattr(
        SentenceEncoder, "embed", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-embedded"))
    )
    np.testing.assert_array_equal(embed_distinct(texts), cold)
    np.testing.assert_array_equal(cold[0], cold[2])
