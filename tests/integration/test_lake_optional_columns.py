"""Additive lake columns in the warehouse: a file without an optional column of the contract
(written before the column existed) passes the source tests and reads as nulls, also when no file
has the column yet. token_stats.second_moment is the case at hand."""

import duckdb
import pyarrow as pa

from memlake.core import lake
from memlake.core.paths import Warehouse
from tests.helpers import dbt, rewrite_file

IDS = [0, 1, 2, 3]
MOMENTS = [[float(i), 0.5, 2.0] for i in IDS]


def write(wh: Warehouse, step: int, with_moment: bool):
    data = {
        "instance_id": IDS,
        "surprisal": [[1.0, 2.0, 3.0]] * len(IDS),
        "rank": [[0, 1, 2]] * len(IDS),
        "entropy": [[0.5, 0.5, 0.5]] * len(IDS),
    }
    if with_moment:
        data["second_moment"] = pa.array(MOMENTS, pa.list_(pa.float32()))
    return lake.write_partition(wh, "token_stats", data, {"model": "m", "step": step, "shard": 0})


def staged(wh: Warehouse) -> dict[int, list]:
    """token_second_moment of stg_lake__token_stats by step, in instance order."""
    with duckdb.connect(str(wh.root / "memlake.duckdb"), read_only=True) as con:
        rows = con.sql(
            "select step, token_second_moment from stg_lake__token_stats order by step, instance_id"
        ).fetchall()
    out: dict[int, list] = {}
    for step, moment in rows:
        out.setdefault(step, []).append(moment)
    return out


def test_files_without_an_optional_column_build_and_read_as_null(tmp_path):
    wh = Warehouse.at(tmp_path / "wh")
    written = write(wh, 0, with_moment=True)
    hub_like = write(wh, 1, with_moment=False)  # the writer fills nulls, as for a Hub import
    older = write(wh, 2, with_moment=True)
    rewrite_file(older, lambda t: t.drop_columns(["second_moment"]))  # a file from before the column
    # the source tests (manifests, contract columns) and the staging model with its own tests
    proc = dbt(
        wh, tmp_path / "target", "build", "--select", "source:lake.token_stats", "stg_lake__token_stats"
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "lake_files_have_contract_columns_lake_token_stats" in proc.stdout and "ERROR=0" in proc.stdout
    assert staged(wh) == {0: MOMENTS, 1: [None] * 4, 2: [None] * 4}

    for partition in (written, hub_like):  # now no file has the column
        rewrite_file(partition, lambda t: t.drop_columns(["second_moment"]))
    proc = dbt(wh, tmp_path / "target", "run", "--select", "stg_lake__token_stats")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert staged(wh) == {step: [None] * 4 for step in (0, 1, 2)}
