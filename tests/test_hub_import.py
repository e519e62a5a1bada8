"""Hub importers against small local copies laid out and typed like the public datasets."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest import hub_import
from ingest.hub_import import import_dataset
from memlake import lake
from memlake.errors import MemlakeError
from memlake.paths import Warehouse

INT_LIST = pa.list_(pa.int64())
FLOAT_LIST = pa.list_(pa.float32())


def _write(path: Path, columns: dict, schema: pa.Schema) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns, schema=schema), path)
    return path


@pytest.fixture
def wh(tmp_path) -> Warehouse:
    return Warehouse.at(tmp_path / "wh")


# --------------------------------------------------------------------------- pile-deduped-subset

PILE_SCHEMA = pa.schema([("input_ids", INT_LIST), ("seq_idx", pa.int64())])
TRAIN_IDS = [0, 1023, 1024, 1_023_999, 1_024_000, 5_000_000]
VAL_IDS = [-100, -101, -102]


def _row(seed: int, n: int = 2049) -> list[int]:
    return [(seed * 7 + i) % 50_000 for i in range(n)]


@pytest.fixture
def pile_dir(tmp_path) -> Path:
    root = tmp_path / "pile-deduped-subset"
    (root / "README.md").parent.mkdir(parents=True)
    (root / "README.md").write_text("---\nlicense: mit\n---\n")
    for split, ids in (("train", TRAIN_IDS), ("validation", VAL_IDS)):
        cols = {"input_ids": [_row(s) for s in ids], "seq_idx": ids}
        _write(root / "data" / f"{split}-00000-of-00001.parquet", cols, PILE_SCHEMA)
    return root


def test_pile_subset_to_instances(pile_dir, wh):
    summary = import_dataset("pile-deduped-subset", str(pile_dir), wh)
    assert (summary.table, summary.written, summary.rows) == ("instances", 1, 9)
    rows = {r["instance_id"]: r for r in lake.read_table(wh, "instances").to_pylist()}
    assert sorted(rows) == sorted(TRAIN_IDS + VAL_IDS)
    cohorts = {i: rows[i]["cohort"] for i in TRAIN_IDS}
    # floor form: seq 0 is trained (cohort 1000); 1_024_000 opens the second macro-batch
    assert cohorts == {0: 1000, 1023: 1000, 1024: 1000, 1_023_999: 1000, 1_024_000: 2000, 5_000_000: 5000}
    assert [rows[i]["batch_idx"] for i in TRAIN_IDS] == [0, 0, 1, 999, 1000, 4882]
    for i in VAL_IDS:
        assert (rows[i]["split"], rows[i]["cohort"], rows[i]["batch_idx"]) == ("validation", None, None)
    r = rows[1024]
    assert (r["split"], r["source"], r["artifact"], r["copies"], r["clean_tokens"]) == (
        "train",
        "pile",
        "none",
        None,
        None,
    )
    assert r["tokens"] == _row(1024)
    assert lake.manifest(wh.table("instances"))["config"]["import"] == "pile-deduped-subset"
    # the token ids are Pythia's: the features job decodes with the recorded tokenizer
    assert lake.manifest(wh.table("instances"))["config"]["tokenizer"] == "EleutherAI/pythia-70m-deduped"


def test_pile_subset_reimport_is_idempotent(pile_dir, wh):
    import_dataset("pile-deduped-subset", str(pile_dir), wh)
    before = (wh.table("instances") / lake.MANIFEST).read_text()
    again = import_dataset("pile-deduped-subset", str(pile_dir), wh)
    assert (again.written, again.skipped, again.rows) == (0, 1, 0)
    assert (wh.table("instances") / lake.MANIFEST).read_text() == before


def test_pile_subset_refuses_a_warehouse_with_another_corpus(pile_dir, wh):
    lake.write_partition(
        wh,
        "instances",
        {
            "instance_id": [0],
            "split": ["validation"],
            "tokens": pa.array([[1, 2]], lake.TOKENS),
            "batch_idx": pa.nulls(1, pa.int64()),
            "cohort": pa.nulls(1, pa.int64()),
            "source": ["code"],
            "artifact": ["none"],
            "copies": pa.array([0], pa.int32()),
            "clean_tokens": pa.nulls(1, lake.TOKENS),
        },
    )
    with pytest.raises(MemlakeError, match="another corpus"):
        import_dataset("pile-deduped-subset", str(pile_dir), wh)


@pytest.mark.parametrize(
    ("file", "columns", "schema", "match"),
    [
        ("train", {"seq_idx": [1]}, pa.schema([("seq_idx", pa.int64())]), "missing column 'input_ids'"),
        (
            "train",
            {"input_ids": [[1]], "seq_idx": ["1"]},
            pa.schema([("input_ids", INT_LIST), ("seq_idx", pa.string())]),
            "column 'seq_idx' has type string, expected an integer",
        ),
        (
            "train",
            {"input_ids": [[1 << 40]], "seq_idx": [1]},
            PILE_SCHEMA,
            "column 'input_ids' does not fit",
        ),
        ("validation", {"input_ids": [[1]], "seq_idx": [5]}, PILE_SCHEMA, "validation row has seq_idx 5"),
        ("train", {"input_ids": [[1]], "seq_idx": [-100]}, PILE_SCHEMA, "train row has seq_idx -100"),
        ("test", {"input_ids": [[1]], "seq_idx": [1]}, PILE_SCHEMA, "unknown split 'test'"),
    ],
)
def test_pile_subset_errors_name_file_and_column(tmp_path, wh, file, columns, schema, match):
    bad = _write(tmp_path / "src" / "data" / f"{file}-00000-of-00001.parquet", columns, schema)
    with pytest.raises(MemlakeError, match=match) as err:
        import_dataset("pile-deduped-subset", str(tmp_path / "src"), wh)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    assert not lake.is_complete(wh, "instances", {})


def test_pile_subset_duplicate_seq_idx_is_rejected(tmp_path, wh):
    for shard in range(2):  # the second train shard repeats a row of the first
        _write(
            tmp_path / "src" / "data" / f"train-0000{shard}-of-00002.parquet",
            {"input_ids": [[1]], "seq_idx": [7]},
            PILE_SCHEMA,
        )
    with pytest.raises(MemlakeError, match="duplicated key"):
        import_dataset("pile-deduped-subset", str(tmp_path / "src"), wh)


# --------------------------------------------------------------------------- stats-raw

STATS_SCHEMA = pa.schema(
    [("seq_idx", pa.int64()), ("sup", FLOAT_LIST), ("rank", INT_LIST), ("entropy", FLOAT_LIST)]
)


def _stats(ids: list[int], step: int) -> dict:
    return {
        "seq_idx": ids,
        "sup": [[step / 1000 + i, 0.5] for i in ids],
        "rank": [[i, 0] for i in ids],
        "entropy": [[1.25, 2.5] for _ in ids],
    }


def _run_file(
    root: Path, size: str, step: int, name: str = "data.parquet", stamp: str = "2024-04-09_10-44-18"
):
    return root / size / f"pythia-deduped-{size}-step{step}_{stamp}" / name


@pytest.fixture
def stats_dir(tmp_path) -> Path:
    root = tmp_path / "stats-raw"
    ids = [0, 1024, -100]
    _write(_run_file(root, "70m", 0, "data-pythia-deduped-70m-step0.parquet"), _stats(ids, 0), STATS_SCHEMA)
    _write(_run_file(root, "70m", 1000), _stats(ids, 1000), STATS_SCHEMA)
    # a run written in two files: shards 0 and 1; and the run's side files, which are not data
    _write(_run_file(root, "70m", 2000, "a.parquet"), _stats(ids[:2], 2000), STATS_SCHEMA)
    _write(_run_file(root, "70m", 2000, "b.parquet"), _stats(ids[2:], 2000), STATS_SCHEMA)
    _run_file(root, "70m", 2000, "hparams.yaml").write_text("model_size: 70m\n")
    _write(_run_file(root, "1.4b", 95000), _stats(ids, 95000), STATS_SCHEMA)
    return root


def test_stats_raw_to_token_stats(stats_dir, wh):
    summary = import_dataset("pythia-deduped-stats-raw", str(stats_dir), wh)
    assert (summary.table, summary.written, summary.skipped, summary.rows) == ("token_stats", 5, 0, 12)
    t = lake.read_table(wh, "token_stats")
    assert t.schema == lake.spec("token_stats").schema
    keys = sorted({(r["model"], r["step"], r["shard"]) for r in t.to_pylist()})
    assert keys == [
        ("pythia-1.4b-deduped", 95000, 0),
        ("pythia-70m-deduped", 0, 0),
        ("pythia-70m-deduped", 1000, 0),
        ("pythia-70m-deduped", 2000, 0),
        ("pythia-70m-deduped", 2000, 1),
    ]
    row = next(
        r
        for r in t.to_pylist()
        if (r["model"], r["step"], r["instance_id"]) == ("pythia-70m-deduped", 1000, 1024)
    )
    assert row["surprisal"] == [1025.0, 0.5]
    assert row["rank"] == [1024, 0]
    assert row["entropy"] == [1.25, 2.5]
    assert {r["shard"] for r in t.to_pylist() if r["step"] == 2000 and r["instance_id"] == -100} == {1}

    again = import_dataset("pythia-deduped-stats-raw", str(stats_dir), wh)
    assert (again.written, again.skipped, again.rows) == (0, 5, 0)
    assert lake.read_table(wh, "token_stats").num_rows == 12


def test_stats_raw_filters_by_size_and_step(stats_dir, wh):
    summary = import_dataset("pythia-deduped-stats-raw", str(stats_dir), wh, sizes=["70m"], steps=[0, 2000])
    assert summary.written == 3
    steps = set(lake.read_table(wh, "token_stats", columns=["step"])["step"].to_pylist())
    assert steps == {0, 2000}
    with pytest.raises(MemlakeError, match="no runs match"):
        import_dataset("pythia-deduped-stats-raw", str(stats_dir), wh, sizes=["12b"])
    # a lone string or int is one item (as a CLI passes it)
    one = import_dataset("pythia-deduped-stats-raw", str(stats_dir), wh, sizes="1.4b", steps=95000)
    assert (one.written, one.rows) == (1, 3)


def test_stats_raw_unparseable_folder(tmp_path, wh):
    bad = _write(
        tmp_path / "src" / "70m" / "pythia-deduped-70m-final" / "x.parquet", _stats([1], 0), STATS_SCHEMA
    )
    with pytest.raises(
        MemlakeError, match="cannot parse model and step from folder 'pythia-deduped-70m-final'"
    ) as e:
        import_dataset("pythia-deduped-stats-raw", str(tmp_path / "src"), wh)
    assert str(bad) in str(e.value)


def test_stats_raw_wrong_type(tmp_path, wh):
    schema = STATS_SCHEMA.set(1, pa.field("sup", pa.list_(pa.string())))
    cols = _stats([1], 0) | {"sup": [["x"]]}
    bad = _write(_run_file(tmp_path / "src", "70m", 0), cols, schema)
    with pytest.raises(
        MemlakeError, match=r"column 'sup' has type list<\w+: string>, expected a list of floats"
    ) as e:
        import_dataset("pythia-deduped-stats-raw", str(tmp_path / "src"), wh)
    assert str(bad) in str(e.value)
    assert not wh.table("token_stats").exists()


def test_stats_raw_two_runs_of_one_checkpoint(tmp_path, wh):
    for stamp in ("2024-01-01_00-00-00", "2024-02-02_00-00-00"):
        _write(_run_file(tmp_path / "src", "70m", 0, stamp=stamp), _stats([1], 0), STATS_SCHEMA)
    with pytest.raises(MemlakeError, match="both hold pythia-70m-deduped step 0"):
        import_dataset("pythia-deduped-stats-raw", str(tmp_path / "src"), wh)


def test_stats_raw_size_folder_mismatch(tmp_path, wh):
    _write(
        tmp_path / "src" / "160m" / "pythia-deduped-70m-step0_x" / "d.parquet", _stats([1], 0), STATS_SCHEMA
    )
    with pytest.raises(MemlakeError, match="sits in 160m/"):
        import_dataset("pythia-deduped-stats-raw", str(tmp_path / "src"), wh)


# --------------------------------------------------------------------------- memorized-evals

EVALS_SCHEMA = pa.schema([("index", pa.int64()), ("tokens", INT_LIST), ("__index_level_0__", pa.int64())])


def _evals(ids: list[int], n: int = 64) -> dict:
    return {"index": ids, "tokens": [_row(i, n) for i in ids], "__index_level_0__": ids}


@pytest.fixture
def evals_dir(tmp_path) -> Path:
    root = tmp_path / "memorized-evals"
    data = root / "data"
    _write(data / "deduped.70m-00000-of-00001-0a1b2c3d.parquet", _evals([5, 1_024_000]), EVALS_SCHEMA)
    _write(data / "duped.70m-00000-of-00002-0a1b2c3d.parquet", _evals([1, 2]), EVALS_SCHEMA)
    _write(data / "duped.70m-00001-of-00002-0a1b2c3d.parquet", _evals([3]), EVALS_SCHEMA)
    _write(data / "deduped.12b.23000-00000-of-00001.parquet", _evals([9]), EVALS_SCHEMA)
    return root


def test_memorized_evals_to_extraction(evals_dir, wh):
    summary = import_dataset("pythia-memorized-evals", str(evals_dir), wh)
    assert (summary.table, summary.written, summary.rows) == ("extraction", 4, 6)
    t = lake.read_table(wh, "extraction")
    got = {(r["model"], r["step"], r["shard"], r["instance_id"]) for r in t.to_pylist()}
    assert got == {
        ("pythia-70m-deduped", 143000, 0, 5),
        ("pythia-70m-deduped", 143000, 0, 1_024_000),
        ("pythia-70m", 143000, 0, 1),
        ("pythia-70m", 143000, 0, 2),
        ("pythia-70m", 143000, 1, 3),
        ("pythia-12b-deduped", 23000, 0, 9),
    }
    for r in t.to_pylist():
        assert r["generated"] == _row(r["instance_id"])[32:64]
        assert (r["prompt_len"], r["gen_len"], r["match_fraction"], r["memorised"]) == (32, 32, 1.0, True)
    again = import_dataset("pythia-memorized-evals", str(evals_dir), wh)
    assert (again.written, again.skipped) == (0, 4)


def test_memorized_evals_split_filter(evals_dir, wh):
    summary = import_dataset("pythia-memorized-evals", str(evals_dir), wh, splits=["deduped.70m"])
    assert (summary.written, summary.rows) == (1, 2)
    assert set(lake.read_table(wh, "extraction", columns=["model"])["model"].to_pylist()) == {
        "pythia-70m-deduped"
    }
    with pytest.raises(MemlakeError, match=r"split\(s\) \['deduped.160m'\] not found"):
        import_dataset("pythia-memorized-evals", str(evals_dir), wh, splits=["deduped.160m"])


@pytest.mark.parametrize(
    ("name", "columns", "schema", "match"),
    [
        ("deduped.70m-00000-of-00001.parquet", _evals([1], 63), EVALS_SCHEMA, "row of 63 tokens"),
        ("weird.70m-00000-of-00001.parquet", _evals([1]), EVALS_SCHEMA, "split 'weird.70m' is not"),
        (
            "deduped.70m-00000-of-00001.parquet",
            {"tokens": [_row(1, 64)]},
            pa.schema([("tokens", INT_LIST)]),
            "missing column 'index'",
        ),
        (
            "deduped.70m-00000-of-00001.parquet",
            {"index": [1], "tokens": [[1.5] * 64]},
            pa.schema([("index", pa.int64()), ("tokens", pa.list_(pa.float64()))]),
            r"column 'tokens' has type list<\w+: double>, expected a list of integers",
        ),
    ],
)
def test_memorized_evals_errors(tmp_path, wh, name, columns, schema, match):
    _write(tmp_path / "src" / "data" / name, columns, schema)
    with pytest.raises(MemlakeError, match=match) as e:
        import_dataset("pythia-memorized-evals", str(tmp_path / "src"), wh)
    assert name in str(e.value) and "\n" not in str(e.value)


# --------------------------------------------------------------------------- Hub path, entry point


def test_hub_id_downloads_a_dataset_snapshot(evals_dir, wh, monkeypatch):
    calls = []

    def fake_snapshot_download(**kwargs):
        calls.append(kwargs)
        return str(evals_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    summary = import_dataset("pythia-memorized-evals", None, wh, splits=["duped.70m"], revision="main")
    assert summary.written == 2
    (call,) = calls
    assert call["repo_id"] == "EleutherAI/pythia-memorized-evals"
    assert call["repo_type"] == "dataset"
    assert call["revision"] == "main"
    assert "data/duped.70m-*.parquet" in call["allow_patterns"]


def test_hub_id_stats_patterns_and_pile(stats_dir, pile_dir, wh, monkeypatch):
    calls = []

    def fake(**kwargs):
        calls.append(kwargs)
        return str(stats_dir if "stats" in kwargs["repo_id"] else pile_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    import_dataset(
        "pythia-deduped-stats-raw", "pietrolesci/pythia-deduped-stats-raw", wh, sizes=["1.4b"], steps=[95000]
    )
    assert calls[-1]["repo_type"] == "dataset"
    assert calls[-1]["allow_patterns"] == ["1.4b/*-step95000_*/*.parquet", "1.4b/*-step95000/*.parquet"]
    import_dataset("pile-deduped-subset", "pietrolesci/pile-deduped-subset", wh)
    assert (calls[-1]["repo_id"], calls[-1]["repo_type"]) == ("pietrolesci/pile-deduped-subset", "dataset")
    assert lake.read_table(wh, "instances").num_rows == 9


def test_hub_failure_is_one_line(wh, monkeypatch):
    def offline(**kwargs):
        raise OSError("offline mode is enabled\nmore detail")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(
        MemlakeError, match=r"cannot download Hub dataset 'a/b' \(OSError: offline mode is enabled\)$"
    ):
        import_dataset("pythia-memorized-evals", "a/b", wh)


def test_entry_point_errors(tmp_path, wh):
    with pytest.raises(MemlakeError, match="unknown import kind 'nope'"):
        import_dataset("nope", str(tmp_path), wh)
    with pytest.raises(MemlakeError, match=r"unknown option\(s\) \['sizes'\]"):
        import_dataset("pile-deduped-subset", str(tmp_path), wh, sizes=["70m"])
    with pytest.raises(MemlakeError, match="neither a local directory nor a Hub dataset id"):
        import_dataset("pile-deduped-subset", str(tmp_path / "no" / "such" / "dir"), wh)
    with pytest.raises(MemlakeError, match="no Parquet files"):
        import_dataset("pile-deduped-subset", str(tmp_path), wh, revision=None)  # None options are dropped


def test_registry_covers_every_hub_repo():
    assert set(hub_import.IMPORTERS) == set(hub_import.HUB_REPOS)
