"""Training streams: the token rows a model was trained on, in order, read from disk in chunks.

Three layouts, all fixed-length rows of integer token ids:

- **Megatron indexed dataset** (Pythia's preshuffled `document.bin` + `document.idx`): `.bin` holds
  the tokens, `.idx` describes them. The `.idx` file, little-endian:

      magic  b"MMIDIDX\\x00\\x00" (9 bytes) | version uint64 (1) | dtype code uint8 |
      sequences n uint64 | documents d uint64 |
      sizes int32[n] (tokens per sequence) | pointers int64[n] (byte offset of each sequence in
      the .bin) | doc_idx int64[d] (first sequence of each document, then n)

  Dtype codes: 1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 8 uint16; codes 6 and 7 are floating
  types (which of them is float32 differs between Megatron's forks) and never hold token ids.
  Pythia: uint16, every sequence 2,049 tokens, stored back to back in order;
- **.npy**: a 2-D [rows, row_len] integer array (or 1-D with `row_len` given);
- **raw** (`.bin` without an `.idx`, `.u16`, anything else): a headerless array of `dtype`
  (uint16 by default) read as [rows, row_len], `row_len` given.

`TokenStream.chunks(start, stop)` yields rows [start, stop) as [r, row_len] arrays. The data file
is memory-mapped one window (`WINDOW_BYTES`) at a time and each window is unmapped before the
next, so the resident memory of a pass stays that of one window whatever the stream's length (a
single map of the whole file would keep every page read resident). A Megatron index is checked
when opened (`check=True`, once per plan; chunked reads, constant memory) and again over each
window read: a `.idx` that does not describe its `.bin` is a one-line `MemlakeError` naming the
file, before anything is counted.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from memlake.core.errors import MemlakeError

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
_HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, sequences, documents
DTYPE_CODES: dict[int, type] = {
    1: np.uint8,
    2: np.int8,
    3: np.int16,
    4: np.int32,
    5: np.int64,
    8: np.uint16,
}
WINDOW_BYTES = 64 << 20  # mapped at once: bounds the resident pages of a pass
_CHECK_ENTRIES = 1 << 22  # index entries checked per read when opening (48 MiB of sizes + pointers)
_FULL_HASH_BYTES = 64 << 20  # files up to this size are hashed whole for the identity
_SAMPLE_BLOCKS, _BLOCK = 64, 1 << 20  # larger ones: 64 evenly spaced 1 MiB blocks


@dataclass(frozen=True)
class TokenStream:
    path: Path  # the file holding the tokens
    format: str  # megatron / npy / raw
    rows: int
    row_len: int
    dtype: str
    data_offset: int  # byte offset of row 0 in `path`
    index: Path | None = None  # the Megatron .idx

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize

    @property
    def tokens(self) -> int:
        return self.rows * self.row_len

    def chunks(self, start: int = 0, stop: int | None = None, chunk_rows: int = 64) -> Iterator[np.ndarray]:
        """Rows [start, stop) as read-only [r, row_len] arrays of at most `chunk_rows` rows."""
        stop = self.rows if stop is None else stop
        if not 0 <= start <= stop <= self.rows:
            raise MemlakeError(f"{self.path}: rows [{start}, {stop}) outside the stream's {self.rows} rows")
        if chunk_rows < 1:
            raise MemlakeError(f"chunk_rows must be positive, got {chunk_rows}")
        row_bytes = self.row_len * self.itemsize
        per_window = max(1, WINDOW_BYTES // max(row_bytes, 1) // chunk_rows) * chunk_rows
        for w0 in range(start, stop, per_window):
            w1 = min(stop, w0 + per_window)
            if self.index is not None:
                _check_index_range(self, w0, w1)
            window = np.memmap(
                self.path,
                dtype=self.dtype,
                mode="r",
                offset=self.data_offset + w0 * row_bytes,
                shape=(w1 - w0, self.row_len),
            )
            for c in range(0, w1 - w0, chunk_rows):
                yield window[c : c + chunk_rows]
            del window  # unmapped once the caller drops its last chunk of it

    @cached_property
    def _identity(self) -> dict[str, Any]:
        """What identifies the stream's content: layout, shape and a hash of its files (whole up to
        64 MiB; above that, the size and 64 evenly spaced 1 MiB blocks, since hashing hundreds of
        gigabytes would cost as much as counting them). The path is not part of it."""
        files = [self.path] + ([self.index] if self.index is not None else [])
        return {
            "format": self.format,
            "rows": self.rows,
            "row_len": self.row_len,
            "dtype": self.dtype,
            "data_offset": self.data_offset,
            "sha256": {f.suffix or f.name: _content_hash(f) for f in files},
        }

    def identity(self) -> dict[str, Any]:
        """See `_identity` (computed once per opened stream)."""
        return dict(self._identity)

    def key(self) -> str:
        """A 16-hex digest of `identity()`: the stream's partition value in the lake."""
        return digest(self._identity)


def digest(value: Any) -> str:
    """A 16-hex digest of a JSON-able value."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _content_hash(path: Path) -> str:
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= _FULL_HASH_BYTES:
            for block in iter(lambda: f.read(_BLOCK), b""):
                h.update(block)
        else:
            for offset in np.linspace(0, size - _BLOCK, _SAMPLE_BLOCKS).astype(np.int64):
                f.seek(int(offset))
                h.update(f.read(_BLOCK))
    return h.hexdigest()


# --------------------------------------------------------------------------- opening


def open_stream(
    path: str | Path, row_len: int | None = None, dtype: str | type = "uint16", *, check: bool = True
) -> TokenStream:
    """The stream at `path`: a Megatron pair (`prefix`, `prefix.bin` or `prefix.idx` with both files
    present), a `.npy` array, or a raw token file of `dtype` with `row_len` tokens per row.

    `check` reads the whole Megatron index once (chunked) so a bad one fails here, not mid-count.
    """
    path = Path(path).expanduser()
    prefix = path.with_suffix("") if path.suffix in (".bin", ".idx") else path
    idx, bin_ = prefix.with_name(prefix.name + ".idx"), prefix.with_name(prefix.name + ".bin")
    if idx.is_file() and bin_.is_file() and (path.suffix in (".bin", ".idx") or not path.exists()):
        return _open_megatron(idx, bin_, row_len, check)
    if path.suffix == ".idx":
        raise MemlakeError(f"{bin_}: no such file (the data file of index {path})")
    if not path.is_file():
        raise MemlakeError(f"{path}: no such stream file (a Megatron prefix, .bin/.idx, .npy or raw tokens)")
    if path.suffix == ".npy":
        return _open_npy(path, row_len)
    return _open_raw(path, row_len, dtype)


def _check_row_len(path: Path, row_len: int | None) -> None:
    if row_len is not None and (isinstance(row_len, bool) or not isinstance(row_len, int) or row_len < 1):
        raise MemlakeError(f"{path}: row length must be a positive integer, got {row_len!r}")


def _open_raw(path: Path, row_len: int | None, dtype) -> TokenStream:
    _check_row_len(path, row_len)
    if row_len is None:
        raise MemlakeError(f"{path}: a raw token file needs its row length (--row-len)")
    dt = np.dtype(dtype)
    if not np.issubdtype(dt, np.integer):
        raise MemlakeError(f"{path}: token dtype must be an integer type, got {dt}")
    size = path.stat().st_size
    if size % (row_len * dt.itemsize):
        raise MemlakeError(
            f"{path}: {size} bytes is not a whole number of {row_len}-token {dt} rows "
            f"({row_len * dt.itemsize} bytes each)"
        )
    return TokenStream(path, "raw", size // (row_len * dt.itemsize), row_len, dt.str, 0)


def _open_npy(path: Path, row_len: int | None) -> TokenStream:
    _check_row_len(path, row_len)
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise MemlakeError(f"{path}: unreadable .npy ({str(e).splitlines()[0]})") from None
    shape, dt, offset = arr.shape, arr.dtype, int(arr.offset)
    fortran = arr.flags.f_contiguous and not arr.flags.c_contiguous
    del arr
    if not np.issubdtype(dt, np.integer):
        raise MemlakeError(f"{path}: token dtype must be an integer type, got {dt}")
    if fortran:
        raise MemlakeError(f"{path}: a Fortran-ordered array; save it in C order (np.ascontiguousarray)")
    if len(shape) == 1:
        if row_len is None or shape[0] % row_len:
            raise MemlakeError(f"{path}: a 1-D array of {shape[0]} tokens needs a row length that divides it")
        shape = (shape[0] // row_len, row_len)
    if len(shape) != 2:
        raise MemlakeError(f"{path}: expected a [rows, row_len] array, got shape {shape}")
    if row_len is not None and shape[1] != row_len:
        raise MemlakeError(f"{path}: rows have {shape[1]} tokens, not the {row_len} given")
    return TokenStream(path, "npy", int(shape[0]), int(shape[1]), dt.str, offset)


def _open_megatron(idx: Path, bin_: Path, row_len: int | None, check: bool) -> TokenStream:
    _check_row_len(idx, row_len)
    size = idx.stat().st_size
    with open(idx, "rb") as f:
        head = f.read(_HEADER.size)
        if len(head) < _HEADER.size:
            raise MemlakeError(f"{idx}: {size} bytes, shorter than a Megatron index header")
        magic, version, code, n, docs = _HEADER.unpack(head)
        if magic != MAGIC:
            raise MemlakeError(f"{idx}: not a Megatron index (magic {magic!r}, expected {MAGIC!r})")
        if version != VERSION:
            raise MemlakeError(f"{idx}: index version {version}, only version {VERSION} is known")
        if code not in DTYPE_CODES:
            what = "a floating type, not token ids" if code in (6, 7) else "unknown"
            raise MemlakeError(f"{idx}: dtype code {code} is {what} (known: {sorted(DTYPE_CODES)})")
        expected = _HEADER.size + n * 4 + n * 8 + docs * 8
        if size != expected:
            raise MemlakeError(
                f"{idx}: {size} bytes, but its header ({n} sequences, {docs} documents) needs {expected}"
            )
        first = int(np.frombuffer(f.read(4), dtype="<i4")[0]) if n else (row_len or 0)
        f.seek(_HEADER.size + n * 4)
        offset = int(np.frombuffer(f.read(8), dtype="<i8")[0]) if n else 0
    if n and first < 1:
        raise MemlakeError(f"{idx}: sequence 0 has {first} tokens")
    if row_len is not None and n and first != row_len:
        raise MemlakeError(f"{idx}: sequence 0 has {first} tokens, not the {row_len} given")
    stream = TokenStream(
        bin_, "megatron", int(n), first, np.dtype(DTYPE_CODES[code]).newbyteorder("<").str, offset, idx
    )
    if check:
        for s in range(0, n, _CHECK_ENTRIES):
            _check_index_range(stream, s, min(n, s + _CHECK_ENTRIES))
    return stream


def _index_entries(stream: TokenStream, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """sizes[start:stop] and pointers[start:stop] of a Megatron index, read (not mapped)."""
    n, count = stream.rows, stop - start
    with open(stream.index, "rb") as f:
        f.seek(_HEADER.size + 4 * start)
        sizes = np.frombuffer(f.read(4 * count), dtype="<i4")
        f.seek(_HEADER.size + 4 * n + 8 * start)
        pointers = np.frombuffer(f.read(8 * count), dtype="<i8")
    return sizes, pointers


def _check_index_range(stream: TokenStream, start: int, stop: int) -> None:
    """Sequences [start, stop) are `row_len` tokens each, inside the .bin, back to back in order."""
    if stop <= start:
        return
    sizes, pointers = _index_entries(stream, start, stop)
    idx, item = stream.index, stream.itemsize
    bin_bytes = stream.path.stat().st_size
    ends = pointers + sizes.astype(np.int64) * item
    bad = np.flatnonzero((pointers < 0) | (sizes < 0) | (ends > bin_bytes))
    if len(bad):
        i = int(bad[0])
        raise MemlakeError(
            f"{idx}: sequence {start + i} spans bytes [{int(pointers[i])}, {int(ends[i])}), outside "
            f"{stream.path} ({bin_bytes} bytes)"
        )
    bad = np.flatnonzero(sizes != stream.row_len)
    if len(bad):
        i = int(bad[0])
        raise MemlakeError(
            f"{idx}: sequence {start + i} has {int(sizes[i])} tokens, sequence 0 has {stream.row_len} "
            "(a fixed row length is required)"
        )
    expected = stream.data_offset + (start + np.arange(stop - start, dtype=np.int64)) * stream.row_len * item
    bad = np.flatnonzero(pointers != expected)
    if len(bad):
        i = int(bad[0])
        raise MemlakeError(
            f"{idx}: sequence {start + i} starts at byte {int(pointers[i])}, not {int(expected[i])} "
            "(rows must be stored back to back, in order)"
        )


# --------------------------------------------------------------------------- writing


def write_mmap_stream(
    path_prefix: str | Path, rows: np.ndarray | Iterable[np.ndarray], dtype: str | type = np.uint16
) -> tuple[Path, Path]:
    """Write rows as a Megatron pair `<prefix>.bin` + `<prefix>.idx`; returns their paths.

    `rows` is a [R, L] array or an iterable of [r, L] chunks (written as they come: memory does not
    grow with the stream; chunks may differ in L, then the rows do). One document per row. Values
    must fit `dtype`. Both files are written under temporary names and renamed when complete.
    """
    prefix = Path(path_prefix)
    prefix = prefix.with_suffix("") if prefix.suffix in (".bin", ".idx") else prefix
    dt = np.dtype(dtype)
    code = {np.dtype(v): k for k, v in DTYPE_CODES.items()}.get(dt)
    if code is None:
        raise MemlakeError(f"{prefix}: dtype {dt} has no Megatron code (use one of uint8/16, int8/16/32/64)")
    bin_, idx = prefix.with_name(prefix.name + ".bin"), prefix.with_name(prefix.name + ".idx")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    tmp_bin, tmp_idx = (p.with_name(f".{p.name}.{os.getpid()}.tmp") for p in (bin_, idx))
    runs: list[list[int]] = []  # [row count, row length] of consecutive rows: sizes, run-length encoded
    lo, hi = np.iinfo(dt).min, np.iinfo(dt).max
    try:
        with open(tmp_bin, "wb") as f:
            for chunk in [rows] if isinstance(rows, np.ndarray) else rows:
                chunk = np.asarray(chunk)
                if chunk.ndim != 2:
                    raise MemlakeError(f"{bin_}: rows must be [rows, L] matrices, got shape {chunk.shape}")
                if chunk.size and (chunk.min() < lo or chunk.max() > hi):
                    bad = int(chunk.max() if chunk.max() > hi else chunk.min())
                    raise MemlakeError(f"{bin_}: token id {bad} does not fit {dt}")
                f.write(np.ascontiguousarray(chunk, dtype=dt.newbyteorder("<")).tobytes())
                if runs and runs[-1][1] == chunk.shape[1]:
                    runs[-1][0] += chunk.shape[0]
                elif chunk.shape[0]:
                    runs.append([chunk.shape[0], chunk.shape[1]])
        n = sum(r for r, _ in runs)
        with open(tmp_idx, "wb") as f:
            f.write(_HEADER.pack(MAGIC, VERSION, code, n, n + 1))
            for count, width in runs:
                for s in range(0, count, _CHECK_ENTRIES):
                    f.write(np.full(min(_CHECK_ENTRIES, count - s), width, dtype="<i4").tobytes())
            offset = 0
            for count, width in runs:
                for s in range(0, count, _CHECK_ENTRIES):
                    m = min(_CHECK_ENTRIES, count - s)
                    f.write((offset + np.arange(m, dtype="<i8") * width * dt.itemsize).tobytes())
                    offset += m * width * dt.itemsize
            for s in range(0, n + 1, _CHECK_ENTRIES):
                f.write(np.arange(s, min(n + 1, s + _CHECK_ENTRIES), dtype="<i8").tobytes())
        os.replace(tmp_bin, bin_)
        os.replace(tmp_idx, idx)
    finally:
        for p in (tmp_bin, tmp_idx):
            p.unlink(missing_ok=True)
    return bin_, idx
