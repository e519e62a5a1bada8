"""transforms.semantic: exact blocked cosine counts, bounded Levenshtein, textual <= semantic."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms import semantic
from transforms.semantic import SemanticMatches, bounded_levenshtein, semantic_match_counts


def unit_rows(rng, n, d=16, clusters=4, noise=0.35):
    """Normalised float32 rows around a few fixed centres, so some pairs pass 0.8 / 0.9."""
    centres = np.random.default_rng(1234).normal(size=(clusters, d))
    x = centres[rng.integers(clusters, size=n)] + noise * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def dense_reference(q, c, thresholds, own=None):
    """Brute force: the full float64 similarity matrix."""
    sims = q.astype(np.float64) @ c.astype(np.float64).T
    if own is not None:
        for i, j in enumerate(own):
            if j >= 0:
                sims[i, j] = -np.inf
    return sims, {t: (sims >= t).sum(axis=1) for t in thresholds}


@pytest.mark.parametrize("blocks", [(1, 1), (3, 7), (16, 5), (64, 64), (1000, 1000)])
@pytest.mark.parametrize("seed", [0, 1])
def test_counts_match_dense(seed, blocks):
    rng = np.random.default_rng(seed)
    q, c = unit_rows(rng, 37), unit_rows(rng, 53)
    sm = semantic_match_counts(q, c, (0.8, 0.9), query_block=blocks[0], corpus_block=blocks[1])
    sims, ref = dense_reference(q, c, (0.8, 0.9))
    assert ref[0.8].sum() > ref[0.9].sum() > 0  # the data do exercise both thresholds
    for t in (0.8, 0.9):
        np.testing.assert_array_equal(sm.counts(t), ref[t])
        for i in range(len(q)):
            np.testing.assert_array_equal(sm.matches(i, t), np.flatnonzero(sims[i] >= t))
    assert set(sm.columns()) == {"semantic_matches_0_8", "semantic_matches_0_9"}


@pytest.mark.parametrize("blocks", [(1, 1), (4, 9), (1024, 8192)])
def test_exclude_self(blocks):
    rng = np.random.default_rng(2)
    c = unit_rows(rng, 41)
    sm = semantic_match_counts(c, c, (0.8,), exclude_self=True, query_block=blocks[0], corpus_block=blocks[1])
    _, ref = dense_reference(c, c, (0.8,), own=np.arange(41))
    np.testing.assert_array_equal(sm.counts(0.8), ref[0.8])
    assert all(i not in sm.matches(i) for i in range(41))
    own = np.where(np.arange(41) % 2 == 0, np.arange(41), -1)  # only even queries are in the corpus
    sm = semantic_match_counts(c, c, (0.8,), exclude_self=own, query_block=blocks[0], corpus_block=blocks[1])
    _, ref = dense_reference(c, c, (0.8,), own=own)
    np.testing.assert_array_equal(sm.counts(0.8), ref[0.8])
    with pytest.raises(ValueError):
        semantic_match_counts(c[:5], c, (0.8,), exclude_self=True)


def test_exact_threshold_edges():
    """Cosines equal to the threshold count (>=); one float32 ulp below does not."""
    d = 8
    q = np.zeros((1, d), np.float32)
    q[0, 0] = 1.0
    x = np.float32(0.8)
    firsts = [
        x,
        np.nextafter(x, np.float32(0)),
        np.nextafter(x, np.float32(1)),
        np.float32(0.9),
        np.float32(1),
    ]
    c = np.zeros((len(firsts), d), np.float32)
    for i, v in enumerate(firsts):
        c[i, 0] = v
        c[i, 1] = np.float32(math.sqrt(max(0.0, 1 - float(v) ** 2)))
    # the dot with e1 is exactly c[:, 0]; use those exact values as thresholds
    t_eq = float(x)  # 0.800000011920929: equal to row 0's cosine
    sm = semantic_match_counts(q, c, (t_eq, 0.8))
    assert list(sm.matches(0, t_eq)) == [0, 2, 3, 4]  # row 1 is one ulp below
    assert list(sm.matches(0, 0.8)) == [0, 2, 3, 4]  # float32(0.8) > 0.8, nextafter below < 0.8
    assert sm.exact_rechecks >= 3
    # the same at every blocking
    for qb, cb in [(1, 1), (1, 2), (1, 3)]:
        other = semantic_match_counts(q, c, (t_eq, 0.8), query_block=qb, corpus_block=cb)
        np.testing.assert_array_equal(other.indices, sm.indices)


def test_threshold_equal_to_random_pair():
    """A threshold set to one pair's exact (fsum) cosine includes that pair at every blocking."""
    rng = np.random.default_rng(5)
    q, c = unit_rows(rng, 9, d=384), unit_rows(rng, 11, d=384)
    t = math.fsum((q[3].astype(np.float64) * c[7].astype(np.float64)).tolist())
    for blocks in [(1, 1), (2, 3), (9, 11)]:
        sm = semantic_match_counts(q, c, (t,), query_block=blocks[0], corpus_block=blocks[1])
        assert 7 in sm.matches(3, t)
        for i in range(9):  # only the tie itself may differ from float64 BLAS, and it must count
            expected = set(np.flatnonzero(q[i].astype(np.float64) @ c.astype(np.float64).T >= t))
            assert set(sm.matches(i, t)) - {7} == expected - {7}


def test_uncomputed_threshold_is_refused():
    rng = np.random.default_rng(0)
    sm = semantic_match_counts(unit_rows(rng, 5), unit_rows(rng, 5), (0.8,))
    with pytest.raises(ValueError):
        sm.counts(0.85)
    assert semantic_match_counts(unit_rows(rng, 0), unit_rows(rng, 5)).counts(0.8).shape == (0,)
    assert semantic_match_counts(unit_rows(rng, 3), unit_rows(rng, 0)).counts(0.9).tolist() == [0, 0, 0]


# --------------------------------------------------------------------------- Levenshtein


def levenshtein_reference(a: str, b: str) -> int:
    """Textbook full dynamic programme."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j - 1] + (ca != cb), prev[j] + 1, cur[j - 1] + 1))
        prev = cur
    return prev[-1]


# small alphabets (so strings are close) with non-ASCII: accents, combining marks, astral emoji
small_text = st.text(alphabet="ab é\u0301😀中", max_size=40)


@settings(max_examples=300, deadline=None)
@given(small_text, small_text, st.integers(0, 25))
def test_bounded_levenshtein_matches_reference(a, b, k):
    expected = min(levenshtein_reference(a, b), k + 1)
    assert bounded_levenshtein(a, b, k) == expected
    assert semantic._distance_fn()(a, b, k) == expected


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60), st.text(max_size=60))
def test_bounded_levenshtein_any_unicode(a, b):
    assert bounded_levenshtein(a, b, 19) == min(levenshtein_reference(a, b), 20)


def test_levenshtein_counts_code_points():
    assert bounded_levenshtein("café", "cafe") == 1  # not 2, as a UTF-8 byte comparison would say
    assert bounded_levenshtein("😀", "😁") == 1
    assert bounded_levenshtein("a" * 100, "b" * 100, 19) == 20


# --------------------------------------------------------------------------- textual matches


def matches_of(rows: list[list[tuple[int, float]]], thresholds=(0.8, 0.9)) -> SemanticMatches:
    indptr = np.cumsum([0] + [len(r) for r in rows])
    idx = np.array([j for r in rows for j, _ in r], dtype=np.int64)
    sim = np.array([s for r in rows for _, s in r], dtype=float)
    return SemanticMatches(tuple(thresholds), indptr, idx, sim, 0)


def test_textual_counts():
    base = "The quick brown fox jumps over the lazy dog"
    corpus = [
        base,  # distance 0: the query itself, never a textual match
        base.replace("quick", "slow"),  # distance 5
        base + "!" * 19,  # distance 19: counted
        base + "!" * 20,  # distance 20: not counted
        "Something else entirely, nothing alike at all here",
    ]
    sm = matches_of([[(0, 1.0), (1, 0.95), (2, 0.85), (3, 0.95), (4, 0.81)], [(1, 0.9)]])
    out = semantic.textual_match_counts([base, "Ünïcödé " + base], corpus, sm)
    assert out["textual_matches_0_8"].tolist() == [2, 1]  # query 2: 8 inserted + 5 edited = 13
    assert out["textual_matches_0_9"].tolist() == [1, 1]
    assert sm.columns()["semantic_matches_0_8"].tolist() == [5, 1]
    # Unicode queries are compared like any other; the original's ASCII-only rule is opt-in
    sm2 = matches_of([[(1, 0.95)]])
    query = ["The quick brown fox jumps over the lazy dög"]
    assert semantic.textual_match_counts(query, corpus, sm2)["textual_matches_0_9"].tolist() == [1]
    parity = semantic.textual_match_counts(query, corpus, sm2, ascii_only_queries=True)
    assert parity["textual_matches_0_9"].tolist() == [0]


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000))
def test_textual_never_exceeds_semantic(seed):
    rng = np.random.default_rng(seed)
    q, c = unit_rows(rng, 12), unit_rows(rng, 20)
    words = ["alpha", "beta", "gamma", "δέλτα", "ε"]
    prompts = [" ".join(rng.choice(words, size=rng.integers(1, 6))) for _ in range(32)]
    sm = semantic_match_counts(q, c, (0.8, 0.9), query_block=5, corpus_block=7)
    out = semantic.textual_match_counts(prompts[:12], prompts[12:], sm)
    for t in (0.8, 0.9):
        name = semantic.column_name("textual_matches", t)
        assert (out[name] <= sm.counts(t)).all()
    assert (out["textual_matches_0_9"] <= out["textual_matches_0_8"]).all()


def test_textual_guard_raises_on_inconsistent_input():
    sm = matches_of([[(0, 0.95)]])
    with pytest.raises(ValueError):
        semantic.textual_match_counts(["a", "b"], ["a"], sm)


def test_column_names():
    assert semantic.column_name("semantic_matches", 0.8) == "semantic_matches_0_8"
    assert semantic.column_name("textual_matches", 0.9) == "textual_matches_0_9"
