"""The lake contract: validation, atomic partitions, manifests, strict reads."""

import json
import os
import signal
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from memlake.core import lake
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse


@pytest.fixture
def wh(tmp_path):
    return Warehouse.at(tmp_path)


def checkpoints(model="m", steps=(0, 16)):
    return pa.table(
        {
            "model": [model] * len(steps),
            "step": list(steps),
            "path": ["/x"] * len(steps),
            "lr": [0.0, 1e-3][: len(steps)],
            "tokens_seen": [0, 1024][: len(steps)],
            "epoch": [0.0, 0.5][: len(steps)],
            "train_loss": [None, 4.2][: len(steps)],
        }
    )


def test_round_trip_with_partition_keys(wh):
    path = lake.write_partition(wh, "checkpoints", checkpoints(), {"model": "m"}, config={"a": 1})
    assert path == wh.table("checkpoints") / "model=m"
    assert set(os.listdir(path)) == {lake.DATA_FILE, lake.MANIFEST}
    # Hive style: the partition key is in the path, not in the file.
    assert "model" not in pq.read_schema(path / lake.DATA_FILE).names
    back = lake.read_table(wh, "checkpoints", verify=True)
    # optional columns the writer left out come back as nulls
    optional = {name: None for name in lake.spec("checkpoints").optional}
    assert optional and back.to_pylist() == [{**r, **optional} for r in checkpoints().to_pylist()]
    m = lake.manifest(path)
    assert m["rows"] == 2 and m["partition"] == {"model": "m"} and m["config"] == {"a": 1}
    assert "pyarrow" in m["packages"] and m["code_version"]


def test_rewrite_is_skipped_unless_overwrite(wh):
    lake.write_partition(wh, "checkpoints", checkpoints(), {"model": "m"})
    lake.write_partition(wh, "checkpoints", checkpoints(steps=(0,)), {"model": "m"})
    assert lake.read_table(wh, "checkpoints").num_rows == 2
    lake.write_partition(wh, "checkpoints", checkpoints(steps=(0,)), {"model": "m"}, overwrite=True)
    assert lake.read_table(wh, "checkpoints").num_rows == 1


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda t: t.drop_columns(["lr"]), "missing required column(s) ['lr']"),
        (lambda t: t.append_column("extra", pa.array([1, 2])), "unknown column(s) ['extra']"),
        (lambda t: t.set_column(1, "step", pa.array(["a", "b"])), "column 'step' has type string"),
        (lambda t: t.set_column(1, "step", pa.array([0, 0])), "duplicated key {'step': 0}"),
        (lambda t: t.set_column(1, "step", pa.array([0, None], pa.int64())), "key column 'step'"),
        (lambda t: t.set_column(0, "model", pa.array(["x", "x"])), "partition says 'm'"),
    ],
)
def test_validation_errors_name_the_problem(wh, mutate, message):
    with pytest.raises(MemlakeError) as e:
        lake.write_partition(wh, "checkpoints", mutate(checkpoints()), {"model": "m"})
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not wh.table("checkpoints").exists()  # nothing half-written


def test_bad_partition_values(wh):
    with pytest.raises(MemlakeError, match="partitioned by"):
        lake.write_partition(wh, "checkpoints", checkpoints(), {})
    with pytest.raises(MemlakeError, match="not path-safe"):
        lake.write_partition(wh, "checkpoints", checkpoints("a/b"), {"model": "a/b"})


def test_interrupted_write_leaves_no_partition(wh):
    def crash(tmp):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        lake.write_partition(wh, "checkpoints", checkpoints(), {"model": "m"}, _before_rename=crash)
    assert not (wh.table("checkpoints") / "model=m").exists()
    assert not any(wh.staging.iterdir())  # the temporary directory was cleaned up
    lake.write_partition(wh, "checkpoints", checkpoints(), {"model": "m"})
    assert lake.read_table(wh, "checkpoints").num_rows == 2


def test_killed_writer_is_invisible_and_rerun_completes(wh):
    """SIGKILL between writing the files and the rename: readers see nothing, re-run works."""
    code = (
        "import os, signal, pyarrow as pa\n"
        "from memlake.core import lake\nfrom memlake.core.paths import Warehouse\n"
        "from tests.unit.memlake.test_lake import checkpoints\n"
        f"wh = Warehouse.at({str(wh.root)!r})\n"
        "lake.write_partition(wh, 'checkpoints', checkpoints(), {'model': 'm'},\n"
        "    _before_rename=lambda tmp: os.kill(os.getpid(), signal.SIGKILL))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=os.getcwd())
    assert proc.returncode == -signal.SIGKILL
    assert len(list(wh.staging.iterdir())) == 1  # debris stays in _tmp, outside every table
    with pytest.raises(MemlakeError, match="is empty"):
        lake.read_table(wh, "checkpoints")
    lake.write_partition(wh, "checkpoints", checkpoints(), {"model": "m"})
    assert lake.read_table(wh, "checkpoints").num_rows == 2


def test_reader_refuses_partition_without_manifest(wh):
    path = lake.write_partition(wh, "checkpoints", checkpoints(), {"model": "m"})
    (path / lake.MANIFEST).unlink()
    with pytest.raises(MemlakeError, match=r"model=m: partition has data but no _manifest.json"):
        lake.read_table(wh, "checkpoints")


def test_corrupt_and_mismatched_files_are_named(wh):
    path = lake.write_partition(wh, "checkpoints", checkpoints(), {"model": "m"})
    (path / lake.DATA_FILE).write_bytes(b"not parquet")
    with pytest.raises(MemlakeError, match=r"part-0.parquet: unreadable Parquet"):
        lake.read_table(wh, "checkpoints")
    pq.write_table(pa.table({"step": [1]}), path / lake.DATA_FILE)
    with pytest.raises(MemlakeError, match="schema does not match"):
        lake.read_table(wh, "checkpoints")
    with pytest.raises(MemlakeError, match="content hash does not match"):
        lake.read_table(wh, "checkpoints", verify=True)


def test_instances_checks(wh):
    base = {
        "instance_id": [0, 1],
        "split": ["train", "validation"],
        "tokens": [[1, 2], [3, 4]],
        "batch_idx": [0, None],
        "cohort": [16, None],
        "source": ["code", "prose"],
        "artifact": ["none", "none"],
        "copies": [1, 0],
        "clean_tokens": [None, None],
    }
    lake.validate("instances", pa.table(base))
    with pytest.raises(MemlakeError, match=r"duplicated key \{'instance_id': 0\}"):
        lake.validate("instances", pa.table({**base, "instance_id": [0, 0]}))
    with pytest.raises(MemlakeError, match=r"'cohort' is null for training instance_id\(s\) \[0\]"):
        lake.validate("instances", pa.table({**base, "cohort": pa.array([None, None], pa.int64())}))
    with pytest.raises(MemlakeError, match="must be null for never-treated"):
        lake.validate("instances", pa.table({**base, "cohort": [16, 16]}))
    with pytest.raises(MemlakeError, match="'split' has value 'test'"):
        lake.validate("instances", pa.table({**base, "split": ["train", "test"]}))


def test_manifest_is_json_with_schema(wh):
    path = lake.write_partition(wh, "checkpoints", checkpoints(), {"model": "m"})
    m = json.loads((path / lake.MANIFEST).read_text())
    assert "step: int64" in m["schema"] and len(m["files"][lake.DATA_FILE]) == 64


def test_partitions_that_predate_an_optional_column_still_read(wh):
    # an older writer's file has no `revision` / `first_epoch_end`: read as nulls, not an error
    path = lake.write_partition(wh, "checkpoints", checkpoints(), {"model": "m"})
    old = pq.read_table(path / lake.DATA_FILE).drop_columns(list(lake.spec("checkpoints").optional))
    pq.write_table(old, path / lake.DATA_FILE)
    back = lake.read_table(wh, "checkpoints")
    assert back["revision"].null_count == back.num_rows == 2
    assert back["lr"].to_pylist() == checkpoints()["lr"].to_pylist()


def test_token_stats_second_moment_is_optional(wh):
    # written without it (a Hub import has no logits): null lists; by a job: its values; and a
    # partition from before the column reads as nulls beside one that has it
    rows = {"instance_id": [0, 1], "surprisal": [[1.0]] * 2, "rank": [[0]] * 2, "entropy": [[0.5]] * 2}
    assert lake.validate("token_stats", rows)["second_moment"].null_count == 2
    lake.write_partition(
        wh, "token_stats", {**rows, "second_moment": [[0.25], [4.0]]}, {"model": "m", "step": 0, "shard": 0}
    )
    older = lake.write_partition(wh, "token_stats", rows, {"model": "m", "step": 1, "shard": 0})
    pq.write_table(
        pq.read_table(older / lake.DATA_FILE).drop_columns(["second_moment"]), older / lake.DATA_FILE
    )
    back = lake.read_table(wh, "token_stats", columns=["step", "second_moment"]).to_pylist()
    assert back == [
        {"step": 0, "second_moment": [0.25]},
        {"step": 0, "second_moment": [4.0]},
        {"step": 1, "second_moment": None},
        {"step": 1, "second_moment": None},
    ]


def test_pythia_shaped_stats_are_written_in_small_row_groups_without_float_dictionaries(wh):
    """A checkpoint's token statistics at Pythia's row length: row groups of about 8 MB (a lookup of
    one instance decodes one group), sorted ids inside each so a reader skips the rest, and float
    lists plainly encoded (the ranks keep their dictionary)."""
    import numpy as np

    rng = np.random.default_rng(0)
    n, width = 1200, 2048  # ~30 MB of lists
    data = {
        "instance_id": np.arange(n),
        "surprisal": lake.list_column(rng.gamma(1.2, 2.5, (n, width)).astype(np.float32)),
        "rank": lake.list_column(rng.geometric(0.05, (n, width)).astype(np.int32)),
        "entropy": lake.list_column(rng.gamma(2.0, 1.2, (n, width)).astype(np.float32)),
    }
    part = lake.write_partition(wh, "token_stats", data, {"model": "m", "step": 0, "shard": 0})
    meta = pq.ParquetFile(part / lake.DATA_FILE).metadata
    assert 3 <= meta.num_row_groups <= 5
    names = [meta.schema.column(i).path for i in range(meta.num_columns)]
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        ids = group.column(names.index("instance_id")).statistics
        assert ids.max - ids.min == group.num_rows - 1
        encodings = {p: group.column(i).encodings for i, p in enumerate(names)}
        assert not any("DICTIONARY" in e for e in encodings["surprisal.list.element"])
        assert not any("DICTIONARY" in e for e in encodings["entropy.list.element"])
        assert any("DICTIONARY" in e for e in encodings["rank.list.element"])
    assert lake.read_table(wh, "token_stats")["rank"].to_pylist()[7] == data["rank"][7].as_py()
