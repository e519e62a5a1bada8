"""Exact counts of query token windows in a training stream (Prashanth et al. 2024, `sequence_duplicates`).

`continuation_duplicate_counts` is the recitation feature: for each sample row, the number of
(row, offset) positions of the whole training stream whose k tokens equal the sample's
continuation window tokens[offset : offset + k] (Pythia: 2049-token rows, offsets 0..2017,
k = 32, offset = 32). Windows never cross rows. A sample that comes from the stream finds itself,
so its count is at least 1; a window found nowhere counts 0 (the original defaulted to 1 because
all its samples came from the stream). `sequence_duplicate_counts` counts the stream rows that
start with the whole query row (for full-length queries: exact duplicates of the row).

How, in bounded memory and without a Python loop per window:

- the stream is read `chunk_rows` rows at a time (an [R, L] array or memmap, or any iterable of
  [r, L] chunks) and each chunk is hashed, filtered, verified and reduced to a count vector;
- window hash: the polynomial h(w) = sum_m w_m * B**m mod 2**64 with an odd B. With the row's
  prefix sums S_j = sum_{i<j} t_i * B**i (one uint64 multiply and one cumsum, wrapping mod
  2**64), the window at j is h = (S_{j+k} - S_j) * B**-j, B being invertible mod 2**64: five
  vectorised passes over the chunk whatever k is;
- filter: a boolean table indexed by the hash's top bits, set for the query hashes, drops
  almost every window with one gather; the survivors are looked up exactly (binary search)
  among the query hashes;
- verification: every window whose hash equals a query hash is compared token by token with
  that query's window (all of them, if distinct queries share a hash), so hash collisions can
  cost time but never change a count. `hash_bits` < 64 truncates the hash, only to let tests
  force collisions;
- counting: a chunk yields the query index of each verified match; they are bincounted in
  batches, so the per-chunk cost does not grow with the number of queries.

Identical query windows are counted once and the count is shared (grouped by hash, then
checked token by token; `np.unique(axis=0)` would sort whole windows as opaque records instead).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np

_BASE = 0x9E3779B97F4A7C15  # odd, hence invertible mod 2**64
_M64 = (1 << 64) - 1
_BASE_INV = pow(_BASE, -1, 1 << 64)
_VERIFY_BATCH = 1 << 16  # candidate windows compared at once: bounds the [C, k] gather
DEFAULT_CHUNK_ROWS = 64  # 64 x 2049 uint64 = 1 MiB per buffer: the passes stay in cache


@lru_cache(maxsize=16)
def _powers(base: int, n: int) -> np.ndarray:
    out = np.empty(n, dtype=np.uint64)
    x = 1
    for i in range(n):
        out[i] = x
        x = (x * base) & _M64
    out.flags.writeable = False
    return out


def _pow(n: int) -> np.ndarray:
    return _powers(_BASE, n)


def _inv_pow(n: int) -> np.ndarray:
    return _powers(_BASE_INV, n)


def window_hash(windows: np.ndarray, hash_bits: int = 64) -> np.ndarray:
    """h(w) = sum_m w_m * B**m mod 2**64 of each row of `windows` [N, k], low `hash_bits` bits, uint64 [N]."""
    windows = np.asarray(windows)
    mask = np.uint64(_mask(hash_bits))
    powers = _pow(windows.shape[1])
    h = np.empty(len(windows), dtype=np.uint64)
    step = max(1, (1 << 21) // max(windows.shape[1], 1))  # 16 MiB of products at a time, not N x k
    for s in range(0, len(windows), step):
        prod = np.multiply(windows[s : s + step], powers, dtype=np.uint64, casting="unsafe")
        h[s : s + step] = prod.sum(axis=1, dtype=np.uint64)
    return h & mask


def _mask(hash_bits: int) -> int:
    if not 1 <= hash_bits <= 64:
        raise ValueError(f"hash_bits must be in 1..64, got {hash_bits}")
    return (1 << hash_bits) - 1


class _Scratch(threading.local):
    """Per-thread buffers, reused across chunks (fresh multi-MiB arrays cost page faults each time)."""

    def get(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        bufs = self.__dict__.setdefault("bufs", {})
        buf = bufs.get(name)
        size = int(np.prod(shape))
        if buf is None or buf.size < size or buf.dtype != dtype:
            buf = bufs[name] = np.empty(size, dtype=dtype)
        return buf[:size].reshape(shape)


class _Counter:
    """Counts of the distinct query windows `uniq` [U, k] over stream chunks; see the module docstring."""

    def __init__(self, uniq: np.ndarray, *, first_only: bool, hash_bits: int):
        self.uniq, self.k, self.first_only = uniq, uniq.shape[1], first_only
        self.hash_bits, self.mask = hash_bits, np.uint64(_mask(hash_bits))
        hu = window_hash(uniq, hash_bits)
        self.order = np.argsort(hu, kind="stable")
        self.keys, self.start, self.size = np.unique(hu[self.order], return_index=True, return_counts=True)
        self.multi = bool(self.size.max() > 1) if len(self.keys) else False
        # bit table on the top `bits` hash bits: ~1/64 of non-matching windows get through
        bits = min(hash_bits, max(12, min(26, int(np.ceil(np.log2(max(len(self.keys), 1)))) + 6)))
        self.shift = np.uint64(hash_bits - bits)
        self.table = np.zeros(1 << bits, dtype=bool)
        self.table[self.keys >> self.shift] = True
        self.scratch = _Scratch()

    def hashes(self, chunk: np.ndarray) -> np.ndarray:
        """Hash of every window of `chunk` [r, L], [r, W] (W = L - k + 1, or 1 with `first_only`)."""
        r, length = chunk.shape
        k = self.k
        if self.first_only:
            h = window_hash(chunk[:, :k])[:, None]
        else:
            width = length - k + 1
            s = self.scratch.get("prefix", (r, length + 1), np.uint64)
            s[:, 0] = 0
            np.multiply(chunk, _pow(length), out=s[:, 1:], dtype=np.uint64, casting="unsafe")
            np.cumsum(s[:, 1:], axis=1, out=s[:, 1:])
            h = self.scratch.get("hash", (r, width), np.uint64)
            np.subtract(s[:, k:], s[:, :width], out=h)
            np.multiply(h, _inv_pow(width), out=h)
        if self.hash_bits < 64:
            h &= self.mask
        return h

    def matches(self, chunk: np.ndarray) -> np.ndarray:
        """The distinct-query index of every window of `chunk` [r, L] equal to a query window, int64."""
        chunk = np.ascontiguousarray(chunk)
        r, length = chunk.shape
        if r == 0 or length < self.k or not len(self.keys):
            return np.zeros(0, dtype=np.int64)
        h = self.hashes(chunk)
        width = h.shape[1]
        top = self.scratch.get("top", h.shape, np.uint64)
        np.right_shift(h, self.shift, out=top)
        cand = np.flatnonzero(self.table.take(top.view(np.int64)))  # top < 2**26: same values, no cast
        hc = h.reshape(-1)[cand]
        g = np.minimum(np.searchsorted(self.keys, hc), len(self.keys) - 1)
        hit = self.keys[g] == hc
        cand, g = cand[hit], g[hit]
        if self.multi:  # distinct query windows share a hash: compare the candidate with each
            reps = self.size[g]
            cand, first = np.repeat(cand, reps), np.repeat(self.start[g], reps)
            within = np.arange(len(cand)) - np.repeat(np.cumsum(reps) - reps, reps)
            member = self.order[first + within]
        else:
            member = self.order[self.start[g]]
        flat = chunk.reshape(-1)
        offsets = np.arange(self.k)
        found = [np.zeros(0, dtype=np.int64)]
        for b in range(0, len(cand), _VERIFY_BATCH):
            c, m = cand[b : b + _VERIFY_BATCH], member[b : b + _VERIFY_BATCH]
            begin = (c // width) * length + c % width
            found.append(m[(flat[begin[:, None] + offsets] == self.uniq[m]).all(axis=1)])
        return np.concatenate(found)


def _distinct(windows: np.ndarray, hash_bits: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(distinct rows, index of each row's distinct row) of `windows` [N, k], grouping equal rows.

    Rows are grouped by hash and a row joins its group's first row only if it equals it; a row
    that collides with a different one stays on its own, so in the rare collision groups equal
    rows may appear twice. That only repeats work: each copy gets the same, exact count.
    """
    h = window_hash(windows, hash_bits)
    order = np.argsort(h, kind="stable")
    hs = h[order]
    first = np.maximum.accumulate(np.where(np.r_[True, hs[1:] != hs[:-1]], np.arange(len(hs)), 0))
    rows = windows[order]
    own = ~(rows == rows[first]).all(axis=1)  # differs from its group's first row: a member of its own
    lead = np.where(own, np.arange(len(hs)), first)  # sorted position of the row that represents it
    keep = lead == np.arange(len(hs))
    member_of_pos = np.cumsum(keep) - 1
    inverse = np.empty(len(hs), dtype=np.int64)
    inverse[order] = member_of_pos[lead]
    return rows[keep], inverse


def _chunks(stream: np.ndarray | Iterable[np.ndarray], chunk_rows: int) -> Iterator[np.ndarray]:
    parts = [stream] if isinstance(stream, np.ndarray) else stream
    for part in parts:
        part = np.asarray(part)
        if part.ndim != 2:
            raise ValueError(f"stream chunks must be [rows, L] matrices, got shape {part.shape}")
        for s in range(0, part.shape[0], chunk_rows):
            yield part[s : s + chunk_rows]


def bounded_map(fn: Callable, items: Iterable, threads: int) -> Iterator:
    """`map(fn, items)` on `threads` threads with at most 2 * threads chunks in flight (bounded memory)."""
    if threads <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(threads) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class DuplicateCounter:
    """`window_duplicate_counts` fed one chunk at a time, for a pass that reads each chunk once for
    several statistics. `matches(chunk)` is safe to call from several threads; `add` is not.

    windows: [N, k] query windows; `counts()` gives, per row, the stream windows equal to it so far.
    """

    def __init__(self, windows: np.ndarray, *, first_only: bool = False, hash_bits: int = 64):
        windows = np.asarray(windows)
        if windows.ndim != 2 or windows.shape[1] == 0:
            raise ValueError(f"windows must be a non-empty [N, k] matrix, got shape {windows.shape}")
        _mask(hash_bits)
        self.k = windows.shape[1]
        self._counter = None
        self.uniq, self.inverse = windows, np.zeros(0, dtype=np.int64)
        if len(windows):
            self.uniq, self.inverse = _distinct(windows, hash_bits)
            self._counter = _Counter(self.uniq, first_only=first_only, hash_bits=hash_bits)
        self._total = np.zeros(len(self.uniq), dtype=np.int64)
        self._pending: list[np.ndarray] = []
        self._n_pending = 0

    def matches(self, chunk: np.ndarray) -> np.ndarray:
        """Distinct-query index of every window of `chunk` [r, L] equal to a query window."""
        if self._counter is None:
            return np.zeros(0, dtype=np.int64)
        return self._counter.matches(chunk)

    def add(self, found: np.ndarray) -> None:
        """Count the matches `matches` returned for one chunk."""
        self._pending.append(found)
        self._n_pending += len(found)
        if self._n_pending >= max(len(self.uniq), 1 << 16):  # a bincount costs O(U): amortise it
            self._flush()

    def update(self, chunk: np.ndarray) -> None:
        self.add(self.matches(chunk))

    def _flush(self) -> None:
        if self._pending:
            self._total += np.bincount(np.concatenate(self._pending), minlength=len(self.uniq))
            self._pending, self._n_pending = [], 0

    def counts(self) -> np.ndarray:
        """Matches so far per query row, int64 [N]."""
        self._flush()
        return self._total[self.inverse]


def window_duplicate_counts(
    windows: np.ndarray,
    stream: np.ndarray | Iterable[np.ndarray],
    *,
    first_only: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    threads: int = 1,
    hash_bits: int = 64,
) -> np.ndarray:
    """Number of windows of `stream` equal to each row of `windows` [N, k], int64 [N].

    `stream` is a [R, L] token matrix (array or memmap) or an iterable of [r, L] chunks; its
    windows are the k-token slices of each row at offsets 0..L-k (only offset 0 with
    `first_only`). `threads` > 1 hashes chunks in parallel (numpy releases the GIL).
    """
    counter = DuplicateCounter(windows, first_only=first_only, hash_bits=hash_bits)
    if not len(counter.inverse):
        return np.zeros(0, dtype=np.int64)
    for found in bounded_map(counter.matches, _chunks(stream, chunk_rows), threads):
        counter.add(found)
    return counter.counts()


def continuation_duplicate_counts(
    queries: np.ndarray,
    stream: np.ndarray | Iterable[np.ndarray],
    *,
    offset: int = 32,
    k: int = 32,
    **kwargs,
) -> np.ndarray:
    """`sequence_duplicates`: stream windows equal to each query row's tokens[offset : offset + k], int64 [N].

    `queries` is [N, L] with L >= offset + k (the 64-token samples); other keywords go to
    `window_duplicate_counts`.
    """
    queries = np.asarray(queries)
    if queries.ndim != 2 or k < 1 or offset < 0 or queries.shape[1] < offset + k:
        raise ValueError(f"queries {queries.shape} have no window at offset {offset} of {k} tokens")
    return window_duplicate_counts(queries[:, offset : offset + k], stream, **kwargs)


def sequence_duplicate_counts(
    queries: np.ndarray, stream: np.ndarray | Iterable[np.ndarray], **kwargs
) -> np.ndarray:
    """Stream rows whose first L tokens equal each query row [N, L], int64 [N].

    With full-length queries this is the number of exact duplicates of the row (itself included).
    """
    return window_duplicate_counts(queries, stream, first_only=True, **kwargs)
