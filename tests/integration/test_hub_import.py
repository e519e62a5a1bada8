"""Hub importers against small local copies laid out and typed like the public datasets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import huggingface_hub
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest import hub_import
from ingest.hub_import import import_dataset
from ingest.hub_import.semantic_filters import RELEASE_SCHEMA
from memlake.core import lake
from memlake.core.errors import MemlakeError
from memlake.core.paths import REPO_ROOT, Warehouse

MEMLAKE = [sys.executable, "-c", "from memlake.cli import main; main()"]

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
    """A Pythia-shaped row (ids below the 50,277-token vocabulary); its first 64 tokens are the
    sample the memorised evals and the published features hold for the same index."""
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
    assert r["tokens"] == _row(1024) and r["sample_only"] is False
    config = lake.manifest(wh.table("instances"))["config"]
    assert config["corpus"] == "pile-deduped"
    assert sorted((i["import"], i["file"]) for i in config["imports"]) == [
        ("pile-deduped-subset", "data/train-00000-of-00001.parquet"),
        ("pile-deduped-subset", "data/validation-00000-of-00001.parquet"),
    ]
    # the token ids are Pythia's: the features job decodes with the recorded tokenizer
    assert config["tokenizer"] == "EleutherAI/pythia-70m-deduped"


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


def test_pile_subset_row_beyond_the_training_stream(tmp_path, wh):
    bad = _write(
        tmp_path / "src" / "data" / "train-00000-of-00001.parquet",
        {"input_ids": [[1]], "seq_idx": [146_432_000]},
        PILE_SCHEMA,
    )
    with pytest.raises(MemlakeError, match=r"column 'seq_idx' has value 146432000, not a row") as err:
        import_dataset("pile-deduped-subset", str(tmp_path / "src"), wh)
    assert str(bad) in str(err.value)
    assert not wh.table("instances").exists()


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
        "sup": [[step / 1000 + abs(i), 0.5] for i in ids],
        "rank": [[abs(i), 0] for i in ids],
        "entropy": [[1.25, 2.5] for _ in ids],
    }


def _run_file(
    root: Path, size: str, step: int, name: str = "data.parquet", stamp: str = "2024-04-09_10-44-18"
):
    return root / size / f"pythia-deduped-{size}-step{step}_{stamp}" / name


PANEL_IDS = TRAIN_IDS + VAL_IDS  # the runs score exactly the panel


@pytest.fixture
def stats_dir(tmp_path) -> Path:
    root = tmp_path / "stats-raw"
    ids = PANEL_IDS
    _write(_run_file(root, "70m", 0, "data-pythia-deduped-70m-step0.parquet"), _stats(ids, 0), STATS_SCHEMA)
    _write(_run_file(root, "70m", 1000), _stats(ids, 1000), STATS_SCHEMA)
    # a run written in two files: shards 0 and 1; and the run's side files, which are not data
    _write(_run_file(root, "70m", 2000, "a.parquet"), _stats(ids[:6], 2000), STATS_SCHEMA)
    _write(_run_file(root, "70m", 2000, "b.parquet"), _stats(ids[6:], 2000), STATS_SCHEMA)
    _run_file(root, "70m", 2000, "hparams.yaml").write_text("model_size: 70m\n")
    _write(_run_file(root, "1.4b", 95000), _stats(ids, 95000), STATS_SCHEMA)
    return root


def test_stats_raw_to_token_stats(stats_dir, wh):
    summary = import_dataset("pythia-deduped-stats-raw", str(stats_dir), wh)
    assert (summary.table, summary.written, summary.skipped, summary.rows) == ("token_stats", 5, 0, 36)
    t = lake.read_table(wh, "token_stats")
    assert t.schema == lake.spec("token_stats").schema
    assert t["second_moment"].null_count == t.num_rows  # not released: it needs the logits
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
    assert lake.read_table(wh, "token_stats").num_rows == 36


def test_stats_raw_filters_by_size_and_step(stats_dir, wh):
    summary = import_dataset("pythia-deduped-stats-raw", str(stats_dir), wh, sizes=["70m"], steps=[0, 2000])
    assert summary.written == 3
    steps = set(lake.read_table(wh, "token_stats", columns=["step"])["step"].to_pylist())
    assert steps == {0, 2000}
    with pytest.raises(MemlakeError, match="no runs match"):
        import_dataset("pythia-deduped-stats-raw", str(stats_dir), wh, sizes=["12b"])
    # a lone string or int is one item (as a CLI passes it)
    one = import_dataset("pythia-deduped-stats-raw", str(stats_dir), wh, sizes="1.4b", steps=95000)
    assert (one.written, one.rows) == (1, 9)


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


# --------------------------------------------------------------------------- stats-raw vs the panel


def test_stats_raw_must_score_exactly_the_panel(pile_dir, tmp_path, wh):
    import_dataset("pile-deduped-subset", str(pile_dir), wh)
    missing = _write(_run_file(tmp_path / "a", "70m", 0), _stats(PANEL_IDS[1:], 0), STATS_SCHEMA)
    with pytest.raises(MemlakeError, match=r"panel row seq_idx 0 is missing") as e:
        import_dataset("pythia-deduped-stats-raw", str(tmp_path / "a"), wh)
    assert str(missing) in str(e.value) and "\n" not in str(e.value)
    extra = _write(_run_file(tmp_path / "b", "70m", 0), _stats([*PANEL_IDS, 7], 0), STATS_SCHEMA)
    with pytest.raises(MemlakeError, match=r"seq_idx 7 is not a panel row of instances") as e:
        import_dataset("pythia-deduped-stats-raw", str(tmp_path / "b"), wh)
    assert str(extra) in str(e.value) and "\n" not in str(e.value)
    assert not wh.table("token_stats").exists()


def test_stats_before_the_panel_are_checked_by_the_panel_import(pile_dir, tmp_path, wh):
    _write(_run_file(tmp_path / "s", "70m", 0, "d.parquet"), _stats([0, 1024], 0), STATS_SCHEMA)
    import_dataset("pythia-deduped-stats-raw", str(tmp_path / "s"), wh)  # no panel yet: allowed
    with pytest.raises(
        MemlakeError,
        match=r"^token_stats pythia-70m-deduped step 0 \(imported from 70m/.*/d.parquet\): "
        r"panel row seq_idx -?\d+ is missing",
    ):
        import_dataset("pile-deduped-subset", str(pile_dir), wh)
    assert not wh.table("instances").exists()


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
    _write(data / "deduped.12b.23000-00000-of-00001.parquet", _evals([9, 5]), EVALS_SCHEMA)
    return root


def test_memorized_evals_to_extraction_and_sample_instances(evals_dir, wh, tmp_path):
    summary = import_dataset("pythia-memorized-evals", str(evals_dir), wh)  # the deduped stream
    assert (summary.table, summary.written, summary.rows) == ("extraction, instances", 3, 7)
    t = lake.read_table(wh, "extraction")
    got = {(r["model"], r["step"], r["shard"], r["instance_id"]) for r in t.to_pylist()}
    assert got == {
        ("pythia-70m-deduped", 143000, 0, 5),
        ("pythia-70m-deduped", 143000, 0, 1_024_000),
        ("pythia-12b-deduped", 23000, 0, 9),
        ("pythia-12b-deduped", 23000, 0, 5),
    }
    for r in t.to_pylist():
        assert r["generated"] == _row(r["instance_id"])[32:64]
        assert (r["prompt_len"], r["gen_len"], r["match_fraction"], r["memorised"]) == (32, 32, 1.0, True)
    # every index is an instance once: its 64-token sample, a training row of the deduped stream
    inst = {r["instance_id"]: r for r in lake.read_table(wh, "instances").to_pylist()}
    assert sorted(inst) == [5, 9, 1_024_000]
    r = inst[1_024_000]
    assert (r["split"], r["batch_idx"], r["cohort"], r["source"], r["artifact"], r["copies"]) == (
        "train",
        1000,
        2000,
        "pile",
        "none",
        None,
    )
    assert r["tokens"] == _row(1_024_000, 64) and r["sample_only"] is True
    assert lake.manifest(wh.table("instances"))["config"]["corpus"] == "pile-deduped"
    again = import_dataset("pythia-memorized-evals", str(evals_dir), wh)
    assert (again.written, again.skipped) == (0, 3)
    # the duped stream goes to its own warehouse; a file of a split is a shard
    duped = Warehouse.at(tmp_path / "duped")
    import_dataset("pythia-memorized-evals", str(evals_dir), duped, scheme="duped")
    t = lake.read_table(duped, "extraction")
    assert {(r["model"], r["shard"], r["instance_id"]) for r in t.to_pylist()} == {
        ("pythia-70m", 0, 1),
        ("pythia-70m", 0, 2),
        ("pythia-70m", 1, 3),
    }
    with pytest.raises(MemlakeError, match=r"another corpus \(pile-deduped, not pile-duped\)"):
        import_dataset("pythia-memorized-evals", str(evals_dir), wh, scheme="duped")


def test_memorized_evals_split_filter(evals_dir, wh):
    summary = import_dataset("pythia-memorized-evals", str(evals_dir), wh, splits=["deduped.70m"])
    assert (summary.written, summary.rows) == (2, 4)
    assert set(lake.read_table(wh, "extraction", columns=["model"])["model"].to_pylist()) == {
        "pythia-70m-deduped"
    }
    with pytest.raises(MemlakeError, match=r"split\(s\) \['deduped.160m'\] not found"):
        import_dataset("pythia-memorized-evals", str(evals_dir), wh, splits=["deduped.160m"])
    with pytest.raises(MemlakeError, match=r"split 'duped.70m' indexes the duped training stream"):
        import_dataset("pythia-memorized-evals", str(evals_dir), wh, splits=["duped.70m"])
    one = import_dataset("pythia-memorized-evals", str(evals_dir), wh, sizes="12b")
    assert one.written == 2  # extraction + the new sample (index 5 is an instance already)
    assert lake.read_table(wh, "instances").num_rows == 3


@pytest.mark.parametrize(
    ("name", "columns", "schema", "match"),
    [
        ("deduped.70m-00000-of-00001.parquet", _evals([1], 63), EVALS_SCHEMA, "row of 63 tokens"),
        ("deduped.70m-00000-of-00001.parquet", _evals([1], 2049), EVALS_SCHEMA, "row of 2049 tokens"),
        ("weird.70m-00000-of-00001.parquet", _evals([1]), EVALS_SCHEMA, "split 'weird.70m' is not"),
        (
            "deduped.70m-00000-of-00001.parquet",
            _evals([146_432_000]),
            EVALS_SCHEMA,
            r"column 'index' has value 146432000, not a row of the training stream \(0..146,431,999; ",
        ),
        ("deduped.70m-00000-of-00001.parquet", _evals([-1]), EVALS_SCHEMA, "column 'index' has value -1"),
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
    _write(tmp_path / "src" / "data" / "deduped.70m-00000-of-00002.parquet", _evals([3]), EVALS_SCHEMA)
    _write(tmp_path / "src" / "data" / name, columns, schema)
    with pytest.raises(MemlakeError, match=match) as e:
        import_dataset("pythia-memorized-evals", str(tmp_path / "src"), wh)
    assert name in str(e.value) and "\n" not in str(e.value)
    assert not wh.table("extraction").exists() and not wh.table("instances").exists()  # nothing written


def test_memorized_evals_stream_rows_override(tmp_path, wh):
    _write(tmp_path / "src" / "data" / "deduped.70m-00000-of-00001.parquet", _evals([5, 20]), EVALS_SCHEMA)
    with pytest.raises(MemlakeError, match=r"column 'index' has value 20, .*stream_rows = 20\)"):
        import_dataset("pythia-memorized-evals", str(tmp_path / "src"), wh, stream_rows=20)
    assert import_dataset("pythia-memorized-evals", str(tmp_path / "src"), wh, stream_rows=21).written == 2


# --------------------------------------------------------------------------- composition


def _instances(wh: Warehouse) -> list[dict]:
    return sorted(lake.read_table(wh, "instances").to_pylist(), key=lambda r: r["instance_id"])


def test_evals_and_panel_compose_in_either_order(pile_dir, tmp_path):
    evals = tmp_path / "evals"
    _write(evals / "data" / "deduped.70m-00000-of-00001.parquet", _evals([5, 1024, 1_024_000]), EVALS_SCHEMA)
    a, b = Warehouse.at(tmp_path / "a"), Warehouse.at(tmp_path / "b")
    import_dataset("pythia-memorized-evals", str(evals), a)
    import_dataset("pile-deduped-subset", str(pile_dir), a)  # whole rows replace samples
    import_dataset("pile-deduped-subset", str(pile_dir), b)
    import_dataset("pythia-memorized-evals", str(evals), b)  # samples join the panel's rows
    rows = _instances(a)
    assert rows == _instances(b)
    assert [r["instance_id"] for r in rows if r["sample_only"]] == [5]
    assert {r["instance_id"]: len(r["tokens"]) for r in rows}[1024] == 2049
    assert len(rows) == len(PANEL_IDS) + 1
    for wh in (a, b):
        imports = {i["import"] for i in lake.manifest(wh.table("instances"))["config"]["imports"]}
        assert imports == {"pile-deduped-subset", "pythia-memorized-evals"}
    # extraction points at instances either way: the dbt relationships test (see below)
    assert set(lake.read_table(a, "extraction")["instance_id"].to_pylist()) <= {
        r["instance_id"] for r in rows
    }


def test_scoring_jobs_panel_uses_whole_rows_only(pile_dir, tmp_path, wh):
    from ingest.panel import load_panel

    evals = tmp_path / "evals"
    _write(evals / "data" / "deduped.70m-00000-of-00001.parquet", _evals([5, 1024]), EVALS_SCHEMA)
    import_dataset("pile-deduped-subset", str(pile_dir), wh)
    import_dataset("pythia-memorized-evals", str(evals), wh)
    ids, tokens = load_panel(wh, {}, seed=0)
    # every whole row but 5,000,000 (its tokens repeat row 0's: not a unit of its own)
    assert sorted(ids.tolist()) == sorted(set(PANEL_IDS) - {5_000_000})
    assert tokens.shape == (len(ids), 2049)


def test_a_sample_that_differs_from_its_instance_is_rejected(pile_dir, tmp_path):
    evals = tmp_path / "evals"
    cols = _evals([1024]) | {"tokens": [_row(77, 64)]}
    bad = _write(evals / "data" / "deduped.70m-00000-of-00001.parquet", cols, EVALS_SCHEMA)
    wh = Warehouse.at(tmp_path / "a")
    import_dataset("pile-deduped-subset", str(pile_dir), wh)
    before = (wh.table("instances") / lake.MANIFEST).read_text()
    with pytest.raises(MemlakeError, match=r"column 'tokens' of index 1024 differs from the first 64") as e:
        import_dataset("pythia-memorized-evals", str(evals), wh)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    assert (wh.table("instances") / lake.MANIFEST).read_text() == before
    assert not wh.table("extraction").exists()
    other = Warehouse.at(tmp_path / "b")  # and the other way round
    import_dataset("pythia-memorized-evals", str(evals), other)
    with pytest.raises(MemlakeError, match=r"column 'tokens' of seq_idx 1024 differs from the first 64"):
        import_dataset("pile-deduped-subset", str(pile_dir), other)


# --------------------------------------------------------------------------- random-sampled

SCORE_COLUMNS = ("70M", "160M", "410M", "1B", "1.4B", "2.8B", "6.9B", "12B")
SAMPLED_SCHEMA = pa.schema(
    [("Index", pa.int64()), *[(c, pa.float64()) for c in SCORE_COLUMNS], ("Tokens", pa.list_(pa.uint16()))]
)


def _sampled(ids: list[int], n: int = 64) -> dict:
    scores = {c: [((i + k) % 33) / 32 for i in ids] for k, c in enumerate(SCORE_COLUMNS)}
    return {"Index": ids, **scores, "Tokens": [_row(i, n) for i in ids]}


def _sampled_dir(root: Path, ids: list[int], n: int = 64) -> Path:
    _write(root / "data" / "train-00000-of-00001-12d3ee209abd01b1.parquet", _sampled(ids, n), SAMPLED_SCHEMA)
    return root


def test_random_sampled_to_representative_tables(tmp_path, wh):
    ids = [0, 7, 1024, 146_431_999]
    src = _sampled_dir(tmp_path / "sampled", ids)
    summary = import_dataset("pile-deduped-pythia-random-sampled", str(src), wh)
    assert (summary.written, summary.rows) == (1 + 8, 4 + 8 * 4)
    sample = lake.read_table(wh, "representative_sample")
    assert sample.schema == lake.spec("representative_sample").schema
    rows = {r["instance_id"]: r for r in sample.to_pylist()}
    assert sorted(rows) == ids and {r["scheme"] for r in rows.values()} == {"deduped"}
    assert rows[1024]["tokens"] == _row(1024, 64)
    scores = lake.read_table(wh, "representative_scores").to_pylist()
    models = {r["model"] for r in scores}
    assert models == {f"pythia-{c.lower()}-deduped" for c in SCORE_COLUMNS}
    got = {(r["model"], r["instance_id"]): r["memorization_score"] for r in scores}
    assert got["pythia-1.4b-deduped", 7] == pytest.approx(_sampled([7])["1.4B"][0])
    assert {r["step"] for r in scores} == {143000}
    again = import_dataset("pile-deduped-pythia-random-sampled", str(src), wh)
    assert (again.written, again.skipped) == (0, 9)
    # the duped sample is another scheme of the same tables, with the standard model names
    import_dataset("pile-duped-pythia-random-sampled", str(src), wh)
    schemes = set(lake.read_table(wh, "representative_sample", columns=["scheme"])["scheme"].to_pylist())
    assert schemes == {"deduped", "duped"}
    assert "pythia-70m" in set(
        lake.read_table(wh, "representative_scores", columns=["model"])["model"].to_pylist()
    )


@pytest.mark.parametrize(
    ("columns", "match"),
    [
        (_sampled([1], 63), "column 'Tokens' has a row of 63 tokens"),
        (_sampled([146_432_000]), "column 'Index' has value 146432000, not a row"),
        (
            _sampled([1]) | {"12B": [1.5]},
            r"column '12B' has value 1.5 for Index 1 \(a score is in \[0, 1\]\)",
        ),
        (_sampled([1, 1]), "duplicated key Index 1"),
    ],
)
def test_random_sampled_errors(tmp_path, wh, columns, match):
    bad = _write(tmp_path / "s" / "data" / "train-00000-of-00001.parquet", columns, SAMPLED_SCHEMA)
    with pytest.raises(MemlakeError, match=match) as e:
        import_dataset("pile-deduped-pythia-random-sampled", str(tmp_path / "s"), wh)
    assert (str(bad) in str(e.value) or str(tmp_path / "s") in str(e.value)) and "\n" not in str(e.value)
    assert not wh.table("representative_sample").exists() and not wh.table("representative_scores").exists()


# --------------------------------------------------------------------------- semantic-filters

FILTERS_SCHEMA = RELEASE_SCHEMA  # the released files' order and types


def _filters(ids: list[int], scores: list[float] | None = None, n: int = 64) -> dict:
    """Released-shaped rows: features are functions of the index (so splits agree on them)."""
    rows = []
    for k, i in enumerate(ids):
        tokens = _row(i, n)
        freqs = sorted(1_000 + t for t in tokens)
        ppl_p, ppl_g = 1.5 + (i % 11) / 4, 1.0 + (i % 13) / 8
        rows.append(
            {
                "sequence_id": i,
                "loss": 2.5,
                "prompt_perplexity": ppl_p,
                "generation_perplexity": ppl_g,
                "sequence_perplexity": ppl_p * ppl_g,
                "text": f"row {i}: " + " ".join(map(str, tokens[:8])),
                "is_incrementing": i % 5 == 0,
                "is_repeating": i % 7 == 0,
                "sequence_duplicates": i % 9,
                "max_frequency": freqs[-1],
                "avg_frequency": float(np.mean(freqs)),
                "min_frequency": freqs[0],
                "median_frequency": float(np.median(freqs)),
                "p25_frequency": freqs[len(freqs) // 4],
                "p75_frequency": freqs[3 * len(freqs) // 4],
                "frequencies": [1_000 + t for t in tokens],
                "tokens": tokens,
                "repeating_offset": 0,
                "num_repeating": 0,
                "smallest_repeating_chunk": [],
                "nl_scores": (i % 10) / 10,
                "0_8_snowclones": i % 4 + 2,
                "0_9_snowclones": i % 4 + 1,
                "0_8_templates": i % 2 + 1,
                "0_9_templates": i % 2,
                "huffman_coding_length": 3.5 + (i % 3) / 10,
                "memorization_score": 1.0 if scores is None else scores[k],
            }
        )
    return {name: [r[name] for r in rows] for name in FILTERS_SCHEMA.names}


def _filters_dir(root: Path, splits: dict[str, dict]) -> Path:
    for split, cols in splits.items():
        _write(root / "data" / f"{split}-00000-of-00001.parquet", cols, FILTERS_SCHEMA)
    return root


@pytest.fixture
def filters_dir(tmp_path) -> Path:
    return _filters_dir(
        tmp_path / "semantic-filters",
        {
            "pile_deduped_70m": _filters([0, 5, 1024, 3000], [0.25, 1.0, 0.0, 0.5]),
            "pile_deduped_12b": _filters([0, 5, 1024, 3000], [1.0, 1.0, 0.5, 0.5]),
            # 5 is in the representative sample too; 77 is listed twice (as in the release)
            "memories_deduped_70m": _filters([5, 77, 77]),
            "memories_duped_70m": _filters([1, 2]),  # another training stream: not imported
        },
    )


def test_semantic_filters_to_features_labels_and_perplexities(filters_dir, wh):
    summary = import_dataset("semantic-filters", str(filters_dir), wh)
    assert summary.table == "instances, instance_features, extraction, published_perplexities"
    feats = {r["instance_id"]: r for r in lake.read_table(wh, "instance_features").to_pylist()}
    assert sorted(feats) == [0, 5, 77, 1024, 3000]
    f = feats[5]
    want = _filters([5])
    assert f["text"] == want["text"][0] and f["frequencies"] == want["frequencies"][0]
    assert (f["is_incrementing"], f["is_repeating"], f["is_templating"]) == (True, False, True)
    assert (f["semantic_matches_0_8"], f["semantic_matches_0_9"]) == (
        want["0_8_snowclones"][0],
        want["0_9_snowclones"][0],
    )
    assert (f["textual_matches_0_8"], f["textual_matches_0_9"]) == (
        want["0_8_templates"][0],
        want["0_9_templates"][0],
    )
    assert f["nl_score"] == pytest.approx(0.5) and f["p25_frequency"] == want["p25_frequency"][0]
    assert (f["prompt_text"], f["whole_sequence_duplicates"]) == (None, None)  # no published counterpart
    assert f["in_representative_sample"] and not feats[77]["in_representative_sample"]
    # labels: a pile row carries its score, a memories row is memorised; (70m, 5) is in both: once
    x = {(r["model"], r["instance_id"]): r for r in lake.read_table(wh, "extraction").to_pylist()}
    assert sorted(k for k in x if k[0] == "pythia-70m-deduped") == [
        ("pythia-70m-deduped", i) for i in (0, 5, 77, 1024, 3000)
    ]
    assert (
        x["pythia-70m-deduped", 0]["match_fraction"] == 0.25 and not x["pythia-70m-deduped", 0]["memorised"]
    )
    assert x["pythia-70m-deduped", 0]["generated"] is None  # unknown unless it matched
    assert (
        x["pythia-12b-deduped", 0]["memorised"] and x["pythia-12b-deduped", 0]["generated"] == _row(0)[32:64]
    )
    assert x["pythia-70m-deduped", 77]["memorised"] and {r["step"] for r in x.values()} == {143000}
    ppl = {
        (r["model"], r["instance_id"]): r for r in lake.read_table(wh, "published_perplexities").to_pylist()
    }
    p = ppl["pythia-70m-deduped", 1024]
    assert p["sequence_perplexity"] == pytest.approx(
        p["prompt_perplexity"] * p["generation_perplexity"], rel=1e-6
    )
    assert p["loss"] == 2.5 and len(ppl) == len(x)
    # the features' instances: 64-token samples, in the deduped stream
    inst = {r["instance_id"]: r for r in lake.read_table(wh, "instances").to_pylist()}
    assert sorted(inst) == sorted(feats) and all(r["sample_only"] for r in inst.values())
    assert inst[3000]["tokens"] == _row(3000, 64)
    again = import_dataset("semantic-filters", str(filters_dir), wh)
    assert again.written == 0


def test_semantic_filters_intermediate_and_memories_first(tmp_path, wh):
    src = _filters_dir(tmp_path / "inter", {"memories_deduped_12b.23000": _filters([5, 6])})
    import_dataset("semantic-filters-intermediate", str(src), wh)
    x = lake.read_table(wh, "extraction").to_pylist()
    assert {(r["model"], r["step"], r["instance_id"]) for r in x} == {
        ("pythia-12b-deduped", 23000, 5),
        ("pythia-12b-deduped", 23000, 6),
    }
    # a pile split imported later marks its rows as representative, keeping the features there
    pile = _filters_dir(tmp_path / "pile", {"pile_deduped_12b": _filters([5, 9], [1.0, 0.0])})
    import_dataset("semantic-filters", str(pile), wh)
    feats = {
        r["instance_id"]: r["in_representative_sample"]
        for r in lake.read_table(wh, "instance_features").to_pylist()
    }
    assert feats == {5: True, 6: False, 9: True}


def test_semantic_filters_join_the_panel_and_reject_other_tokens(pile_dir, tmp_path, wh):
    import_dataset("pile-deduped-subset", str(pile_dir), wh)
    src = _filters_dir(tmp_path / "ok", {"pile_deduped_70m": _filters([1024, 5], [0.5, 1.0])})
    import_dataset("semantic-filters", str(src), wh)
    inst = {r["instance_id"]: r for r in lake.read_table(wh, "instances").to_pylist()}
    assert len(inst[1024]["tokens"]) == 2049 and inst[5]["sample_only"]  # 1024 keeps its whole row
    before = {t: (wh.table(t) / lake.MANIFEST).read_text() for t in ("instances", "instance_features")}
    cols = _filters([1023]) | {"tokens": [_row(4, 64)]}
    bad = _filters_dir(tmp_path / "bad", {"memories_deduped_70m": cols})
    with pytest.raises(
        MemlakeError, match=r"column 'tokens' of sequence_id 1023 differs from the first 64"
    ) as e:
        import_dataset("semantic-filters", str(bad), wh)
    assert "memories_deduped_70m-00000-of-00001.parquet" in str(e.value) and "\n" not in str(e.value)
    assert before == {t: (wh.table(t) / lake.MANIFEST).read_text() for t in before}
    assert len(lake.read_table(wh, "extraction")) == 2  # nothing of the bad file


@pytest.mark.parametrize(
    ("columns", "match"),
    [
        (_filters([3], n=63), "column 'tokens' has a row of 63 tokens"),
        (_filters([146_432_000]), "column 'sequence_id' has value 146432000, not a row"),
        (
            _filters([3]) | {"0_8_templates": [9]},
            r"column '0_8_templates' \(textual matches\) exceeds '0_8_snowclones' \(semantic matches\) for "
            r"sequence_id 3; .*--swap-matches",
        ),
        (
            _filters([3]) | {"0_9_snowclones": [50]},
            r"column 'semantic_matches_0_9' exceeds 'semantic_matches_0_8'",
        ),
        (
            _filters([3]) | {"memorization_score": [0.5]},
            "'memorization_score' is 0.5 for sequence_id 3 of a memories",
        ),
    ],
)
def test_semantic_filters_errors(tmp_path, wh, columns, match):
    src = _filters_dir(
        tmp_path / "src", {"memories_deduped_70m": columns, "pile_deduped_70m": _filters([8], [0.5])}
    )
    with pytest.raises(MemlakeError, match=match) as e:
        import_dataset("semantic-filters", str(src), wh)
    assert "memories_deduped_70m-00000-of-00001.parquet" in str(e.value) and "\n" not in str(e.value)
    for table in ("instances", "instance_features", "extraction", "published_perplexities"):
        assert not wh.table(table).exists(), table


def test_semantic_filters_swap_matches(tmp_path, wh):
    cols = _filters([3]) | {
        "0_8_templates": [9],
        "0_9_templates": [4],
        "0_8_snowclones": [1],
        "0_9_snowclones": [0],
    }
    src = _filters_dir(tmp_path / "src", {"pile_deduped_70m": cols})
    import_dataset("semantic-filters", str(src), wh, swap_matches=True)
    (f,) = lake.read_table(wh, "instance_features").to_pylist()
    assert (f["semantic_matches_0_8"], f["semantic_matches_0_9"], f["textual_matches_0_8"]) == (9, 4, 1)


def test_semantic_filters_refuse_computed_features(tmp_path, wh):
    src = _filters_dir(tmp_path / "src", {"pile_deduped_70m": _filters([3], [0.5])})
    import_dataset("semantic-filters", str(src), wh)
    path = wh.table("instance_features")
    lake.write_partition(wh, "instance_features", lake.read_table(wh, "instance_features"), overwrite=True)
    with pytest.raises(MemlakeError, match="computed by `memlake taxonomy features`"):
        import_dataset(
            "semantic-filters",
            str(_filters_dir(tmp_path / "b", {"pile_deduped_12b": _filters([3], [0.5])})),
            wh,
        )
    assert path.exists()


# --------------------------------------------------------------------------- an import-only warehouse


def _memlake(args: list[str], wh: Warehouse, target: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEMLAKE_WAREHOUSE": str(wh.root)}
    return subprocess.run([*MEMLAKE, *args], capture_output=True, text=True, env=env, cwd=REPO_ROOT)


def test_cli_import_bad_input_is_one_line_and_writes_nothing(tmp_path, wh):
    src = tmp_path / "src"
    _write(src / "data" / "deduped.70m-00000-of-00001.parquet", _evals([146_432_000]), EVALS_SCHEMA)
    out = _memlake(["ingest", "import", "pythia-memorized-evals", str(src), "-w", str(wh.root)], wh)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    line = out.stderr.replace("\n", "")
    assert line.startswith("error: ") and "column 'index' has value 146432000" in line
    assert not wh.lake.exists() or not any(wh.lake.glob("*/_manifest.json"))


@pytest.mark.slow  # the real-path test imports, builds and fits the taxonomy the same way
def test_import_only_warehouse_builds_and_fits_the_taxonomy(pile_dir, stats_dir, evals_dir, tmp_path):
    """Every public artifact imported with the CLI into an empty warehouse (plus the Pythia
    checkpoints' registration): `memlake build` passes every dbt test, the relationships from
    extraction to instances included, and the published-protocol taxonomy fit runs on it."""
    from ingest.hub_suites import register_suite

    rng = np.random.default_rng(0)
    pile_ids = sorted(rng.choice(1_000_000, 240, replace=False).tolist())
    scores = [1.0 if (i % 10 == 0 or i % 9 == 0) else float(rng.integers(0, 32)) / 32 for i in pile_ids]
    memories = pile_ids[::10] + [1_000_003, 1_000_011, 1_000_012, 1_000_020, 1_000_025, 1_000_035]
    filters = _filters_dir(
        tmp_path / "filters",
        {"pile_deduped_70m": _filters(pile_ids, scores), "memories_deduped_70m": _filters(memories)},
    )
    sampled = _sampled_dir(tmp_path / "sampled", pile_ids)
    wh = Warehouse.at(tmp_path / "wh")
    import_dataset("pile-deduped-subset", str(pile_dir), wh)
    import_dataset("pythia-deduped-stats-raw", str(stats_dir), wh)
    import_dataset("pythia-memorized-evals", str(evals_dir), wh)
    import_dataset("pile-deduped-pythia-random-sampled", str(sampled), wh)
    out = _memlake(
        ["ingest", "import", "semantic-filters", str(filters), "--size", "70m", "-w", str(wh.root)], wh
    )
    assert out.returncode == 0, out.stderr
    # instances, instance_features, and extraction + perplexities of the two split files
    assert "published_perplexities: 6 partitions written" in out.stderr.replace("\n", "")
    for model in ("pythia-70m-deduped", "pythia-1.4b-deduped", "pythia-12b-deduped"):
        register_suite(wh, f"EleutherAI/{model}")
    target = tmp_path / "target"
    # the data tests; dbt's unit tests need no data and run in test_warehouse
    args = [
        "--target-path",
        str(target),
        "--log-path",
        str(target / "logs"),
        "--exclude-resource-type",
        "unit_test",
    ]
    out = _memlake(["build", "-w", str(wh.root), *args], wh)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    results = json.loads((target / "run_results.json").read_text())["results"]
    status = {r["unique_id"].split(".")[2]: r["status"] for r in results}
    assert {"pass", "success"} >= set(status.values())
    # extraction -> instances, every row of it: the relationships test on the mart of extraction
    assert any(k.startswith("relationships_stg_lake__extraction_instance_id") for k in status)
    assert any(k.startswith("relationships_memorised_sequences_instance_id") for k in status)
    assert any(k.startswith("unique_combination_stg_lake__representative_scores") for k in status)
    con = duckdb.connect()
    feats = con.sql(
        f"select * from '{wh.marts / 'sequence_features.parquet'}' where model = 'pythia-70m-deduped'"
    ).pl()
    assert feats["instance_id"].n_unique() == len(set(pile_ids) | set(memories))
    for column in ("prompt_perplexity", "continuation_perplexity", "continuation_perplexity_shared"):
        assert feats[column].null_count() == 0, column  # the released perplexities
    fit = _memlake(["taxonomy", "fit", "--protocol", "published", "--config", "tiny", "-w", str(wh.root)], wh)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "taxonomy:" in fit.stderr and "pythia-70m-deduped@143000" in fit.stderr
    metrics = con.sql(f"select * from '{wh.marts / 'taxonomy_model_metrics'}/*.parquet'").pl()
    assert set(metrics["protocol"]) == {"published"} and "pythia-70m-deduped" in set(metrics["model"])


# --------------------------------------------------------------------------- Hub path, entry point


def test_hub_id_downloads_a_dataset_snapshot(evals_dir, wh, monkeypatch):
    calls = []

    def fake_snapshot_download(**kwargs):
        calls.append(kwargs)
        return str(evals_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    summary = import_dataset(
        "pythia-memorized-evals", None, wh, scheme="duped", splits=["duped.70m"], revision="main"
    )
    assert summary.written == 3
    (call,) = calls
    assert call["repo_id"] == "EleutherAI/pythia-memorized-evals"
    assert call["repo_type"] == "dataset"
    assert call["revision"] == "main"
    assert "data/duped.70m-*.parquet" in call["allow_patterns"]


def test_hub_id_patterns_of_every_importer(stats_dir, pile_dir, filters_dir, wh, monkeypatch):
    calls = []

    def fake(**kwargs):
        calls.append(kwargs)
        repo = kwargs["repo_id"]
        return str(stats_dir if "stats" in repo else filters_dir if "semantic" in repo else pile_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    import_dataset(
        "pythia-deduped-stats-raw", "pietrolesci/pythia-deduped-stats-raw", wh, sizes=["1.4b"], steps=[95000]
    )
    assert calls[-1]["repo_type"] == "dataset"
    assert calls[-1]["allow_patterns"] == ["1.4b/*-step95000_*/*.parquet", "1.4b/*-step95000/*.parquet"]
    import_dataset("pile-deduped-subset", "pietrolesci/pile-deduped-subset", wh)
    assert (calls[-1]["repo_id"], calls[-1]["repo_type"]) == ("pietrolesci/pile-deduped-subset", "dataset")
    assert lake.read_table(wh, "instances").num_rows == 9
    import_dataset("semantic-filters", None, wh, sizes=["12b"])
    assert calls[-1]["repo_id"] == "usvsnsp/semantic-filters"
    assert "data/pile_deduped_12b-*.parquet" in calls[-1]["allow_patterns"]
    assert "data/memories_deduped_12b-*.parquet" in calls[-1]["allow_patterns"]
    assert set(lake.read_table(wh, "extraction", columns=["model"])["model"].to_pylist()) == {
        "pythia-12b-deduped"
    }


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
    with pytest.raises(MemlakeError, match=r"scheme 'both': expected one of"):
        import_dataset("semantic-filters", str(tmp_path), wh, scheme="both")


def test_registry_covers_every_hub_repo():
    assert set(hub_import.IMPORTERS) == set(hub_import.HUB_REPOS)


def test_an_imported_panel_is_scored_whole(pile_dir, wh, tiny_corpus):
    """A Hub import's instances are already the published panel: scoring jobs take every whole
    row, whatever the config's sampling; the embedded corpus is still sampled by it."""
    from ingest.panel import load_panel

    import_dataset("pile-deduped-subset", str(pile_dir), wh)
    ids, tokens = load_panel(wh, {"per_cohort": 1, "validation": 1}, 0)
    # every row but 5,000,000, whose tokens repeat row 0's (a later copy is not a unit of its own)
    assert sorted(ids.tolist()) == sorted(set(TRAIN_IDS + VAL_IDS) - {5_000_000}) and tokens.shape[1] == 2049
    sampled, _ = load_panel(tiny_corpus, {"per_cohort": 1, "validation": 1}, 0)
    everything, _ = load_panel(tiny_corpus, {"per_cohort": None, "validation": None}, 0)
    assert len(sampled) < len(everything)
