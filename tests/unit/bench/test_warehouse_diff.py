"""bench/warehouse_diff.py: two small warehouses holding the same data laid out differently, then one
change at a time."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from memlake.core import lake
from memlake.core.paths import REPO_ROOT, Warehouse

_spec = importlib.util.spec_from_file_location("warehouse_diff", REPO_ROOT / "bench" / "warehouse_diff.py")
warehouse_diff = sys.modules["warehouse_diff"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(warehouse_diff)

N = 12
MODELS = ("suite-a", "suite-b")
STEPS = (0, 10, 20)


def _instances(order: np.ndarray) -> dict:
    ids = np.arange(N)[order]
    return {
        "instance_id": ids,
        "split": ["train" if i < 8 else "validation" for i in ids],
        "tokens": [[int(i), int(i) + 1, int(i) + 2] for i in ids],
        "batch_idx": [int(i) if i < 8 else None for i in ids],
        "cohort": [10 if i < 8 else None for i in ids],
        "source": ["code"] * N,
        "artifact": ["none"] * N,
        "copies": [1] * N,
        "clean_tokens": pa.nulls(N, lake.TOKENS),
    }


def _value(t: pa.DataType):
    if pa.types.is_list(t):
        return [_value(t.value_type)]
    if pa.types.is_boolean(t):
        return True
    return 1.5 if pa.types.is_floating(t) else 1 if pa.types.is_integer(t) else "x"


def _run(study: str, run_id: str, seconds: float) -> dict:
    row = {f.name: [_value(f.type)] for f in lake.spec("mitigation_runs").file_schema}
    row["seconds"] = [seconds]
    row["stats"] = [json.dumps({"weights_zeroed": 7, "seconds": seconds, "attribution_seconds": seconds / 2})]
    return row


def _mart_rows(order: np.ndarray) -> pl.DataFrame:
    rows = np.arange(2 * N)[order]
    return pl.DataFrame(
        {
            "model": [MODELS[i % 2] for i in rows],
            "key": rows.astype(np.int64),
            "value": np.sqrt(rows + 1.0),
            "curve": [[float(i) / 3, float(i) / 7] for i in rows],
            "fit_seconds": rows * 0.01,
        }
    )


def build(root: Path, *, reverse: bool = False, seed: int = 0, seconds: float = 1.0) -> Warehouse:
    """Lake tables and marts holding the same data for any `reverse` / `seed`: partitions written in
    another order, rows shuffled, a folder mart split into files another way."""
    wh = Warehouse.at(root)
    rng = np.random.default_rng(seed)
    lake.write_partition(wh, "instances", _instances(rng.permutation(N)))
    for model in reversed(MODELS) if reverse else MODELS:
        steps = rng.permutation(STEPS)
        lake.write_partition(
            wh,
            "checkpoints",
            {
                "step": steps,
                "path": [str(wh.root / "suite" / model / f"step{s}") for s in steps],  # under this root
                "lr": [1e-3] * 3,
                "tokens_seen": steps * 100,
                "epoch": steps / 20,
                "train_loss": 5.0 - steps / 10,
            },
            {"model": model},
        )
    for run_id in ("r2", "r1") if reverse else ("r1", "r2"):
        lake.write_partition(
            wh, "mitigation_runs", _run("s", run_id, seconds), {"study": "s", "run_id": run_id}
        )
    wh.marts.mkdir(parents=True)
    _mart_rows(rng.permutation(2 * N)).write_parquet(wh.marts / "single.parquet")
    folder = _mart_rows(rng.permutation(2 * N))
    (wh.marts / "folder").mkdir()
    if reverse:  # one file per model
        for (model,), part in folder.group_by("model"):
            part.write_parquet(wh.marts / "folder" / f"{model}.parquet")
    else:  # halves of the rows
        folder.head(N).write_parquet(wh.marts / "folder" / "first.parquet")
        folder.tail(N).write_parquet(wh.marts / "folder" / "second.parquet")
    return wh


def diff(capsys, a: Warehouse | Path, b: Warehouse | Path, *args: str) -> tuple[int, str, str]:
    roots = [str(w.root if isinstance(w, Warehouse) else w) for w in (a, b)]
    code = warehouse_diff.main([*roots, *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def line(out: str, name: str) -> str:
    return next(ln for ln in out.splitlines() if ln.startswith(f"{name}:"))


@pytest.fixture
def pair(tmp_path):
    return build(tmp_path / "a"), build(tmp_path / "b", reverse=True, seed=1)


def test_the_same_data_in_another_layout_is_the_same(capsys, pair):
    code, out, err = diff(capsys, *pair)
    assert code == 0, out + err
    for name in (
        "lake/instances",
        "lake/checkpoints",
        "lake/mitigation_runs",
        "marts/single",
        "marts/folder",
    ):
        assert line(out, name).startswith(f"{name}: same"), out
    assert "summary: 5 compared, 5 same, 0 differ" in out
    # the default exclusions are printed, and what each table left out of the comparison
    assert "seconds, *_seconds (wall-clock time); tokens_per_s, *_per_s (throughput);" in out
    assert "stats.attribution_seconds, stats.seconds" in line(out, "lake/mitigation_runs")
    assert "fit_seconds" in line(out, "marts/folder")


def test_a_changed_value_names_the_table_and_the_column(capsys, pair):
    a, b = pair
    ckpt = pl.from_arrow(lake.read_table(b, "checkpoints")).filter(pl.col("model") == "suite-b")
    ckpt = ckpt.with_columns(lr=pl.when(pl.col("step") == 10).then(2e-3).otherwise(pl.col("lr")))
    lake.write_partition(b, "checkpoints", ckpt, {"model": "suite-b"}, overwrite=True)
    code, out, _ = diff(capsys, a, b)
    assert code == 1
    assert line(out, "lake/checkpoints") == (
        "lake/checkpoints: 1 row(s) of A not in B, 1 of B not in A; differing column(s): lr (1 row(s) off); "
        "e.g. {model='suite-b', step=10} lr: A 0.001 B 0.002"
    )
    assert "summary: 5 compared, 4 same, 1 differ: lake/checkpoints" in out
    # an integer: its rows no longer pair up, and the column is named from the values
    inst = pl.from_arrow(lake.read_table(b, "instances")).with_columns(
        copies=pl.when(pl.col("instance_id") == 3).then(5).otherwise(pl.col("copies"))
    )
    lake.write_partition(b, "instances", inst, overwrite=True)
    code, out, _ = diff(capsys, a, b)
    assert code == 1
    assert "differing column(s): copies" in line(out, "lake/instances")
    assert "e.g. {instance_id=3} copies: A 1 B 5" in line(out, "lake/instances")


def test_a_missing_mart_or_table_and_other_columns_differ(capsys, pair):
    a, b = pair
    (b.marts / "single.parquet").unlink()
    code, out, _ = diff(capsys, a, b)
    assert code == 1 and line(out, "marts/single") == "marts/single: missing in B"
    code, out, _ = diff(capsys, b, a)
    assert code == 1 and line(out, "marts/single") == "marts/single: missing in A"
    for f in (b.marts / "folder").iterdir():  # (files of one mart are read with union_by_name)
        frame = pl.read_parquet(f).with_columns(pl.col("key").cast(pl.Int32), extra=pl.lit(1))
        frame.write_parquet(f)
    code, out, _ = diff(capsys, a, b)
    assert code == 1
    text = line(out, "marts/folder")
    assert "column(s) only in B: extra" in text and "type differs: key (A BIGINT, B INTEGER)" in text


def test_float_tolerance_for_scalars_and_lists(capsys, tmp_path):
    a = build(tmp_path / "a")
    b = build(tmp_path / "b", reverse=True, seed=1)
    folder = pl.read_parquet(b.marts / "folder" / "*.parquet")
    for f in (b.marts / "folder").iterdir():
        f.unlink()
    folder.with_columns(
        pl.col("value") * (1 + 1e-9), pl.col("curve").list.eval(pl.element() + 1e-12)
    ).write_parquet(b.marts / "folder" / "all.parquet")
    code, out, _ = diff(capsys, a, b)
    assert code == 1
    assert "differing column(s): curve (24 row(s) off), value (24 row(s) off)" in line(out, "marts/folder")
    code, out, _ = diff(capsys, a, b, "--rtol", "1e-6", "--atol", "1e-9")
    assert code == 0, out
    assert line(out, "marts/folder").startswith("marts/folder: same (")
    code, out, _ = diff(capsys, a, b, "--atol", "1e-9")  # the lists' shift is within it, not the values'
    assert code == 1 and "differing column(s): value (" in line(out, "marts/folder")
    assert "curve" not in line(out, "marts/folder")


def test_timing_columns_are_left_out(capsys, tmp_path):
    a = build(tmp_path / "a", seconds=1.0)
    b = build(tmp_path / "b", seconds=2.5)
    code, out, _ = diff(capsys, a, b)
    assert code == 0, out
    code, out, _ = diff(capsys, a, b, "--no-default-exclude")
    assert code == 1
    text = line(out, "lake/mitigation_runs")
    assert "differing column(s): seconds, stats;" in text
    code, out, _ = diff(capsys, a, b, "--exclude", "lr")
    assert code == 0 and "left out: lr" in line(out, "lake/checkpoints")


def test_not_a_warehouse_is_bad_input(capsys, tmp_path):
    a = build(tmp_path / "a")
    (tmp_path / "empty").mkdir()
    for other in (tmp_path / "empty", tmp_path / "nowhere"):
        code, out, err = diff(capsys, a, other)
        assert code == 2 and out == ""
        assert err == f"warehouse_diff: not a warehouse: {other} (no lake/ or marts/ folder)\n"
    # a lake table that cannot be read (a partition without its manifest) is bad input too
    part = lake.partition_dir(a, "checkpoints", {"model": "suite-a"})
    (part / lake.MANIFEST).unlink()
    code, _, err = diff(capsys, a, a)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"warehouse_diff: {part}: partition has data but no _manifest.json")
