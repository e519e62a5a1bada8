"""The training stream as an input: Megatron / .npy / raw readers and the Megatron writer, bad
indexes as one-line errors, sharded duplicate and token counts (equal to one-shot and brute-force
counts, resumable), constant memory over longer streams, and `memlake taxonomy features --stream`
against the in-warehouse computation on the tiny corpus."""

from __future__ import annotations

import os
import pickle
import shutil
import struct
import tracemalloc
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from ingest import code_nl_classifier
from ingest import features as feat
from ingest import stream as st
from ingest.stream import open_stream, write_mmap_stream
from ingest.stream_counts import StreamSource, count_stream, plan_shards
from ingest.tokenizer import load_tokenizer, tokenizer_of
from memlake.cli import app
from memlake.core import lake
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse
from memlake.core.unit import run_unit
from tests.helpers import features_from
from transforms import code_nl
from transforms.stream_tally import tally

PYTHIA_ROW, PYTHIA_VOCAB = 2049, 50_277  # ids 0..50,276


def write_instances(wh: Warehouse, rows: list, sample_only: list[bool] | None = None) -> None:
    n = len(rows)
    lake.write_partition(
        wh,
        "instances",
        {
            "instance_id": list(range(n)),
            "split": ["train"] * n,
            "tokens": pa.array([list(map(int, r)) for r in rows], lake.TOKENS),
            "batch_idx": [0] * n,
            "cohort": [1] * n,
            "source": ["code"] * n,
            "artifact": ["none"] * n,
            "copies": [1] * n,
            "clean_tokens": pa.nulls(n, lake.TOKENS),
            "sample_only": sample_only or [False] * n,
        },
        overwrite=True,
    )


def read_all(stream, **kw) -> np.ndarray:
    return np.concatenate(list(stream.chunks(**kw)))


# --------------------------------------------------------------------------- readers and writer


def test_megatron_round_trip_with_pythia_rows(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    rows = rng.integers(0, PYTHIA_VOCAB, size=(37, PYTHIA_ROW)).astype(np.uint16)
    rows[0, 0], rows[-1, -1] = 0, PYTHIA_VOCAB - 1
    bin_, idx = write_mmap_stream(tmp_path / "document", rows)
    assert (bin_.name, idx.name) == ("document.bin", "document.idx")
    assert bin_.stat().st_size == rows.size * 2
    raw = idx.read_bytes()
    magic, version, code, n, docs = struct.unpack("<9sQBQQ", raw[:34])
    assert (magic, version, code, n, docs) == (b"MMIDIDX\x00\x00", 1, 8, 37, 38)
    sizes = np.frombuffer(raw, "<i4", 37, 34)
    pointers = np.frombuffer(raw, "<i8", 37, 34 + 37 * 4)
    doc_idx = np.frombuffer(raw, "<i8", 38, 34 + 37 * 12)
    assert (sizes == PYTHIA_ROW).all() and (pointers == np.arange(37) * PYTHIA_ROW * 2).all()
    assert (doc_idx == np.arange(38)).all() and len(raw) == 34 + 37 * 12 + 38 * 8
    monkeypatch.setattr(st, "WINDOW_BYTES", 3 * PYTHIA_ROW * 2)  # several mapped windows per pass
    for name in ("document", "document.bin", "document.idx"):
        s = open_stream(tmp_path / name)
        assert (s.format, s.rows, s.row_len, s.dtype) == ("megatron", 37, PYTHIA_ROW, "<u2")
        got = read_all(s, start=5, stop=33, chunk_rows=2)
        assert got.dtype == np.uint16 and np.array_equal(got, rows[5:33])
    assert max(len(c) for c in s.chunks(chunk_rows=4)) == 4
    # chunks written as they come give the same files
    write_mmap_stream(tmp_path / "again.bin", (rows[i : i + 10] for i in range(0, 37, 10)))
    assert (tmp_path / "again.bin").read_bytes() == bin_.read_bytes()
    assert (tmp_path / "again.idx").read_bytes() == raw
    assert open_stream(tmp_path / "again").key() == s.key()  # content, not the path
    with pytest.raises(MemlakeError, match="token id 70000 does not fit uint16"):
        write_mmap_stream(tmp_path / "big", np.array([[1, 70000]]))


def test_npy_and_raw_readers(tmp_path):
    rows = np.random.default_rng(1).integers(0, PYTHIA_VOCAB, size=(12, PYTHIA_ROW)).astype(np.uint16)
    np.save(tmp_path / "rows.npy", rows)
    s = open_stream(tmp_path / "rows.npy")
    assert (s.format, s.rows, s.row_len) == ("npy", 12, PYTHIA_ROW)
    assert np.array_equal(read_all(s, chunk_rows=5), rows)
    np.save(tmp_path / "flat.npy", rows.reshape(-1).astype(np.int32))
    assert np.array_equal(read_all(open_stream(tmp_path / "flat.npy", row_len=PYTHIA_ROW)), rows)
    for suffix in (".u16", ".bin"):  # a .bin without an .idx is raw tokens
        rows.tofile(tmp_path / f"rows{suffix}")
        s = open_stream(tmp_path / f"rows{suffix}", row_len=PYTHIA_ROW)
        assert s.format == "raw" and np.array_equal(read_all(s, start=3, stop=9), rows[3:9])
    bad = [
        ((tmp_path / "rows.u16",), "needs its row length"),
        ((tmp_path / "rows.u16", 2000), "is not a whole number of 2000-token"),
        ((tmp_path / "flat.npy",), "needs a row length that divides it"),
        ((tmp_path / "nothing.bin",), "no such stream file"),
    ]
    np.save(tmp_path / "floats.npy", rows.astype(np.float32))
    bad.append(((tmp_path / "floats.npy",), "must be an integer type"))
    for args, message in bad:
        with pytest.raises(MemlakeError, match=message) as err:
            open_stream(*args)
        assert "\n" not in str(err.value) and str(args[0]) in str(err.value)


@pytest.fixture()
def pythia_wh(tmp_path):
    """A warehouse whose instances are 4 whole 2,049-token rows, and a 30-row stream holding them."""
    rng = np.random.default_rng(2)
    rows = rng.integers(0, PYTHIA_VOCAB, size=(30, PYTHIA_ROW)).astype(np.uint16)
    wh = Warehouse.at(tmp_path / "wh")
    write_instances(wh, rows[[0, 7, 7, 20]])
    return wh, rows


def _corrupt(tmp_path, rows, how: str):
    prefix = tmp_path / how
    if how == "unequal":
        write_mmap_stream(prefix, [rows[:5], rows[5:8, :100], rows[8:]])
        return prefix.with_suffix(".idx"), "sequence 5 has 100 tokens, sequence 0 has 2049"
    _, idx = write_mmap_stream(prefix, rows)
    raw = bytearray(idx.read_bytes())
    n = len(rows)
    if how == "pointer":  # sequence 20 starts past the end of the .bin
        raw[34 + 4 * n + 8 * 20 : 34 + 4 * n + 8 * 21] = struct.pack("<q", rows.size * 2)
        message = f"sequence 20 spans bytes \\[{rows.size * 2}, {rows.size * 2 + PYTHIA_ROW * 2}\\), outside"
    elif how == "magic":
        raw[:9] = b"NOTANIDX\x00"
        message = "not a Megatron index"
    elif how == "version":
        raw[9:17] = struct.pack("<Q", 2)
        message = "index version 2, only version 1"
    else:  # truncated
        raw = raw[:-8]
        message = "bytes, but its header"
    idx.write_bytes(bytes(raw))
    return idx, message


@pytest.mark.parametrize("how", ["pointer", "magic", "version", "truncated", "unequal"])
def test_a_bad_index_is_a_one_line_error_before_anything_is_written(pythia_wh, tmp_path, how):
    wh, rows = pythia_wh
    idx, message = _corrupt(tmp_path, rows, how)
    with pytest.raises(MemlakeError, match=message) as err:
        count_stream(wh, StreamSource(str(idx), shards=3), prompt_len=32, k=32)
    text = str(err.value)
    assert "\n" not in text and text.startswith(str(idx))
    assert not wh.table("stream_counts").exists() and not wh.table("stream_token_counts").exists()


# --------------------------------------------------------------------------- sharded counts


def brute_force(stream: np.ndarray, windows: np.ndarray, rows: np.ndarray) -> tuple[list, list]:
    k = windows.shape[1]
    seen = Counter(tuple(r[j : j + k]) for r in stream.tolist() for j in range(len(r) - k + 1))
    whole = Counter(tuple(r) for r in stream.tolist())
    return [seen[tuple(w)] for w in windows.tolist()], [whole[tuple(r)] for r in rows.tolist()]


@pytest.fixture()
def planted(tmp_path):
    """A 60 x 80-token stream with planted repeats, and instances: whole stream rows, rows found
    nowhere, and sample-only rows (their first 16 tokens). Window: tokens [8, 16)."""
    rng = np.random.default_rng(3)
    stream = rng.integers(0, 50, size=(60, 80)).astype(np.uint16)
    window = stream[4, 8:16].copy()
    for r, j in [(10, 0), (11, 72), (30, 40), (30, 50), (59, 3)]:  # 5 more copies inside rows
        stream[r, j : j + 8] = window
    stream[12, 76:], stream[13, :4] = window[:4], window[4:]  # across a row boundary: not a copy
    stream[[40, 50]] = stream[9]  # row 9 three times
    outside = rng.integers(0, 50, size=(2, 80))
    whole_rows = np.concatenate([stream[[4, 9, 12, 40]], outside])
    samples = np.concatenate([stream[[4, 33]], outside[:1]])[:, :16]
    wh = Warehouse.at(tmp_path / "wh")
    write_instances(wh, list(whole_rows) + list(samples), [False] * 6 + [True] * 3)
    write_mmap_stream(tmp_path / "document", stream)
    return wh, stream, whole_rows, samples, tmp_path / "document"


def test_sharded_counts_equal_one_shot_and_brute_force_counts(planted):
    wh, stream, whole_rows, samples, prefix = planted
    sharded = count_stream(wh, StreamSource(str(prefix), shards=3), prompt_len=8, k=8)
    one = count_stream(wh, StreamSource(str(prefix), shards=1), prompt_len=8, k=8)
    assert (sharded.units_run, one.units_run) == (3, 1)
    windows = np.concatenate([whole_rows[:, 8:16], samples[:, 8:16]])
    want_windows, want_rows = brute_force(stream, windows, whole_rows)
    assert want_windows[0] == 6 and want_rows[:2] == [1, 3]  # the planted repeats
    for got in (sharded, one):
        assert got.sequence_duplicates.tolist() == want_windows
        assert got.whole.tolist() == [True] * 6 + [False] * 3
        assert got.whole_sequence_duplicates[:6].tolist() == want_rows
        assert got.token_counts.tolist() == np.bincount(stream.reshape(-1)).tolist()
    # the lake holds one partition per shard; sums over them are the counts
    t = lake.read_table(wh, "stream_counts").filter(pa.compute.equal(pa.compute.field("shards"), 3))
    assert sorted(set(t["shard"].to_pylist())) == [0, 1, 2]
    summed = t.group_by("instance_id").aggregate([("sequence_duplicates", "sum")]).sort_by("instance_id")
    assert summed["sequence_duplicates_sum"].to_pylist() == [c for c in want_windows if c]
    assert t.filter(pa.compute.field("instance_id") >= 6)["whole_sequence_duplicates"].null_count == len(
        t.filter(pa.compute.field("instance_id") >= 6)
    )


def test_a_rerun_skips_complete_shards_and_resumes_a_missing_one(planted):
    wh, stream, *_, prefix = planted
    source = StreamSource(str(prefix), shards=3)
    first = count_stream(wh, source, prompt_len=8, k=8)
    again = count_stream(wh, source, prompt_len=8, k=8)
    assert (again.units_run, again.units_skipped) == (0, 3)
    # a killed run: shard 1 never finished
    done = lake.partition_dir(
        wh, "stream_counts", {"stream": first.stream.key(), "queries": _queries(wh), "shards": 3, "shard": 1}
    )
    shutil.rmtree(done)
    resumed = count_stream(wh, source, prompt_len=8, k=8)
    assert (resumed.units_run, resumed.units_skipped) == (1, 2)
    assert np.array_equal(resumed.sequence_duplicates, first.sequence_duplicates)
    # other queries count again; the token counts, which do not depend on them, are kept
    other = count_stream(wh, source, prompt_len=4, k=8)
    assert other.units_run == 3 and np.array_equal(other.token_counts, first.token_counts)
    assert len(lake.partitions(wh, "stream_token_counts")) == 3


def _queries(wh):
    from ingest.stream_counts import queries_key

    return queries_key(wh, 8, 8)


def test_counting_memory_does_not_grow_with_the_stream(tmp_path):
    rng = np.random.default_rng(4)
    base = rng.integers(0, PYTHIA_VOCAB, size=(40, PYTHIA_ROW)).astype(np.uint16)
    queries = base[::4]
    write_mmap_stream(tmp_path / "short", base)
    write_mmap_stream(tmp_path / "long", (np.roll(base, i, axis=1) for i in range(10)))

    def peak(name: str) -> int:
        s = open_stream(tmp_path / name)
        tracemalloc.start()
        t = tally(s.chunks(chunk_rows=8), queries[:, 32:64], queries)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert t.rows_read == s.rows and t.windows.min() >= 1
        return top

    short, long = peak("short"), peak("long")
    assert long <= 1.25 * short, (short, long)


# --------------------------------------------------------------------------- the CLI


def _fake_embed(texts) -> np.ndarray:
    """Character histograms, normalised: a cheap deterministic stand-in for MiniLM."""
    out = np.zeros((len(texts), 384), dtype=np.float32)
    for i, t in enumerate(texts):
        np.add.at(out[i], [ord(c) % 384 for c in t], 1.0)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


@pytest.fixture()
def stubbed(monkeypatch):
    """Features without the MiniLM encoder and the code-vs-NL training (not what is under test)."""
    report = {
        "recipe": "stub",
        "seed": 0,
        "held_out_accuracy": 1.0,
        "held_out_accuracy_all_code_windows": 1.0,
    }
    monkeypatch.setattr(feat, "embed_distinct", _fake_embed)
    monkeypatch.setattr(code_nl_classifier, "load_or_train", lambda *a, **k: (None, report))
    monkeypatch.setattr(code_nl, "nl_score", lambda texts, model: np.full(len(texts), 0.5))


@pytest.fixture()
def corpus_copy(tiny_corpus, tmp_path):
    """The tiny corpus plus three sample-only rows (first 64 tokens of training rows), and its
    training stream as a Megatron pair: the whole training rows by instance_id, in data order."""
    wh = Warehouse.at(tmp_path / "wh")
    shutil.copytree(tiny_corpus.tokenizer, wh.tokenizer)
    shutil.copy(tiny_corpus.suite / "data_order.npy", wh.suite / "data_order.npy")
    inst = lake.read_table(tiny_corpus, "instances").sort_by("instance_id")
    train = inst.filter(pa.compute.equal(inst["split"], "train"))
    extra = train.slice(0, 3).to_pylist()
    for i, row in enumerate(extra):
        row.update(instance_id=10_000 + i, tokens=row["tokens"][:64], sample_only=True)
    table = pa.concat_tables([inst, pa.Table.from_pylist(extra, inst.schema)])
    lake.write_partition(wh, "instances", table)
    rows = np.array(train["tokens"].to_pylist())[np.load(wh.suite / "data_order.npy")]
    write_mmap_stream(tmp_path / "stream" / "document", rows)
    return wh, tmp_path / "stream" / "document"


def features(wh) -> pa.Table:
    return pq.read_table(wh.table("instance_features") / lake.DATA_FILE)


def test_cli_stream_gives_the_in_warehouse_features(corpus_copy, tiny_cfg, stubbed, tmp_path):
    wh, prefix = corpus_copy
    today = features_from(tiny_cfg, wh)
    assert not today["skipped"]
    expected = features(wh)
    runner = CliRunner()
    args = ["taxonomy", "features", "--config", "tiny", "--warehouse", str(wh.root)]
    args += ["--stream", str(prefix), "--stream-shards", "3"]
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output + repr(out.exception)
    got = features(wh)
    assert got.schema == expected.schema
    for name in expected.column_names:
        assert got[name].equals(expected[name]), name
    samples = got.filter(pa.compute.field("instance_id") >= 10_000)
    assert samples["whole_sequence_duplicates"].null_count == 3
    assert min(samples["sequence_duplicates"].to_pylist()) >= 1
    m = lake.manifest(wh.table("instance_features"))["config"]
    key = open_stream(prefix).key()
    assert m["inputs"]["stream"]["key"] == key and m["stream"]["shards_run"] == 3
    assert len(lake.partitions(wh, "stream_counts")) == 3
    # the same stream again: up to date; another stream: rebuilt
    assert "(cached)" in runner.invoke(app, args).output
    rows = np.concatenate(list(open_stream(prefix).chunks()))
    write_mmap_stream(tmp_path / "shorter", rows[:-100])
    out = runner.invoke(app, args[:-4] + ["--stream", str(tmp_path / "shorter.idx")])
    assert out.exit_code == 0 and "(cached)" not in out.output
    assert lake.manifest(wh.table("instance_features"))["config"]["stream"]["rows"] == len(rows) - 100
    # a corrupt stream: a one-line error and the features stay as they were
    before = features(wh)
    idx, message = _corrupt(tmp_path, rows.astype(np.uint16), "pointer")
    out = runner.invoke(app, args[:-4] + ["--stream", str(idx), "--force"])
    assert isinstance(out.exception, MemlakeError) and "\n" not in str(out.exception)
    assert features(wh).equals(before)


def test_match_corpus_from_the_representative_sample_table(corpus_copy, tiny_cfg, stubbed):
    wh, _ = corpus_copy
    default = features_from(tiny_cfg, wh, match_corpus="representative_sample")  # absent: default
    m = lake.manifest(wh.table("instance_features"))["config"]
    assert m["inputs"]["match_corpus"]["absent"] and default["representative_sample_rows"] == 300
    inst = lake.read_table(wh, "instances").sort_by("instance_id")
    picked = inst.slice(100, 40)
    sample = pa.table(
        {
            "instance_id": pa.concat_arrays(
                [picked["instance_id"].combine_chunks(), pa.array([90_000, 90_001])]
            ),
            "tokens": pa.array(
                [t[:64] for t in picked["tokens"].to_pylist()] + [list(range(64))] * 2, lake.TOKENS
            ),
        }
    )
    lake.write_partition(wh, "representative_sample", sample, {"scheme": "deduped", "shard": 0})
    got = features_from(tiny_cfg, wh, match_corpus="representative_sample")
    assert not got["skipped"] and got["representative_sample_rows"] == 42
    t = features(wh)
    ids = set(picked["instance_id"].to_pylist())
    assert [i in ids for i in t["instance_id"].to_pylist()] == t["in_representative_sample"].to_pylist()
    # the counts are those of the corpus texts, an instance never matching itself
    from transforms import semantic

    text = t["text"].to_pylist()
    tok = load_tokenizer(wh, tokenizer_of(wh))
    corpus_text = tok.batch_decode(sample["tokens"].to_pylist(), clean_up_tokenization_spaces=False)
    own = np.array([sorted(ids).index(i) if i in ids else -1 for i in t["instance_id"].to_pylist()])
    sm = semantic.semantic_match_counts(_fake_embed(text), _fake_embed(corpus_text), exclude_self=own)
    assert t["semantic_matches_0_8"].to_pylist() == sm.counts(0.8).tolist()
    assert features_from(tiny_cfg, wh, match_corpus="representative_sample:deduped")["rows"]
    with pytest.raises(MemlakeError, match="neither a Parquet file or folder nor a lake table"):
        features_from(tiny_cfg, wh, match_corpus="no_such_table")


def test_a_shard_computes_only_its_missing_output(planted, monkeypatch):
    wh, *_, prefix = planted
    from ingest import stream_counts

    counted = []  # what each pass tallied: (windows, tokens)

    def spy(chunks, windows, rows, count_tokens, threads):
        counted.append((windows is not None, count_tokens))
        return tally(chunks, windows=windows, rows=rows, count_tokens=count_tokens, threads=threads)

    monkeypatch.setattr(stream_counts, "tally", spy)
    units, _, _ = plan_shards(wh, StreamSource(str(prefix), shards=2), prompt_len=8, k=8)
    unit = pickle.loads(pickle.dumps(units[1]))  # as an executor ships it
    counts, token_counts = (lake.partition_dir(wh, o.table, o.partition) for o in unit.outputs())
    assert run_unit(unit)["rows"].keys() == {"stream_counts", "stream_token_counts"}
    assert run_unit(unit)["skipped"]
    for missing, kept in ((token_counts, counts), (counts, token_counts)):
        before, inode = lake.manifest(kept), os.stat(kept).st_ino
        data = pq.read_table(missing / lake.DATA_FILE)
        shutil.rmtree(missing)
        done = run_unit(unit)
        assert not done["skipped"] and done["rows"] == data.num_rows  # one output written
        assert pq.read_table(missing / lake.DATA_FILE).equals(data)
        assert lake.manifest(kept) == before and os.stat(kept).st_ino == inode
    assert counted == [(True, True), (False, True), (True, False)]
