"""Semantic and textual match counts (the taxonomy paper's `0_8_snowclones` / `0_8_templates`).

Definitions (Prashanth et al. 2024, re-implemented):
- semantic matches of a query at threshold t: corpus items whose all-MiniLM-L6-v2 embedding (of the
  decoded 64-token text) has cosine >= t with the query's;
- textual matches: those semantic matches whose *prompt* text (decoded first 32 tokens) is at
  character Levenshtein distance > 0 and < 20 from the query's prompt.

Naming: the paper's figures call `0_8_snowclones` "Semantic Matches" and `0_8_templates` "Textual
Matches", but released rows (templates = 1, snowclones = 0) suggest the two
names were swapped in the data. Here outputs are named for what they count -
`semantic_matches_0_8`, `semantic_matches_0_9`, `textual_matches_0_8`, `textual_matches_0_9` - and
textual <= semantic is checked on every call. Map them to the paper's names in one place downstream.

Fixes of the original's weaknesses: counts are exact but computed by blocked matrix
products, so memory is bounded by the block size plus the matches found, never an N x N matrix;
and the edit distance works on Unicode code points, where the original gave every query with a
non-ASCII character 0 textual matches (kept as the opt-in `ascii_only_queries=True` for parity).

"Exact" means: a pair matches iff the correctly rounded float64 dot product of the two float32
vectors is >= t. Blocks are multiplied in float32 for speed; a float32 product of length-d vectors
differs from the exact one by at most d * 2**-24 * |q| * |c| (any summation order), so only pairs
within that margin of a threshold are recomputed exactly (`math.fsum` of exact float64 products).
The result is therefore independent of block sizes and BLAS, and equals a dense computation.

The embeddings are computed in `ingest/lm/sentence_encoder.py`; this module only compares them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

THRESHOLDS = (0.8, 0.9)
MAX_EDIT_DISTANCE = 19  # textual match: 0 < distance < 20


def column_name(prefix: str, threshold: float) -> str:
    """`("semantic_matches", 0.8)` -> "semantic_matches_0_8"."""
    return f"{prefix}_{format(threshold, 'g').replace('.', '_')}"


# --------------------------------------------------------------------------- semantic matches


@dataclass(frozen=True)
class SemanticMatches:
    """Matches at the lowest threshold, as CSR rows per query (corpus indices ascending).

    `similarity` is the cosine used for the decision (exact near a threshold, float32 elsewhere);
    a pair matches at threshold t iff similarity >= t, for every t in `thresholds`.
    """

    thresholds: tuple[float, ...]
    indptr: np.ndarray  # int64 [n_queries + 1]
    indices: np.ndarray  # int64 [n_matches]
    similarity: np.ndarray  # float64 [n_matches]
    exact_rechecks: int  # pairs close enough to a threshold to be recomputed exactly

    @property
    def n_queries(self) -> int:
        return len(self.indptr) - 1

    def matches(self, query: int, threshold: float | None = None) -> np.ndarray:
        """Corpus indices matching `query` at `threshold` (default: the lowest)."""
        lo, hi = self.indptr[query], self.indptr[query + 1]
        if threshold is None:
            return self.indices[lo:hi]
        self._check_threshold(threshold)
        return self.indices[lo:hi][self.similarity[lo:hi] >= threshold]

    def counts(self, threshold: float) -> np.ndarray:
        """Number of matches per query at `threshold` (one of `thresholds`)."""
        self._check_threshold(threshold)
        row = np.repeat(np.arange(self.n_queries), np.diff(self.indptr))
        return np.bincount(row[self.similarity >= threshold], minlength=self.n_queries).astype(np.int64)

    def columns(self) -> dict[str, np.ndarray]:
        """`{"semantic_matches_0_8": counts, ...}` for every threshold."""
        return {column_name("semantic_matches", t): self.counts(t) for t in self.thresholds}

    def _check_threshold(self, threshold: float) -> None:
        # only thresholds used in the computation are exact (others may sit inside the float32 margin)
        if threshold not in self.thresholds:
            raise ValueError(f"threshold {threshold} was not computed; have {self.thresholds}")


def _exact_dot(q: np.ndarray, c: np.ndarray) -> float:
    """Correctly rounded dot product: float32 x float32 products are exact in float64."""
    return math.fsum((q.astype(np.float64) * c.astype(np.float64)).tolist())


def _max_norm(x: np.ndarray) -> float:
    return float(np.linalg.norm(x, axis=1).max(initial=0.0))


def _self_index(exclude_self: bool | np.ndarray, n_queries: int, n_corpus: int) -> np.ndarray | None:
    if exclude_self is False or exclude_self is None:
        return None
    if exclude_self is True:
        if n_queries != n_corpus:
            raise ValueError("exclude_self=True means queries are the corpus, in order: lengths differ")
        return np.arange(n_queries)
    own = np.asarray(exclude_self, dtype=np.int64)
    if own.shape != (n_queries,):
        raise ValueError(f"exclude_self must hold one corpus index (or -1) per query, got shape {own.shape}")
    return own


def semantic_match_counts(
    query_emb: np.ndarray,
    corpus_emb: np.ndarray,
    thresholds: Sequence[float] = THRESHOLDS,
    exclude_self: bool | np.ndarray = False,
    query_block: int = 1024,
    corpus_block: int = 8192,
) -> SemanticMatches:
    """Exact counts of corpus vectors with cosine >= each threshold, per query, plus the matches.

    Vectors are expected L2-normalised (cosine = dot product). `exclude_self`: True when the queries
    are the corpus itself (row i is corpus item i), or an int array giving each query's own corpus
    row (-1 for none), so an item does not match itself. Peak extra memory is one float32
    `query_block x corpus_block` block (32 MiB by default) plus the matches found.
    """
    q = np.ascontiguousarray(query_emb, dtype=np.float32)
    c = np.ascontiguousarray(corpus_emb, dtype=np.float32)
    if q.ndim != 2 or c.ndim != 2 or q.shape[1] != c.shape[1]:
        raise ValueError(f"need [n, d] arrays of equal d, got {q.shape} and {c.shape}")
    ts = tuple(sorted({float(t) for t in thresholds}))
    if not ts:
        raise ValueError("need at least one threshold")
    own = _self_index(exclude_self, len(q), len(c))
    d = q.shape[1]
    # rigorous bound on |float32 dot - exact dot| for any summation order (Higham's gamma_d)
    u = 2.0**-24
    scale = _max_norm(q) * _max_norm(c)
    margin = 1.01 * d * u / (1 - d * u) * scale
    lowest = ts[0] - margin
    thr = np.array(ts)

    rows, cols, sims, rechecks = [], [], [], 0
    for qs in range(0, len(q), query_block):
        qb = q[qs : qs + query_block]
        for cs in range(0, len(c), corpus_block):
            block = qb @ c[cs : cs + corpus_block].T
            if own is not None:  # an item never matches itself
                mine = own[qs : qs + len(qb)] - cs
                inside = np.flatnonzero((mine >= 0) & (mine < block.shape[1]))
                block[inside, mine[inside]] = -np.inf
            flat = np.flatnonzero(block >= lowest)  # 1-D: one index array, not 2-D nonzero's two
            r, k = np.divmod(flat, block.shape[1])
            s = block.ravel()[flat].astype(np.float64)
            near = np.flatnonzero((np.abs(s[:, None] - thr[None, :]) <= margin).any(axis=1))
            for i in near:
                s[i] = _exact_dot(qb[r[i]], c[cs + k[i]])
            rechecks += len(near)
            hit = s >= ts[0]
            rows.append(qs + r[hit])
            cols.append(cs + k[hit])
            sims.append(s[hit])
    row = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    col = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    sim = np.concatenate(sims) if sims else np.zeros(0)
    order = np.lexsort((col, row))
    indptr = np.zeros(len(q) + 1, dtype=np.int64)
    np.cumsum(np.bincount(row, minlength=len(q)), out=indptr[1:])
    return SemanticMatches(ts, indptr, col[order].astype(np.int64), sim[order], rechecks)


# --------------------------------------------------------------------------- textual matches


def bounded_levenshtein(a: str, b: str, max_distance: int = MAX_EDIT_DISTANCE) -> int:
    """Levenshtein distance over code points, or `max_distance + 1` as soon as it must exceed it.

    Ukkonen's band: only cells with |i - j| <= max_distance can hold a value <= max_distance, and
    a row whose band minimum exceeds the bound ends the search. Pure-Python fallback for rapidfuzz.
    """
    if a == b:
        return 0
    big = max_distance + 1
    if abs(len(a) - len(b)) > max_distance:
        return big
    # common prefix and suffix never change the distance
    p = 0
    while p < min(len(a), len(b)) and a[p] == b[p]:
        p += 1
    a, b = a[p:], b[p:]
    s = 0
    while s < min(len(a), len(b)) and a[-1 - s] == b[-1 - s]:
        s += 1
    if s:
        a, b = a[:-s], b[:-s]
    if len(a) > len(b):
        a, b = b, a
    if not a:
        return len(b) if len(b) <= max_distance else big
    prev = [j if j <= max_distance else big for j in range(len(b) + 1)]
    for i in range(1, len(a) + 1):
        cur = [big] * (len(b) + 1)
        cur[0] = i if i <= max_distance else big
        ch = a[i - 1]
        best = cur[0]
        for j in range(max(1, i - max_distance), min(len(b), i + max_distance) + 1):
            v = min(prev[j - 1] + (ch != b[j - 1]), prev[j] + 1, cur[j - 1] + 1)
            cur[j] = v if v < big else big
            best = min(best, cur[j])
        if best > max_distance:
            return big
        prev = cur
    return prev[-1]


def _distance_fn():
    """rapidfuzz's C++ Levenshtein (code points, `score_cutoff` bound) when installed."""
    try:
        from rapidfuzz.distance import Levenshtein
    except ImportError:
        return bounded_levenshtein
    return lambda a, b, k: Levenshtein.distance(a, b, score_cutoff=k)


def textual_match_counts(
    query_prompts: Sequence[str],
    corpus_prompts: Sequence[str],
    semantic_matches: SemanticMatches,
    max_distance: int = MAX_EDIT_DISTANCE,
    ascii_only_queries: bool = False,
) -> dict[str, np.ndarray]:
    """Per threshold, how many semantic matches have a prompt at edit distance 1..max_distance.

    Returns `{"textual_matches_0_8": counts, ...}`. `ascii_only_queries=True` reproduces the
    original scripts, which gave queries with any non-ASCII character 0 textual matches.
    Raises if any textual count exceeds the semantic one (it cannot, by construction).
    """
    sm = semantic_matches
    if len(query_prompts) != sm.n_queries:
        raise ValueError(f"{len(query_prompts)} query prompts for {sm.n_queries} queries")
    distance = _distance_fn()
    textual = np.zeros(len(sm.indices), dtype=bool)
    for i, prompt in enumerate(query_prompts):
        if ascii_only_queries and not prompt.isascii():
            continue
        lo, hi = sm.indptr[i], sm.indptr[i + 1]
        for m in range(lo, hi):
            textual[m] = 0 < distance(prompt, corpus_prompts[sm.indices[m]], max_distance) <= max_distance
    row = np.repeat(np.arange(sm.n_queries), np.diff(sm.indptr))
    out = {}
    for t in sm.thresholds:
        counts = np.bincount(row[textual & (sm.similarity >= t)], minlength=sm.n_queries).astype(np.int64)
        if (counts > sm.counts(t)).any():
            raise AssertionError(f"textual matches exceed semantic matches at threshold {t}")
        out[column_name("textual_matches", t)] = counts
    return out
