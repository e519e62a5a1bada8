"""Corpus-feature transforms: Shannon coding length, token-frequency statistics, duplicate counts."""

import math
from collections import Counter

import duckdb
import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transforms.duplicates import (
    continuation_duplicate_counts,
    sequence_duplicate_counts,
    window_duplicate_counts,
    window_hash,
)
from transforms.frequencies import STAT_COLUMNS, frequency_stats, sequence_frequencies, token_counts
from transforms.huffman import coding_length, coding_lengths

# --- huffman ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "bits"),
    [("", 0.0), ("a", 0.0), ("aaaa", 0.0), ("ab", 1.0), ("abcd", 2.0), ("aaab", 1.25), ("aab", 4 / 3)],
)
def test_coding_length_examples(text, bits):
    assert coding_length(text) == pytest.approx(bits, abs=1e-15)


def by_definition(text: str) -> float:
    n = len(text)
    return sum(c / n * math.ceil(-math.log2(c / n)) for c in Counter(text).values())


@given(st.text(max_size=200), st.randoms(use_true_random=False))
def test_coding_length_definition_shuffle_and_bounds(text, rnd):
    length = coding_length(text)
    chars = list(text)
    rnd.shuffle(chars)
    assert coding_length("".join(chars)) == length  # exactly: integer code lengths
    if text:
        assert length == pytest.approx(by_definition(text), rel=1e-12, abs=1e-12)
        entropy = -sum(c / len(text) * math.log2(c / len(text)) for c in Counter(text).values())
        assert entropy - 1e-9 <= length < entropy + 1  # a Shannon code is within one bit of H


def test_coding_lengths():
    texts = ["", "ab", "hello world"]
    assert coding_lengths(texts).tolist() == [coding_length(t) for t in texts]


# --- frequencies -----------------------------------------------------------------------------


def test_token_counts_array_chunks_and_range():
    rng = np.random.default_rng(0)
    stream = rng.integers(0, 50, (30, 17)).astype(np.uint16)
    expected = np.bincount(stream.ravel(), minlength=60)
    assert (token_counts(stream, 60) == expected).all()
    assert (token_counts(iter(np.array_split(stream, 4)), 60) == expected).all()
    assert token_counts(stream, 60).dtype == np.int64
    with pytest.raises(ValueError):
        token_counts(stream, 40)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 12),
    length=st.integers(1, 70),
    vocab=st.integers(1, 30),
    chunk_rows=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
)
def test_frequency_stats_match_numpy_rows(n, length, vocab, chunk_rows, seed):
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 10**11, vocab)
    tokens = rng.integers(0, vocab, (n, length))
    stats = frequency_stats(tokens, counts, chunk_rows=chunk_rows)
    assert set(stats) == set(STAT_COLUMNS)
    for i, row in enumerate(tokens):
        f = counts[row]
        assert stats["max_frequency"][i] == f.max() and stats["min_frequency"][i] == f.min()
        assert stats["avg_frequency"][i] == pytest.approx(f.mean(), rel=1e-12)
        assert stats["median_frequency"][i] == np.median(f)
        assert stats["p25_frequency"][i] == np.quantile(f, 0.25, method="inverted_cdf")
        assert stats["p75_frequency"][i] == np.quantile(f, 0.75, method="inverted_cdf")
        assert stats["p25_frequency"][i] in f  # inverted_cdf returns an element of the row


def test_frequency_stats_match_polars():
    rng = np.random.default_rng(1)
    counts = rng.integers(1, 10**10, 500)
    tokens = rng.integers(0, 500, (200, 64))
    stats = frequency_stats(tokens, counts, quantile_method="linear", chunk_rows=64)
    long = pl.DataFrame(
        {"row": np.repeat(np.arange(200), 64), "f": sequence_frequencies(tokens, counts).ravel()}
    )
    ref = (
        long.group_by("row")
        .agg(
            pl.col("f").max().alias("max_frequency"),
            pl.col("f").mean().alias("avg_frequency"),
            pl.col("f").min().alias("min_frequency"),
            pl.col("f").median().alias("median_frequency"),
            pl.col("f").quantile(0.25, "linear").alias("p25_frequency"),
            pl.col("f").quantile(0.75, "linear").alias("p75_frequency"),
        )
        .sort("row")
    )
    for col in STAT_COLUMNS:
        np.testing.assert_allclose(stats[col], ref[col].to_numpy(), rtol=1e-12)
    # for 64 values the default (rank ceil(q * L)) picks the same element as polars' "lower"
    default = frequency_stats(tokens, counts)
    lower = long.group_by("row").agg(pl.col("f").quantile(0.25, "lower")).sort("row")["f"]
    np.testing.assert_array_equal(default["p25_frequency"], lower.to_numpy())


def test_sequence_frequencies_and_shape_checks():
    counts = np.array([5, 0, 7])
    assert sequence_frequencies(np.array([[0, 2, 2]]), counts).tolist() == [[5, 7, 7]]
    with pytest.raises(ValueError):
        frequency_stats(np.array([1, 2]), counts)


# --- duplicates ------------------------------------------------------------------------------


def brute_force(windows: np.ndarray, stream: np.ndarray, first_only: bool = False) -> np.ndarray:
    k = windows.shape[1]
    out = []
    for w in windows.tolist():
        n = 0
        for row in stream.tolist():
            for off in [0] if first_only else range(len(row) - k + 1):
                n += len(row) >= k and row[off : off + k] == w
        out.append(n)
    return np.array(out, dtype=np.int64)


@st.composite
def planted(draw):
    """A small stream over a tiny vocabulary (many true repeats) and query windows, some taken from it."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    vocab, k = draw(st.integers(1, 4)), draw(st.integers(1, 6))
    rows, length = draw(st.integers(0, 10)), draw(st.integers(1, 16))
    stream = rng.integers(0, vocab, (rows, length)).astype(np.uint16)
    n_q = draw(st.integers(1, 8))
    windows = rng.integers(0, vocab + 1, (n_q, k))  # vocab + 1: some ids never occur
    if rows and length >= k:
        for i in range(0, n_q, 2):  # plant: every other query is a window of the stream
            r, o = rng.integers(rows), rng.integers(length - k + 1)
            windows[i] = stream[r, o : o + k]
            stream[rng.integers(rows), o : o + k] = windows[i]  # and a copy of it elsewhere
    return stream, windows


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=planted(),
    hash_bits=st.sampled_from([64, 3, 1]),  # 1-3 bits: nearly every window collides
    first_only=st.booleans(),
    chunk_rows=st.integers(1, 4),
    threads=st.sampled_from([1, 2]),
)
def test_window_counts_equal_brute_force(data, hash_bits, first_only, chunk_rows, threads):
    stream, windows = data
    got = window_duplicate_counts(
        windows, stream, first_only=first_only, chunk_rows=chunk_rows, threads=threads, hash_bits=hash_bits
    )
    np.testing.assert_array_equal(got, brute_force(windows, stream, first_only))


def test_continuation_counts_include_self_and_planted_copies():
    rng = np.random.default_rng(2)
    stream = rng.integers(0, 1000, (40, 300)).astype(np.uint16)
    queries = stream[[3, 7, 11], :64].copy()
    for row, off in [(0, 0), (5, 100), (5, 200), (39, 268)]:  # 4 copies of row 3's continuation
        stream[row, off : off + 32] = queries[0, 32:64]
    outside = rng.integers(1000, 2000, (1, 64))
    queries = np.concatenate([queries, outside])
    got = continuation_duplicate_counts(queries, stream)
    assert got.tolist() == [5, 1, 1, 0]
    np.testing.assert_array_equal(got, brute_force(queries[:, 32:64], stream))
    # the same from an iterable of chunks (e.g. read from disk), and with other offset / k
    chunks = (stream[i : i + 7] for i in range(0, 40, 7))
    assert continuation_duplicate_counts(queries, chunks, chunk_rows=3).tolist() == [5, 1, 1, 0]
    np.testing.assert_array_equal(
        continuation_duplicate_counts(queries, stream, offset=10, k=5), brute_force(queries[:, 10:15], stream)
    )


def test_sequence_counts_are_row_duplicates():
    rng = np.random.default_rng(3)
    stream = rng.integers(0, 5, (30, 12))
    stream[[4, 9, 20]] = stream[2]
    got = sequence_duplicate_counts(stream[[2, 3]], stream, hash_bits=2)
    assert got.tolist() == [4, 1]
    assert sequence_duplicate_counts(stream[[2], :5], stream).tolist() == [
        int((stream[:, :5] == stream[2, :5]).all(1).sum())
    ]


def test_identical_queries_share_a_count():
    stream = np.tile(np.arange(10), (3, 1))
    queries = np.array([[2, 3, 4], [2, 3, 4], [9, 0, 1]])
    assert window_duplicate_counts(queries, stream).tolist() == [3, 3, 0]


@settings(max_examples=100, deadline=None)
@given(
    windows=st.lists(st.lists(st.integers(0, 2), min_size=3, max_size=3), min_size=1, max_size=30),
    hash_bits=st.sampled_from([64, 2, 1]),
)
def test_distinct_groups_equal_rows(windows, hash_bits):
    from transforms.duplicates import _distinct

    windows = np.array(windows)
    uniq, inverse = _distinct(windows, hash_bits)
    np.testing.assert_array_equal(uniq[inverse], windows)  # every row maps to an equal row
    if hash_bits == 64:
        assert len(uniq) == len({tuple(w) for w in windows.tolist()})


def test_window_hash_is_the_rolling_hash():
    rng = np.random.default_rng(4)
    row = rng.integers(0, 50_000, (1, 500)).astype(np.uint16)
    windows = np.lib.stride_tricks.sliding_window_view(row[0], 32)
    from transforms.duplicates import _Counter

    counter = _Counter(windows[:3].copy(), first_only=False, hash_bits=64)
    np.testing.assert_array_equal(counter.hashes(row)[0], window_hash(windows))


def test_argument_checks():
    stream = np.zeros((2, 100), dtype=np.uint16)
    with pytest.raises(ValueError):
        continuation_duplicate_counts(np.zeros((2, 50)), stream)  # no window at 32..63
    with pytest.raises(ValueError):
        window_duplicate_counts(np.zeros((2, 4)), stream, hash_bits=0)
    with pytest.raises(ValueError):
        window_duplicate_counts(np.zeros((2, 4)), np.zeros(10))
    assert window_duplicate_counts(np.zeros((0, 4)), stream).shape == (0,)
    assert window_duplicate_counts(np.zeros((1, 4)), np.zeros((0, 100))).tolist() == [0]


def test_matches_a_duckdb_window_join():
    """The bench's reference on a small stream: lead() over token positions, hash join, count."""
    rng = np.random.default_rng(5)
    stream = rng.integers(0, 20, (25, 60)).astype(np.int64)
    queries = stream[::3, :12].copy()
    stream[1, 0:4] = queries[0, 8:12]
    k = 4
    long = pl.DataFrame(
        {"row_id": np.repeat(np.arange(25), 60), "pos": np.tile(np.arange(60), 25), "tok": stream.ravel()}
    )
    qdf = pl.DataFrame({"qid": np.arange(len(queries)), **{f"c{i}": queries[:, 8 + i] for i in range(k)}})
    leads = ", ".join(f"lead(tok, {i}) OVER (PARTITION BY row_id ORDER BY pos) AS t{i}" for i in range(1, k))
    same = " AND ".join(["w.tok = q.c0"] + [f"w.t{i} = q.c{i}" for i in range(1, k)])
    con = duckdb.connect()
    con.register("t", long)
    con.register("qdf", qdf)
    ref = con.sql(
        f"""WITH w AS (SELECT tok, {leads} FROM t)
        SELECT q.qid, count(w.tok) AS n FROM qdf q LEFT JOIN w ON {same} GROUP BY q.qid ORDER BY q.qid"""
    ).pl()
    got = continuation_duplicate_counts(queries, stream, offset=8, k=k)
    np.testing.assert_array_equal(got, ref["n"].to_numpy())
